"""Bearer tokens, as the label endpoint and the admin API check them: in constant time."""

from __future__ import annotations

import hmac
from typing import NamedTuple

from aiohttp import web


class Refusal(NamedTuple):
    status: int  # 401 without credentials, 403 with wrong ones
    reason: str  # unauthorized | forbidden
    message: str


_MISSING = Refusal(401, "unauthorized", "a bearer token is required")
_WRONG = Refusal(403, "forbidden", "the bearer token is wrong")


class BearerToken:
    """The `Authorization: Bearer <token>` a request must carry; None lets every request pass.

    >>> auth = BearerToken("s3cret")
    >>> auth.refusal(request)  # None, or why the request is refused
    """

    def __init__(self, token: str | None) -> None:
        self._expected = None if token is None else f"Bearer {token}".encode()

    @property
    def required(self) -> bool:
        return self._expected is not None

    def refusal(self, request: web.Request) -> Refusal | None:
        if self._expected is None:
            return None
        given = request.headers.get("Authorization")
        if given is None:
            return _MISSING
        # compare_digest's time depends on the lengths only, never on where the bytes differ.
        # surrogateescape: aiohttp keeps bytes that are not UTF-8 that way; they are just wrong.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._expected):
            return _WRONG
        return None


CHALLENGE = {"WWW-Authenticate": "Bearer"}
"""The header a 401 answer carries (RFC 6750)."""

"""What a client did wrong, as the front counts it; owns the fault names and a plain tally,
and must not touch sockets, metrics libraries or logging."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from enum import StrEnum


class Fault(StrEnum):
    """Why a client connection ended badly (a metric label: a small fixed set)."""

    BAD_REQUEST = "bad_request"  # malformed, smuggling-shaped or unsupported request
    HEADER_TOO_LARGE = "header_too_large"  # header bytes, header count or target length
    BODY_TOO_LARGE = "body_too_large"
    TIMEOUT = "timeout"  # head, body, first request or send (client not reading)
    DISCONNECT = "disconnect"  # gone mid-request or before its answer
    APP_ERROR = "app_error"  # the application raised or answered something unsendable


CountFn = Callable[[Fault], None]
"""The counting seam: the server calls it once per fault. The wiring binds it to a metric."""


class Tally:
    """A plain counter of faults, for tests and for a front without metrics.

    >>> tally = Tally()
    >>> server = Server(app, count=tally)
    >>> tally[Fault.TIMEOUT]
    0
    """

    def __init__(self) -> None:
        self._counts: Counter[Fault] = Counter()

    def __call__(self, fault: Fault) -> None:
        self._counts[fault] += 1

    def __getitem__(self, fault: Fault) -> int:
        return self._counts[fault]

    def as_dict(self) -> dict[str, int]:
        """Only the faults seen, by name: easy to compare exactly in a test."""
        return {str(fault): n for fault, n in self._counts.items() if n}

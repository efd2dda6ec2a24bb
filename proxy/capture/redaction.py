"""Redaction: what the capture writes of an exchange's headers and bodies, with secrets replaced
before anything leaves memory. Header names (Authorization and Cookie always), JSON paths in
bodies, and regular expressions over the bodies' text. Pure.

A path is keys separated by dots, with [n] for a list item, [*] for every item, * for every key
of an object and ** for any depth:

    inputs[*].parameters.ssn    customer.email    **.password    instances[0]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = ["REDACTED", "Redactor", "parse_path"]

REDACTED: Final = "<redacted>"
ALWAYS: Final = frozenset({"authorization", "cookie", "proxy-authorization", "set-cookie"})
"""Header names never written, whatever the config says."""
NOT_JSON: Final = "<redacted: not JSON, so redact_fields could not be applied>"
TOO_DEEP: Final = "<redacted: nested too deeply for redact_fields to be applied>"
MAX_PATHS: Final = 100
MAX_PATTERNS: Final = 50

_SEGMENT = re.compile(r"(\*\*|\*|[^.\[\]]+)((?:\[(?:\*|\d+)\])*)")
_INDEX = re.compile(r"\[(\*|\d+)\]")


@dataclass(frozen=True, slots=True)
class _Key:
    name: str  # "*": every key


@dataclass(frozen=True, slots=True)
class _Index:
    at: int | None  # None: every item


@dataclass(frozen=True, slots=True)
class _Deep:
    """`**`: this object or list, or anything below it."""


Step = _Key | _Index | _Deep


def parse_path(text: str) -> tuple[Step, ...]:
    """A JSON path's steps; ValueError naming what is wrong.

    >>> parse_path("inputs[*].data")
    (_Key(name='inputs'), _Index(at=None), _Key(name='data'))
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected a JSON path like inputs[*].data or customer.email")
    steps: list[Step] = []
    for part in text.strip().split("."):
        found = _SEGMENT.fullmatch(part)
        if found is None:
            raise ValueError(
                f"{part!r} is not a path segment: a key, *, ** or key[n] / key[*]"
                " (keys with dots or brackets cannot be named)"
            )
        head, indexes = found[1], found[2]
        steps.append(_Deep() if head == "**" else _Key(head))
        for index in _INDEX.findall(indexes):
            steps.append(_Index(None if index == "*" else int(index)))
    if isinstance(steps[-1], _Deep):
        raise ValueError("a path cannot end with **: name what to redact below it")
    return tuple(steps)


def _redact(doc: Any, steps: Sequence[Step]) -> Any:
    """`doc` with every value at `steps` replaced by REDACTED (new containers where changed)."""
    if not steps:
        return REDACTED
    step, rest = steps[0], steps[1:]
    if isinstance(step, _Deep):
        here = _redact(doc, rest)  # ** matching nothing
        if isinstance(here, dict):
            return {k: _redact(v, steps) for k, v in here.items()}
        if isinstance(here, list):
            return [_redact(v, steps) for v in here]
        return here
    if isinstance(step, _Key) and isinstance(doc, dict):
        if step.name == "*":
            return {k: _redact(v, rest) for k, v in doc.items()}
        if step.name in doc:
            return {**doc, step.name: _redact(doc[step.name], rest)}
        return doc
    if isinstance(step, _Index) and isinstance(doc, list):
        if step.at is None:
            return [_redact(v, rest) for v in doc]
        if -len(doc) <= step.at < len(doc):
            copy = list(doc)
            copy[step.at] = _redact(doc[step.at], rest)
            return copy
    return doc


class Redactor:
    """The capture's redaction rules, compiled once.

    >>> redactor = Redactor(headers=["X-Api-Key"], fields=["customer.email"],
    ...                     patterns=[r"\\b\\d{3}-\\d{2}-\\d{4}\\b"])
    >>> redactor.headers([(b"Authorization", b"Bearer s3cret"), (b"Accept", b"*/*")])
    {'authorization': '<redacted>', 'accept': '*/*'}
    >>> redactor.body(b'{"customer": {"email": "a@b.c"}, "note": "ssn 123-45-6789"}', 1000)
    ('{"customer":{"email":"<redacted>"},"note":"ssn <redacted>"}', False)
    """

    def __init__(
        self,
        headers: Iterable[str] = (),
        fields: Iterable[str] = (),
        patterns: Iterable[str] = (),
    ) -> None:
        self._headers = ALWAYS | {name.lower() for name in headers}
        self._paths = tuple(parse_path(path) for path in fields)
        self._patterns = tuple(re.compile(pattern) for pattern in patterns)

    def headers(self, pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
        """Headers as a JSON object: names lower-case, values of redacted names replaced
        (repeated names joined with ", ")."""
        out: dict[str, str] = {}
        for raw_name, raw_value in pairs:
            name = raw_name.decode("latin-1").lower()
            value = REDACTED if name in self._headers else raw_value.decode("latin-1")
            if self._patterns and value != REDACTED:
                value = self._text(value)
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out

    def body(self, data: bytes, limit: int) -> tuple[str, bool]:
        """The body as text, redacted, then cut to `limit` bytes (redacted first, so that a cut
        never leaves part of a secret for a pattern to miss); and whether it was cut."""
        if self._paths and data:
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                # The fields cannot be found, so nothing of it is written.
                return NOT_JSON, False
            try:
                for path in self._paths:
                    doc = _redact(doc, path)
                text = orjson.dumps(doc).decode()
            except (RecursionError, orjson.JSONEncodeError):
                # Deeper than Python's stack or orjson's 255 levels: no field can be vouched
                # for, so nothing of it is written either.
                return TOO_DEEP, False
        else:
            text = data.decode("utf-8", "backslashreplace")
        text = self._text(text)
        encoded = text.encode()
        if len(encoded) <= limit:
            return text, False
        return encoded[:limit].decode("utf-8", "ignore"), True

    def _text(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub(REDACTED, text)
        return text

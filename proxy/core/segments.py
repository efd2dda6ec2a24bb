"""Segments: a field of the request (routes[].segment, like inputs.country) that breaks a
shadow's disagreement down by its value, with a bounded number of segment labels (the first
MAX_SEGMENTS values seen, then "other"). Pure.

    >>> path = SegmentPath.parse("parameters.country")
    >>> path.value({"parameters": {"country": "FR"}})
    'FR'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MAX_SEGMENTS", "NO_SEGMENT", "OTHER_SEGMENT", "SegmentLabels", "SegmentPath"]

MAX_SEGMENTS: Final = 20
OTHER_SEGMENT: Final = "other"  # every value past the first MAX_SEGMENTS
NO_SEGMENT: Final = "none"  # the request has no such field, or it is not a short scalar
MAX_CHARS: Final = 64  # a longer value is no segment: segments are categories

_PART: Final = re.compile(r"([^.\[\]*]+)((?:\[\d+\])*)")
_INDEX: Final = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class SegmentPath:
    """Where the segment is in a request's JSON body: keys, and [n] for a list's item."""

    text: str
    steps: tuple[str | int, ...]

    @classmethod
    def parse(cls, text: str) -> SegmentPath:
        """ValueError, saying what is wrong, for what is not a path like a.b[0].c."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("expected a path in the request's JSON, like parameters.country")
        steps: list[str | int] = []
        for part in text.strip().split("."):
            found = _PART.fullmatch(part)
            if found is None:
                raise ValueError(
                    f"{part!r} is not a path segment: a key, or key[n] (no wildcards: a request"
                    " has one segment)"
                )
            steps.append(found[1])
            steps.extend(int(n) for n in _INDEX.findall(found[2]))
        return cls(text.strip(), tuple(steps))

    def value(self, doc: Any) -> str:
        """The segment of a parsed request body: its value as text (a whole number reads the
        same as an integer or a float), or NO_SEGMENT."""
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(doc, list) or step >= len(doc):
                    return NO_SEGMENT
            elif not isinstance(doc, dict) or step not in doc:
                return NO_SEGMENT
            doc = doc[step]
        if isinstance(doc, list) and len(doc) == 1:  # a tensor of one value
            doc = doc[0]
        if isinstance(doc, bool):
            return "true" if doc else "false"
        if isinstance(doc, int):
            return str(doc)
        if isinstance(doc, float):
            if not math.isfinite(doc):
                return NO_SEGMENT
            return str(int(doc)) if doc.is_integer() else repr(doc)
        if isinstance(doc, str) and 0 < len(doc) <= MAX_CHARS:
            return doc
        return NO_SEGMENT


class SegmentLabels:
    """The bounded label of a segment value: the first `limit` values seen keep their name,
    later ones are OTHER_SEGMENT (so that a field of ids cannot grow the metrics without end).

    >>> labels = SegmentLabels(limit=2)
    >>> [labels.label(v) for v in ("FR", "DE", "US", "FR")]
    ['FR', 'DE', 'other', 'FR']
    """

    __slots__ = ("_limit", "_named")

    def __init__(self, limit: int = MAX_SEGMENTS) -> None:
        self._limit = limit
        self._named: set[str] = set()

    def label(self, value: str) -> str:
        if value in self._named or value in (NO_SEGMENT, OTHER_SEGMENT):
            return value
        if len(self._named) >= self._limit:
            return OTHER_SEGMENT
        self._named.add(value)
        return value

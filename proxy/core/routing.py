"""Route matching: a request's path and method to the route that serves it. Pure.

Routes are tried longest prefix first, like nginx's prefix locations and Envoy's prefix routes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    prefix: str
    methods: frozenset[str] | None
    value: T


class Router(Generic[T]):
    """Maps (path, method) to a value by the longest matching path prefix.

    >>> router = Router([("/v2/models/iris", None, iris), ("/v2", frozenset({"GET"}), meta)])
    >>> router.match("/v2/models/iris/infer", "POST")
    iris
    """

    def __init__(self, entries: Iterable[tuple[str, frozenset[str] | None, T]]) -> None:
        self._entries = sorted(
            (_Entry(prefix, methods, value) for prefix, methods, value in entries),
            key=lambda e: len(e.prefix),
            reverse=True,
        )

    def match(self, path: str, method: str) -> tuple[str, T] | None:
        """The matched prefix and value, or None."""
        for entry in self._entries:
            if path.startswith(entry.prefix) and (entry.methods is None or method in entry.methods):
                return entry.prefix, entry.value
        return None

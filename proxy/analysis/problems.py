"""Problems: what keeps a route from being measured (answers it cannot read, answers of another
shape than production's), as the analysis process saw it: a warning logged once per route, model
and kind of problem a minute, and the latest reason of each, for the report and /readyz?verbose.
Counted separately, in shadowproxy_comparisons_total and shadowproxy_recording_dropped_total."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.logs import Throttled

log = logging.getLogger("proxy.analysis.problems")

DETAIL_CHARS = 300  # a reason quotes what it found (output names, say): kept readable
MAX_PROBLEMS = 256  # keys come from the config (routes x models x kinds): bound them anyway


@dataclass(frozen=True, slots=True)
class Problem:
    """The latest of one kind of problem of one model of a route."""

    route: str
    model: str
    what: str  # production_unparseable, shadow_unparseable, shape_mismatch, unreadable, ...
    detail: str
    count: int
    last_seen: float  # unix seconds

    def sentence(self) -> str:
        return f"{self.model}: {self.detail} ({self.what}, {self.count} since start)"


class Problems:
    """The problems seen since start, by route, model and kind.

    >>> problems = Problems()
    >>> problems.saw("/v2/models/m/infer", "m-prod", "production_unparseable",
    ...              "output 'price' not among outputs ['predict']")
    >>> problems.details()["/v2/models/m/infer"]
    ["m-prod: output 'price' not among outputs ['predict'] (production_unparseable, 1 since start)"]
    """

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self._throttled = Throttled(log, every)
        self._clock = clock
        self._seen: dict[tuple[str, str, str], Problem] = {}

    def saw(self, route: str, model: str, what: str, detail: str) -> None:
        """One answer of `model` on `route` was not measured, for `detail`: log it (throttled)
        and keep it as the latest of its kind."""
        key = (route, model, what)
        detail = detail[:DETAIL_CHARS]
        before = self._seen.get(key)
        if before is None and len(self._seen) >= MAX_PROBLEMS:
            return  # counted in the metrics all the same
        count = 1 if before is None else before.count + 1
        self._seen[key] = Problem(route, model, what, detail, count, self._clock())
        self._throttled.warning(
            key,
            "route %s: %s's answer not measured (%s): %s",
            route,
            model,
            what,
            detail,
            extra={"route": route, "model": model, "problem": what, "detail": detail},
        )

    def clear(self) -> None:
        """Forget them (a reload: they belong to the config it replaced)."""
        self._seen.clear()

    def details(self) -> dict[str, list[str]]:
        """Per route, the latest reason of each problem, in words (for the report)."""
        found: dict[str, list[str]] = {}
        for problem in self._seen.values():
            found.setdefault(problem.route, []).append(problem.sentence())
        return found

    def listed(self) -> list[dict[str, object]]:
        """Every problem, as JSON for /readyz?verbose."""
        return [
            {
                "route": p.route,
                "model": p.model,
                "problem": p.what,
                "detail": p.detail,
                "count": p.count,
                "last_seen": p.last_seen,
            }
            for p in self._seen.values()
        ]

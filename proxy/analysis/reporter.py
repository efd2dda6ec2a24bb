"""Serves GET /report (JSON) and GET /report.html, keeps the report's history (a bounded ring per
shadow, sampled every verdict.history_interval), and exports the verdict gauges on /metrics."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import math
import time

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.analysis.capture import Capture
from proxy.analysis.problems import Problems
from proxy.config import Config, config_hash
from proxy.core.outcomes import Verdict
from proxy.core.verdict import Hold
from proxy.metrics import Metrics
from proxy.report.build import (
    advantage_interval,
    build_report,
    history_point,
    samples_of,
)
from proxy.report.cli import prometheus_samples
from proxy.report.html import render_html
from proxy.report.model import DrillDown, HistoryPoint, Report

log = logging.getLogger(__name__)

FLEET_INTERVAL = 30.0  # seconds between fleet verdicts (Prometheus scrapes every 15-60 s)


def _gauge_value(x: float | None, default: float) -> float:
    return default if x is None or math.isnan(x) else x


def fingerprints(config: Config) -> dict[tuple[str, str], str]:
    """Per route and shadow, what its verdict depends on in the config: a decision is held
    until this changes."""
    found = {}
    for route in config.routes:
        for shadow in route.shadows:
            what = repr((route.comparator, route.extractor, route.production.name, shadow.name,
                         config.verdict))  # fmt: skip
            found[(route.name, shadow.name)] = hashlib.sha256(what.encode()).hexdigest()[:16]
    return found


def _pairs(config: Config) -> dict[tuple[str, str], str]:
    """(route, shadow) -> the route's compare kind: the drill-down's pairs."""
    return {
        (route.name, shadow.name): route.comparator.kind.value
        for route in config.routes
        for shadow in route.shadows
    }


class Reporter:
    """Builds the report from this proxy's metrics (summed over --workers processes).

    >>> reporter = Reporter(exposition_registry, metrics, config)
    >>> await reporter.start()
    >>> app.router.add_get("/report", reporter.handle_json)
    """

    def __init__(
        self,
        exposition: CollectorRegistry,
        metrics: Metrics,
        config: Config,
        problems: Problems | None = None,
        capture: Capture | None = None,
    ) -> None:
        self.problems = problems if problems is not None else Problems()
        self._capture = capture  # the drill-down's disagreeing requests, when it is on
        self._exposition = exposition
        self._metrics = metrics
        self._settings = config.verdict
        self._config_hash = config_hash(config)
        self._fingerprints = fingerprints(config)
        self._pairs = _pairs(config)
        self._holds: dict[tuple[str, str, str], Hold] = {}
        self._fleet_holds: dict[tuple[str, str, str], Hold] = {}
        self._fleet_failing = False
        self._history: dict[tuple[str, str], collections.deque[HistoryPoint]] = {}
        self._interval_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fleet_task: asyncio.Task[None] | None = None

    def update(self, config: Config) -> None:
        """A reload: decisions of comparisons it changed are no longer held; the problems seen
        belong to the config it replaced."""
        self.problems.clear()
        points = config.verdict.history_points
        if points != self._settings.history_points:  # the newest points kept, in the new length
            self._history = {
                key: collections.deque(history, maxlen=points)
                for key, history in self._history.items()
            }
        if config.verdict.history_interval != self._settings.history_interval:
            self._interval_changed.set()  # the sleep under way ends: the new interval from now
        self._settings = config.verdict
        self._config_hash = config_hash(config)
        self._fingerprints = fingerprints(config)
        self._pairs = _pairs(config)

    def _hold(self, route: str, shadow: str, check: str) -> Hold:
        return self._held(self._holds, route, shadow, check)

    def _fleet_hold(self, route: str, shadow: str, check: str) -> Hold:
        return self._held(self._fleet_holds, route, shadow, check)

    def _held(
        self, holds: dict[tuple[str, str, str], Hold], route: str, shadow: str, check: str
    ) -> Hold:
        fingerprint = self._fingerprints.get((route, shadow), "")
        key = (route, shadow, check)
        hold = holds.get(key)
        if hold is None or hold.fingerprint != fingerprint:
            hold = holds[key] = Hold(fingerprint)
        return hold

    async def fleet(self, now: float | None = None) -> Report | None:
        """The verdict on every replica's counts together, from Prometheus (when
        verdict.fleet_prometheus is set), exported as the shadowproxy_fleet_verdict gauges.
        None when it is not set or Prometheus does not answer (logged once per outage)."""
        url = self._settings.fleet_prometheus
        if url is None:
            return None
        window = f"{round(self._settings.fleet_window)}s"
        try:
            samples = await asyncio.to_thread(prometheus_samples, url, window)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            if not self._fleet_failing:
                log.warning(
                    "fleet verdict not updated: Prometheus did not answer",
                    extra={"url": url, "error": str(exc)},
                )
            self._fleet_failing = True
            return None
        if self._fleet_failing:
            log.info("fleet verdict updated again", extra={"url": url})
        self._fleet_failing = False
        now = time.time() if now is None else now
        report = build_report(
            samples, self._settings, generated_at=now, config_hash=self._config_hash,
            hold=self._fleet_hold,
        )  # fmt: skip
        m = self._metrics
        for route in report["routes"]:
            for shadow in route["shadows"]:
                labels = (route["route"], shadow["shadow"])
                low, high = advantage_interval(shadow)
                m.fleet_verdict.labels(*labels).set(shadow["verdict"].gauge)
                m.fleet_verdict_p.labels(*labels).set(
                    _gauge_value(shadow["quality"]["p_value"], 1.0)
                )
                m.fleet_verdict_low.labels(*labels).set(_gauge_value(low, -math.inf))
                m.fleet_verdict_high.labels(*labels).set(_gauge_value(high, math.inf))
        m.fleet_verdict_updated.set(now)
        return report

    def report(self, now: float | None = None, *, drilldown: bool = False) -> Report:
        """The report as of now; also sets the verdict gauges to it. With `drilldown`, each
        shadow's disagreeing requests from the capture (for /report and the page; not for the
        gauges at every scrape)."""
        now = time.time() if now is None else now
        report = build_report(
            samples_of(self._exposition.collect()),
            self._settings,
            generated_at=now,
            config_hash=self._config_hash,
            history={key: list(points) for key, points in self._history.items()},
            hold=self._hold,
            problems=self.problems.details(),
            drilldowns=self._drilldowns() if drilldown else None,
        )
        m = self._metrics
        for route in report["routes"]:
            diagnostics = route["diagnostics"]
            production = (route["route"], route["production"], "production")
            m.label_coverage.labels(*production).set(_gauge_value(diagnostics["coverage"], 0.0))
            bias = diagnostics["selection_bias_p"]
            m.selection_bias_p.labels(route["route"]).set(_gauge_value(bias, 1.0))
            for shadow in route["shadows"]:
                labels = (route["route"], shadow["shadow"])
                own = shadow["diagnostics"]
                model = (route["route"], shadow["shadow"], "shadow")
                m.label_coverage.labels(*model).set(_gauge_value(own["coverage"], 0.0))
                needed = own["labels_needed"]
                m.labels_needed.labels(*labels).set(-1 if needed is None else needed)
                low, high = advantage_interval(shadow)
                m.verdict.labels(*labels).set(shadow["verdict"].gauge)
                for state in Verdict:
                    m.verdict_state.labels(*labels, state).set(state is shadow["verdict"])
                p = shadow["quality"]["p_value"]
                m.verdict_p.labels(*labels).set(_gauge_value(p, 1.0))
                m.verdict_low.labels(*labels).set(_gauge_value(low, -math.inf))
                m.verdict_high.labels(*labels).set(_gauge_value(high, math.inf))
        return report

    def sample(self, now: float | None = None) -> None:
        """Add one point per shadow to the history."""
        now = time.time() if now is None else now
        for route in self.report(now)["routes"]:
            for shadow in route["shadows"]:
                key = (route["route"], shadow["shadow"])
                ring = self._history.setdefault(
                    key, collections.deque(maxlen=self._settings.history_points)
                )
                ring.append(history_point(shadow, now))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reporter")
        self._fleet_task = asyncio.create_task(self._fleet_loop(), name="reporter:fleet")

    async def stop(self) -> None:
        for task in (self._task, self._fleet_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _fleet_loop(self) -> None:
        while True:
            await asyncio.sleep(FLEET_INTERVAL)
            try:
                await self.fleet()
            except Exception:
                log.exception("fleet verdict failed")

    async def _loop(self) -> None:
        while True:
            self._interval_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._interval_changed.wait(), self._settings.history_interval
                )
                continue  # the interval changed: wait the new one
            try:
                self.sample()
            except Exception:
                # A report that cannot be built must not stop the history for good.
                log.exception("report sampling failed")

    def _drilldowns(self) -> dict[tuple[str, str], DrillDown]:
        capture = self._capture
        if capture is None:
            return {}
        found = {}
        for (route, shadow), kind in self._pairs.items():
            try:
                found[(route, shadow)] = capture.drilldown(route, shadow, kind)
            except Exception:
                log.exception("the drill-down of %s on %s failed", shadow, route)
        return found

    async def handle_json(self, request: web.Request) -> web.Response:
        report = self.report(drilldown=True)
        body = orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY)
        return web.Response(body=body, content_type="application/json")

    async def handle_html(self, request: web.Request) -> web.Response:
        text = render_html(self.report(drilldown=True))
        return web.Response(text=text, content_type="text/html")

"""The shadow dispatcher: per shadow, a bounded queue and a fixed set of workers that send the
teed copy through the shadow's own pool (the front's lean client, its answers capped at
`shadow_max_response`), compare its answer with production's, and count it. A full queue drops
and counts; nothing here can hold up or fail a production response."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.analysis.capture import Capture
from proxy.analysis.problems import Problems
from proxy.core.comparison import Classified, Comparator, classify
from proxy.core.exchange import Headers
from proxy.core.extraction import ExtractionError, Extractor, decoded_answer
from proxy.core.outcomes import ComparisonResult, Outcome, SkipReason
from proxy.core.sampling import Sampler
from proxy.core.segments import SegmentPath
from proxy.front.client import Upstream, UpstreamError, UpstreamResponse
from proxy.logs import Throttled
from proxy.metrics import ClassCounter, SegmentCounter, ShadowMetrics

log = logging.getLogger(__name__)
throttled = Throttled(log)  # a shadow failing: one line per route, shadow, cause and 10 s
_PRODUCTIONS = frozenset({ComparisonResult.PRODUCTION_UNPARSEABLE})  # production's fault

SHADOW_MARKER_HEADER = b"X-Shadow-Request"
MAX_EJECTION = 30.0  # seconds: the longest a failing probe can double an ejection to

_NOT_PARSED: Any = object()

PredictionsCallback = Callable[["Tee", str, list[Any]], None]
"""Called with (tee, shadow name, predictions) when a recorded request's shadow answered."""


@dataclass(slots=True, eq=False)
class Tee:
    """One production exchange, shared by every shadow it is teed to (the body is not copied).

    `production` is None when production gave no answer. Production's predictions are parsed at
    most once, by the first shadow worker that needs them, never on the hot path; their classes
    are counted once, by the first worker that asks with a ClassCounter.
    """

    method: str
    suffix: str  # path and query after the matched prefix (bytes not UTF-8: surrogate-escaped)
    headers: Headers  # (name, value) bytes, in order, as forwarded to production
    body: bytes
    request_id: str
    production: UpstreamResponse | None  # its headers as (name, value) bytes too
    created: float = 0.0  # unix seconds when production answered (for label delays)
    elapsed: float = 0.0  # seconds production took (the capture keeps it)
    recorded: bool = False  # queued for the prediction store: shadows add their predictions
    _predictions: Any = field(default=_NOT_PARSED)
    _classes_counted: bool = False
    _segment: str | None = None

    def segment(self, path: SegmentPath) -> str:
        """The request's segment (routes[].segment), read from its body once."""
        if self._segment is None:
            try:
                doc = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                doc = None
            self._segment = path.value(doc)
        return self._segment

    def production_predictions(
        self, extractor: Extractor, classes: ClassCounter | None = None
    ) -> list[Any]:
        """Production's predictions; raises ExtractionError when its answer holds none. With
        `classes`, they are counted by class, the first time only (the recorder asks without)."""
        if self._predictions is _NOT_PARSED:
            assert self.production is not None
            try:
                self._predictions = extractor.extract(decoded_body(self.production))
            except ExtractionError as exc:
                self._predictions = exc
        if isinstance(self._predictions, ExtractionError):
            raise self._predictions
        result: list[Any] = self._predictions
        if classes is not None and not self._classes_counted:
            self._classes_counted = True
            classes.count(result)
        return result


def decoded_body(response: UpstreamResponse, limit: int | None = None) -> bytes:
    """The body with gzip or deflate content-encoding undone (production's is kept as sent);
    with `limit`, a body that decodes to more than `limit` bytes raises ExtractionError."""
    return decoded_answer(response.headers, response.body, limit)


class ShadowDispatcher:
    """A bounded queue and `max_in_flight` workers for one shadow of one route.

    >>> dispatcher = ShadowDispatcher(
    ...     "iris-rf", sample=0.1, max_in_flight=4, max_queue=1000, strip_headers=("Cookie",),
    ...     upstream=Upstream("http://iris-rf:8080", "/predict", timeout=2.0,
    ...                       max_connections=4, max_response=4 << 20),
    ...     extractor=route.extractor, comparator=route.comparator,
    ...     metrics=metrics.bind_shadow("iris", "iris-rf", CompareKind.CLASSIFICATION))
    >>> await dispatcher.start()
    >>> dispatcher.submit(tee)        # never blocks; counts queue_full or shutting_down
    >>> await dispatcher.drain(5.0)   # on shutdown
    """

    def __init__(
        self,
        name: str,
        *,
        sample: float,
        max_in_flight: int,
        max_queue: int,
        strip_headers: tuple[str, ...],
        upstream: Upstream,
        extractor: Extractor,
        comparator: Comparator,
        metrics: ShadowMetrics,
        on_predictions: PredictionsCallback | None = None,
        production_classes: ClassCounter | None = None,
        shadow_classes: ClassCounter | None = None,
        eject_after: int = 20,
        eject_for: float = 1.0,
        route: str = "",
        production: str = "production",
        problems: Problems | None = None,
        segments: tuple[SegmentPath, SegmentCounter] | None = None,
        capture: Capture | None = None,
        role: str = "candidate",
        match: str = "",
    ) -> None:
        self.name = name
        self.route = route  # for logs and problems
        self.role = role
        self._capture = capture  # offered every compared exchange (it keeps some)
        self._segments = segments  # the route's segment field, and this shadow's counts
        self._match = match  # the route's prefix: the captured path is match + suffix
        self._production = production
        self._problems = problems  # answers it cannot measure are reported there
        self._on_predictions = on_predictions
        # Class mix (None for regression): production's is shared by the route's dispatchers.
        self._production_classes = production_classes
        self._shadow_classes = shadow_classes
        self.configured_sample = sample
        self.sample = sample  # what applies now: the config's, or the admin API's override
        self.sampler = Sampler(sample)
        self.paused = False  # by the admin API: copies are skipped (counted as paused)
        self.upstream = upstream
        self._extractor = extractor
        self._comparator = comparator
        # Compared lower-cased. Accept-Encoding: ask for an uncompressed answer, as it is only
        # parsed, never passed on. The marker: ours replaces any the client sent.
        self._drop = frozenset(
            {h.encode("ascii").lower() for h in strip_headers}
            | {b"accept-encoding", SHADOW_MARKER_HEADER.lower()}
        )
        self._marker = (SHADOW_MARKER_HEADER, name.encode("ascii"))
        self._max_in_flight = max_in_flight
        self._queue: asyncio.Queue[Tee] = asyncio.Queue(max_queue)
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        m = metrics
        self._m = m
        self._enqueued = m.enqueued
        self._queue_full = m.skipped[SkipReason.QUEUE_FULL]
        self._shutting_down = m.skipped[SkipReason.SHUTTING_DOWN]
        self._ejected_skip = m.skipped[SkipReason.EJECTED]
        self._queue_depth = m.queue_depth
        self._in_flight = m.in_flight
        m.paused.set(0)
        m.sample.set(sample)
        m.ejected.set(0)
        # Ejection, as Envoy's outlier detection does it: after `eject_after` failures in a row
        # (no usable answer: timeout, no connection, an answer over the cap) copies are skipped
        # for `eject_for`; then one probe goes; its failure doubles the time (up to 30 s), an
        # answer ends it. A broken shadow then costs a probe a second, not the full rate.
        self._eject_after = eject_after
        self._eject_for = eject_for
        self._ejection = eject_for  # the length of the next ejection
        self._failures = 0  # in a row
        self.ejected_until = 0.0  # on `clock`; 0 while not ejected
        self._probing = False  # the one copy let through after an ejection is in flight
        self.clock = time.monotonic  # the ejection's clock (a test may set its own)

    def control(self, *, paused: bool, sample: float | None) -> None:
        """Pause or resume, and set the sample rate (None: back to the config's); applies to
        the next request offered."""
        self.paused = paused
        self.sample = self.configured_sample if sample is None else sample
        self.sampler = Sampler(self.sample)
        self._m.paused.set(1 if paused else 0)
        self._m.sample.set(self.sample)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.upstream.start()
        self._workers = [
            asyncio.create_task(self._work(), name=f"shadow:{self.name}:{i}")
            for i in range(self._max_in_flight)
        ]

    async def drain(self, grace: float) -> None:
        """Stop taking requests, give the queue `grace` seconds, then drop what is left
        (counted as shutting_down) and close the pool."""
        self._closed = True
        try:
            await asyncio.wait_for(self._queue.join(), grace)
        except TimeoutError:
            log.warning(
                "shadow drain timed out",
                extra={"shadow": self.name, "queued": self._queue.qsize()},
            )
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue_depth.dec()
            self._shutting_down.inc()
        await self.upstream.close()

    async def join(self) -> None:
        """Wait until every request queued so far has been sent, compared and counted."""
        await self._queue.join()

    # -- the hot path's only call -----------------------------------------------------------------

    def submit(self, tee: Tee) -> None:
        if self._closed:
            self._shutting_down.inc()
            return
        probe = False
        if self.ejected_until:
            if self._probing or self.clock() < self.ejected_until:
                self._ejected_skip.inc()
                return
            probe = True
        try:
            self._queue.put_nowait(tee)
        except asyncio.QueueFull:
            self._queue_full.inc()
            return
        self._probing = probe or self._probing
        self._enqueued.inc()
        self._queue_depth.inc()

    def _failed(self) -> None:
        self._failures += 1
        if self._probing:  # the probe found it still broken: longer, this time
            self._probing = False
            self._ejection = min(self._ejection * 2, MAX_EJECTION)
            self._eject()
        elif not self.ejected_until and self._failures >= self._eject_after:
            self._eject()

    def _eject(self) -> None:
        self.ejected_until = self.clock() + self._ejection
        self._m.ejected.set(1)
        log.warning(
            "shadow ejected: copies are skipped until a probe gets an answer",
            extra={"shadow": self.name, "failures": self._failures, "for_s": self._ejection},
        )

    def _answered(self) -> None:
        self._failures = 0
        if self.ejected_until:
            self.ejected_until = 0.0
            self._probing = False
            self._ejection = self._eject_for
            self._m.ejected.set(0)
            log.info("shadow answers again: no longer ejected", extra={"shadow": self.name})

    # -- workers ----------------------------------------------------------------------------------

    async def _work(self) -> None:
        queue = self._queue
        while True:
            tee = await queue.get()
            self._queue_depth.dec()
            self._in_flight.inc()
            try:
                await self._shadow(tee)
            except asyncio.CancelledError:
                # Cancelled mid-request at the end of a drain: it never completed.
                self._shutting_down.inc()
                raise
            except Exception:
                # The shadow boundary: whatever a shadow does, production never hears of it.
                log.exception("shadow request failed unexpectedly", extra={"shadow": self.name})
            finally:
                self._in_flight.dec()
                queue.task_done()

    def _headers(self, tee: Tee) -> list[tuple[bytes, bytes]]:
        """The copy's headers: production's, minus `strip_headers` and Accept-Encoding (names
        compared case-insensitively), plus `X-Shadow-Request: <shadow name>`."""
        drop = self._drop
        headers = [(name, value) for name, value in tee.headers if name.lower() not in drop]
        headers.append(self._marker)
        return headers

    async def _shadow(self, tee: Tee) -> None:
        self._count_production(tee)
        m = self._m.upstream
        started = time.perf_counter()  # not loop.time(): uvloop's is per iteration, to the ms
        # The suffix's bytes as they arrived (the front and aiohttp decode them so).
        suffix = tee.suffix.encode("utf-8", "surrogateescape")
        try:
            answer = await self.upstream.send(tee.method, suffix, self._headers(tee), tee.body)
        except UpstreamError as exc:
            # too_large included: the client stopped reading at the cap and dropped the part.
            m.outcomes[exc.outcome].inc()
            self._m.errors(exc.cause).inc()
            throttled.warning(
                (self.route, self.name, exc.cause),
                "shadow %s failed (%s): %s",
                self.name,
                exc.cause,
                exc,
                extra={"route": self.route, "shadow": self.name, "cause": exc.cause},
            )
            self._m.results[ComparisonResult.SHADOW_FAILED].inc()
            self._failed()
            if self._capture is not None:
                failed = Classified(ComparisonResult.SHADOW_FAILED, detail=str(exc))
                self._offer(tee, None, None, failed)
            return
        self._answered()
        elapsed = time.perf_counter() - started
        m.duration.observe(elapsed)
        m.outcomes[Outcome.of_status(answer.status)].inc()
        self._compare(tee, answer, elapsed)

    def _count_production(self, tee: Tee) -> None:
        """Count production's classes whatever the shadow answers, so that a failing shadow
        cannot skew production's mix."""
        production = tee.production
        if (
            self._production_classes is None
            or production is None
            or not 200 <= production.status < 300
        ):
            return
        # An answer without predictions is counted as production_unparseable when compared.
        with contextlib.suppress(ExtractionError):
            tee.production_predictions(self._extractor, self._production_classes)

    def _offer(
        self,
        tee: Tee,
        answer: UpstreamResponse | None,
        elapsed: float | None,
        found: Classified,
    ) -> None:
        """Offer the compared exchange to the capture, which keeps some."""
        assert self._capture is not None
        production = tee.production
        predictions = None
        if production is not None and 200 <= production.status < 300:
            with contextlib.suppress(ExtractionError):
                predictions = tee.production_predictions(self._extractor)
        self._capture.offer(
            route=self.route,
            path=self._match + tee.suffix,
            shadow=self.name,
            role=self.role,
            comparator=self._comparator,
            method=tee.method,
            headers=tee.headers,
            body=tee.body,
            request_id=tee.request_id,
            production=production,
            production_ms=tee.elapsed * 1000 if production is not None else None,
            answer=answer,
            shadow_ms=None if elapsed is None else elapsed * 1000,
            found=found,
            production_predictions=predictions,
        )

    def _compare(self, tee: Tee, shadow: UpstreamResponse, elapsed: float = 0.0) -> None:
        """Count what the pure decision (`classify`) found; the shadow's predictions, once
        parsed, count by class and join its recorded request."""
        production = tee.production
        found = classify(
            None if production is None else production.status,
            shadow.status,
            lambda: tee.production_predictions(self._extractor),
            # Decoding is capped as the answer was: a small gzip body can inflate without end.
            lambda: self._extractor.extract(decoded_body(shadow, self.upstream.max_response)),
            self._comparator,
        )
        got = found.shadow_predictions
        if got is not None:
            if self._shadow_classes is not None:
                self._shadow_classes.count(got)
            if tee.recorded and self._on_predictions is not None:
                self._on_predictions(tee, self.name, got)
        self._m.results[found.result].inc()
        if self._capture is not None:
            self._offer(tee, shadow, elapsed, found)
        comparison = found.comparison
        if comparison is None:
            if found.detail and self._problems is not None:
                side = self._production if found.result in _PRODUCTIONS else self.name
                self._problems.saw(self.route, side, found.result, found.detail)
            return
        self._m.count_comparison(comparison)
        if self._segments is not None:
            path, counter = self._segments
            counter.count(tee.segment(path), comparison.instances, comparison.disagreements)


class ShadowSet:
    """The shadows of one route, and the decision, per request, of which ones get a copy.

    Every shadow sees the same deterministic subset for a given rate: the request id's bucket is
    computed once and compared with each shadow's threshold.

    >>> shadows = ShadowSet([dispatcher_a, dispatcher_b], [m_a, m_b], max_body=1 << 20)
    >>> shadows.offer(tee, bucket(tee.request_id))
    """

    def __init__(
        self,
        dispatchers: list[ShadowDispatcher],
        metrics: list[ShadowMetrics],
        max_body: int,
    ) -> None:
        self.dispatchers = tuple(dispatchers)
        skipped = [m.skipped for m in metrics]
        self._entries = tuple(
            (d, s[SkipReason.SAMPLED_OUT], s[SkipReason.PAUSED], s[SkipReason.BODY_TOO_LARGE])
            for d, s in zip(dispatchers, skipped, strict=True)
        )
        self._max_body = max_body

    def __bool__(self) -> bool:
        return bool(self._entries)

    @property
    def sampled(self) -> bool:
        """Whether a shadow takes only part of the requests now (the request's bucket is then
        needed); read per request, as the admin API changes rates at runtime."""
        return not all(d.sampler.everything for d in self.dispatchers)

    def offer(self, tee: Tee, b: int) -> None:
        """Queue the exchange for every shadow whose sample admits bucket `b`."""
        production = tee.production
        too_big = len(tee.body) > self._max_body or (
            production is not None and len(production.body) > self._max_body
        )
        # The threshold and pause are read per request: the admin API changes them at runtime.
        for dispatcher, sampled_out, paused, body_too_large in self._entries:
            if not dispatcher.sampler.admits(b):
                sampled_out.inc()
            elif dispatcher.paused:
                paused.inc()
            elif too_big:
                body_too_large.inc()
            else:
                dispatcher.submit(tee)

    async def start(self) -> None:
        for dispatcher in self.dispatchers:
            await dispatcher.start()

    async def drain(self, grace: float) -> None:
        await asyncio.gather(*(d.drain(grace) for d in self.dispatchers))

    async def join(self) -> None:
        await asyncio.gather(*(d.join() for d in self.dispatchers))

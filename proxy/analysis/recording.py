"""The recorder: off the hot path, it batches production's and shadows' predictions into the
prediction store, joins labels that were waiting for a shadow's answer, and sweeps old
records. A full queue or a failing store drops writes and counts them; production never waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import Gauge, Histogram

from proxy.analysis.problems import Problems
from proxy.analysis.scoring import RouteScorer
from proxy.analysis.shadow import Tee
from proxy.config import StoreConfig
from proxy.core.extraction import ExtractionError, Extractor
from proxy.core.outcomes import RecordDrop, RecordKind, Removal, StoreOperation
from proxy.metrics import Metrics
from proxy.store.base import (
    LabelResult,
    PredictionStore,
    Record,
    Removed,
    ShadowPredictions,
    ShadowsPut,
    StoreTimedOut,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class MeasuredStore(PredictionStore):
    """Times every operation of another store into
    shadowproxy_store_operation_duration_seconds{operation}."""

    def __init__(self, inner: PredictionStore, metrics: Metrics) -> None:
        self.inner = inner
        self._timers: dict[StoreOperation, Histogram] = {
            op: metrics.store_duration.labels(op) for op in StoreOperation
        }

    async def _timed(self, operation: StoreOperation, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await call()
        finally:
            self._timers[operation].observe(time.perf_counter() - started)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def put_records(self, records: Sequence[Record]) -> None:
        await self._timed(StoreOperation.PUT_RECORDS, lambda: self.inner.put_records(records))

    async def put_shadows(self, items: Sequence[ShadowPredictions]) -> ShadowsPut:
        return await self._timed(StoreOperation.PUT_SHADOWS, lambda: self.inner.put_shadows(items))

    async def get_records(self, request_ids: Sequence[str]) -> dict[str, Record]:
        return await self._timed(
            StoreOperation.GET_RECORDS, lambda: self.inner.get_records(request_ids)
        )

    async def set_labels(self, items: Sequence[tuple[str, Any]], now: float) -> list[LabelResult]:
        return await self._timed(
            StoreOperation.SET_LABELS, lambda: self.inner.set_labels(items, now)
        )

    async def remove_old(self, now: float) -> Removed:
        return await self._timed(StoreOperation.REMOVE_OLD, lambda: self.inner.remove_old(now))

    async def count(self) -> int:
        return await self.inner.count()

    def file_sizes(self) -> dict[str, int]:
        return self.inner.file_sizes()


@dataclass(frozen=True, slots=True)
class RouteRecording:
    """What the recorder needs of a route: how to read its answers and how to score them."""

    production: str  # the production target's name
    extractor: Extractor
    scorer: RouteScorer


@dataclass(slots=True)
class _RecordItem:
    route: str
    tee: Tee
    # Shadow predictions that arrived while the record waited: written with it, in one row
    # and one statement, instead of as writes of their own.
    shadows: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _ShadowItem:
    route: str
    predictions: ShadowPredictions


class Recorder:
    """A bounded queue of store writes and one writer task that flushes them in batches.

    >>> recorder = Recorder(store, config.store, routes, metrics)
    >>> await recorder.start()
    >>> recorder.record("iris", tee)                          # hot path: never blocks
    >>> recorder.shadow("iris", "req-1", "iris-rf", [0, 2])   # a shadow worker
    >>> await recorder.stop(5.0)
    """

    def __init__(
        self,
        store: PredictionStore,
        config: StoreConfig,
        routes: dict[str, RouteRecording],
        metrics: Metrics,
        problems: Problems | None = None,
    ) -> None:
        self.store = store
        self._problems = problems  # answers it cannot read are reported there
        self._config = config
        self._routes = routes
        self._metrics = metrics
        self._recording = {name: r.scorer.recording for name, r in routes.items()}
        self._queue: asyncio.Queue[_RecordItem | _ShadowItem] = asyncio.Queue(config.queue)
        self._depth: Gauge = metrics.recording_queue_depth
        self._tasks: list[asyncio.Task[None]] = []
        self._hurry = asyncio.Event()  # set: write what is queued now (a flush, or a stop)
        self._stopping = False
        self._store_down = False
        self._pending: dict[str, _RecordItem] = {}  # request id -> its record, not yet written
        self._in_hand: list[_RecordItem | _ShadowItem] = []  # taken by the writer, not counted

    def update_routes(self, routes: dict[str, RouteRecording]) -> None:
        """After a reload: new routes are recorded too; writes already queued keep theirs."""
        self._routes = {**self._routes, **routes}
        self._recording = {name: r.scorer.recording for name, r in self._routes.items()}

    # -- called by the hot path and the shadow workers; never block ------------------------------

    def _put(self, item: _RecordItem | _ShadowItem, kind: RecordKind) -> bool:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._recording[item.route].dropped[(kind, RecordDrop.QUEUE_FULL)].inc()
            return False
        self._depth.inc()
        return True

    def has_room(self, route: str) -> bool:
        """Whether `record` can queue a record now; when not, the record is counted as dropped
        (queue full). The hot path asks first, so that a Tee knows from birth if it is recorded."""
        if self._queue.full():
            self._recording[route].dropped[(RecordKind.RECORD, RecordDrop.QUEUE_FULL)].inc()
            return False
        return True

    def record(self, route: str, tee: Tee) -> bool:
        """Queue production's answer for storing; False when it was dropped (queue full)."""
        item = _RecordItem(route, tee)
        if not self._put(item, RecordKind.RECORD):
            return False
        self._pending[tee.request_id] = item
        return True

    def shadow(self, route: str, request_id: str, shadow: str, predictions: list[Any]) -> None:
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.shadows[shadow] = predictions
            return
        item = _ShadowItem(route, ShadowPredictions(request_id, shadow, predictions))
        self._put(item, RecordKind.SHADOW)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.store.start()
        except StoreUnavailable as exc:
            # Production goes on without the store; writes are counted as dropped until it is
            # back (a client such as Redis reconnects by itself).
            log.error("prediction store unavailable at start", extra={"error": str(exc)})
            self._store_down = True
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="recorder:writer"),
            asyncio.create_task(self._sweep_loop(), name="recorder:sweeper"),
        ]

    async def flush(self) -> None:
        """Write everything queued so far now, without waiting out flush_interval, and wait
        until it has been handled (stored or counted)."""
        self._hurry.set()
        try:
            await self._queue.join()
        finally:
            if not self._stopping:
                self._hurry.clear()

    async def stop(self, grace: float) -> None:
        """Flush for up to `grace` seconds, then drop (and count) what is left and close."""
        self._stopping = True
        try:
            await asyncio.wait_for(self.flush(), grace)
        except TimeoutError:
            log.warning("recorder flush timed out", extra={"queued": self._queue.qsize()})
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            self._depth.dec()
            self._drop(self._queue.get_nowait(), RecordDrop.STORE_UNAVAILABLE)
        self._pending.clear()
        await self.store.close()

    # -- the writer -------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            self._in_hand = batch  # off the queue, not yet accounted for
            waiting = 1  # of the batch, still counted in the queue-depth gauge
            try:
                if queue.qsize() < self._config.batch_size - 1 and not self._hurry.is_set():
                    # Let a batch gather: one store round trip for many requests (unless a
                    # flush, or a stop, wants it written now).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._config.flush_interval):
                            await self._hurry.wait()
                while len(batch) < self._config.batch_size and not queue.empty():
                    batch.append(queue.get_nowait())
                self._depth.dec(len(batch))
                waiting = 0
                await self._write(batch)
            except Exception:
                # The recorder's boundary: a bug here must not stop recording for good.
                log.exception("recorder batch failed")
            finally:
                # Cancelled by stop() (or a bug) before all of it was counted: never silent.
                for item in self._in_hand:
                    self._drop(item, RecordDrop.STORE_UNAVAILABLE)
                self._in_hand = []
                self._depth.dec(waiting)
                for _ in batch:
                    queue.task_done()

    def _drop(self, item: _RecordItem | _ShadowItem, reason: RecordDrop) -> None:
        """Count a write that never reached the store: a record and the shadows merged into it,
        or one shadow's predictions."""
        dropped = self._recording[item.route].dropped
        if isinstance(item, _RecordItem):
            dropped[(RecordKind.RECORD, reason)].inc()
            dropped[(RecordKind.SHADOW, reason)].inc(len(item.shadows))
        else:
            dropped[(RecordKind.SHADOW, reason)].inc()

    def _to_record(self, item: _RecordItem) -> Record | RecordDrop:
        """The record to write, or why there is none."""
        tee, route = item.tee, self._routes[item.route]
        # From here on, shadows that answer are written on their own.
        if self._pending.get(tee.request_id) is item:
            del self._pending[tee.request_id]
        answer = tee.production
        if answer is None or not 200 <= answer.status < 300:
            return RecordDrop.NO_PREDICTIONS
        try:
            predictions = tee.production_predictions(route.extractor)
        except ExtractionError as exc:
            if self._problems is not None:
                self._problems.saw(item.route, route.production, RecordDrop.UNREADABLE, str(exc))
            return RecordDrop.UNREADABLE
        return Record(
            request_id=tee.request_id,
            route=item.route,
            created=tee.created,
            production=route.production,
            predictions=predictions,
            shadows=item.shadows,
        )

    async def _write(self, batch: Sequence[_RecordItem | _ShadowItem]) -> None:
        """Write one batch and count every item of it, as written or dropped. `_in_hand` holds
        what is not counted yet, at each await."""
        records: list[tuple[_RecordItem, Record]] = []
        shadows: list[_ShadowItem] = []
        for item in batch:
            if isinstance(item, _ShadowItem):
                shadows.append(item)
                continue
            record = self._to_record(item)
            if isinstance(record, RecordDrop):
                self._drop(item, record)
            else:
                records.append((item, record))
        self._in_hand = [*(item for item, _ in records), *shadows]
        # Records first: a shadow's write always follows its record's in the queue.
        if records:
            failed = await self._attempt(self.store.put_records([r for _, r in records]))
            for item, record in records:
                if failed is None:
                    recording = self._recording[item.route]
                    recording.written[RecordKind.RECORD].inc()
                    recording.written[RecordKind.SHADOW].inc(len(record.shadows))
                else:
                    self._drop(item, failed)
        self._in_hand = list(shadows)
        if not shadows:
            return
        late: list[tuple[ShadowPredictions, Record]] = []
        orphans: list[ShadowPredictions] = []

        async def put() -> None:
            put = await self.store.put_shadows([s.predictions for s in shadows])
            late.extend(put)
            orphans.extend(put.orphans)

        failed = await self._attempt(put())
        self._in_hand = []
        orphaned = {id(o) for o in orphans}
        for item in shadows:
            if failed is not None:
                self._drop(item, failed)
            elif id(item.predictions) in orphaned:
                self._drop(item, RecordDrop.ORPHAN)  # its record never reached the store
            else:
                self._recording[item.route].written[RecordKind.SHADOW].inc()
        for written, record in late:
            target = self._routes.get(record.route)
            if target is not None:
                target.scorer.join_shadow(record, written.shadow)

    async def _attempt(self, operation: Awaitable[None]) -> RecordDrop | None:
        """None when the write was made; else why it was not (or may not have been)."""
        try:
            await operation
        except StoreUnavailable as exc:
            if not self._store_down:
                log.error("prediction store unavailable", extra={"error": str(exc)})
                self._store_down = True
            if isinstance(exc, StoreTimedOut):
                return RecordDrop.TIMED_OUT
            return RecordDrop.STORE_UNAVAILABLE
        if self._store_down:
            log.info("prediction store available again")
            self._store_down = False
        return None

    # -- the sweeper ------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                # The sweeper's boundary: a bug here must not stop sweeping for good.
                log.exception("store sweep failed")
            await asyncio.sleep(self._config.sweep_interval)

    async def sweep(self) -> None:
        """Remove old and surplus records now, and count them."""
        try:
            removed = await self.store.remove_old(time.time())
        except StoreUnavailable:
            return
        # Counted before anything else can fail: those records are gone.
        for reason, count in (
            (Removal.EXPIRED, removed.expired),
            (Removal.EVICTED, removed.evicted),
            (Removal.OVER_DISK, removed.over_disk),
        ):
            if count:  # a reason's series appears with its first removal
                self._metrics.store_removed.labels(reason).inc(count)
        for name, size in self.store.file_sizes().items():
            self._metrics.store_file_bytes.labels(name).set(size)
        try:
            count = await self.store.count()
        except StoreUnavailable:
            return
        self._metrics.store_records.set(count)

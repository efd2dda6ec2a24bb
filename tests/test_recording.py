"""The recorder and the measured store, directly: a real Recorder, real metrics on a registry of
its own and real scorers, against a fake store that records every call and scripts its answers
(down, blocked on an event, late joins, sweep results)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from proxy.analysis import recording
from proxy.analysis.recording import MeasuredStore, Recorder
from proxy.analysis.routes import recordings, scorers
from proxy.analysis.shadow import Tee
from proxy.config import parse_config
from proxy.core.outcomes import StoreOperation
from proxy.front.client import UpstreamResponse
from proxy.metrics import Metrics
from proxy.store.base import (
    LabelResult,
    LabelStatus,
    PredictionStore,
    Record,
    Removed,
    ShadowPredictions,
    ShadowsPut,
    StoreTimedOut,
    StoreUnavailable,
)

T0 = 1_700_000_000.0
WAIT = 5.0  # a safety net on event waits only; nothing here waits on time to pass

CONFIG = parse_config(
    """
store: {backend: sqlite, path: unused.db, flush_interval: 1ms, batch_size: 3, queue: 100}
routes:
  - name: iris
    match: /iris
    protocol: kserve-v1
    record: 100%
    production: {name: prod, url: "http://127.0.0.1:9/iris"}
    shadows: [{name: s, url: "http://127.0.0.1:9/iris"}]
  - name: wine
    match: /wine
    protocol: kserve-v1
    record: 100%
    production: {name: wine-prod, url: "http://127.0.0.1:9/wine"}
""",
    "test.yaml",
    env={},
)

RECORDED = "shadowproxy_recorded_total"
DROPPED = "shadowproxy_recording_dropped_total"
DEPTH = "shadowproxy_recording_queue_depth"


# -- the fake store ----------------------------------------------------------------------------


class FakeStore(PredictionStore):
    """Records every call; fails, blocks and answers as a test scripts it.

    >>> store.fail("put_records")          # raise StoreUnavailable until store.recover()
    >>> gate = store.block_writes()        # writes wait on `gate`; store.entered is set
    >>> store.labelled["r0"] = record      # put_shadows returns late joins for r0
    """

    def __init__(self) -> None:
        self.calls: list[str] = []  # every operation, in order, failed ones included
        self.put_records_calls: list[list[Record]] = []
        self.put_shadows_calls: list[list[ShadowPredictions]] = []
        self.stored_ids: set[str] = set()
        self.failures: dict[str, Exception] = {}
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()  # a write reached the gate
        self.labelled: dict[str, Record] = {}  # request id -> its record, with a label
        self.records: dict[str, Record] = {}  # get_records' answer
        self.label_results: list[LabelResult] = []  # set_labels' answer
        self.removed = Removed()
        self.stored = 0  # count()'s answer
        self.counted = asyncio.Event()  # count() was called
        self.closed = False

    def fail(self, *operations: str, error: Exception | None = None) -> None:
        """Make these operations (default: all) raise `error` (default: StoreUnavailable)."""
        ops = operations or ("start", "put_records", "put_shadows", "remove_old", "count")
        for op in ops:
            self.failures[op] = error or StoreUnavailable(f"fake store: {op} is down")

    def recover(self) -> None:
        self.failures.clear()

    def block_writes(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        self.entered.clear()
        return self.gate

    async def _call(self, operation: str) -> None:
        self.calls.append(operation)
        if operation in self.failures:
            raise self.failures[operation]

    async def _write(self, operation: str) -> None:
        await self._call(operation)
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()

    async def start(self) -> None:
        await self._call("start")

    async def close(self) -> None:
        self.calls.append("close")
        self.closed = True

    async def put_records(self, records: Sequence[Record]) -> None:
        self.put_records_calls.append(list(records))
        await self._write("put_records")
        self.stored_ids.update(r.request_id for r in records)

    async def put_shadows(self, items: Sequence[ShadowPredictions]) -> ShadowsPut:
        self.put_shadows_calls.append(list(items))
        await self._write("put_shadows")
        # As a real store: items whose record has a label come back with it; items whose record
        # was never stored are orphans.
        known = self.stored_ids | set(self.records) | set(self.labelled)
        return ShadowsPut(
            [
                (item, replace(record, shadows={**record.shadows, item.shadow: item.predictions}))
                for item in items
                if (record := self.labelled.get(item.request_id)) is not None
            ],
            [item for item in items if item.request_id not in known],
        )

    async def get_records(self, request_ids: Sequence[str]) -> dict[str, Record]:
        await self._call("get_records")
        return {i: self.records[i] for i in request_ids if i in self.records}

    async def set_labels(self, items: Sequence[tuple[str, Any]], now: float) -> list[LabelResult]:
        await self._call("set_labels")
        return self.label_results

    async def remove_old(self, now: float) -> Removed:
        await self._call("remove_old")
        return self.removed

    async def count(self) -> int:
        await self._call("count")
        self.counted.set()
        return self.stored


# -- the recorder under test -------------------------------------------------------------------


@dataclass
class Rig:
    store: FakeStore
    registry: CollectorRegistry
    metrics: Metrics
    recorders: list[Recorder] = field(default_factory=list)

    def recorder(self, store: PredictionStore | None = None, **store_config: Any) -> Recorder:
        """A Recorder over the fake store (or `store`), with CONFIG.store changed as given."""
        routes = recordings(CONFIG, scorers(CONFIG, self.metrics))  # as the wiring builds them
        config = replace(CONFIG.store, **store_config)
        made = Recorder(store or self.store, config, routes, self.metrics)
        self.recorders.append(made)
        return made

    def value(self, name: str, **labels: str) -> float | None:
        """A sample's value; None when its series does not exist (rare reasons appear with
        their first count)."""
        return self.registry.get_sample_value(name, labels)

    def written(self, kind: str, route: str = "iris") -> float | None:
        return self.value(RECORDED, route=route, kind=kind)

    def dropped(self, kind: str, reason: str, route: str = "iris") -> float | None:
        return self.value(DROPPED, route=route, kind=kind, reason=reason)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    registry = CollectorRegistry()
    made = Rig(FakeStore(), registry, Metrics(registry))
    yield made
    for recorder in made.recorders:  # a test that stopped its recorder already: a no-op
        await recorder.stop(0)


def tee(
    request_id: str,
    predictions: list[Any] | None = None,
    *,
    status: int = 200,
    body: bytes | None = None,
    answered: bool = True,
) -> Tee:
    """Production's exchange: a KServe v1 answer of `predictions` (default [1]), or `body`."""
    if body is None:
        body = orjson.dumps({"predictions": [1] if predictions is None else predictions})
    answer = UpstreamResponse(status, "OK", [(b"Content-Type", b"application/json")], body)
    headers = [(b"Content-Type", b"application/json")]
    return Tee("POST", "", headers, b"{}", request_id, answer if answered else None, T0)


def stored(request_id: str, predictions: list[Any] | None = None, **shadows: list[Any]) -> Record:
    """The record the recorder writes for tee(request_id, predictions) on route iris."""
    return Record(
        request_id=request_id,
        route="iris",
        created=T0,
        production="prod",
        predictions=[1] if predictions is None else predictions,
        shadows=shadows,
    )


async def entered(store: FakeStore) -> None:
    """Until a write has reached the store's gate."""
    async with asyncio.timeout(WAIT):
        await store.entered.wait()


def recorder_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == recording.__name__]


# -- batching and merging ----------------------------------------------------------------------


async def test_records_are_written_in_batches_of_at_most_batch_size(rig: Rig) -> None:
    recorder = rig.recorder(batch_size=3)
    await recorder.start()
    assert [recorder.record("iris", tee(f"r{i}")) for i in range(7)] == [True] * 7
    assert rig.value(DEPTH) == 7

    await recorder.flush()

    assert rig.store.put_records_calls == [
        [stored("r0"), stored("r1"), stored("r2")],
        [stored("r3"), stored("r4"), stored("r5")],
        [stored("r6")],
    ]
    assert rig.store.put_shadows_calls == []
    assert rig.written("record") == 7
    assert rig.written("shadow") == 0
    assert rig.value(DEPTH) == 0


async def test_a_queue_built_up_behind_a_slow_write_goes_out_in_full_batches(rig: Rig) -> None:
    recorder = rig.recorder(batch_size=3)
    await recorder.start()
    gate = rig.store.block_writes()
    recorder.record("iris", tee("r0"))
    await entered(rig.store)
    for i in range(1, 6):
        recorder.record("iris", tee(f"r{i}"))
    assert rig.value(DEPTH) == 5

    gate.set()
    await recorder.flush()

    assert [[r.request_id for r in call] for call in rig.store.put_records_calls] == [
        ["r0"],
        ["r1", "r2", "r3"],
        ["r4", "r5"],
    ]
    assert rig.written("record") == 6
    assert rig.value(DEPTH) == 0


async def test_shadow_predictions_that_arrive_while_the_record_is_queued_are_written_with_it(
    rig: Rig,
) -> None:
    recorder = rig.recorder()
    await recorder.start()
    recorder.record("iris", tee("r0", [1, 0]))
    recorder.shadow("iris", "r0", "s", [1, 1])

    await recorder.flush()

    assert rig.store.put_records_calls == [[stored("r0", [1, 0], s=[1, 1])]]
    assert rig.store.put_shadows_calls == []
    assert rig.written("record") == 1
    assert rig.written("shadow") == 1


async def test_shadow_predictions_after_the_record_was_written_go_through_put_shadows(
    rig: Rig,
) -> None:
    recorder = rig.recorder()
    await recorder.start()
    recorder.record("iris", tee("r0"))
    await recorder.flush()

    recorder.shadow("iris", "r0", "s", [0])
    await recorder.flush()

    assert rig.store.put_records_calls == [[stored("r0")]]
    assert rig.store.put_shadows_calls == [[ShadowPredictions("r0", "s", [0])]]
    assert rig.written("record") == 1
    assert rig.written("shadow") == 1
    assert rig.dropped("shadow", "orphan") is None  # nothing dropped: no series


async def test_a_record_being_written_takes_no_more_shadows_and_a_queued_one_still_does(
    rig: Rig,
) -> None:
    recorder = rig.recorder()
    await recorder.start()
    gate = rig.store.block_writes()
    recorder.record("iris", tee("r0"))
    await entered(rig.store)  # r0 is being written
    recorder.record("iris", tee("r1"))
    recorder.shadow("iris", "r0", "s", [0])  # too late for r0's row
    recorder.shadow("iris", "r1", "s", [1])  # r1 is still queued

    gate.set()
    await recorder.flush()

    assert rig.store.put_records_calls == [[stored("r0")], [stored("r1", s=[1])]]
    assert rig.store.put_shadows_calls == [[ShadowPredictions("r0", "s", [0])]]
    # r1 and r0's shadow went out in one batch: the records first, then the shadows.
    assert rig.store.calls[-2:] == ["put_records", "put_shadows"]
    assert rig.written("record") == 2
    assert rig.written("shadow") == 2


# -- drops -------------------------------------------------------------------------------------


async def test_a_full_queue_drops_and_counts_and_record_says_so(rig: Rig) -> None:
    recorder = rig.recorder(queue=2)
    await recorder.start()
    # The writer has not run yet: the queue holds exactly what is put here.
    assert [recorder.record("iris", tee(f"r{i}")) for i in range(3)] == [True, True, False]
    recorder.shadow("iris", "r2", "s", [1])  # its record was dropped: a write of its own
    assert rig.dropped("record", "queue_full") == 1
    assert rig.dropped("shadow", "queue_full") == 1
    assert rig.value(DEPTH) == 2

    await recorder.flush()

    assert rig.store.put_records_calls == [[stored("r0"), stored("r1")]]
    assert rig.store.put_shadows_calls == []
    assert rig.written("record") == 2
    assert rig.dropped("record", "queue_full") == 1
    assert rig.value(DEPTH) == 0


async def test_an_answer_without_predictions_drops_the_record_and_its_shadows(rig: Rig) -> None:
    recorder = rig.recorder()
    await recorder.start()
    recorder.record("iris", tee("error", status=500))
    recorder.shadow("iris", "error", "s", [1])
    recorder.record("iris", tee("not-json", body=b"<html>"))
    recorder.shadow("iris", "not-json", "s", [1])
    recorder.record("iris", tee("no-answer", answered=False))
    recorder.record("iris", tee("ok"))

    await recorder.flush()

    assert rig.store.put_records_calls == [[stored("ok")]]
    assert rig.store.put_shadows_calls == []
    # A failed or non-2xx answer has nothing to keep; a 2xx one that cannot be read is a
    # misconfiguration (a wrong output name, say): counted apart, so that it can be alerted on.
    assert rig.dropped("record", "no_predictions") == 2
    assert rig.dropped("shadow", "no_predictions") == 1
    assert rig.dropped("record", "unreadable") == 1
    assert rig.dropped("shadow", "unreadable") == 1
    assert rig.written("record") == 1
    assert rig.written("shadow") == 0


async def test_store_down_drops_writes_and_logs_once_down_and_once_back(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=recording.__name__)
    recorder = rig.recorder()
    await recorder.start()
    rig.store.fail("put_records", "put_shadows")

    recorder.record("iris", tee("r0"))
    recorder.shadow("iris", "r0", "s", [1])
    await recorder.flush()
    recorder.shadow("iris", "r0", "s", [1])  # on its own now: put_shadows fails too
    recorder.record("iris", tee("r1"))
    await recorder.flush()

    assert rig.dropped("record", "store_unavailable") == 2
    assert rig.dropped("shadow", "store_unavailable") == 2
    assert rig.written("record") == 0
    assert rig.written("shadow") == 0
    assert recorder_logs(caplog) == [("ERROR", "prediction store unavailable")]

    rig.store.recover()
    recorder.record("iris", tee("r2"))
    await recorder.flush()
    recorder.record("iris", tee("r3"))
    await recorder.flush()

    assert rig.store.put_records_calls == [
        [stored("r0", s=[1])],
        [stored("r1")],
        [stored("r2")],
        [stored("r3")],
    ]
    assert rig.store.put_shadows_calls == [[ShadowPredictions("r0", "s", [1])]]
    assert rig.written("record") == 2
    assert rig.dropped("record", "store_unavailable") == 2
    assert recorder_logs(caplog) == [
        ("ERROR", "prediction store unavailable"),
        ("INFO", "prediction store available again"),
    ]


async def test_a_store_down_at_start_still_starts_the_recorder_which_counts_drops(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=recording.__name__)
    rig.store.fail()
    recorder = rig.recorder()

    await recorder.start()
    recorder.record("iris", tee("r0"))
    await recorder.flush()

    assert rig.dropped("record", "store_unavailable") == 1
    assert rig.written("record") == 0
    # The sweep at start failed too, and changed nothing.
    assert rig.value("shadowproxy_store_records") == 0
    assert recorder_logs(caplog) == [("ERROR", "prediction store unavailable at start")]

    rig.store.recover()
    recorder.record("iris", tee("r1"))
    await recorder.flush()

    assert rig.written("record") == 1
    assert rig.store.put_records_calls == [[stored("r0")], [stored("r1")]]
    assert recorder_logs(caplog) == [
        ("ERROR", "prediction store unavailable at start"),
        ("INFO", "prediction store available again"),
    ]


async def test_a_bug_in_a_write_is_logged_and_recording_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=recording.__name__)
    recorder = rig.recorder()
    await recorder.start()
    rig.store.fail("put_records", error=RuntimeError("a bug"))
    recorder.record("iris", tee("r0"))
    await recorder.flush()
    rig.store.recover()
    recorder.record("iris", tee("r1"))
    await recorder.flush()

    assert recorder_logs(caplog) == [("ERROR", "recorder batch failed")]
    assert rig.store.put_records_calls == [[stored("r0")], [stored("r1")]]
    assert rig.written("record") == 1
    assert rig.value(DEPTH) == 0


async def test_a_shadow_whose_record_never_reached_the_store_is_an_orphan(rig: Rig) -> None:
    recorder = rig.recorder()
    await recorder.start()
    rig.store.fail("put_records")
    recorder.record("iris", tee("r0"))
    await recorder.flush()
    rig.store.recover()

    recorder.shadow("iris", "r0", "s", [1])  # the store has no r0: it changes nothing
    await recorder.flush()

    assert rig.dropped("record", "store_unavailable") == 1
    assert rig.written("shadow") == 0
    assert rig.dropped("shadow", "orphan") == 1


# -- late joins --------------------------------------------------------------------------------


async def test_a_shadow_that_answers_after_the_label_is_joined_and_scored(rig: Rig) -> None:
    recorder = rig.recorder()
    await recorder.start()
    recorder.record("iris", tee("r0", [1, 0]))
    await recorder.flush()
    # The label [1, 1] arrived while the shadow was still thinking.
    rig.store.labelled["r0"] = replace(stored("r0", [1, 0]), label=[1, 1], labelled_at=T0 + 60)

    recorder.shadow("iris", "r0", "s", [1, 1])
    await recorder.flush()

    assert rig.store.put_shadows_calls == [[ShadowPredictions("r0", "s", [1, 1])]]
    shadow = {"route": "iris", "model": "s", "role": "shadow"}
    assert rig.value("shadowproxy_labelled_instances_total", **shadow) == 2
    assert rig.value("shadowproxy_correct_instances_total", **shadow) == 2
    paired = {
        o: rig.value("shadowproxy_paired_outcomes_total", route="iris", shadow="s", outcome=o)
        for o in ("both_right", "production_only", "shadow_only", "both_wrong")
    }
    assert paired == {"both_right": 1, "production_only": 0, "shadow_only": 1, "both_wrong": 0}
    # Production was scored when its label arrived, not again now.
    production = {"route": "iris", "model": "prod", "role": "production"}
    assert rig.value("shadowproxy_labelled_instances_total", **production) == 0
    assert rig.written("shadow") == 1


async def test_a_shadow_without_a_label_yet_is_written_and_not_scored(rig: Rig) -> None:
    recorder = rig.recorder()
    await recorder.start()
    recorder.record("iris", tee("r0"))
    await recorder.flush()

    recorder.shadow("iris", "r0", "s", [1])
    await recorder.flush()

    assert rig.written("shadow") == 1
    shadow = {"route": "iris", "model": "s", "role": "shadow"}
    assert rig.value("shadowproxy_labelled_instances_total", **shadow) == 0


# -- the sweeper -------------------------------------------------------------------------------


async def test_sweep_counts_what_the_store_removed_and_what_it_holds(rig: Rig) -> None:
    recorder = rig.recorder()
    rig.store.removed, rig.store.stored = Removed(expired=2, evicted=3), 40

    await recorder.sweep()

    assert rig.store.calls == ["remove_old", "count"]
    assert rig.value("shadowproxy_store_removed_total", reason="expired") == 2
    assert rig.value("shadowproxy_store_removed_total", reason="evicted") == 3
    assert rig.value("shadowproxy_store_records") == 40

    rig.store.removed, rig.store.stored = Removed(expired=1), 39
    await recorder.sweep()

    assert rig.value("shadowproxy_store_removed_total", reason="expired") == 3
    assert rig.value("shadowproxy_store_removed_total", reason="evicted") == 3
    assert rig.value("shadowproxy_store_records") == 39


async def test_a_sweep_while_the_store_is_down_changes_nothing(rig: Rig) -> None:
    recorder = rig.recorder()
    rig.store.removed, rig.store.stored = Removed(expired=2, evicted=3), 40
    await recorder.sweep()
    rig.store.fail()
    rig.store.removed, rig.store.stored = Removed(expired=5, evicted=5), 0

    await recorder.sweep()

    assert rig.value("shadowproxy_store_removed_total", reason="expired") == 2
    assert rig.value("shadowproxy_store_removed_total", reason="evicted") == 3
    assert rig.value("shadowproxy_store_records") == 40


async def test_records_removed_are_counted_even_when_count_then_fails(rig: Rig) -> None:
    recorder = rig.recorder()
    rig.store.removed = Removed(expired=2, evicted=3)
    rig.store.fail("count")

    await recorder.sweep()

    assert rig.store.calls == ["remove_old", "count"]
    assert rig.value("shadowproxy_store_removed_total", reason="expired") == 2
    assert rig.value("shadowproxy_store_removed_total", reason="evicted") == 3


async def test_start_sweeps_at_once(rig: Rig) -> None:
    recorder = rig.recorder(sweep_interval=3600.0)
    rig.store.removed, rig.store.stored = Removed(expired=1, evicted=0), 7

    await recorder.start()
    async with asyncio.timeout(WAIT):
        await rig.store.counted.wait()  # the sweep sets its gauges before it next yields

    assert rig.store.calls == ["start", "remove_old", "count"]
    assert rig.value("shadowproxy_store_removed_total", reason="expired") == 1
    assert rig.value("shadowproxy_store_removed_total", reason="evicted") is None  # none yet
    assert rig.value("shadowproxy_store_records") == 7


# -- stop --------------------------------------------------------------------------------------


async def test_stop_flushes_what_is_queued_then_closes_the_store(rig: Rig) -> None:
    recorder = rig.recorder(batch_size=2)
    await recorder.start()
    for i in range(3):
        recorder.record("iris", tee(f"r{i}"))
    recorder.shadow("iris", "r2", "s", [1])

    await recorder.stop(WAIT)

    assert rig.store.put_records_calls == [
        [stored("r0"), stored("r1")],
        [stored("r2", s=[1])],
    ]
    assert rig.written("record") == 3
    assert rig.written("shadow") == 1
    assert rig.dropped("record", "store_unavailable") is None  # nothing dropped: no series
    assert rig.value(DEPTH) == 0
    assert rig.store.closed
    assert rig.store.calls[-1] == "close"


async def test_stop_drops_and_counts_what_a_blocked_store_left_queued(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = rig.recorder()
    await recorder.start()
    rig.store.block_writes()  # and never let go
    recorder.record("wine", tee("w0"))
    await entered(rig.store)  # the writer is stuck writing w0
    recorder.record("iris", tee("r1"))
    recorder.shadow("iris", "r1", "s", [1])
    recorder.record("iris", tee("r2"))
    recorder.shadow("iris", "r9", "s", [1])  # a shadow write of its own

    await recorder.stop(0.01)

    assert rig.dropped("record", "store_unavailable") == 2
    assert rig.dropped("shadow", "store_unavailable") == 2
    assert rig.written("record") == 0
    assert rig.written("shadow") == 0
    assert rig.store.put_records_calls == [
        [replace(stored("w0"), route="wine", production="wine-prod")]
    ]
    assert rig.value(DEPTH) == 0
    assert rig.store.closed
    assert ("WARNING", "recorder flush timed out") in recorder_logs(caplog)


async def test_stop_counts_the_batch_being_written_when_grace_runs_out(rig: Rig) -> None:
    recorder = rig.recorder()
    await recorder.start()
    rig.store.block_writes()
    recorder.record("wine", tee("w0"))
    await entered(rig.store)

    await recorder.stop(0.01)

    assert rig.dropped("record", "store_unavailable", route="wine") == 1


async def test_stop_writes_what_a_batch_was_gathering(rig: Rig) -> None:
    recorder = rig.recorder(flush_interval=3600.0)
    await recorder.start()
    recorder.record("iris", tee("r0"))

    # The writer took r0 and waits an hour for more: a stop (SIGTERM) writes it now. It used
    # to wait out the grace and drop it.
    await recorder.stop(5.0)

    assert [[r.request_id for r in call] for call in rig.store.put_records_calls] == [["r0"]]
    assert rig.value(DEPTH) == 0
    assert rig.dropped("record", "store_unavailable") is None  # nothing dropped: no series
    assert rig.written("record") == 1


# -- the measured store ------------------------------------------------------------------------


async def test_measured_store_times_each_operation_once_and_passes_answers_through(
    rig: Rig,
) -> None:
    inner = rig.store
    inner.records = {"r0": stored("r0")}
    inner.label_results = [LabelResult(LabelStatus.UNKNOWN_ID)]
    inner.labelled = {"r0": replace(stored("r0"), label=1)}
    inner.removed, inner.stored = Removed(expired=1), 3
    store = MeasuredStore(inner, rig.metrics)

    await store.start()
    await store.put_records([stored("r0")])
    assert await store.put_shadows([ShadowPredictions("r0", "s", [0])]) == [
        (ShadowPredictions("r0", "s", [0]), replace(stored("r0", s=[0]), label=1))
    ]
    assert await store.get_records(["r0", "nope"]) == {"r0": stored("r0")}
    assert await store.set_labels([("nope", 1)], now=T0) == [LabelResult(LabelStatus.UNKNOWN_ID)]
    assert await store.remove_old(T0) == Removed(expired=1)
    assert await store.count() == 3
    await store.close()

    assert inner.calls == [
        "start",
        "put_records",
        "put_shadows",
        "get_records",
        "set_labels",
        "remove_old",
        "count",
        "close",
    ]
    duration = "shadowproxy_store_operation_duration_seconds"
    assert {op: rig.value(f"{duration}_count", operation=op) for op in StoreOperation} == {
        op: 1 for op in StoreOperation
    }


async def test_measured_store_times_failures_too(rig: Rig) -> None:
    rig.store.fail("put_records")
    store = MeasuredStore(rig.store, rig.metrics)

    with pytest.raises(StoreUnavailable):
        await store.put_records([stored("r0")])

    duration = "shadowproxy_store_operation_duration_seconds"
    assert rig.value(f"{duration}_count", operation="put_records") == 1
    assert rig.value(f"{duration}_count", operation="put_shadows") == 0


async def test_a_recorder_over_a_measured_store_times_its_writes_and_sweeps(rig: Rig) -> None:
    recorder = rig.recorder(MeasuredStore(rig.store, rig.metrics), sweep_interval=3600.0)
    await recorder.start()
    async with asyncio.timeout(WAIT):
        await rig.store.counted.wait()
    recorder.record("iris", tee("r0"))
    await recorder.flush()
    recorder.shadow("iris", "r0", "s", [1])
    await recorder.flush()

    duration = "shadowproxy_store_operation_duration_seconds"
    assert {op: rig.value(f"{duration}_count", operation=op) for op in StoreOperation} == {
        "put_records": 1,
        "put_shadows": 1,
        "get_records": 0,
        "set_labels": 0,
        "remove_old": 1,
    }


async def test_a_write_that_timed_out_is_counted_as_such_not_as_lost(rig: Rig) -> None:
    recorder = rig.recorder()
    await recorder.start()
    rig.store.fail("put_records", error=StoreTimedOut("fake store: no answer in time"))
    recorder.record("iris", tee("r0"))
    await recorder.flush()
    assert rig.dropped("record", "timed_out") == 1
    assert rig.dropped("record", "store_unavailable") is None  # nothing dropped: no series

"""The prediction stores: one suite run against both backends (SQLite on a tmp file, Redis on a
redis-server of our own), then what only one backend has (durability, Redis's own expiry)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from proxy.store.base import (
    LabelResult,
    LabelStatus,
    PredictionStore,
    Record,
    Removed,
    ShadowPredictions,
    StoreTimedOut,
    StoreUnavailable,
)
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore
from tests.conftest import RedisServer, free_port

T0 = 1_700_000_000.0
TTL = 3600.0
TOMBSTONE = 600.0

MakeStore = Callable[..., Awaitable[PredictionStore]]


def record(request_id: str, created: float = T0, **kwargs: Any) -> Record:
    fields: dict[str, Any] = {
        "route": "iris",
        "created": created,
        "production": "prod",
        "predictions": [1, 0],
    }
    return Record(request_id, **(fields | kwargs))


def shadow(request_id: str, name: str = "candidate", predictions: Any = None) -> ShadowPredictions:
    return ShadowPredictions(request_id, name, [0, 0] if predictions is None else predictions)


# -- the stores under test ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Starts stores on one backend (one file, or one server and key prefix), closing them all
    at the end: two stores made here share their records."""
    stores: list[PredictionStore] = []
    prefix = f"test-{uuid.uuid4().hex}:"
    server: RedisServer | None = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")

    async def make(**kwargs: Any) -> PredictionStore:
        kwargs = {"ttl": TTL, "tombstone_ttl": TOMBSTONE} | kwargs
        store: PredictionStore
        if server is not None:
            store = RedisStore(server.url, prefix=prefix, **kwargs)
        else:
            store = SqliteStore(tmp_path / "store" / "predictions.db", **kwargs)
        stores.append(store)
        await store.start()
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> PredictionStore:
    return await make_store()


# -- labels ------------------------------------------------------------------------------------


async def test_label_joins_the_record(store: PredictionStore) -> None:
    await store.put_records([record("a")])
    assert await store.put_shadows([shadow("a", "b", [1, 1])]) == []

    assert await store.set_labels([("a", 1)], now=T0 + 5) == [
        LabelResult(
            LabelStatus.JOINED,
            Record(
                request_id="a",
                route="iris",
                created=T0,
                production="prod",
                predictions=[1, 0],
                shadows={"b": [1, 1]},
                label=1,
                labelled_at=T0 + 5,
            ),
        )
    ]
    assert await store.set_labels([("a", 0)], now=T0 + 6) == [LabelResult(LabelStatus.DUPLICATE)]
    assert await store.set_labels([("nope", 1)], now=T0) == [LabelResult(LabelStatus.UNKNOWN_ID)]


async def test_label_expires_after_ttl(store: PredictionStore) -> None:
    await store.put_records([record("a"), record("b")])
    [at_ttl] = await store.set_labels([("a", 1)], now=T0 + TTL)
    assert at_ttl.status is LabelStatus.JOINED
    assert await store.set_labels([("b", 1)], now=T0 + TTL + 0.5) == [
        LabelResult(LabelStatus.EXPIRED)
    ]
    # Expired wins over duplicate: the late label is told the record is gone.
    assert await store.set_labels([("a", 1)], now=T0 + TTL + 0.5) == [
        LabelResult(LabelStatus.EXPIRED)
    ]


async def test_mixed_batch_answers_in_order(store: PredictionStore) -> None:
    await store.put_records([record("new", created=T0 + TTL), record("old"), record("dup")])
    await store.set_labels([("dup", 3)], now=T0 + 1)

    results = await store.set_labels(
        [("new", 1), ("missing", 1), ("old", 1), ("dup", 1), ("new", 2)], now=T0 + TTL + 1
    )

    assert [r.status for r in results] == [
        LabelStatus.JOINED,
        LabelStatus.UNKNOWN_ID,
        LabelStatus.EXPIRED,
        LabelStatus.EXPIRED,
        LabelStatus.DUPLICATE,
    ]
    assert results[0].record is not None
    assert results[0].record.label == 1
    assert [r.record for r in results[1:]] == [None] * 4


async def test_first_record_wins(store: PredictionStore) -> None:
    await store.put_records([record("a", predictions=[7])])
    await store.put_records([record("a", created=T0 + 1, predictions=[8]), record("b")])
    await store.put_records([record("a", route="other", predictions=[9])])

    [result] = await store.set_labels([("a", 1)], now=T0 + 2)

    assert result.record == Record("a", "iris", T0, "prod", [7], {}, 1, T0 + 2)
    assert await store.count() == 2


# -- shadows -----------------------------------------------------------------------------------


async def test_shadows_after_the_label_are_returned(store: PredictionStore) -> None:
    await store.put_records([record("a"), record("b")])
    assert await store.put_shadows([shadow("a", "s1", [1, 1])]) == []

    [joined] = await store.set_labels([("a", [1, 0])], now=T0 + 1)
    assert joined.record is not None
    assert joined.record.shadows == {"s1": [1, 1]}  # the shadows present at that time

    assert await store.put_shadows(
        [
            shadow("a", "s2", [0, 1]),
            shadow("b", "s2", [5, 5]),  # not labelled yet: stored, not returned
            shadow("unknown", "s2", [1, 1]),  # no record: ignored
            shadow("a", "s1", [9, 9]),  # already has s1's predictions: ignored
            shadow("a", "s2", [9, 9]),  # s2 again in the same batch: ignored
            shadow("a", "s3", [{"scores": [0.5]}, None]),
        ]
    ) == [
        (
            shadow("a", "s2", [0, 1]),
            Record("a", "iris", T0, "prod", [1, 0], {"s1": [1, 1], "s2": [0, 1]}, [1, 0], T0 + 1),
        ),
        (
            shadow("a", "s3", [{"scores": [0.5]}, None]),
            Record(
                "a",
                "iris",
                T0,
                "prod",
                [1, 0],
                {"s1": [1, 1], "s2": [0, 1], "s3": [{"scores": [0.5]}, None]},
                [1, 0],
                T0 + 1,
            ),
        ),
    ]
    assert await store.put_shadows([shadow("a", "s2", [7, 7])]) == []
    assert await store.put_shadows([shadow("unknown", "s4")]) == []
    assert await store.count() == 2

    [b] = await store.set_labels([("b", 0)], now=T0 + 2)
    assert b.record == Record("b", "iris", T0, "prod", [1, 0], {"s2": [5, 5]}, 0, T0 + 2)


@pytest.mark.parametrize(
    "label", [0, False, True, "cat", "", [1, 0, 2], 2.5, {"class": "cat", "p": [0.1]}]
)
async def test_every_json_label_round_trips(store: PredictionStore, label: Any) -> None:
    await store.put_records([record("a")])

    [result] = await store.set_labels([("a", label)], now=T0 + 1)
    [(_, later)] = await store.put_shadows([shadow("a")])

    assert result.record is not None
    for got in (result.record.label, later.label):
        assert got == label
        assert type(got) is type(label)  # False is not 0
    assert await store.set_labels([("a", label)], now=T0 + 2) == [
        LabelResult(LabelStatus.DUPLICATE)
    ]


async def test_a_none_label_is_refused(store: PredictionStore) -> None:
    await store.put_records([record("a")])
    with pytest.raises(ValueError, match="label for 'a' is None"):
        await store.set_labels([("a", None)], now=T0)
    [result] = await store.set_labels([("a", 1)], now=T0)
    assert result.status is LabelStatus.JOINED


# -- removal -----------------------------------------------------------------------------------


async def test_remove_old_counts_expired_records(store: PredictionStore) -> None:
    await store.put_records([record("r0", T0), record("r1", T0 + 10), record("r2", T0 + 20)])
    now = T0 + 10 + TTL + TOMBSTONE  # r0 is past its tombstone; r1 exactly at its end

    assert await store.remove_old(now) == Removed(expired=1, evicted=0)
    assert await store.remove_old(now) == Removed()
    assert await store.count() == 2
    assert [r.status for r in await store.set_labels([("r0", 1), ("r1", 1)], now)] == [
        LabelStatus.UNKNOWN_ID,
        LabelStatus.EXPIRED,
    ]
    assert await store.remove_old(now + 10.5) == Removed(expired=2, evicted=0)
    assert await store.count() == 0


async def test_remove_old_evicts_the_oldest_beyond_max_records(make_store: MakeStore) -> None:
    store = await make_store(max_records=3)
    await store.put_records([record(f"r{i}", T0 + i) for i in (4, 0, 2, 1, 3)])

    assert await store.remove_old(T0 + 5) == Removed(expired=0, evicted=2)
    assert await store.remove_old(T0 + 5) == Removed()
    assert await store.count() == 3
    results = await store.set_labels([(f"r{i}", 1) for i in range(5)], now=T0 + 5)
    assert [r.status for r in results] == [LabelStatus.UNKNOWN_ID] * 2 + [LabelStatus.JOINED] * 3


async def test_remove_old_expires_then_evicts(make_store: MakeStore) -> None:
    store = await make_store(max_records=3)
    old = [record(f"old{i}", T0 + i) for i in range(2)]
    new = [record(f"new{i}", T0 + TTL + TOMBSTONE + i) for i in range(5)]
    await store.put_records(old + new)

    assert await store.remove_old(T0 + TTL + TOMBSTONE + 10) == Removed(expired=2, evicted=2)
    assert await store.count() == 3


async def test_count(store: PredictionStore) -> None:
    assert await store.count() == 0
    await store.put_records([record("a"), record("b"), record("a")])
    assert await store.count() == 2


# -- two stores on one backend -----------------------------------------------------------------


async def test_a_record_written_by_one_store_is_labelled_through_another(
    make_store: MakeStore,
) -> None:
    one, two = await make_store(), await make_store()
    await one.put_records([record("a")])
    await two.put_shadows([shadow("a", "s1", [3])])

    [result] = await two.set_labels([("a", 1)], now=T0 + 1)

    assert result.record == Record("a", "iris", T0, "prod", [1, 0], {"s1": [3]}, 1, T0 + 1)
    assert await one.set_labels([("a", 1)], now=T0 + 1) == [LabelResult(LabelStatus.DUPLICATE)]
    assert await one.count() == await two.count() == 1


async def test_racing_sweeps_count_each_record_once(make_store: MakeStore) -> None:
    one, two = await make_store(max_records=1000), await make_store(max_records=1000)
    fresh = T0 + TTL + TOMBSTONE + 100
    await one.put_records([record(f"old{i:04}", T0 + i % 50) for i in range(1500)])
    await two.put_records([record(f"new{i:04}", fresh + i) for i in range(1200)])

    removed = await asyncio.gather(*(s.remove_old(fresh) for s in (one, two, one, two)))

    assert sum(r.expired for r in removed) == 1500
    assert sum(r.evicted for r in removed) == 200
    assert await one.count() == 1000
    results = await two.set_labels([("new0199", 1), ("new0200", 1)], now=fresh)
    assert [r.status for r in results] == [LabelStatus.UNKNOWN_ID, LabelStatus.JOINED]


async def test_concurrent_labels_join_once(make_store: MakeStore) -> None:
    one, two = await make_store(), await make_store()
    await one.put_records([record(f"r{i}") for i in range(200)])
    items = [(f"r{i}", i) for i in range(200)]

    results = await asyncio.gather(one.set_labels(items, T0 + 1), two.set_labels(items, T0 + 1))

    statuses = [r.status for batch in results for r in batch]
    assert statuses.count(LabelStatus.JOINED) == 200
    assert statuses.count(LabelStatus.DUPLICATE) == 200


# -- size and lifecycle ------------------------------------------------------------------------


async def test_large_batches(store: PredictionStore) -> None:
    await store.put_records([record(f"r{i}", T0 + i) for i in range(1000)])
    results = await store.set_labels([(f"r{i}", i % 3) for i in range(1000)], now=T0 + 1000)

    assert [r.status for r in results] == [LabelStatus.JOINED] * 1000
    assert [r.record.label for r in results if r.record] == [i % 3 for i in range(1000)]
    assert await store.count() == 1000


async def test_close_is_idempotent_and_final(store: PredictionStore) -> None:
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.count()
    with pytest.raises(StoreUnavailable):
        await store.put_records([record("a")])


async def test_empty_batches(store: PredictionStore) -> None:
    await store.put_records([])
    assert await store.put_shadows([]) == []
    assert await store.set_labels([], now=T0) == []


# -- SQLite only -------------------------------------------------------------------------------


async def test_sqlite_keeps_records_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "predictions.db"
    first = SqliteStore(path, ttl=TTL)
    await first.start()
    await first.put_records([record("a")])
    await first.put_shadows([shadow("a", "s1", [2])])
    await first.close()

    second = SqliteStore(path, ttl=TTL)
    await second.start()
    try:
        [result] = await second.set_labels([("a", "cat")], now=T0 + 1)
        assert result.record == Record("a", "iris", T0, "prod", [1, 0], {"s1": [2]}, "cat", T0 + 1)
        assert await second.count() == 1
    finally:
        await second.close()


async def test_sqlite_unavailable_when_the_path_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = SqliteStore(tmp_path / "file" / "predictions.db", ttl=TTL)
    with pytest.raises(StoreUnavailable, match=r"predictions\.db"):
        await store.start()
    with pytest.raises(StoreUnavailable):
        await store.count()
    await store.close()


async def test_sqlite_unavailable_when_the_path_is_a_directory(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path, ttl=TTL)
    with pytest.raises(StoreUnavailable):
        await store.start()
    await store.close()


# -- Redis only --------------------------------------------------------------------------------


async def test_redis_expires_record_keys_itself(redis_server: RedisServer) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    store = RedisStore(redis_server.url, ttl=100.5, tombstone_ttl=50, prefix=prefix)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await store.start()
        await store.put_records([record("a")])
        await store.set_labels([("a", 1)], now=T0)
        assert 150 <= await client.ttl(f"{prefix}rec:a") <= 151
        assert await client.zscore(f"{prefix}index", "a") == T0
    finally:
        await client.aclose()
        await store.close()


async def test_redis_counts_a_key_that_redis_expired_as_expired(redis_server: RedisServer) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    store = RedisStore(redis_server.url, ttl=TTL, max_records=1, prefix=prefix)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await store.start()
        await store.put_records([record("a", T0), record("b", T0 + 1), record("c", T0 + 2)])
        await client.delete(f"{prefix}rec:a")  # as if Redis's EXPIRE had removed it

        assert await store.remove_old(T0 + 3) == Removed(expired=1, evicted=1)
        assert await client.zrange(f"{prefix}index", 0, -1) == [b"c"]
        assert await client.exists(f"{prefix}rec:b") == 0
    finally:
        await client.aclose()
        await store.close()


async def test_redis_reloads_scripts_that_redis_lost(redis_server: RedisServer) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    store = RedisStore(redis_server.url, ttl=TTL, prefix=prefix)
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await store.start()
        await client.script_flush()
        await store.put_records([record("a"), record("b")])
        assert await store.count() == 2
    finally:
        await client.aclose()
        await store.close()


async def test_redis_unavailable_fails_fast() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", ttl=TTL, timeout=0.2)
    calls: list[Callable[[], Awaitable[object]]] = [
        store.start,
        lambda: store.put_records([record("a")]),
        lambda: store.put_shadows([shadow("a")]),
        lambda: store.set_labels([("a", 1)], now=T0),
        lambda: store.remove_old(T0),
        store.count,
    ]
    try:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            assert time.monotonic() - started < 1.0
            assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    finally:
        await store.close()


async def test_redis_errors_name_the_url_without_its_passwords() -> None:
    port = free_port()
    store = RedisStore(
        f"redis://app:s3cret@127.0.0.1:{port}/0?password=s3cret", ttl=TTL, timeout=0.2
    )
    shown = f"redis://app:<redacted>@127.0.0.1:{port}/0?password=<redacted>"
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.start()
        assert str(caught.value).startswith(f"prediction store {shown}: ConnectionError: ")
        assert "s3cret" not in str(caught.value)
    finally:
        await store.close()
    with pytest.raises(StoreUnavailable) as caught:
        await store.count()
    assert str(caught.value) == f"prediction store {shown} is closed"


async def test_redis_stopped_mid_use(own_redis_server: RedisServer) -> None:
    store = RedisStore(own_redis_server.url, ttl=TTL, timeout=0.2)
    try:
        await store.start()
        await store.put_records([record("a")])
        own_redis_server.stop()

        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.set_labels([("a", 1)], now=T0)
        with pytest.raises(StoreUnavailable):
            await store.put_records([record("b")])
        assert time.monotonic() - started < 1.0
    finally:
        await store.close()


async def test_redis_that_does_not_answer_times_out(own_redis_server: RedisServer) -> None:
    store = RedisStore(own_redis_server.url, ttl=TTL, timeout=0.2)
    try:
        await store.start()
        own_redis_server.process.send_signal(signal.SIGSTOP)

        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await store.set_labels([("a", 1)], now=T0)
        assert time.monotonic() - started < 1.0
        assert isinstance(caught.value.__cause__, redis.exceptions.TimeoutError)

        own_redis_server.process.send_signal(signal.SIGCONT)
        assert await store.count() == 0  # and it recovers once Redis answers again
    finally:
        await store.close()


async def test_get_records_returns_what_is_stored(store: PredictionStore) -> None:
    await store.put_records([record("a"), record("b")])
    await store.put_shadows([shadow("a", "s1", [1, 1])])
    await store.set_labels([("b", 0)], now=T0 + 1)
    assert await store.get_records(["a", "b", "nope", "a"]) == {
        "a": Record("a", "iris", T0, "prod", [1, 0], {"s1": [1, 1]}),
        "b": Record("b", "iris", T0, "prod", [1, 0], {}, 0, T0 + 1),
    }
    assert await store.get_records([]) == {}


async def test_remove_old_counts_exactly_across_chunks(make_store: MakeStore) -> None:
    store = await make_store(max_records=1000)
    await store.put_records([record(f"old{i}", T0) for i in range(2500)])
    await store.put_records([record(f"new{i}", T0 + TTL + TOMBSTONE + i) for i in range(1200)])
    assert await store.remove_old(T0 + TTL + TOMBSTONE + 1) == Removed(expired=2500, evicted=200)
    assert await store.count() == 1000


async def test_sqlite_keeps_its_write_ahead_log_under_its_bound(tmp_path: Path) -> None:
    """A passive checkpoint never shrinks the WAL (a soak grew it to 4.86 GB): past half its
    bound, the checkpoint truncates it, even while another connection reads."""
    limit = 256 * 1024
    store = SqliteStore(tmp_path / "p.db", ttl=TTL, wal_limit=limit)
    await store.start()
    reader = sqlite3.connect(tmp_path / "p.db")
    try:
        big = [list(range(200))]
        for batch in range(20):
            await store.put_records([record(f"r{batch}-{i}", predictions=big) for i in range(50)])
        assert store.file_sizes()["wal"] > limit  # no checkpoint yet: it grew
        reader.execute("SELECT count(*) FROM records").fetchone()  # a reader, then idle
        await store.checkpoint()  # what the background loop runs every second
        sizes = store.file_sizes()
        assert sizes["wal"] <= limit
        assert sizes["database"] > limit  # the records went to the database file
        assert await store.count() == 1000
    finally:
        reader.close()
        await store.close()


async def test_put_shadows_names_the_orphans(store: PredictionStore) -> None:
    await store.put_records([record("a")])
    known, orphan = shadow("a", "s1", [1]), shadow("never-stored", "s1", [1])
    put = await store.put_shadows([known, orphan])
    assert put == []  # no late join: "a" has no label yet
    assert put.orphans == [orphan]


async def test_a_write_to_a_frozen_redis_times_out_and_is_applied_on_resume(
    own_redis_server: RedisServer,
) -> None:
    """A frozen Redis (SIGSTOP) holds the write it was sent and runs it when it resumes: the
    store says it timed out (it may still be applied), not that it was lost, which is what the
    recorder counted before (34 writes counted as dropped had in fact been written)."""
    server = own_redis_server
    store = RedisStore(server.url, ttl=TTL, timeout=0.3, prefix=f"frozen-{uuid.uuid4().hex}:")
    await store.start()
    try:
        await store.put_records([record("before")])
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreTimedOut, match="no answer in time; the write may still be"):
                await store.put_records([record("frozen")])
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert set(await store.get_records(["before", "frozen"])) == {"before", "frozen"}
    finally:
        await store.close()


async def test_sqlite_removes_the_oldest_records_beyond_max_disk(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db", ttl=TTL, max_disk=1024 * 1024)
    await store.start()
    try:
        big = [list(range(300))]  # about 1.2 kB of predictions per record
        for batch in range(20):
            await store.put_records(
                [record(f"r{batch:02}-{i:02}", created=T0 + batch, predictions=big)
                 for i in range(100)]
            )  # fmt: skip
        removed = await store.remove_old(T0 + 30)
        assert (removed.expired, removed.evicted) == (0, 0)
        assert removed.over_disk > 0
        left = await store.count()
        assert left + removed.over_disk == 2000
        # The oldest went first: what is left is the newest batches, whole.
        newest = await store.get_records([f"r19-{i:02}" for i in range(100)])
        assert len(newest) == 100
        assert await store.get_records(["r00-00"]) == {}
        # Under the bound now: a second sweep removes nothing.
        assert await store.remove_old(T0 + 30) == Removed()
    finally:
        await store.close()

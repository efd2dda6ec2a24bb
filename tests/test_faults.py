"""The fault matrix: a shadow or production that misbehaves as real servers do, on a real socket
(slow, blackholed, resetting, answering garbage, invalid HTTP, a wrong Content-Length, byte by
byte; down, timing out, truncating), with labelled traffic through the proxy. Each case asserts
that production's answers are exactly what production gave (or its own fault's 502/504), that
every copy and every label is accounted for, and which counter says what happened."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import pytest

from tests.conftest import (
    FakeModelFactory,
    ProxyFactory,
    RedisServer,
    RunningProxy,
    free_port,
    v1,
)

ROUTE = "/v1/models/m:predict"
N = 20
OK_BODY = b'{"predictions": [1]}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(OK_BODY),
    OK_BODY,
)

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> bool:
    """Read one whole request (by Content-Length); False at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return True


async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await _request(reader):
        await asyncio.sleep(1.0)  # beyond the 0.2 s timeout
        writer.write(OK)


async def blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # reads everything, answers nothing


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await _request(reader):
        writer.transport.abort()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await _request(reader):
        writer.write(b"\x00\xff\xfe this is not HTTP \r\n\r\n")
        await writer.drain()


async def invalid_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await _request(reader):
        writer.write(b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def truncating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Declares 100 bytes, sends 10, closes."""
    if await _request(reader):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()


async def byte_by_byte(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await _request(reader):
        for i in range(len(OK)):
            writer.write(OK[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.001)


@dataclass
class Raw:
    url: str
    server: asyncio.Server
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Behaviour], Awaitable[str]]]:
    servers: list[Raw] = []

    async def start(behaviour: Behaviour) -> str:
        raw: Raw

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            raw.tasks.add(task)
            try:
                await behaviour(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        raw = Raw(f"http://127.0.0.1:{port}", server)
        servers.append(raw)
        return raw.url

    yield start
    for raw in servers:
        raw.server.close()
        for task in raw.tasks:
            task.cancel()
        await asyncio.gather(*raw.tasks, return_exceptions=True)
        await raw.server.wait_closed()


def config(production: str, shadow: str, tmp: str, timeout: str = "200ms") -> str:
    return f"""
store: {{path: '{tmp}/p.db', flush_interval: 1ms}}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    production: {{name: prod, url: "{production}{ROUTE}", timeout: {timeout}}}
    shadows: [{{name: s, url: "{shadow}{ROUTE}", timeout: 200ms, eject_after: 1000}}]
"""


async def traffic(p: RunningProxy) -> list[int]:
    statuses = []
    for i in range(N):
        status, _, _ = await p.post(ROUTE, {"instances": [i]}, headers={"X-Request-ID": f"r{i}"})
        statuses.append(status)
    await p.settled()
    return statuses


async def post_labels(p: RunningProxy) -> dict[str, int]:
    status, _, body = await p.post(
        "/labels", [{"request_id": f"r{i}", "label": 1} for i in range(N)]
    )
    assert status == 200
    counts: dict[str, int] = orjson.loads(body)["counts"]
    return {k: v for k, v in counts.items() if v}


SHADOW_FAULTS = [
    (slow, "timeout"),
    (blackhole, "timeout"),
    (reset, "connect_error"),
    (garbage, "connect_error"),
    (invalid_http, "connect_error"),
    (truncating, "connect_error"),
    (byte_by_byte, "ok"),
]


@pytest.mark.parametrize(
    ("behaviour", "outcome"), SHADOW_FAULTS, ids=lambda x: getattr(x, "__name__", x)
)
async def test_a_misbehaving_shadow_never_touches_production(
    fake_model: FakeModelFactory,
    proxy: ProxyFactory,
    raw_server: Callable[[Behaviour], Awaitable[str]],
    tmp_path: object,
    behaviour: Behaviour,
    outcome: str,
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    shadow = await raw_server(behaviour)
    p = await proxy(config(prod.url, shadow, str(tmp_path)))
    assert await traffic(p) == [200] * N
    shadow_labels = {"route": ROUTE, "target": "s", "role": "shadow"}
    outcomes = {
        o: p.value("shadowproxy_upstream_requests_total", **shadow_labels, outcome=o)
        for o in ("ok", "http_error", "timeout", "connect_error", "too_large")
    }
    # Every copy sent, and each counted once, under what happened to it.
    assert p.value("shadowproxy_shadow_enqueued_total", route=ROUTE, shadow="s") == N
    assert {o: v for o, v in outcomes.items() if v} == {outcome: N}
    failed = p.value(
        "shadowproxy_comparisons_total", route=ROUTE, shadow="s", result="shadow_failed"
    )
    assert failed == (0 if outcome == "ok" else N)
    production = {"route": ROUTE, "target": "prod", "role": "production"}
    assert p.value("shadowproxy_upstream_requests_total", **production, outcome="ok") == N
    # Every label joins production's prediction, whatever the shadow did.
    assert await post_labels(p) == {"joined": N}


PRODUCTION_FAULTS = [
    ("down", 502, "connect_error"),
    ("blackhole", 504, "timeout"),
    ("reset", 502, "connect_error"),
    ("truncating", 502, "connect_error"),
]


@pytest.mark.parametrize(("fault", "status", "outcome"), PRODUCTION_FAULTS)
async def test_a_failing_production_gives_its_own_error_and_nothing_else(
    fake_model: FakeModelFactory,
    proxy: ProxyFactory,
    raw_server: Callable[[Behaviour], Awaitable[str]],
    tmp_path: object,
    fault: str,
    status: int,
    outcome: str,
) -> None:
    behaviours = {"blackhole": blackhole, "reset": reset, "truncating": truncating}
    production = (
        f"http://127.0.0.1:{free_port()}"
        if fault == "down"
        else await raw_server(behaviours[fault])
    )
    shadow = await fake_model(lambda r: v1([1]))
    # 200 ms for the blackhole to time out in; the others fail by themselves, and a loaded
    # machine must not turn their retried connection into a timeout (seen once in a full run).
    timeout = "200ms" if fault == "blackhole" else "5s"
    p = await proxy(config(production, shadow.url, str(tmp_path), timeout))
    assert await traffic(p) == [status] * N
    labels = {"route": ROUTE, "target": "prod", "role": "production"}
    outcomes = {
        o: p.value("shadowproxy_upstream_requests_total", **labels, outcome=o)
        for o in ("ok", "http_error", "timeout", "connect_error", "too_large")
    }
    assert {o: v for o, v in outcomes.items() if v} == {outcome: N}
    # No production answer, so nothing to record (its outcome counter above says why), and
    # each label is told its request is unknown.
    assert p.value("shadowproxy_recorded_total", route=ROUTE, kind="record") == 0
    assert await post_labels(p) == {"unknown_id": N}


# -- the store ---------------------------------------------------------------------------------


def redis_config(production: str, shadow: str, url: str) -> str:
    return f"""
store: {{backend: redis, url: '{url}', timeout: 200ms, flush_interval: 1ms}}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    production: {{name: prod, url: "{production}{ROUTE}"}}
    shadows: [{{name: s, url: "{shadow}{ROUTE}"}}]
"""


def recording(p: RunningProxy) -> dict[str, float]:
    found = {"written": p.value("shadowproxy_recorded_total", route=ROUTE, kind="record")}
    for reason in ("queue_full", "store_unavailable", "timed_out", "no_predictions"):
        found[reason] = p.value(
            "shadowproxy_recording_dropped_total", route=ROUTE, kind="record", reason=reason
        )
    return {k: v for k, v in found.items() if v}


async def test_a_frozen_redis_never_touches_production_and_every_write_is_accounted(
    fake_model: FakeModelFactory, proxy: ProxyFactory, own_redis_server: RedisServer
) -> None:
    server = own_redis_server
    prod = await fake_model(lambda r: v1([1]))
    shadow = await fake_model(lambda r: v1([1]))
    p = await proxy(redis_config(prod.url, shadow.url, server.url))
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        assert await traffic(p) == [200] * N  # production, whatever the store does
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    counts = recording(p)
    # Every write is either known written, known lost, or sent and unanswered in time.
    assert sum(counts.values()) == N
    assert set(counts) <= {"written", "timed_out", "store_unavailable"}
    # A timed-out write may or may not have been applied: a frozen Redis runs what it had
    # received once it resumes. The labels say which: every write known written joins, and
    # no more than the written and the timed-out ones do.
    labels = await post_labels(p)
    assert set(labels) <= {"joined", "unknown_id"}
    assert sum(labels.values()) == N
    written, timed_out = counts.get("written", 0), counts.get("timed_out", 0)
    assert written <= labels.get("joined", 0) <= written + timed_out


async def test_a_restarted_redis_is_used_again_by_itself(
    fake_model: FakeModelFactory, proxy: ProxyFactory, own_redis_server: RedisServer
) -> None:
    server = own_redis_server
    prod = await fake_model(lambda r: v1([1]))
    shadow = await fake_model(lambda r: v1([1]))
    p = await proxy(redis_config(prod.url, shadow.url, server.url))
    server.stop()
    assert await traffic(p) == [200] * N
    assert recording(p) == {"store_unavailable": N}
    restarted = RedisServer(port=server.port)
    try:
        for i in range(N, 2 * N):
            status, _, _ = await p.post(
                ROUTE, {"instances": [i]}, headers={"X-Request-ID": f"r{i}"}
            )
            assert status == 200
        await p.settled()
        assert recording(p) == {"store_unavailable": N, "written": N}
        status, _, body = await p.post(
            "/labels", [{"request_id": f"r{i}", "label": 1} for i in range(2 * N)]
        )
        assert status == 200
        counts = {k: v for k, v in orjson.loads(body)["counts"].items() if v}
        assert counts == {"unknown_id": N, "joined": N}
    finally:
        restarted.stop()

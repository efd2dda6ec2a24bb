"""Tests for loadtest.raw_backend, the benchmark's model-server stand-in: real servers on port 0,
driven by aiohttp's client and by raw sockets."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from loadtest.raw_backend import BackendOptions, RawBackend

REPO_ROOT = Path(__file__).resolve().parent.parent
PREDICT = "/v1/models/m:predict"

Serve = Callable[..., Awaitable[RawBackend]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start stand-ins on port 0; every one is stopped at teardown."""
    started: list[RawBackend] = []

    async def start(**options: Any) -> RawBackend:
        backend = RawBackend(BackendOptions(**options))
        assert await backend.start() == backend.port > 0
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def instances(count: int) -> dict[str, Any]:
    return {"instances": [[float(i), 1.0] for i in range(count)]}


async def predict(session: aiohttp.ClientSession, backend: RawBackend, count: int) -> Any:
    async with session.post(backend.url + PREDICT, json=instances(count)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        return await resp.json()


class RawClient:
    """One keep-alive connection: write bytes, read exact HTTP answers back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, backend: RawBackend) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", backend.port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """(status line, headers lower-cased, body) of the next answer."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, *lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b": ")
            headers[name.lower()] = value
        body = await self.reader.readexactly(int(headers[b"content-length"]))
        return status, headers, body

    async def closed(self) -> bool:
        return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def post(body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)
    )


GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_production_answers_one_prediction_per_instance_exactly(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    backend = await serve()
    assert await predict(session, backend, 4) == {"predictions": [0, 1, 2, 0]}
    assert await predict(session, backend, 1) == {"predictions": [0]}
    assert await predict(session, backend, 0) == {"predictions": []}
    assert backend.stats() == {
        "requests": 3,
        "answered": 3,
        "instances": 5,
        "flipped": 0,
        "hanging": 0,
    }


async def test_disagreement_flips_an_exact_evenly_spread_share_of_instances(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    # disagree 0.25: of instances 0, 1, 2, ... the ones numbered 3, 7, 11, 15 flip.
    backend = await serve(disagree=0.25, classes=2)
    answers = [(await predict(session, backend, 2))["predictions"] for _ in range(8)]
    assert answers == [[0, 1], [0, 0], [0, 1], [0, 0], [0, 1], [0, 0], [0, 1], [0, 0]]
    assert backend.flipped == 4
    assert backend.instances == 16
    async with session.get(backend.url + "/stats") as resp:
        assert await resp.json() == {
            "requests": 8,
            "answered": 8,
            "instances": 16,
            "flipped": 4,
            "hanging": 0,
        }


async def test_errors_are_json_with_exact_statuses(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    backend = await serve()
    async with session.post(backend.url + PREDICT, data=b"not json") as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": 'expected {"instances": [...]}'}
    async with session.post(backend.url + PREDICT, json={"instances": 3}) as resp:
        assert resp.status == 400
    async with session.get(backend.url + PREDICT) as resp:
        assert resp.status == 405
        assert await resp.json() == {"error": "POST only"}
    async with session.get(backend.url + "/nowhere") as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "not found"}
    async with session.get(backend.url + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.text() == '"ok"'
    assert backend.requests == 2  # the two POSTs to the prediction path
    assert backend.answered == 5


async def test_keep_alive_until_the_client_asks_to_close(serve: Serve) -> None:
    backend = await serve()
    client = await RawClient.connect(backend)
    body = orjson.dumps(instances(2))
    for _ in range(3):
        client.send(post(body))
        assert await client.answer() == (
            b"HTTP/1.1 200 OK",
            {b"content-type": b"application/json", b"content-length": b"21"},
            b'{"predictions":[0,1]}',
        )
    client.send(post(body, extra=b"Connection: close\r\n"))
    status, headers, answer = await client.answer()
    assert (status, headers[b"connection"], answer) == (
        b"HTTP/1.1 200 OK",
        b"close",
        b'{"predictions":[0,1]}',
    )
    assert await client.closed()
    assert backend.answered == 4
    await client.close()


async def test_pipelined_requests_are_answered_in_order(serve: Serve) -> None:
    backend = await serve(latency=0.05)
    client = await RawClient.connect(backend)
    # Health answers at once, predictions after 50 ms: the order must still be the requests'.
    client.send(
        post(orjson.dumps(instances(1)))
        + GET_HEALTH
        + post(orjson.dumps(instances(3)))
        + b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    bodies = [(await client.answer())[2] for _ in range(4)]
    assert bodies[:3] == [b'{"predictions":[0]}', b'"ok"', b'{"predictions":[0,1,2]}']
    assert orjson.loads(bodies[3])["requests"] == 2
    await client.close()


async def test_chunked_request_bodies_are_read(serve: Serve) -> None:
    backend = await serve()
    client = await RawClient.connect(backend)
    chunks = [b'{"inst', b'ances": [1, 2]}', b""]
    client.send(
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    )
    assert (await client.answer())[2] == b'{"predictions":[0,1]}'
    await client.close()


async def test_garbage_gets_400_and_a_closed_connection(serve: Serve) -> None:
    backend = await serve()
    client = await RawClient.connect(backend)
    client.send(b"NOT HTTP AT ALL\r\n\r\n")
    status, headers, body = await client.answer()
    assert (status, headers[b"connection"], body) == (
        b"HTTP/1.1 400 Bad Request",
        b"close",
        b'{"error":"malformed request"}',
    )
    assert await client.closed()
    await client.close()


async def test_latency_delays_each_answer(serve: Serve, session: aiohttp.ClientSession) -> None:
    backend = await serve(latency=0.2)
    started = time.monotonic()
    answers = await asyncio.gather(*(predict(session, backend, 1) for _ in range(4)))
    elapsed = time.monotonic() - started
    assert answers == [{"predictions": [0]}] * 4
    # Concurrent requests each wait 200 ms, not one after another.
    assert 0.2 <= elapsed < 0.8
    async with session.get(backend.url + "/healthz") as resp:
        assert resp.status == 200


async def test_blackhole_reads_and_never_answers(serve: Serve) -> None:
    backend = await serve(blackhole=True)
    client = await RawClient.connect(backend)
    client.send(post(orjson.dumps(instances(1))))
    await backend.wait_hanging(1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.reader.read(1), 0.2)
    # Health still answers, on another connection.
    other = await RawClient.connect(backend)
    other.send(GET_HEALTH)
    assert (await other.answer())[2] == b'"ok"'
    assert backend.stats() == {
        "requests": 1,
        "answered": 1,
        "instances": 0,
        "flipped": 0,
        "hanging": 1,
    }
    await client.close()
    await backend.wait_hanging(0)
    await other.close()


async def test_big_answers_are_valid_json_of_about_the_size_asked(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    size = 50 * 1024 * 1024
    backend = await serve(answer_bytes=size, disagree=0.5, classes=2)
    # Instances 1, 3 and 5 flip: [0, 1->0, 0], then [0->1, 1, 0->1].
    for expected in ([0, 0, 0], [1, 1, 1]):
        async with session.post(backend.url + PREDICT, json=instances(3)) as resp:
            assert resp.status == 200
            body = await resp.read()
        assert size - 64 <= len(body) <= size + 64
        assert int(resp.headers["Content-Length"]) == len(body)
        doc = orjson.loads(body)
        assert doc["predictions"] == expected
        assert doc["padding"] == "x" * (size - 64)


async def test_command_line_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.raw_backend",
        "--port",
        "0",
        "--latency",
        "10ms",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        async with aiohttp.ClientSession() as client:
            async with client.post(url + PREDICT, json=instances(2)) as resp:
                assert await resp.json() == {"predictions": [0, 1]}
            async with client.get(url + "/healthz") as resp:
                assert resp.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()


async def test_command_line_refuses_a_bad_option() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.raw_backend",
        "--disagree",
        "1.5",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "disagree must be in [0, 1], got 1.5" in stderr.decode()

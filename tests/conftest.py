"""Test fixtures: scripted fake model servers, and the proxy under test, on port 0."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import uvloop
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpServer
from yarl import URL

from proxy.analysis.state import STATE, ProxyState
from proxy.config import load_config, parse_config
from proxy.front import client
from proxy.processes.inline import Inline, start_inline


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """The front runs on uvloop in production, so its tests do too; the rest keep asyncio's."""
    if item.path.name.startswith("test_front_"):
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@dataclass
class Received:
    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    hang: bool = False
    wait: asyncio.Event | None = None  # answer only once this is set
    stream: bool = False  # write the body 64 KiB at a time, each write awaited
    chunked: bool = False  # stream it chunked, without a Content-Length


Script = Callable[[Received], Answer]


class FakeModel:
    """An aiohttp model server on 127.0.0.1:0 (pytest-aiohttp's test server) that records every
    request and answers by script.

    >>> model = await fake_model(lambda req: Answer(body=b'{"predictions": [1]}'))
    >>> await model.wait_for(3)        # until 3 requests have arrived
    >>> await model.until(lambda: model.cut == 3)
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[Received] = []
        self.answered = 0
        self.cut = 0  # streamed answers the client stopped reading before their end
        self.streamed = 0  # bytes of streamed bodies written
        self._arrived = asyncio.Condition()  # notified as requests arrive and streams are cut
        self._hung: asyncio.Future[None] | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = Received(
            request.method, request.raw_path, request.headers.copy(), await request.read()
        )  # type: ignore[arg-type]
        self.received.append(record)
        async with self._arrived:
            self._arrived.notify_all()
        answer = self.script(record)
        if answer.hang:
            await asyncio.Future()
        if answer.wait is not None:
            await answer.wait.wait()
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.stream or answer.chunked:
            return await self._stream(request, answer)
        self.answered += 1
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def _stream(self, request: web.Request, answer: Answer) -> web.StreamResponse:
        response = web.StreamResponse(status=answer.status, headers=answer.headers)
        if answer.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(answer.body)
        body = memoryview(answer.body)
        try:
            await response.prepare(request)
            for start in range(0, len(body), 65536):
                piece = body[start : start + 65536]
                await response.write(piece)
                self.streamed += len(piece)
            await response.write_eof()
        except asyncio.CancelledError:  # the client went: the test server cancels handlers
            await self._cut()
            raise
        except ConnectionError:  # the client went, found by a write
            await self._cut()
            return response
        self.answered += 1
        return response

    async def _cut(self) -> None:
        self.cut += 1
        async with self._arrived:
            self._arrived.notify_all()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def wait_for(self, count: int) -> None:
        """Wait until `count` requests have arrived (event-driven, with a safety timeout)."""
        await self.until(lambda: len(self.received) >= count)

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait until `done()`, checked as requests arrive and streams are cut."""
        async with asyncio.timeout(10), self._arrived:
            await self._arrived.wait_for(done)


FakeModelFactory = Callable[[Script], Awaitable[FakeModel]]


@pytest.fixture
async def fake_model(aiohttp_server: AiohttpServer) -> FakeModelFactory:
    async def factory(script: Script) -> FakeModel:
        model = FakeModel(script)
        server = await aiohttp_server(model.app(), host="127.0.0.1")
        model.url = str(server.make_url("")).rstrip("/")
        return model

    return factory


@dataclass
class RunningProxy:
    url: str
    app: web.Application
    registry: CollectorRegistry
    session: aiohttp.ClientSession
    inline: Inline  # the front and the analysis process, in this loop
    urls: dict[str, str]  # per listener: proxy, and metrics and admin when configured apart

    async def stop(self) -> None:
        """Shut down gracefully, as on SIGTERM (idempotent)."""
        await self.session.close()
        await self.inline.stop()

    @property
    def admin_url(self) -> str:
        return self.urls.get("admin", self.url)

    @property
    def metrics_url(self) -> str:
        return self.urls.get("metrics", self.url)

    @property
    def state(self) -> ProxyState:
        return self.app[STATE]

    async def settled(self) -> None:
        """Wait until every shadow request queued so far has been answered and compared, and
        every store write queued so far has been handled."""
        await self.inline.handed_off()
        await asyncio.gather(*(r.shadows.join() for r in self.state.routes))
        if self.state.recorder is not None:
            await self.state.recorder.flush()

    def value(self, name: str, **labels: str) -> float:
        """A sample's value, 0.0 when the series does not exist yet."""
        self.state.metrics.flush()  # the batched ones: what a scrape would see
        return self.registry.get_sample_value(name, labels) or 0.0

    async def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, CIMultiDict[str], bytes]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        url = URL(self.url + path, encoded=True)  # sent exactly as written
        async with self.session.post(url, data=data, headers=headers, **kw) as r:
            answer = r.status, CIMultiDict(r.headers), await r.read()
        # The front hands the exchange off before it answers: once the analysis process has it,
        # what it counts on arrival (queued, skipped) can be read.
        await self.inline.handed_off()
        return answer


ProxyFactory = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyFactory]:
    """Start the proxy from YAML text on 127.0.0.1:0; stopped (and drained) at teardown."""
    started: list[RunningProxy] = []

    async def factory(yaml_text: str, path: Path | None = None) -> RunningProxy:
        """With `path`, the text is written there and loaded from it, so reloads can re-read."""
        if path is None:
            config = parse_config(yaml_text, "test.yaml", env={})
        else:
            await asyncio.to_thread(path.write_text, yaml_text)
            config = load_config(path, env={})
        registry = CollectorRegistry()
        inline = await start_inline(config, registry, at=("127.0.0.1", 0))
        session = aiohttp.ClientSession(auto_decompress=False)
        urls = inline.urls
        started.append(RunningProxy(urls["proxy"], inline.app, registry, session, inline, urls))
        return started[-1]

    yield factory
    for running in started:
        await running.stop()


class BodyHeld:
    """The most bytes of one answer's body that any connection of the front's client held at
    once: what its answer cap bounds (memory), seen by a spy on its parser callback."""

    most = 0


@pytest.fixture
def body_held(monkeypatch: pytest.MonkeyPatch) -> BodyHeld:
    held = BodyHeld()

    class Spy(client._Connection):
        def on_body(self, chunk: bytes) -> None:
            super().on_body(chunk)  # raises, holding nothing more, past the cap
            held.most = max(held.most, self._size)

    monkeypatch.setattr(client, "_Connection", Spy)
    return held


def v1(predictions: list[Any]) -> Answer:
    """A KServe v1 answer."""
    return Answer(body=orjson.dumps({"predictions": predictions}))


# -- a redis-server of our own -----------------------------------------------------------------


class RedisServer:
    """A redis-server process on a free port of 127.0.0.1, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        """A new server; `port` starts it on a given port (a restart, as far as a client can
        tell)."""
        if shutil.which("redis-server") is None:
            pytest.fail("the tests need redis-server on PATH (.ci/setup installs it)")
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._answers_ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)  # process start-up only

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16) == b"+PONG\r\n"
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test paused it
            self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_terminal(primary: int) -> bytes:
    """Everything written to a pty until its last writer closes it; closes `primary`."""
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: every writer of the terminal has closed it
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
    return out

"""The front's HTTP/1.1 server over real sockets: raw bytes (smuggling, pipelining, slowloris,
garbage, limits, 100-continue), curl, http.client and aiohttp's client. An echo application
records exactly what it was handed."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import http.client
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.front.faults import Fault, Tally
from proxy.front.server import HttpConnection, Limits, Request, Response, Server

# -- the application and the server under test -------------------------------------------------


class Changed:
    """Set on every protocol event, count and application step, so a test can wait for a
    condition on the server's state without sleeping."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def poke(self) -> None:
        self.event.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not condition():
                self.event.clear()
                await self.event.wait()


@dataclass
class Echo:
    """Records every request; answers 200 with the body it got, unless `answer` says else.
    `gate`, when set, holds every call until it is set."""

    requests: list[Request] = field(default_factory=list)
    answer: Callable[[Request], Response] | None = None
    gate: asyncio.Event | None = None
    raise_exc: Exception | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    changed: Changed = field(default_factory=Changed)
    running: int = 0
    most_running: int = 0
    finished: int = 0

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        self.arrived.set()
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.raise_exc is not None:
                raise self.raise_exc
            if self.answer is not None:
                return self.answer(request)
            return Response(200, [(b"Content-Type", b"application/octet-stream")], request.body)
        finally:
            self.running -= 1
            self.finished += 1
            self.changed.poke()


@dataclass
class CallbackEcho(Echo):
    """The same application answering through `respond` (a CallbackApplication, the hot
    path's way): the server runs no task for it. It raises from `begin` itself when told to
    raise and not gated, so the server's handling of a synchronous failure is what is tested."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def begin(self, request: Request, respond: Callable[[Response], None]) -> None:
        if self.raise_exc is not None and self.gate is None:
            self.requests.append(request)
            self.finished += 1
            self.changed.poke()
            raise self.raise_exc

        async def run() -> None:
            respond(await self(request))

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class WatchedTally(Tally):
    def __init__(self, changed: Changed) -> None:
        super().__init__()
        self.changed = changed

    def __call__(self, fault: Fault) -> None:
        super().__call__(fault)
        self.changed.poke()


class WatchedConnection(HttpConnection):
    """Pokes the test on every transport event and reading change."""

    def _poke(self) -> None:
        app = self._server.app
        assert isinstance(app, Echo)
        app.changed.poke()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._poke()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._poke()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._poke()

    def _sync_reading(self) -> None:
        super()._sync_reading()
        self._poke()


class WatchedServer(Server):
    connection_class = WatchedConnection


@dataclass
class Front:
    server: Server
    app: Echo
    tally: Tally
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def raw(self, rcvbuf: int = 0) -> Raw:
        """A raw client; `rcvbuf` shrinks its socket's receive buffer, so that not reading
        fills the server's write buffer soon whatever the kernel's autotuning."""
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        return Raw(reader, writer)

    def connection(self) -> HttpConnection:
        (only,) = self.server.connections
        return only

    async def until(self, condition: Callable[[], bool]) -> None:
        await self.app.changed.until(condition)


Start = Callable[..., Awaitable[Front]]


@pytest.fixture(params=["task", "callback"])
async def front(request: pytest.FixtureRequest) -> AsyncIterator[Start]:
    """A server on port 0; every test runs with the application as a coroutine (a task per
    request) and as a CallbackApplication."""
    started: list[Server] = []
    apps: list[CallbackEcho] = []

    async def start(app: Echo | None = None, **limits: Any) -> Front:
        app = app if app is not None else Echo()
        if request.param == "callback":
            fields = {k: getattr(app, k) for k in ("answer", "gate", "raise_exc")}
            app = CallbackEcho(**fields)
            apps.append(app)
        tally = WatchedTally(app.changed)
        server = WatchedServer(app, Limits(**limits), count=tally)
        await server.start("127.0.0.1", 0)
        started.append(server)
        host, port = server.addresses[0]
        return Front(server, app, tally, host, port)

    yield start
    for server in started:
        await server.close(grace=1.0)
    for callback_app in apps:
        for task in callback_app.tasks:
            task.cancel()
        await asyncio.gather(*callback_app.tasks, return_exceptions=True)


class Raw:
    """A client that writes exactly the bytes given and reads exactly what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> bytes:
        """One whole response with a Content-Length (or none), as bytes."""
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            return head + await self.reader.readexactly(length)

    async def head_response(self) -> bytes:
        """A response that has no body whatever its Content-Length says (HEAD, 100)."""
        async with asyncio.timeout(10):
            return await self.reader.readuntil(b"\r\n\r\n")

    async def rest(self) -> bytes:
        """Everything until the server closes."""
        async with asyncio.timeout(10):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await self.writer.wait_closed()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)
    )


def error(status: int, phrase: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


# -- bodies, keep-alive, HEAD -------------------------------------------------------------------


async def test_keep_alive_requests_are_handed_over_byte_for_byte(front: Start) -> None:
    f = await front()
    raw = await f.raw()
    await raw.send(b"GET /a?x=1%20 HTTP/1.1\r\nHost: h\r\nX-Odd: \xff\xfe\x80 \r\n\r\n")
    assert await raw.response() == ok(b"")
    await raw.send(
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
        b"content-type: application/json\r\n\r\n\x00\x01{}\xff"
    )
    assert await raw.response() == ok(b"\x00\x01{}\xff")
    await raw.close()
    first, second = f.app.requests
    assert first == Request(
        "GET",
        b"/a?x=1%20",
        "1.1",
        [(b"Host", b"h"), (b"X-Odd", b"\xff\xfe\x80")],
        b"",
        True,
        "127.0.0.1",
    )
    assert second == Request(
        "POST",
        b"/v2/models/m/infer",
        "1.1",
        [(b"Host", b"h"), (b"Content-Length", b"5"), (b"content-type", b"application/json")],
        b"\x00\x01{}\xff",
        True,
        "127.0.0.1",
    )
    assert len(f.server.connections) <= 1
    assert f.tally.as_dict() == {}


async def test_a_chunked_body_is_joined_extensions_and_trailers_allowed(front: Start) -> None:
    f = await front()
    raw = await f.raw()
    await raw.send(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n1\r\n\xff\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    assert await raw.response() == ok(b"abc\xff")
    await raw.close()
    assert f.app.requests[0].body == b"abc\xff"
    assert f.app.requests[0].headers[1] == (b"Transfer-Encoding", b"chunked")


async def test_head_is_answered_without_a_body(front: Start) -> None:
    f = await front(Echo(answer=lambda r: Response(200, [(b"X", b"1")], b"hello")))
    raw = await f.raw()
    await raw.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.head_response() == b"HTTP/1.1 200 OK\r\nX: 1\r\nContent-Length: 5\r\n\r\n"
    # No body followed: the next answer starts right after the head.
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.response() == b"HTTP/1.1 200 OK\r\nX: 1\r\nContent-Length: 5\r\n\r\nhello"
    await raw.close()


async def test_head_keeps_the_length_the_application_gives(front: Start) -> None:
    answer = Response(200, [(b"Content-Length", b"1234")], b"")
    f = await front(Echo(answer=lambda r: answer))
    raw = await f.raw()
    await raw.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.head_response() == b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    await raw.close()


async def test_the_server_computes_framing_and_adds_no_other_header(front: Start) -> None:
    headers = [
        (b"Content-Length", b"999"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Keep-Alive", b"timeout=5"),  # asked for by the app: sent
        (b"X-Raw", b"\xe9t\xe9"),
    ]
    f = await front(Echo(answer=lambda r: Response(201, headers, b"abc", b"Made")))
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.response() == (
        b"HTTP/1.1 201 Made\r\nKeep-Alive: timeout=5\r\nX-Raw: \xe9t\xe9\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    await raw.close()


async def test_204_has_no_length_and_no_body(front: Start) -> None:
    f = await front(Echo(answer=lambda r: Response(204, [], b"ignored")))
    raw = await f.raw()
    await raw.send(b"DELETE /x HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.head_response() == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert await raw.head_response() == b"HTTP/1.1 204 No Content\r\n\r\n"
    await raw.close()


async def test_connection_close_from_the_client_or_the_app_closes(front: Start) -> None:
    f = await front()
    raw = await f.raw()
    # Bytes after the closing request in the same packet are ignored, not refused.
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /no HTTP/1.1\r\n")
    assert await raw.rest() == ok(b"", b"Connection: close\r\n")
    await raw.close()
    f.app.answer = lambda r: Response(200, [(b"Connection", b"close")], b"")
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.rest() == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    await raw.close()
    assert [r.target for r in f.app.requests] == [b"/", b"/"]
    assert f.tally.as_dict() == {}


async def test_http_1_0_closes_unless_keep_alive_is_asked(front: Start) -> None:
    f = await front()
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.0\r\n\r\n")
    assert await raw.rest() == ok(b"", b"Connection: close\r\n")
    await raw.close()
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert await raw.response() == ok(b"", b"Connection: keep-alive\r\n")
    await raw.send(b"GET /2 HTTP/1.0\r\n\r\n")
    assert await raw.rest() == ok(b"", b"Connection: close\r\n")
    await raw.close()
    assert [(r.version, r.keep_alive) for r in f.app.requests] == [
        ("1.0", False),
        ("1.0", True),
        ("1.0", False),
    ]


# -- pipelining and flow control ----------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order_one_at_a_time(front: Start) -> None:
    gate = asyncio.Event()
    f = await front(Echo(gate=gate))
    raw = await f.raw()
    await raw.send(
        b"POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\na"
        b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nc\r\n0\r\n\r\n"
    )
    await f.app.arrived.wait()
    assert [r.target for r in f.app.requests] == [b"/1"]  # the others wait their turn
    gate.set()
    assert [await raw.response() for _ in range(3)] == [ok(b"a"), ok(b""), ok(b"c")]
    assert [r.target for r in f.app.requests] == [b"/1", b"/2", b"/3"]
    assert f.app.most_running == 1
    await raw.close()


async def test_reading_pauses_when_the_pipeline_is_full(front: Start) -> None:
    gate = asyncio.Event()
    f = await front(Echo(gate=gate), max_pipeline=2)
    raw = await f.raw()
    await raw.send(b"GET /0 HTTP/1.1\r\nHost: h\r\n\r\n")
    await f.app.arrived.wait()
    connection = f.connection()
    for i in (1, 2):
        await raw.send(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
    await f.until(lambda: len(connection._queue) == 2)
    assert connection._reading is False
    gate.set()
    assert [await raw.response() for _ in range(3)] == [ok(b"")] * 3
    assert connection._reading is True
    await raw.close()


async def test_a_client_not_reading_stops_the_reading_then_times_out(front: Start) -> None:
    big = b"x" * (8 * 1024 * 1024)
    f = await front(Echo(answer=lambda r: Response(200, [], big)), send_timeout=0.2)
    raw = await f.raw(rcvbuf=4096)
    await raw.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    await f.app.arrived.wait()
    connection = f.connection()
    await f.until(lambda: connection.write_paused)
    # The second request waits while the first answer cannot be written.
    assert [r.target for r in f.app.requests] == [b"/1"]
    assert connection._reading is False
    await f.until(lambda: not f.server.connections)
    await raw.close()
    assert f.tally.as_dict() == {"timeout": 1}


async def test_a_slow_reader_gets_every_answer_in_order(front: Start) -> None:
    big = b"y" * (4 * 1024 * 1024)
    f = await front(Echo(answer=lambda r: Response(200, [], big + r.target)))
    raw = await f.raw(rcvbuf=4096)
    await raw.send(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    await f.app.arrived.wait()
    await f.until(lambda: f.connection().write_paused)
    assert len(f.app.requests) == 1
    first, second = await raw.response(), await raw.response()
    assert (first[-2:], second[-2:], len(first), len(second)) == (b"/1", b"/2", *[len(first)] * 2)
    await raw.close()


# -- 100-continue --------------------------------------------------------------------------------


async def test_expect_100_continue_is_answered_before_the_body(front: Start) -> None:
    f = await front()
    raw = await f.raw()
    await raw.send(
        b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    )
    assert await raw.head_response() == b"HTTP/1.1 100 Continue\r\n\r\n"
    await raw.send(b"body")
    assert await raw.response() == ok(b"body")
    await raw.close()


async def test_expect_100_continue_over_the_limit_is_refused_unread(front: Start) -> None:
    f = await front(max_body=10)
    raw = await f.raw()
    await raw.send(
        b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
    )
    assert await raw.rest() == error(413, "Request Entity Too Large", "request body too large")
    await raw.close()
    assert (f.app.requests, f.tally.as_dict()) == ([], {"body_too_large": 1})


async def test_an_unknown_expectation_is_refused(front: Start) -> None:
    f = await front()
    raw = await f.raw()
    await raw.send(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: tea\r\nContent-Length: 1\r\n\r\n")
    assert await raw.rest() == error(
        417, "Expectation Failed", "only Expect: 100-continue is supported"
    )
    await raw.close()


@pytest.mark.parametrize(
    ("size", "extra"),
    [
        (2048, ("-H", "Expect: 100-continue")),  # over 1 KiB: what older curls sent by themselves
        (1024 * 1024 + 1, ()),  # curl 7.88 sends Expect by itself only past 1 MiB
    ],
    ids=["2KiB-asked", "over-1MiB"],
)
async def test_curl_posts_with_100_continue(
    front: Start, tmp_path: Path, size: int, extra: tuple[str, ...]
) -> None:
    f = await front()
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    (tmp_path / "body").write_bytes(payload)
    proc = await asyncio.create_subprocess_exec(
        *("/usr/bin/curl", "-sS", "-v", "--data-binary", f"@{tmp_path / 'body'}", *extra),
        *("-H", "Content-Type: application/octet-stream", f"{f.url}/infer?q=1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert (proc.returncode, out == payload) == (0, True)
    assert b"> Expect: 100-continue" in err
    assert b"< HTTP/1.1 100 Continue" in err
    (request,) = f.app.requests
    assert (request.method, request.target, request.body == payload) == (
        "POST",
        b"/infer?q=1",
        True,
    )
    assert (b"Expect", b"100-continue") in request.headers
    assert (b"Content-Length", str(size).encode()) in request.headers


# -- other clients -------------------------------------------------------------------------------


async def test_http_client_keeps_the_connection(front: Start) -> None:
    f = await front()

    def talk() -> list[tuple[int, bytes, str | None]]:
        conn = http.client.HTTPConnection(f.host, f.port, timeout=10)
        try:
            results = []
            for body in (b'{"x": 1}', b""):
                conn.request("POST", "/p", body=body, headers={"X-Id": "7"})
                resp = conn.getresponse()
                results.append((resp.status, resp.read(), resp.getheader("Connection")))
            return results
        finally:
            conn.close()

    assert await asyncio.to_thread(talk) == [(200, b'{"x": 1}', None), (200, b"", None)]
    assert [r.body for r in f.app.requests] == [b'{"x": 1}', b""]
    assert f.app.requests[0].headers == [
        (b"Host", f"{f.host}:{f.port}".encode()),
        (b"Accept-Encoding", b"identity"),
        (b"Content-Length", b"8"),
        (b"X-Id", b"7"),
    ]
    assert f.tally.as_dict() == {}


async def test_aiohttp_client_plain_and_chunked_uploads(front: Start) -> None:
    f = await front()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"

    async with aiohttp.ClientSession() as session:
        async with session.post(f.url + "/a", data=b"plain") as r:
            assert (r.status, await r.read()) == (200, b"plain")
        async with session.post(f.url + "/b", data=chunks()) as r:
            assert (r.status, await r.read()) == (200, b"one,two")
        async with session.get(f.url + "/c") as r:
            assert (r.status, await r.read()) == (200, b"")
    assert [(r.method, r.target, r.body) for r in f.app.requests] == [
        ("POST", b"/a", b"plain"),
        ("POST", b"/b", b"one,two"),
        ("GET", b"/c", b""),
    ]
    assert (b"Transfer-Encoding", b"chunked") in f.app.requests[1].headers


# -- smuggling and malformed requests ------------------------------------------------------------

POST = b"POST / HTTP/1.1\r\nHost: h\r\n"
CHUNKED_BODY = b"3\r\nabc\r\n0\r\n\r\n"

# (request, status, the error message's start). "ours" marks what llhttp lets through.
REFUSED = {
    "CL then TE": (
        POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "malformed",
    ),
    "TE then CL": (
        POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + CHUNKED_BODY,
        400,
        "malformed",
    ),
    "duplicate CL, same": (
        POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "malformed",
    ),
    "duplicate CL, differing": (
        POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        "malformed",
    ),
    "CL list": (POST + b"Content-Length: 3, 3\r\n\r\nabc", 400, "malformed"),
    "CL negative": (POST + b"Content-Length: -3\r\n\r\nabc", 400, "malformed"),
    "CL plus sign": (POST + b"Content-Length: +3\r\n\r\nabc", 400, "malformed"),
    "CL hex": (POST + b"Content-Length: 0x3\r\n\r\nabc", 400, "malformed"),
    "CL overflow": (POST + b"Content-Length: 99999999999999999999999\r\n\r\n", 400, "malformed"),
    # llhttp refuses these two too, but only after the head: our check answers first.
    "TE xchunked": (
        POST + b"Transfer-Encoding: xchunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "Transfer-Encoding other",
    ),
    "TE chunked;x": (
        POST + b"Transfer-Encoding: chunked;x\r\n\r\n" + CHUNKED_BODY,
        400,
        "Transfer-Encoding other",
    ),
    "TE chunked, identity": (
        POST + b"Transfer-Encoding: chunked, identity\r\n\r\n" + CHUNKED_BODY,
        400,
        "malformed",
    ),
    "TE twice": (
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "malformed",
    ),
    "TE vertical tab": (
        POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "malformed",
    ),
    "TE identity, chunked (ours)": (
        POST + b"Transfer-Encoding: identity, chunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "Transfer-Encoding other",
    ),
    "TE gzip, chunked (ours)": (
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "Transfer-Encoding other",
    ),
    "TE split over two headers (ours)": (
        POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "Transfer-Encoding other",
    ),
    "TE in HTTP/1.0 (ours)": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "Transfer-Encoding in",
    ),
    "space before colon": (
        POST + b"Transfer-Encoding : chunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "malformed",
    ),
    "header line starting with a space": (
        POST + b" Transfer-Encoding: chunked\r\n\r\n" + CHUNKED_BODY,
        400,
        "malformed",
    ),
    "obs-fold with a space": (
        POST + b"X-A: b\r\n c\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "malformed",
    ),
    "obs-fold with a tab": (
        POST + b"X-A: b\r\n\tc\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "malformed",
    ),
    "bare LF everywhere": (b"POST / HTTP/1.1\nHost: h\nContent-Length: 3\n\nabc", 400, "malformed"),
    "bare LF after a header": (POST + b"Content-Length: 3\n\r\nabc", 400, "malformed"),
    "bare LF ending the head": (POST + b"Content-Length: 3\r\n\nabc", 400, "malformed"),
    "bare CR": (POST + b"X: a\rContent-Length: 3\r\n\r\nabc", 400, "malformed"),
    "bare LF after a chunk size": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        400,
        "malformed",
    ),
    "bad chunk size": (
        POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
        "malformed",
    ),
    "NUL in a value": (POST + b"X: a\x00b\r\n\r\n", 400, "malformed"),
    "no Host (ours)": (b"GET / HTTP/1.1\r\n\r\n", 400, "exactly one Host"),
    "two Hosts (ours)": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "exactly one Host"),
    "HTTP/2.0 request line (ours)": (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "HTTP version"),
    "HTTP/1.2": (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400, "malformed"),
    "CONNECT (ours)": (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405, "CONNECT"),
    "unknown method": (b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed"),
    "TLS on a plain port": (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
        400,
        "malformed",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
async def test_smuggling_and_malformed_requests_are_refused_and_closed(
    front: Start, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, status, message = REFUSED[name]
    f = await front()
    raw = await f.raw()
    await raw.send(data)
    answer = await raw.rest()
    await raw.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 %d " % status)
    assert lines[1:] == [
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    assert json.loads(body)["error"].startswith(message)
    assert f.app.requests == []
    assert f.tally.as_dict() == {"bad_request": 1}
    assert [r for r in caplog.records if r.exc_info] == []


async def test_garbage_after_a_good_request_is_answered_after_it(front: Start) -> None:
    gate = asyncio.Event()
    f = await front(Echo(gate=gate))
    raw = await f.raw()
    await raw.send(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\r\n\r\n")
    await f.app.arrived.wait()
    gate.set()
    assert await raw.response() == ok(b"")
    rest = await raw.rest()
    assert rest.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    await raw.close()
    assert f.tally.as_dict() == {"bad_request": 1}


async def test_an_upgrade_is_answered_as_a_plain_request_then_closed(front: Start) -> None:
    f = await front()
    raw = await f.raw()
    await raw.send(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00"
    )
    assert await raw.rest() == ok(b"", b"Connection: close\r\n")
    await raw.close()
    assert [r.target for r in f.app.requests] == [b"/ws"]


# -- limits --------------------------------------------------------------------------------------


async def test_header_bytes_over_the_limit_get_431(front: Start) -> None:
    f = await front(max_header_bytes=1024)
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n")
    assert await raw.rest() == error(
        431, "Request Header Fields Too Large", "request headers too large"
    )
    await raw.close()
    assert (f.app.requests, f.tally.as_dict()) == ([], {"header_too_large": 1})


async def test_an_endless_header_is_cut_while_it_arrives(front: Start) -> None:
    f = await front(max_header_bytes=4096)
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Endless: ")
    # Never ends: httptools would buffer it, so the bytes fed are counted as they come.
    for _ in range(5):
        await raw.send(b"a" * 1024)
    assert await raw.rest() == error(
        431, "Request Header Fields Too Large", "request headers too large"
    )
    await raw.close()
    assert f.tally.as_dict() == {"header_too_large": 1}


async def test_too_many_headers_get_431(front: Start) -> None:
    f = await front(max_headers=10)
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 10 + b"\r\n")
    assert await raw.rest() == error(
        431, "Request Header Fields Too Large", "too many request headers"
    )
    await raw.close()
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: 1\r\n" * 9 + b"\r\n")
    assert await raw.response() == ok(b"")
    await raw.close()
    assert f.tally.as_dict() == {"header_too_large": 1}


async def test_a_long_target_gets_414(front: Start) -> None:
    f = await front(max_target=100)
    raw = await f.raw()
    await raw.send(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.rest() == error(414, "Request-URI Too Long", "request target too long")
    await raw.close()
    assert f.tally.as_dict() == {"header_too_large": 1}


async def test_body_limit_by_content_length_is_refused_before_reading(front: Start) -> None:
    f = await front(max_body=100)
    raw = await f.raw()
    await raw.send(POST + b"Content-Length: 101\r\n\r\n")
    assert await raw.rest() == error(413, "Request Entity Too Large", "request body too large")
    await raw.close()
    raw = await f.raw()
    await raw.send(POST + b"Content-Length: 100\r\n\r\n" + b"b" * 100)
    assert await raw.response() == ok(b"b" * 100)
    await raw.close()
    assert f.tally.as_dict() == {"body_too_large": 1}


async def test_a_chunked_body_is_cut_at_the_limit_while_read(front: Start) -> None:
    f = await front(max_body=100)
    raw = await f.raw()
    await raw.send(POST + b"Transfer-Encoding: chunked\r\n\r\n" + b"32\r\n" + b"c" * 50 + b"\r\n")
    await raw.send(b"33\r\n" + b"c" * 51 + b"\r\n")
    assert await raw.rest() == error(413, "Request Entity Too Large", "request body too large")
    await raw.close()
    assert (f.app.requests, f.tally.as_dict()) == ([], {"body_too_large": 1})


async def test_an_error_answer_survives_unread_body_bytes(front: Start) -> None:
    """Lingering: the 413 must arrive even though the client keeps sending its body."""
    f = await front(max_body=1000)
    raw = await f.raw()
    await raw.send(
        POST + b"Transfer-Encoding: chunked\r\n\r\n" + (b"400\r\n" + b"d" * 1024 + b"\r\n") * 64
    )
    assert await raw.response() == error(413, "Request Entity Too Large", "request body too large")
    await raw.close()


# -- timeouts ------------------------------------------------------------------------------------


async def test_a_slow_head_gets_408(front: Start) -> None:
    f = await front(header_timeout=0.1)
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
    assert await raw.rest() == error(408, "Request Timeout", "request not received in time")
    await raw.close()
    assert (f.app.requests, f.tally.as_dict()) == ([], {"timeout": 1})


async def test_a_slow_body_gets_408(front: Start) -> None:
    f = await front(body_timeout=0.1)
    raw = await f.raw()
    await raw.send(POST + b"Content-Length: 10\r\n\r\nabc")
    assert await raw.rest() == error(408, "Request Timeout", "request not received in time")
    await raw.close()
    assert (f.app.requests, f.tally.as_dict()) == ([], {"timeout": 1})


async def test_a_silent_new_connection_is_closed_and_counted(front: Start) -> None:
    f = await front(header_timeout=0.1)
    raw = await f.raw()
    assert await raw.rest() == b""
    await raw.close()
    assert f.tally.as_dict() == {"timeout": 1}


async def test_an_idle_keep_alive_connection_is_closed_quietly(front: Start) -> None:
    f = await front(keepalive_timeout=0.1)
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.response() == ok(b"")
    assert await raw.rest() == b""
    await raw.close()
    assert f.tally.as_dict() == {}


# -- disconnects and application errors ----------------------------------------------------------


async def test_a_client_leaving_mid_answer_is_counted_and_the_answer_dropped(
    front: Start, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    f = await front(Echo(gate=gate))
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await f.app.arrived.wait()
    await raw.close()
    await f.until(lambda: f.tally.as_dict() == {"disconnect": 1})
    gate.set()
    await f.until(lambda: f.app.finished == 1)
    await f.until(lambda: not f.server.connections)
    assert f.tally.as_dict() == {"disconnect": 1}
    assert caplog.records == []


async def test_a_client_leaving_mid_request_is_counted(front: Start) -> None:
    f = await front()
    raw = await f.raw()
    await raw.send(POST + b"Content-Length: 10\r\n\r\nabc")
    await f.until(lambda: bool(f.server.connections) and f.connection().busy)
    await raw.close()
    await f.until(lambda: not f.server.connections)
    assert (f.app.requests, f.tally.as_dict()) == ([], {"disconnect": 1})


async def test_an_application_error_is_a_500_json_and_one_log_line(
    front: Start, caplog: pytest.LogCaptureFixture
) -> None:
    f = await front(Echo(raise_exc=RuntimeError("boom")))
    raw = await f.raw()
    with caplog.at_level(logging.ERROR, logger="proxy.front.server"):
        await raw.send(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = await raw.response()
    body = b'{"error": "internal server error"}'
    assert answer == (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    # The connection is still good.
    f.app.raise_exc = None
    await raw.send(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await raw.response() == ok(b"")
    await raw.close()
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("ERROR", None)]
    assert "RuntimeError: boom" in caplog.records[0].getMessage()
    assert f.tally.as_dict() == {"app_error": 1}


async def test_a_header_that_would_split_the_response_is_a_500(front: Start) -> None:
    f = await front(Echo(answer=lambda r: Response(200, [(b"X", b"a\r\nSet-Cookie: x")], b"")))
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    answer = await raw.response()
    await raw.close()
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Set-Cookie" not in answer
    assert f.tally.as_dict() == {"app_error": 1}


class Careless:
    """A CallbackApplication that answers twice, then raises: the first answer counts."""

    def begin(self, request: Request, respond: Callable[[Response], None]) -> None:
        respond(Response(200, [], b"first"))
        respond(Response(200, [], b"second"))
        raise RuntimeError("after the answer")


async def test_a_callback_application_answering_twice_then_raising_is_answered_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tally = Tally()
    server = Server(Careless(), Limits(), count=tally)
    await server.start("127.0.0.1", 0)
    host, port = server.addresses[0]
    reader, writer = await asyncio.open_connection(host, port)
    with caplog.at_level(logging.ERROR, logger="proxy.front.server"):
        writer.write(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
        async with asyncio.timeout(10):
            assert await reader.readexactly(2 * len(one)) == 2 * one
    writer.close()
    await server.close(grace=1.0)
    assert tally.as_dict() == {"app_error": 2}
    assert server.calls == 0
    assert ["RuntimeError: after the answer" in r.getMessage() for r in caplog.records] == [
        True,
        True,
    ]


# -- graceful close ------------------------------------------------------------------------------


async def test_close_drains_in_flight_requests_and_drops_idle_ones(front: Start) -> None:
    gate = asyncio.Event()
    f = await front(Echo(gate=gate))
    idle = await f.raw()
    await idle.send(b"GET /idle HTTP/1.1\r\nHost: h\r\n\r\n")
    f.app.arrived.clear()
    gate.set()
    assert await idle.response() == ok(b"")
    gate.clear()
    busy = await f.raw()
    await busy.send(b"GET /busy HTTP/1.1\r\nHost: h\r\n\r\n")
    await f.app.arrived.wait()
    closing = asyncio.create_task(f.server.close(grace=10.0))
    assert await idle.rest() == b""  # closed at once
    assert not closing.done()
    gate.set()
    assert await busy.rest() == ok(b"", b"Connection: close\r\n")
    await closing
    for raw in (idle, busy):
        await raw.close()
    assert f.tally.as_dict() == {}


@pytest.mark.parametrize("front", ["task"], indirect=True)  # a callback app's calls are its own
async def test_close_aborts_what_outlives_the_grace(front: Start) -> None:
    gate = asyncio.Event()  # never set
    f = await front(Echo(gate=gate))
    raw = await f.raw()
    await raw.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await f.app.arrived.wait()
    await f.server.close(grace=0.05)
    assert await raw.rest() == b""
    await raw.close()
    assert (f.app.finished, f.server.connections) == (1, set())  # the call was cancelled


def test_the_front_imports_nothing_heavy() -> None:
    """The hot path stays lean: no aiohttp, YAML, metrics library, JSON parser or the old
    server package anywhere in proxy/front."""
    forbidden = ("aiohttp", "yaml", "prometheus_client", "orjson", "multidict", "proxy.analysis")
    front = Path(__file__).parent.parent / "proxy" / "front"
    found = []
    for path in sorted(front.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [
                (path.name, name)
                for name in names
                if any(name == f or name.startswith(f + ".") for f in forbidden)
            ]
    assert found == []

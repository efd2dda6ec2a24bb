"""The front's pooled HTTP/1.1 client against fake upstreams: aiohttp servers on port 0, and raw
asyncio servers that capture the bytes they receive and misbehave on purpose (closing a
keep-alive connection, answering chunked or until close, never answering, answering too
much, listening on [::1], speaking TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from proxy.front.client import (
    Upstream,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamTooLarge,
)
from tests.conftest import Answer, BodyHeld, FakeModelFactory, free_port

# -- a raw upstream --------------------------------------------------------------------------------

Script = Callable[["Conn"], Awaitable[None]]


class Conn:
    """One accepted connection of a raw upstream, with what it received so far."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.index = index
        self.reader = reader
        self.writer = writer
        self.requests: list[bytes] = []

    async def request(self) -> bytes | None:
        """The next whole request (by Content-Length), or None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        data = head + await self.reader.readexactly(length)
        self.requests.append(data)
        return data

    async def answer(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class RawUpstream:
    """An asyncio server that runs `script` on each connection and records its bytes."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.conns: list[Conn] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self, host: str = "127.0.0.1") -> RawUpstream:
        self.server = await asyncio.start_server(self._handle, host, 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return self

    @property
    def requests(self) -> list[bytes]:
        return [r for conn in self.conns for r in conn.requests]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = Conn(len(self.conns), reader, writer)
        self.conns.append(conn)
        try:
            await self.script(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for conn in self.conns:
            conn.writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def answering(*answers: bytes) -> Script:
    """Answer each request on a connection with the next answer (the last one repeats)."""

    async def script(conn: Conn) -> None:
        n = 0
        while await conn.request() is not None:
            await conn.answer(answers[min(n, len(answers) - 1)])
            n += 1

    return script


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[..., Awaitable[RawUpstream]]]:
    started: list[RawUpstream] = []

    async def start(script: Script, host: str = "127.0.0.1") -> RawUpstream:
        started.append(RawUpstream(script))
        return await started[-1].start(host)

    yield start
    for upstream in started:
        await upstream.stop()


class Watched(Upstream):
    """Sets `changed` whenever a pooled connection closes, so tests need not sleep. With
    `via_begin`, `send` goes through `begin` (the hot path's callback way), so every test runs
    both ways."""

    changed: asyncio.Event
    via_begin = False

    async def send(
        self,
        method: str,
        suffix: str | bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        within: float | None = None,
    ) -> UpstreamResponse:
        if not self.via_begin or within is not None:
            return await super().send(method, suffix, headers, body, within=within)
        got: asyncio.Future[UpstreamResponse | UpstreamError] = self.loop.create_future()
        inside = [True]

        def done(result: UpstreamResponse | UpstreamError) -> None:
            assert not inside[0], "begin() called back from inside the call"
            assert not got.done(), "called back twice"
            got.set_result(result)

        self.begin(method, suffix, headers, body, done)
        inside[0] = False
        result = await got
        if isinstance(result, UpstreamError):
            raise result
        return result

    def gone(self, conn: object) -> None:
        super().gone(conn)  # type: ignore[arg-type]
        self.changed.set()

    async def until_no_connection(self) -> None:
        async with asyncio.timeout(10):
            while self._all:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture(params=["send", "begin"])
async def client(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[Watched]]]:
    started: list[Upstream] = []

    async def make(origin: str, path: str = "", **kw: object) -> Watched:
        kw.setdefault("timeout", 5.0)
        upstream = Watched(origin, path, **kw)  # type: ignore[arg-type]
        upstream.changed = asyncio.Event()
        upstream.via_begin = request.param == "begin"
        await upstream.start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        await upstream.close()


Client = Callable[..., Awaitable[Watched]]
RawFactory = Callable[..., Awaitable[RawUpstream]]


# -- what is sent ----------------------------------------------------------------------------------


async def test_the_request_is_sent_byte_for_byte(raw_upstream: RawFactory, client: Client) -> None:
    up = await raw_upstream(
        answering(b"HTTP/1.1 201 Made\r\nX-A: 1\r\nx-a: \xff\r\nContent-Length: 2\r\n\r\nok")
    )
    c = await client(up.url, "/v2/models/m/infer")
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Host", b"client.example"),  # framing and Host are the client's: dropped
        (b"Content-Length", b"999"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Raw", b"\xe9\xff"),
    ]
    answer = await c.send("POST", "?x=1", headers, b'{"a":1}')
    assert answer == UpstreamResponse(
        201, "Made", [(b"X-A", b"1"), (b"x-a", b"\xff"), (b"Content-Length", b"2")], b"ok"
    )
    host = up.url.removeprefix("http://").encode()
    assert up.requests == [
        b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Content-Type: application/json\r\nX-Raw: \xe9\xff\r\nContent-Length: 7\r\n\r\n"
        b'{"a":1}'
    ]


async def test_lengths_only_where_content_is_expected(
    raw_upstream: RawFactory, client: Client
) -> None:
    up = await raw_upstream(answering(OK))
    c = await client(up.url)
    await c.send("GET", b"/g", [], b"")
    await c.send("POST", b"/p", [], b"")
    await c.send("DELETE", b"/d", [], b"")
    host = up.url.removeprefix("http://").encode()
    assert up.requests == [
        b"GET /g HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 0\r\n\r\n",
        b"DELETE /d HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
    ]
    assert len(up.conns) == 1  # one keep-alive connection for all three


async def test_a_header_that_would_smuggle_a_request_is_refused(client: Client) -> None:
    c = await client("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        await c.send("GET", "/", [(b"X", b"a\r\n\r\nGET /evil HTTP/1.1")], b"")


async def test_aiohttp_upstream_gets_what_was_sent(
    fake_model: FakeModelFactory, client: Client
) -> None:
    model = await fake_model(lambda r: Answer(body=b'{"predictions": [1]}'))
    c = await client(model.url, "/v1/models/m:predict", max_connections=4)
    answers = await asyncio.gather(
        *(
            c.send("POST", f"?n={i}", [(b"Content-Type", b"application/json")], b"[%d]" % i)
            for i in range(8)
        )
    )
    assert {(a.status, a.body) for a in answers} == {(200, b'{"predictions": [1]}')}
    assert sorted(r.path_qs for r in model.received) == [
        f"/v1/models/m:predict?n={i}" for i in range(8)
    ]
    assert sorted(r.body for r in model.received) == [b"[%d]" % i for i in range(8)]
    assert {tuple(r.headers.keys()) for r in model.received} == {
        ("Host", "Content-Type", "Content-Length")
    }


# -- answers ---------------------------------------------------------------------------------------


async def test_chunked_answer(raw_upstream: RawFactory, client: Client) -> None:
    up = await raw_upstream(
        answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n3;x=1\r\n!!!\r\n0\r\nT: 1\r\n\r\n"
        )
    )
    c = await client(up.url)
    first = await c.send("GET", "/", [], b"")
    second = await c.send("GET", "/", [], b"")
    assert (first.body, second.body, len(up.conns)) == (b"ok!!!", b"ok!!!", 1)


async def test_an_answer_read_until_close(raw_upstream: RawFactory, client: Client) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.answer(b"HTTP/1.1 200 OK\r\n\r\nall of ")
        await conn.answer(b"this")
        conn.writer.close()

    up = await raw_upstream(script)
    c = await client(up.url)
    assert (await c.send("GET", "/", [], b"")).body == b"all of this"
    assert (await c.send("GET", "/", [], b"")).body == b"all of this"
    assert len(up.conns) == 2  # never reused


async def test_head_has_no_body_and_keeps_the_connection(
    raw_upstream: RawFactory, client: Client
) -> None:
    up = await raw_upstream(
        answering(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )
    )
    c = await client(up.url)
    head = await c.send("HEAD", "/", [], b"")
    assert (head.status, head.headers, head.body) == (200, [(b"Content-Length", b"1000")], b"")
    assert (await c.send("GET", "/", [], b"")).body == b"ok"
    assert len(up.conns) == 1


async def test_interim_answers_are_skipped(raw_upstream: RawFactory, client: Client) -> None:
    up = await raw_upstream(
        answering(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
        )
    )
    c = await client(up.url)
    answer = await c.send("POST", "/", [], b"x")
    assert answer == UpstreamResponse(200, "OK", [(b"Content-Length", b"2")], b"ok")


async def test_204_and_304_have_no_body(raw_upstream: RawFactory, client: Client) -> None:
    up = await raw_upstream(
        answering(b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 304 Not Modified\r\n\r\n")
    )
    c = await client(up.url)
    assert [(await c.send("GET", "/", [], b"")).status for _ in range(3)] == [204, 304, 304]
    assert len(up.conns) == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0", "http-1.0-keep-alive"],
)
async def test_answers_that_end_the_connection_are_not_reused(
    raw_upstream: RawFactory, client: Client, answer: bytes
) -> None:
    up = await raw_upstream(answering(answer))
    c = await client(up.url)
    for _ in range(3):
        assert (await c.send("GET", "/", [], b"")).body == b"ok"
    assert (len(up.conns), len(up.requests)) == (3, 3)


async def test_a_malformed_answer_is_a_connect_error(
    raw_upstream: RawFactory, client: Client
) -> None:
    up = await raw_upstream(answering(b"HTTP/1.1 2000 Nope\r\n\r\n"))
    c = await client(up.url)
    with pytest.raises(UpstreamConnectError, match="malformed answer") as caught:
        await c.send("GET", "/", [], b"")
    assert caught.value.outcome == "connect_error"


# -- stale connections and retries -----------------------------------------------------------------


def first_conn_drops_second_request() -> Script:
    """The first connection answers one request, then reads the next and closes without a
    byte of answer (a server closing an idle keep-alive connection just as it is reused)."""

    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.answer(OK)
            await conn.request()
            conn.writer.transport.abort()
            return
        await answering(OK)(conn)

    return script


@pytest.mark.parametrize(
    ("method", "headers", "retried"),
    [
        ("GET", [], True),
        ("HEAD", [], True),
        ("OPTIONS", [], True),
        ("POST", [], False),
        ("PUT", [], False),  # idempotent by RFC, but not replayable by Go's rule
        ("POST", [(b"Idempotency-Key", b"k1")], True),
        ("POST", [(b"X-Idempotency-Key", b"k1")], True),
    ],
)
async def test_a_reused_connection_dropped_before_an_answer_is_retried_only_when_safe(
    raw_upstream: RawFactory,
    client: Client,
    method: str,
    headers: list[tuple[bytes, bytes]],
    retried: bool,
) -> None:
    up = await raw_upstream(first_conn_drops_second_request())
    c = await client(up.url)
    await c.send("GET", "/warm", [], b"")
    if retried:
        answer = await c.send(method, "/again", headers, b"")
        assert answer.status == 200
        assert [len(conn.requests) for conn in up.conns] == [2, 1]
    else:
        with pytest.raises(UpstreamConnectError, match="closed before any answer"):
            await c.send(method, "/again", headers, b"")
        assert [len(conn.requests) for conn in up.conns] == [2]


async def test_a_fresh_connection_dropped_is_never_retried(
    raw_upstream: RawFactory, client: Client
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        conn.writer.transport.abort()

    up = await raw_upstream(script)
    c = await client(up.url)
    with pytest.raises(UpstreamConnectError):
        await c.send("GET", "/", [], b"")
    assert len(up.conns) == 1


async def test_a_connection_closed_while_idle_is_not_used(
    raw_upstream: RawFactory, client: Client
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.answer(OK)
        conn.writer.close()  # keep-alive promised, then closed while idle

    up = await raw_upstream(script)
    c = await client(up.url)
    await c.send("POST", "/1", [], b"a")
    await c.until_no_connection()
    assert (await c.send("POST", "/2", [], b"b")).body == b"ok"  # a fresh one, no retry
    assert [len(conn.requests) for conn in up.conns] == [1, 1]


async def test_a_mid_answer_close_is_not_retried(raw_upstream: RawFactory, client: Client) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.answer(OK)
        await conn.request()
        await conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
        conn.writer.close()

    up = await raw_upstream(script)
    c = await client(up.url)
    await c.send("GET", "/", [], b"")
    with pytest.raises(UpstreamConnectError, match="mid-answer"):
        await c.send("GET", "/", [], b"")
    assert len(up.conns) == 1


async def test_idle_connections_expire(raw_upstream: RawFactory, client: Client) -> None:
    up = await raw_upstream(answering(OK))
    c = await client(up.url, idle_timeout=0.05)
    await c.send("GET", "/", [], b"")
    await c.until_no_connection()  # the sweeper closed it
    await c.send("GET", "/", [], b"")
    assert len(up.conns) == 2


# -- limits and timeouts ---------------------------------------------------------------------------


async def test_requests_beyond_the_limit_wait_for_a_connection(
    fake_model: FakeModelFactory, client: Client
) -> None:
    release = asyncio.Event()
    model = await fake_model(lambda r: Answer(body=r.path_qs.encode(), wait=release))
    c = await client(model.url, max_connections=2)
    sends = [asyncio.create_task(c.send("GET", f"/{i}", [], b"")) for i in range(5)]
    await model.wait_for(2)
    assert len(model.received) == 2
    assert sum(task.done() for task in sends) == 0
    release.set()
    answers = await asyncio.gather(*sends)
    assert [a.body for a in answers] == [b"/%d" % i for i in range(5)]
    assert len(model.received) == 5
    assert len(c._all) == 2


async def test_waiting_for_a_connection_is_bounded_by_the_total_timeout(
    fake_model: FakeModelFactory, client: Client
) -> None:
    release = asyncio.Event()
    model = await fake_model(lambda r: Answer(wait=release))
    c = await client(model.url, max_connections=1, timeout=5.0)
    first = asyncio.create_task(c.send("GET", "/first", [], b""))
    await model.wait_for(1)
    with pytest.raises(UpstreamTimeout, match="no free connection") as caught:
        await c.send("GET", "/second", [], b"", within=0.1)
    assert caught.value.outcome == "timeout"
    release.set()
    assert (await first).status == 200
    assert [r.path_qs for r in model.received] == ["/first"]


async def test_an_upstream_that_never_answers_times_out(
    raw_upstream: RawFactory, client: Client
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.reader.read()  # never answers

    up = await raw_upstream(script)
    c = await client(up.url, timeout=0.1)
    with pytest.raises(UpstreamTimeout, match="no answer"):
        await c.send("POST", "/", [], b"x")
    await c.until_no_connection()  # the timed-out connection is not pooled
    assert len(up.requests) == 1


async def test_connect_timeout(raw_upstream: RawFactory, client: Client) -> None:
    async def silent(conn: Conn) -> None:
        await conn.reader.read()

    up = await raw_upstream(silent)  # accepts, but never completes a TLS handshake
    c = await client(up.url.replace("http://", "https://"), connect_timeout=0.1, timeout=5.0)
    with pytest.raises(UpstreamTimeout, match="no connection"):
        await c.send("GET", "/", [], b"")


async def test_connection_refused_is_a_connect_error(client: Client) -> None:
    c = await client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamConnectError, match="ConnectionRefusedError") as caught:
        await c.send("GET", "/", [], b"")
    assert isinstance(caught.value, UpstreamError)
    assert c._open == 0  # the slot came back


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
    ids=["content-length", "chunked", "until-close"],
)
async def test_an_answer_over_the_cap_is_cut(
    raw_upstream: RawFactory, client: Client, head: bytes, body_held: BodyHeld
) -> None:
    chunked = b"chunked" in head

    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.answer(head)
        piece = b"z" * 65536
        for _ in range(64):  # 4 MiB, stopped early when the client goes
            await conn.answer(b"10000\r\n" + piece + b"\r\n" if chunked else piece)

    up = await raw_upstream(script)
    c = await client(up.url, max_response=1024 * 1024)
    with pytest.raises(UpstreamTooLarge, match="over 1048576 bytes") as caught:
        await c.send("GET", "/", [], b"")
    assert caught.value.outcome == "too_large"
    await c.until_no_connection()
    # Never more than the cap in memory: a declared length is refused at the head, an
    # undeclared one is read up to the cap and no further.
    if b"Content-Length" in head:
        assert body_held.most == 0
    else:
        assert 1024 * 1024 - 256 * 1024 < body_held.most <= 1024 * 1024


async def test_a_declared_length_over_the_cap_fails_without_waiting_for_the_body(
    raw_upstream: RawFactory, client: Client
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n")
        await asyncio.Future()  # the body never comes: waiting for it would time out

    up = await raw_upstream(script)
    c = await client(up.url, max_response=4 * 1024 * 1024, timeout=30.0)
    with pytest.raises(UpstreamTooLarge, match="over 4194304 bytes"):
        await c.send("POST", "/", [], b"{}")


@pytest.mark.parametrize("status", [204, 304])
async def test_a_length_on_an_answer_without_a_body_is_not_too_large(
    raw_upstream: RawFactory, client: Client, status: int
) -> None:
    # A 304's Content-Length is the resource's, not a body's (RFC 9110 8.6).
    up = await raw_upstream(answering(b"HTTP/1.1 %d X\r\nContent-Length: 999999\r\n\r\n" % status))
    c = await client(up.url, max_response=1000)
    assert (await c.send("GET", "/", [], b"")).status == status


async def test_an_answer_at_the_cap_is_whole(raw_upstream: RawFactory, client: Client) -> None:
    up = await raw_upstream(
        answering(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"q" * 1000)
    )
    c = await client(up.url, max_response=1000)
    assert (await c.send("GET", "/", [], b"")).body == b"q" * 1000


# -- IPv6 and TLS ----------------------------------------------------------------------------------


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_an_ipv6_literal_origin(raw_upstream: RawFactory, client: Client) -> None:
    up = await raw_upstream(answering(OK), host="::1")
    c = await client(up.url)
    assert (await c.send("GET", "/six", [], b"")).body == b"ok"
    port = up.url.rsplit(":", 1)[1]
    assert up.requests == [b"GET /six HTTP/1.1\r\nHost: [::1]:%s\r\n\r\n" % port.encode()]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_upstream(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=b"secret:" + await request.read())

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def test_https_verifies_the_certificate(
    tls_upstream: str, certificate: tuple[Path, Path], client: Client
) -> None:
    untrusting = await client(tls_upstream)  # the default context: system CAs only
    with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusting.send("GET", "/", [], b"")
    trusting = await client(tls_upstream, ssl=ssl.create_default_context(cafile=certificate[0]))
    answer = await trusting.send("POST", "/x", [], b"body")
    assert (answer.status, answer.body) == (200, b"secret:body")
    assert (await trusting.send("POST", "/y", [], b"2")).body == b"secret:2"
    assert len(trusting._all) == 1  # kept alive over TLS too


async def test_origins_are_checked(client: Client) -> None:
    for origin in ("ftp://h", "http://", "http://h/path", "http://u@h"):
        with pytest.raises(ValueError, match="origin"):
            Upstream(origin, timeout=1.0)
    with pytest.raises(ValueError, match="ssl context for a plain http origin"):
        Upstream("http://h", timeout=1.0, ssl=ssl.create_default_context())

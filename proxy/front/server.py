"""The front's HTTP/1.1 server: owns client connections (httptools parses; this is the glue:
limits, timeouts, pipelining, flow control, graceful close) and hands whole requests to one
application callable; must not touch routing, upstreams, metrics libraries or body content."""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

from proxy.front.faults import CountFn, Fault, Tally

log = logging.getLogger("proxy.front.server")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may send, and how slowly. Sizes in bytes, durations in seconds."""

    max_body: int = 10 * 1024 * 1024
    max_header_bytes: int = 16 * 1024  # request target + header names and values
    max_headers: int = 100
    max_target: int = 8 * 1024
    header_timeout: float = 10.0  # first byte of a request to its last header; also new idle
    body_timeout: float = 30.0  # last header to last body byte
    keepalive_timeout: float = 5.0  # idle between requests
    send_timeout: float = 30.0  # the client not reading our answers
    max_pipeline: int = 16  # complete requests queued behind the one being answered
    linger: float = 2.0  # reading and discarding after an error answer, so it is not reset

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, not {getattr(self, name)!r}")


# Built per request: not frozen (5x cheaper to build); read-only by convention.
@dataclass(slots=True)
class Request:
    """One complete request, as received: the target and headers are the client's bytes."""

    method: str
    target: bytes
    version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    peer: str = ""  # the client's address, without its port ("" on a Unix socket)


# Built per request: not frozen (5x cheaper to build); read-only by convention.
@dataclass(slots=True)
class Response:
    """What the application answers. The server adds Content-Length and, when it closes,
    `Connection: close`; it drops any Content-Length, Transfer-Encoding and Connection given
    here (an app asking for `Connection: close` gets the connection closed)."""

    status: int
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes = b""
    reason: bytes = b""  # empty: the standard phrase


Application = Callable[[Request], Awaitable[Response]]
"""An application as a coroutine function: run as one task per request."""

Respond = Callable[[Response], None]


class CallbackApplication(Protocol):
    """An application that answers through a callback, without a task per request: `begin`
    must call `respond` exactly once, now or later, and must not raise after calling it."""

    def begin(self, request: Request, respond: Respond) -> None: ...


class _Refuse(Exception):
    """Raised inside a parser callback to stop parsing and answer an error."""

    def __init__(self, status: int, message: str, fault: Fault) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fault = fault


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


_STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_WRITE_APART = 64 * 1024  # bodies at least this big are written apart, not copied into one
_IDLE, _HEAD, _BODY = 0, 1, 2  # where a connection is in reading a request


def _error_response(status: int, message: str) -> Response:
    body = json.dumps({"error": message}).encode("ascii")
    return Response(status, [(b"Content-Type", b"application/json")], body)


class HttpConnection(asyncio.Protocol):
    """One client connection. Requests are answered strictly in order, one at a time; the
    others wait, complete, in a bounded queue (reading pauses when it is full)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._limits = server.limits
        self._count = server.count
        self._loop = server.loop
        self._begin = server.begin
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._closed = False  # connection_lost has run
        self._by_us = False  # we closed or aborted it: not the client's fault
        # reading
        self._phase = _IDLE
        self._deadline = 0.0  # of the current phase (head or body)
        self._idle_since = 0.0
        self._served = 0
        self._head_fed = 0  # bytes fed while in the head: bounds httptools' own buffering
        self._reading = True
        self._read_done = False  # no further request will be read
        self._eof = False
        self._lingering = False
        self._write_paused = False
        self._write_paused_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the deadline owed now (0: none)
        self._armed_at = 0.0  # when the armed timer fires (it may be earlier: then re-armed)
        self._refusal: _Refuse | None = None
        # the request being read
        self._method = ""
        self._version = "1.1"
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._content_length: bytes | None = None
        self._transfer_encoding: bytes | None = None
        self._expect: bytes | None = None
        self._hosts = 0
        self._keep_alive = True
        self._peer = ""
        self._body: list[bytes] = []
        self._body_len = 0
        # answering
        self._queue: deque[Request] = deque()
        self._current: Request | None = None  # the request being answered
        self._pending_error: _Refuse | None = None
        self._continue_pending = False
        self._shutting_down = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not one
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._peer = str(peer[0])
        self._idle_since = self._loop.time()
        self._server.connections.add(self)
        if self._server.closing:
            self.shutdown()
        else:
            self._refresh_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        if not (self._by_us or self._lingering or self._eof) and self.busy:
            self._count(Fault.DISCONNECT)
        self._queue.clear()
        # A running application call is not cancelled: it may still hand its exchange on;
        # its answer is discarded in _answered.
        self._server.forget(self)

    def eof_received(self) -> bool:
        if self._lingering:
            return False
        self._eof = True
        self._read_done = True
        if self._phase != _IDLE:
            self._count(Fault.DISCONNECT)  # half a request, then nothing more
            return False
        if self._current is not None or self._queue:
            # Either a half-close (the answer is still wanted) or a full close we cannot
            # tell apart yet: counted, and answered if the client still reads.
            self._count(Fault.DISCONNECT)
            return True
        return False

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_paused_at = self._loop.time()
        self._sync_reading()
        self._refresh_timer()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._next()

    def data_received(self, data: bytes) -> None:
        if self._read_done:
            return  # past the last request, or lingering after an error: discarded
        if self._phase != _BODY:
            self._head_fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade and CONNECT are not supported: the request (already queued, if it
            # was an Upgrade) is answered as a plain one and the connection then closed.
            self._read_done = True
            self._sync_reading()
            self._refresh_timer()
            return
        except httptools.HttpParserError as exc:
            refusal, self._refusal = self._refusal, None
            if refusal is None:
                if self._read_done:
                    return  # bytes after a request that closes the connection: ignored
                if isinstance(exc, httptools.HttpParserCallbackError):
                    log.error("front server: parser callback failed: %r", exc.__context__)
                refusal = _Refuse(400, f"malformed request: {exc}", Fault.BAD_REQUEST)
            self._fail(refusal)
            return
        if self._phase == _HEAD and self._head_fed > self._limits.max_header_bytes:
            self._fail(_Refuse(431, "request headers too large", Fault.HEADER_TOO_LARGE))
            return
        self._sync_reading()
        self._refresh_timer()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._phase = _HEAD
        self._deadline = self._loop.time() + self._limits.header_timeout
        self._target = b""
        self._headers = []
        self._head_size = 0
        self._content_length = None
        self._transfer_encoding = None
        self._expect = None
        self._hosts = 0
        self._body = []
        self._body_len = 0

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > self._limits.max_target:
            self._refuse(414, "request target too long", Fault.HEADER_TOO_LARGE)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._limits.max_header_bytes:
            self._refuse(431, "request headers too large", Fault.HEADER_TOO_LARGE)
        if len(self._headers) >= self._limits.max_headers:
            self._refuse(431, "too many request headers", Fault.HEADER_TOO_LARGE)
        if value and value[-1] in b" \t":
            value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace; it is not value
        self._headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            self._content_length = value  # a second one is refused by llhttp
        elif lname == b"transfer-encoding":
            te = self._transfer_encoding
            self._transfer_encoding = value if te is None else te + b"," + value
        elif lname == b"host":
            self._hosts += 1
        elif lname == b"expect":
            self._expect = value

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._refuse(505, f"HTTP version {version} is not supported", Fault.BAD_REQUEST)
        method = parser.get_method()
        if method == b"CONNECT":
            self._refuse(405, "CONNECT is not supported", Fault.BAD_REQUEST)
        # Checks llhttp leaves to us (it refuses CL with TE, bad or repeated CL, a last
        # coding other than chunked, bare LF and obs-fold by itself).
        if self._hosts > 1 or (self._hosts == 0 and version == "1.1"):
            self._refuse(400, "exactly one Host header is required", Fault.BAD_REQUEST)
        chunked = False
        if self._transfer_encoding is not None:
            if version == "1.0":
                self._refuse(400, "Transfer-Encoding in an HTTP/1.0 request", Fault.BAD_REQUEST)
            if self._transfer_encoding.strip(b" \t").lower() != b"chunked":
                self._refuse(400, "Transfer-Encoding other than chunked", Fault.BAD_REQUEST)
            chunked = True
        length = 0 if self._content_length is None else int(self._content_length)
        if length > self._limits.max_body:
            self._refuse(413, "request body too large", Fault.BODY_TOO_LARGE)
        if self._expect is not None:
            if self._expect.lower() != b"100-continue":
                self._refuse(417, "only Expect: 100-continue is supported", Fault.BAD_REQUEST)
            if version == "1.1" and (length or chunked):
                if self._current is None and not self._queue and self._pending_error is None:
                    self._write(_CONTINUE)
                else:
                    self._continue_pending = True  # after the answers before it
        self._method = method.decode("ascii")
        self._version = version
        self._keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        self._phase = _BODY
        self._deadline = self._loop.time() + self._limits.body_timeout
        self._head_fed = 0

    def on_body(self, chunk: bytes) -> None:
        size = self._body_len + len(chunk)
        if size > self._limits.max_body:
            self._refuse(413, "request body too large", Fault.BODY_TOO_LARGE)
        self._body_len = size
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        parts = self._body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._body = []
        request = Request(
            self._method,
            self._target,
            self._version,
            self._headers,
            body,
            self._keep_alive,
            self._peer,
        )
        self._phase = _IDLE
        self._continue_pending = False
        if not self._keep_alive or self._shutting_down:
            self._read_done = True
        if self._current is None and not self._write_paused and self._pending_error is None:
            self._start(request)
        else:
            self._queue.append(request)

    def _refuse(self, status: int, message: str, fault: Fault) -> None:
        self._refusal = _Refuse(status, message, fault)
        raise self._refusal

    # -- answering -----------------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        self._current = request
        server = self._server
        server.calls += 1

        def respond(response: Response) -> None:
            self._answered(request, response)

        try:
            self._begin(request, respond)
        except Exception as exc:
            if self._current is request:
                self._answered(request, server.failed(request, exc))
            else:
                server.failed(request, exc)  # raised after answering: logged and counted

    def _answered(self, request: Request, response: Response) -> None:
        if self._current is not request:
            return  # answered twice, or for a connection that moved on: ignored
        self._current = None
        self._server.call_done()
        self._respond(request, response)

    def _respond(self, request: Request, response: Response) -> None:
        if self._closed:
            return  # the client is gone: the answer is discarded
        last = (
            not self._queue
            and self._pending_error is None
            and (self._eof or (self._shutting_down and self._phase == _IDLE))
        )
        keep = request.keep_alive and not last
        try:
            head, body, keep = _encode(request, response, keep)
        except _BadResponse as exc:
            self._count(Fault.APP_ERROR)
            log.error("front server: the application's answer cannot be sent: %s", exc)
            head, body, keep = _encode(request, _error_response(500, "bad response"), keep)
        if body:
            if len(body) < _WRITE_APART:
                self._write(head + body)
            else:
                self._write(head)
                self._write(body)
        else:
            self._write(head)
        self._served += 1
        self._idle_since = self._loop.time()
        if not keep:
            self._close()
            return
        self._next()

    def _next(self) -> None:
        """Start the next queued request, or what waits for the queue to drain."""
        if self._current is None and not self._write_paused and not self._closed:
            if self._queue:
                self._start(self._queue.popleft())
            elif self._pending_error is not None:
                refusal, self._pending_error = self._pending_error, None
                self._send_error(refusal)
                return
            elif self._continue_pending:
                self._continue_pending = False
                self._write(_CONTINUE)
        self._sync_reading()
        self._refresh_timer()

    def _fail(self, refusal: _Refuse) -> None:
        """Answer an error and close, after the answers to requests already complete."""
        self._count(refusal.fault)
        self._read_done = True
        self._phase = _IDLE
        self._continue_pending = False
        if self._current is not None or self._queue:
            self._pending_error = refusal
            self._sync_reading()
            self._refresh_timer()
        else:
            self._send_error(refusal)

    def _send_error(self, refusal: _Refuse) -> None:
        head, body, _ = _encode(
            _NO_REQUEST, _error_response(refusal.status, refusal.message), False
        )
        self._write(head + body)
        self._linger()

    def _linger(self) -> None:
        """Half-close, then read and discard for a while: closing with unread request bytes
        would make the kernel send a reset that can destroy the error answer in flight."""
        transport = self._transport
        self._cancel_timer()
        if transport is None or self._closed:
            return
        self._by_us = True
        if transport.can_write_eof():
            self._lingering = True
            transport.write_eof()
            if not self._reading:
                self._reading = True
                transport.resume_reading()
            self._timer = self._loop.call_later(self._limits.linger, transport.abort)
        else:
            transport.close()

    def _close(self) -> None:
        self._by_us = True
        self._read_done = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    # -- reading and timers --------------------------------------------------------------------

    def _sync_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed or self._lingering:
            return
        want = (
            not self._read_done
            and not self._write_paused
            and len(self._queue) < self._limits.max_pipeline
        )
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _refresh_timer(self) -> None:
        """One timer per connection, for whatever the client owes us now."""
        if self._closed or self._lingering:
            return
        limits = self._limits
        at = 0.0
        if self._write_paused:
            at = self._write_paused_at + limits.send_timeout
        elif not self._reading:
            at = 0.0  # we paused reading ourselves: the client owes nothing
        elif self._phase != _IDLE:
            at = self._deadline
        elif self._current is None and not self._queue:
            idle = limits.keepalive_timeout if self._served else limits.header_timeout
            at = self._idle_since + idle
        # Lazily, as a request moves the deadline several times: an armed timer that fires
        # before the deadline re-arms itself then; only an earlier deadline re-arms now.
        self._timer_at = at
        if not at or (self._timer is not None and self._armed_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        at = self._timer_at
        if not at or self._closed or self._lingering:
            return
        if self._loop.time() < at:  # moved later since the timer was armed
            self._armed_at = at
            self._timer = self._loop.call_at(at, self._on_timer)
            return
        self._on_timeout()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = 0.0

    def _on_timeout(self) -> None:
        self._timer = None
        self._timer_at = 0.0
        if self._closed:
            return
        if self._write_paused:
            self._count(Fault.TIMEOUT)  # it stopped reading our answers
            self._abort()
        elif self._phase != _IDLE:
            self._fail(_Refuse(408, "request not received in time", Fault.TIMEOUT))
        else:
            if not self._served:
                self._count(Fault.TIMEOUT)  # connected, then sent nothing
            self._close()

    def _abort(self) -> None:
        self._by_us = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    # -- shutdown ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A request is being read, answered or waits to be."""
        return self._phase != _IDLE or self._current is not None or bool(self._queue)

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def shutdown(self) -> None:
        """Close now if idle; otherwise answer what was received, then close."""
        self._shutting_down = True
        if not self.busy:
            self._close()
        elif self._phase == _IDLE:
            self._read_done = True
            self._sync_reading()
            self._refresh_timer()

    def abort(self) -> None:
        self._abort()


class _BadResponse(Exception):
    pass


_NO_REQUEST = Request("GET", b"", "1.1", [], b"", False)
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def _encode(request: Request, response: Response, keep: bool) -> tuple[bytes, bytes, bool]:
    """The answer's head and body, and whether the connection stays open after it."""
    status = response.status
    if not 200 <= status <= 599:
        raise _BadResponse(f"status {status} is not a final status")
    if response.reason:
        line = b"HTTP/1.1 %d %s\r\n" % (status, response.reason)
    else:
        line = _STATUS_LINES[status]
    parts = [line]
    given_length: bytes | None = None
    for name, value in response.headers:
        lname = name.lower()
        if lname in _FRAMING:
            if lname == b"connection":
                if b"close" in value.lower():
                    keep = False
            elif lname == b"content-length":
                given_length = value
            continue
        parts += (name, b": ", value, b"\r\n")
    # Each header line holds exactly one CR and one LF, its own: anything else would split
    # the response (or truncate it, for NUL).
    fields = b"".join(parts[1:]) + response.reason
    lines = len(parts) // 4
    if fields.count(b"\n") != lines or fields.count(b"\r") != lines or b"\x00" in fields:
        raise _BadResponse("a header or the reason holds CR, LF or NUL")
    body = response.body
    if status == 204:
        body = b""
    elif request.method == "HEAD" or status == 304:
        # The length of what a GET would have answered: the app's, when it knows it.
        if given_length is not None:
            parts += (b"Content-Length: ", given_length.strip(), b"\r\n")
        elif status != 304:
            parts.append(b"Content-Length: %d\r\n" % len(body))
        body = b""
    else:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if not keep:
        parts.append(b"Connection: close\r\n")
    elif request.version == "1.0":
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), body, keep


class Server:
    """An HTTP/1.1 server for one application, with its connections tracked for a graceful
    close.

    >>> async def app(request: Request) -> Response:
    ...     return Response(200, [(b"Content-Type", b"text/plain")], b"hello")
    >>> server = Server(app, Limits(max_body=1 << 20), count=tally)
    >>> await server.start("127.0.0.1", 8080)
    >>> await server.close(grace=10.0)   # on SIGTERM
    """

    connection_class: type[HttpConnection] = HttpConnection

    def __init__(
        self,
        app: Application | CallbackApplication,
        limits: Limits | None = None,
        *,
        count: CountFn | None = None,
    ) -> None:
        self.app = app
        begin = getattr(app, "begin", None)  # a CallbackApplication's
        self.begin: Callable[[Request, Respond], None] = begin or self._in_task
        self.limits = limits if limits is not None else Limits()
        self.count: CountFn = count if count is not None else Tally()
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpConnection] = set()
        self.closing = False
        self.calls = 0  # application calls not answered yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._all_gone: asyncio.Event | None = None
        self._calls_done: asyncio.Event | None = None

    def _in_task(self, request: Request, respond: Respond) -> None:
        """A coroutine application, run as a task per request."""
        app = cast(Application, self.app)

        async def run() -> None:
            try:
                response = await app(request)
            except Exception as exc:
                response = self.failed(request, exc)
            respond(response)

        task = self.loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def failed(self, request: Request, exc: Exception) -> Response:
        """The application raised: logged, counted, answered 500."""
        self.count(Fault.APP_ERROR)
        log.error(
            "front server: the application failed on %s %r: %s: %s",
            request.method,
            request.target[:200],
            type(exc).__name__,
            exc,
        )
        return _error_response(500, "internal server error")

    def call_done(self) -> None:
        self.calls -= 1
        if not self.calls and self._calls_done is not None:
            self._calls_done.set()

    async def start(
        self,
        host: str | None = None,
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        reuse_port: bool = False,
        backlog: int = 1024,
    ) -> None:
        if sock is not None:
            self._server = await self.loop.create_server(self._protocol, sock=sock, backlog=backlog)
        else:
            self._server = await self.loop.create_server(
                self._protocol, host, port, reuse_port=reuse_port or None, backlog=backlog
            )

    def _protocol(self) -> HttpConnection:
        return self.connection_class(self)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self._server is not None, "Server.start() was not awaited"
        return [s.getsockname()[:2] for s in self._server.sockets]

    def forget(self, connection: HttpConnection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._all_gone is not None:
            self._all_gone.set()

    async def close(self, grace: float) -> None:
        """Stop accepting; close idle connections at once; let requests in flight finish
        for up to `grace` seconds; then abort the rest and cancel their application calls."""
        self.closing = True
        deadline = self.loop.time() + grace
        if self._server is not None:
            self._server.close()
        self._all_gone = asyncio.Event()
        for connection in list(self.connections):
            connection.shutdown()
        if self.connections:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._all_gone.wait()
            except TimeoutError:
                for connection in list(self.connections):
                    connection.abort()
        # Calls whose client left are still running: they get what remains of the grace.
        if self.calls:
            self._calls_done = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._calls_done.wait()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

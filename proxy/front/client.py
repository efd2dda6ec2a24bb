"""The front's pooled keep-alive HTTP/1.1 client to one origin (httptools parses answers; this
is the glue: the pool, its limit, timeouts, the safe retry, the answer cap); must not touch
the server side, routing, metrics libraries or the content of bodies.

Retrying a stale pooled connection follows Go's net/http (`persistConn.shouldRetryRequest`
in src/net/http/transport.go, with `Request.isReplayable` in request.go): a request is sent
again, once, on a fresh connection only when the failed connection had been reused (a fresh
one failing means the server refuses us: retrying could loop) and either nothing of the
request was written (the connection was found closed before sending), or the request is
replayable and the connection ended (EOF or reset) before the first byte of an answer.
Replayable is Go's set: GET, HEAD, OPTIONS, TRACE, or any request carrying an
`Idempotency-Key` or `X-Idempotency-Key` header. A POST written to a connection the server
was closing at that moment is not retried: the server may have received and acted on it
(a model may have run, been billed, or recorded it), and a stale keep-alive race is much
rarer than that harm is cheap to avoid; keeping `idle_timeout` below the server's keep-alive
timeout makes the race rarer still."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from proxy.core.outcomes import Cause, Outcome

log = logging.getLogger("proxy.front.client")


class UpstreamError(Exception):
    """The upstream gave no usable answer. `outcome` is the metric label for it; `cause` says
    why, finer (the log's and shadowproxy_upstream_errors_total's label)."""

    outcome = Outcome.CONNECT_ERROR
    cause = Cause.RESET

    def __init__(self, message: str, cause: Cause | None = None) -> None:
        super().__init__(message)
        if cause is not None:
            self.cause = cause


class UpstreamTimeout(UpstreamError):
    outcome = Outcome.TIMEOUT
    cause = Cause.TIMEOUT


class UpstreamConnectError(UpstreamError):
    outcome = Outcome.CONNECT_ERROR


class UpstreamTooLarge(UpstreamError):
    """The answer is over `max_response`: it declared a longer Content-Length, or its body grew
    past the cap while being read (never more than the cap is held)."""

    outcome = Outcome.TOO_LARGE
    cause = Cause.TOO_LARGE


def connect_cause(exc: OSError) -> Cause:
    """The cause of a failed connect, from the OSError the event loop raised."""
    if isinstance(exc, socket.gaierror):
        return Cause.DNS
    if isinstance(exc, ConnectionRefusedError):
        return Cause.REFUSED
    if isinstance(exc, ssl_module.SSLError | ssl_module.CertificateError):
        return Cause.TLS
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return Cause.RESET
    return Cause.UNREACHABLE


# Built per request: not frozen (5x cheaper to build); read-only by convention.
@dataclass(slots=True)
class UpstreamResponse:
    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]  # as received, names in the upstream's case
    body: bytes


_REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_IDEMPOTENCY_KEYS = frozenset({b"idempotency-key", b"x-idempotency-key"})
_OWN = frozenset({b"host", b"content-length", b"transfer-encoding"})  # framing is ours
_WITH_CONTENT = frozenset({"POST", "PUT", "PATCH"})  # a length even when empty (RFC 9110 8.6)


class _Stale(Exception):
    """The connection ended before any byte of an answer."""

    def __init__(self, written: bool) -> None:
        super().__init__("the connection closed before any answer")
        self.written = written


class _Stop(Exception):
    """Raised in a parser callback to stop parsing; `why` says what to do next."""


_HEAD_DONE, _TOO_LARGE, _UNSOLICITED = "head done", "too large", "unsolicited"

Result = UpstreamResponse | Exception
"""How an exchange ends: the answer, or why there is none (an UpstreamError; inside this
module also _Stale)."""
Done = Callable[[Result], None]


def _deliver(done: Done, result: Result) -> None:
    """Call a continuation; what it raises is logged, never fed back into a parser."""
    try:
        done(result)
    except Exception:
        log.exception("front client: the continuation of an exchange failed")


def _resolve(future: asyncio.Future[UpstreamResponse]) -> Done:
    def done(result: Result) -> None:
        if future.done():
            return
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)

    return done


class _Connection(asyncio.Protocol):
    """One connection to the origin, carrying one exchange at a time."""

    def __init__(self, pool: Upstream) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.made = False
        self.closed = False
        self.reused = False
        self.keep_alive = False
        self.idle_since = 0.0
        self.deadline = 0.0  # of the exchange in flight (loop time); 0 while idle
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._eof = False
        self._done: Done | None = None  # the exchange in flight: called once with its result
        self._feeding = False  # inside the parser: results wait for it to return
        self._result: tuple[Done, Result] | None = None
        self._head = False
        self._got_bytes = False
        self._stop: str | None = None
        # the answer being read
        self._interim = False
        self._headers_done = False
        self._until_close = False
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._has_length = False
        self._length = 0  # the Content-Length declared, when it was
        self._chunked = False
        self._body: list[bytes] = []
        self._size = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.made = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done is not None:
            if self._until_close and self._headers_done and exc is None:
                self._finish()  # the answer's body ran until the close
            elif not self._got_bytes:
                self._settle(_Stale(written=True))
            else:
                self._settle(
                    UpstreamConnectError(f"{self._pool.origin}: connection closed mid-answer")
                )
        self._pool.gone(self)

    def eof_received(self) -> None:
        self._eof = True
        self.keep_alive = False

    def data_received(self, data: bytes) -> None:
        if self._done is None:
            self.abort()  # bytes nobody asked for (a 408 before an idle close, or garbage)
            return
        self._got_bytes = True
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            stop, self._stop = self._stop, None
            if stop == _HEAD_DONE:
                self._parser = httptools.HttpResponseParser(self)
            elif stop == _TOO_LARGE:
                self._fail(
                    UpstreamTooLarge(
                        f"{self._pool.origin}: answer over {self._pool.max_response} bytes"
                    )
                )
            elif stop == _UNSOLICITED:
                self._fail(
                    UpstreamConnectError(
                        f"{self._pool.origin}: more than one answer", Cause.BAD_RESPONSE
                    )
                )
            else:
                self._fail(UpstreamConnectError(f"{self._pool.origin}: {exc.__context__!r}"))
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(
                UpstreamConnectError(
                    f"{self._pool.origin}: malformed answer: {exc!r}", Cause.BAD_RESPONSE
                )
            )
        finally:
            self._feeding = False
        # The result is given out once the parser is done with this connection: the caller may
        # reuse it at once (its continuation can send the next request on it).
        result = self._result
        if result is not None:
            self._result = None
            _deliver(*result)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done is None:
            self._stop = _UNSOLICITED
            raise _Stop
        self._reason = b""
        self._headers = []
        self._has_length = False
        self._length = 0
        self._chunked = False
        self._body = []
        self._size = 0

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length":
            self._has_length = True
            length = value.rstrip(b" \t")
            if length.isdigit():  # llhttp refuses any other value itself
                self._length = int(length)
        elif lname == b"transfer-encoding":
            self._chunked = value.rstrip(b" \t").lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _Stop("101 Switching Protocols, never asked for")
            self._interim = True  # 100, 103: skipped
            return
        self._status = status
        self._headers_done = True
        self.keep_alive = (
            parser.should_keep_alive() and parser.get_http_version() == "1.1" and not self._eof
        )
        if self._head:
            # httptools cannot be told that an answer to HEAD has no body: stop it here and
            # give the connection a fresh parser.
            self._finish()
            self._stop = _HEAD_DONE
            raise _Stop
        if status == 204 or status == 304:
            return  # no body, whatever Content-Length says
        if self._length > self._pool.max_response:
            # Declared too long: fail now rather than read up to the cap first.
            self._stop = _TOO_LARGE
            raise _Stop
        if not (self._has_length or self._chunked):
            self._until_close = True
            self.keep_alive = False

    def on_body(self, chunk: bytes) -> None:
        size = self._size + len(chunk)
        if size > self._pool.max_response:
            self._stop = _TOO_LARGE
            raise _Stop
        self._size = size
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._finish()

    # -- exchanges -----------------------------------------------------------------------------

    def send(self, data: bytes, head: bool, done: Done) -> None:
        """Write one request; `done` gets its answer or error, once (never from inside this
        call: a connection found closed raises _Stale(written=False) instead)."""
        transport = self.transport
        if self.closed or self._eof or transport is None or transport.is_closing():
            raise _Stale(written=False)
        self._done = done
        self._head = head
        self._got_bytes = False
        self._headers_done = False
        self._until_close = False
        self._interim = False
        self.keep_alive = False
        transport.write(data)

    def _settle(self, result: Result) -> None:
        """End the exchange in flight with `result`: given out now, or, inside the parser,
        once it returns."""
        done, self._done = self._done, None
        if done is None:
            return
        if self._feeding:
            self._result = (done, result)
        else:
            _deliver(done, result)

    def _finish(self) -> None:
        parts = self._body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._body = []
        reason = self._reason.decode("latin-1") if self._reason else ""
        self._settle(UpstreamResponse(self._status, reason, self._headers, body))

    def _fail(self, error: UpstreamError) -> None:
        self._settle(error)
        self._body = []  # let the part read go now, not when the connection is collected
        self.abort()

    def arm(self, deadline: float) -> None:
        """Expire the exchange about to be sent at `deadline` (loop time). Lazily: one timer
        per connection, re-armed when it fires early, not created and cancelled per request."""
        self.deadline = deadline
        timer = self._timer
        if timer is not None and self._armed_at <= deadline:
            return
        if timer is not None:
            timer.cancel()
        self._armed_at = deadline
        self._timer = self._pool.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self.deadline
        if not deadline or self.closed:
            return
        if self._pool.loop.time() < deadline:
            self._armed_at = deadline
            self._timer = self._pool.loop.call_at(deadline, self._on_timer)
            return
        self.expire()

    def expire(self) -> None:
        """The exchange ran out of time: its connection cannot be reused."""
        self._fail(UpstreamTimeout(f"no answer from {self._pool.origin} in time"))

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()


class Upstream:
    """A keep-alive pool to one origin (`http://host:port`, `https://host:port`, IPv6 as
    `http://[::1]:8080`). Requests go to `path + suffix`; answers are read whole, up to
    `max_response` bytes. Every request finishes within `timeout`, waiting for a free
    connection, connecting (within `connect_timeout`) and the answer included.

    >>> upstream = Upstream("http://iris:8080", "/v2/models/iris/infer", timeout=2.0)
    >>> await upstream.start()
    >>> answer = await upstream.send("POST", "?x=1", [(b"Content-Type", b"...")], body)
    >>> await upstream.close()

    With `unix_socket`, connections go to that Unix socket path and `origin` only names the
    Host header (the front reaches the analysis process's control plane that way).

    `headers` are sent as given, in order; Host, Content-Length and Transfer-Encoding among
    them are dropped (the client frames the body and names the origin). Nothing else is
    added: no Accept-Encoding, no User-Agent. Hop-by-hop headers are the caller's to strip.
    """

    def __init__(
        self,
        origin: str,
        path: str = "",
        *,
        timeout: float,
        connect_timeout: float = 1.0,
        max_connections: int = 256,
        idle_timeout: float = 30.0,
        max_response: int = 64 * 1024 * 1024,
        ssl: ssl_module.SSLContext | None = None,
        unix_socket: str | None = None,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"origin {origin!r} is not http(s)://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"origin {origin!r} has more than a scheme, host and port")
        if ssl is not None and parts.scheme != "https":
            raise ValueError(f"an ssl context for a plain http origin: {origin!r}")
        self.origin = origin
        self.base = path.encode("ascii")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_response = max_response
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        if not parts.netloc.isascii():
            raise ValueError(f"origin {origin!r}: write a non-ASCII host in its IDNA form")
        self._host_header = parts.netloc.encode("ascii")
        self._ssl: ssl_module.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl if ssl is not None else ssl_module.create_default_context()
        self._unix_socket = unix_socket  # connect here instead; the origin names the Host only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Connection] = []  # most recently used last: taken first
        self._all: set[_Connection] = set()
        self._open = 0  # connections open or being opened, and slots promised to waiters
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._all_gone: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # begin()'s exchanges that wait or retry

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "Upstream.start() was not awaited"
        return self._loop

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Close every connection; requests in flight fail with UpstreamConnectError."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    UpstreamConnectError(f"{self.origin}: the pool is closed", Cause.CLOSED)
                )
        self._idle.clear()
        if self._all:
            self._all_gone = asyncio.Event()
            for conn in list(self._all):
                conn.abort()
            await self._all_gone.wait()

    # -- sending -------------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        suffix: str | bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        within: float | None = None,
    ) -> UpstreamResponse:
        """Send one request and read the whole answer, in `within` seconds (the pool's
        `timeout` when None). Raises UpstreamTimeout, UpstreamConnectError or
        UpstreamTooLarge when there is no usable answer."""
        loop = self.loop
        deadline = loop.time() + (self.timeout if within is None else within)
        data, replayable = self._encode(method, suffix, headers, body)
        head = method == "HEAD"
        return await self._send(data, head, replayable, deadline, retried=False)

    async def _send(
        self, data: bytes, head: bool, replayable: bool, deadline: float, *, retried: bool
    ) -> UpstreamResponse:
        while True:
            conn = await self._acquire(deadline)
            conn.arm(deadline)
            try:
                answered: asyncio.Future[UpstreamResponse] = self.loop.create_future()
                conn.send(data, head, _resolve(answered))
                response = await answered
            except _Stale as exc:
                conn.abort()
                if not retried and conn.reused and (replayable or not exc.written):
                    retried = True
                    continue
                raise UpstreamConnectError(f"{self.origin}: {exc}") from None
            except BaseException:
                conn.abort()
                raise
            finally:
                conn.deadline = 0.0  # its timer, if armed, finds nothing owed
            self._release(conn)
            return response

    def begin(
        self,
        method: str,
        suffix: str | bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        done: Callable[[UpstreamResponse | UpstreamError], None],
    ) -> None:
        """`send` without a task or a future: `done` is called once with the answer or the
        UpstreamError, later (never from inside this call). On a pooled connection it costs a
        write; when it has to wait for one, connect, or retry, it runs `send` as a task."""
        loop = self._loop
        assert loop is not None, "Upstream.start() was not awaited"
        deadline = loop.time() + self.timeout
        data, replayable = self._encode(method, suffix, headers, body)
        head = method == "HEAD"
        conn = self._take_idle() if not self._closed else None
        if conn is None:
            self._in_task(done, data, head, replayable, deadline, retried=False)
            return

        def finished(result: Result) -> None:
            conn.deadline = 0.0  # its timer, if armed, finds nothing owed
            if isinstance(result, UpstreamResponse):
                self._release(conn)
                done(result)
                return
            conn.abort()
            if isinstance(result, _Stale):
                if conn.reused and (replayable or not result.written):
                    self._in_task(done, data, head, replayable, deadline, retried=True)
                    return
                result = UpstreamConnectError(f"{self.origin}: {result}")
            assert isinstance(result, UpstreamError)
            done(result)

        conn.arm(deadline)
        try:
            conn.send(data, head, finished)
        except _Stale as exc:
            loop.call_soon(finished, exc)

    def _in_task(
        self,
        done: Callable[[UpstreamResponse | UpstreamError], None],
        data: bytes,
        head: bool,
        replayable: bool,
        deadline: float,
        *,
        retried: bool,
    ) -> None:
        async def run() -> None:
            try:
                result: UpstreamResponse | UpstreamError = await self._send(
                    data, head, replayable, deadline, retried=retried
                )
            except UpstreamError as exc:
                result = exc
            except asyncio.CancelledError:
                result = UpstreamConnectError(f"{self.origin}: the pool is closed", Cause.CLOSED)
            try:
                done(result)
            except Exception:
                log.exception("front client: the continuation of an exchange failed")

        task = self.loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _encode(
        self,
        method: str,
        suffix: str | bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
    ) -> tuple[bytes, bool]:
        target = self.base + (suffix.encode("ascii") if isinstance(suffix, str) else suffix)
        parts = [
            method.encode("ascii"),
            b" ",
            target or b"/",
            b" HTTP/1.1\r\nHost: ",
            self._host_header,
            b"\r\n",
        ]
        replayable = method in _REPLAYABLE
        lines = 2
        for name, value in headers:
            lname = name.lower()
            if lname in _OWN:
                continue
            if lname in _IDEMPOTENCY_KEYS:
                replayable = True
            parts += (name, b": ", value, b"\r\n")
            lines += 1
        if body or method in _WITH_CONTENT:
            parts.append(b"Content-Length: %d\r\n" % len(body))
            lines += 1
        parts.append(b"\r\n")
        head = b"".join(parts)
        # One CR and one LF per line, the request line's and each header's own, and the end:
        # anything else would let a header value smuggle a request.
        if head.count(b"\n") != lines + 1 or head.count(b"\r") != lines + 1 or b"\0" in head:
            raise ValueError("a request line or header holds CR, LF or NUL")
        return head + body if body else head, replayable

    # -- the pool ------------------------------------------------------------------------------

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection still good, if any."""
        idle = self._idle
        if idle:
            expired_before = self.loop.time() - self.idle_timeout
            while idle:
                conn = idle.pop()
                if conn.closed or not conn.keep_alive:
                    continue  # its slot is given back in gone()
                if conn.idle_since < expired_before:
                    conn.abort()
                    continue
                return conn
        return None

    async def _acquire(self, deadline: float) -> _Connection:
        if self._closed:
            raise UpstreamConnectError(f"{self.origin}: the pool is closed", Cause.CLOSED)
        conn = self._take_idle()
        if conn is not None:
            return conn
        if self._open < self.max_connections:
            self._open += 1
            return await self._connect(deadline)
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                got = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_back(waiter.result())  # given to us just as we stopped waiting
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"no free connection to {self.origin} in time ({self.max_connections} busy)"
                ) from None
            raise
        if got is not None:
            return got
        return await self._connect(deadline)  # a slot was passed on to us

    async def _connect(self, deadline: float) -> _Connection:
        """Open a connection in a slot already counted in `_open`."""
        loop = self.loop
        made: list[_Connection] = []

        def factory() -> _Connection:
            made.append(_Connection(self))
            return made[-1]

        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + self.connect_timeout)):
                if self._unix_socket is not None:
                    _, protocol = await loop.create_unix_connection(factory, self._unix_socket)
                else:
                    _, protocol = await loop.create_connection(
                        factory,
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl is not None else None,
                    )
        except BaseException as exc:
            if made and made[0].made:
                made[0].abort()  # its connection_lost gives the slot back
            else:
                self._slot_freed()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"no connection to {self.origin} in time", Cause.CONNECT_TIMEOUT
                ) from exc
            if isinstance(exc, OSError):  # refused, unreachable, TLS verification, reset
                raise UpstreamConnectError(
                    f"{self.origin}: {exc.__class__.__name__}: {exc}", connect_cause(exc)
                ) from exc
            raise
        conn = protocol
        self._all.add(conn)
        if self._closed:
            conn.abort()
            raise UpstreamConnectError(f"{self.origin}: the pool is closed", Cause.CLOSED)
        return conn

    def _release(self, conn: _Connection) -> None:
        if not conn.keep_alive or conn.closed or self._closed:
            conn.abort()
            return
        conn.reused = True
        conn.idle_since = self.loop.time()
        self._hand_back(conn)

    def _hand_back(self, conn: _Connection | None) -> None:
        """A connection (or, as None, a slot) is free: to the first waiter, or the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._open -= 1
            return
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.idle_timeout, self._sweep)

    def _slot_freed(self) -> None:
        if not self._closed:
            self._hand_back(None)
        else:
            self._open -= 1

    def gone(self, conn: _Connection) -> None:
        """A connection closed (called once, from its connection_lost)."""
        if conn in self._all:
            self._all.discard(conn)
            if conn in self._idle:
                self._idle.remove(conn)
            self._slot_freed()
        else:
            self._slot_freed()  # closed before _connect saw it
        if not self._all and self._all_gone is not None:
            self._all_gone.set()

    def _sweep(self) -> None:
        self._sweeper = None
        expired_before = self.loop.time() - self.idle_timeout
        for conn in [c for c in self._idle if c.idle_since < expired_before]:
            conn.abort()
        if self._idle and not self._closed:
            self._sweeper = self.loop.call_later(self.idle_timeout, self._sweep)

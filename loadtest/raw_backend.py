"""A lean model-server stand-in for the benchmark: an ``asyncio.Protocol`` on uvloop with
httptools' request parser, so that the backends cost a few µs of CPU per request and leave the
cores to the thing being measured (``loadtest.model_server``, on aiohttp, stays for the demo).

Owns: the HTTP/1.1 server loop of one stand-in, its answers and its counters. Must not touch:
``proxy/`` (nothing here is imported by it) or anything the demo's model server does (v2,
MLflow, hashed predictions, random latencies).

Answers (any host):

- ``POST /v1/models/{name}:predict`` with KServe v1's ``{"instances": [...]}`` ->
  ``{"predictions": [...]}``, one prediction per instance: instance ``k`` of a request
  predicts class ``k % classes``, or ``(k + 1) % classes`` when it *flips*. The server numbers
  every instance it answers 0, 1, 2, ...; instance ``n`` flips when
  ``floor((n + 1) * disagree) > floor(n * disagree)``, so exactly ``floor(N * disagree)`` of the
  first ``N`` instances flip, evenly spread, and a server with ``--disagree 0`` (production)
  never flips. Agreement costs an integer comparison, not a hash.
- ``--answer-bytes N`` pads every answer to about ``N`` bytes:
  ``{"predictions": [...],"padding":"xxx..."}``; the padding is built once, at start.
- ``--latency 200ms`` delays each answer (a timer per request, no task); pipelined answers
  keep their order. ``--blackhole`` reads prediction requests and never answers them.
- ``GET /healthz``: ``ok``, at once, even with ``--blackhole``. ``GET /stats``: the counters
  as JSON. Other paths: 404; a body that is not ``{"instances": [...]}``: 400
  (``{"error": "..."}``); another method on a prediction path: 405.

HTTP: keep-alive, ``Connection: close``, Content-Length and chunked request bodies, pipelined
requests answered in order; no ``Expect: 100-continue``.

    python -m loadtest.raw_backend --port 9001 --disagree 0.1 --latency 200ms

prints ``listening on http://HOST:PORT`` once bound (``--port 0`` picks a free port) and serves
until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, cast

import httptools
import orjson
import uvloop

from proxy.config import parse_duration

__all__ = ["BackendOptions", "RawBackend", "build_parser", "main"]

_PREDICT_PREFIX: Final = b"/v1/models/"
_PREDICT_SUFFIX: Final = b":predict"
_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
}


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """How a stand-in answers.

    >>> BackendOptions(disagree=0.1, latency=0.2).classes
    3
    """

    disagree: float = 0.0
    classes: int = 3
    latency: float = 0.0  # seconds before each prediction answer
    blackhole: bool = False
    answer_bytes: int = 0  # 0: plain answers; else pad each to about this many bytes

    def __post_init__(self) -> None:
        if not 0.0 <= self.disagree <= 1.0:
            raise ValueError(f"disagree must be in [0, 1], got {self.disagree!r}")
        if self.classes < 2:
            raise ValueError(f"classes must be at least 2, got {self.classes!r}")
        if self.latency < 0:
            raise ValueError(f"latency must not be negative, got {self.latency!r}")
        if self.answer_bytes < 0:
            raise ValueError(f"answer-bytes must not be negative, got {self.answer_bytes!r}")


def _head(status: int, length: int, *, close: bool) -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        status,
        _REASONS[status],
        length,
        b"Connection: close\r\n" if close else b"",
    )


def _response(status: int, body: bytes, *, close: bool) -> bytes:
    return _head(status, len(body), close=close) + body


def _error(status: int, message: str, *, close: bool) -> bytes:
    return _response(status, orjson.dumps({"error": message}), close=close)


class _Slot:
    """One answer in a connection's queue: pipelined answers leave in request order."""

    __slots__ = ("close", "data", "ready", "tail")

    def __init__(
        self, data: bytes, *, ready: bool, close: bool = False, tail: tuple[bytes, ...] = ()
    ) -> None:
        self.data = data
        self.tail = tail  # written after data, as is: the prebuilt padding of a big answer
        self.ready = ready
        self.close = close  # close the connection once written


class _Connection(asyncio.Protocol):
    def __init__(self, server: RawBackend) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._pending: deque[_Slot] = deque()
        self._held = 0  # prediction requests blackholed on this connection

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._send(_error(400, "malformed request", close=True), close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        if self._held:
            self._server._hold(-self._held)
            self._held = 0
        self._pending.clear()
        self._transport = None

    def pause_writing(self) -> None:
        # A client that reads slowly stops us parsing what it has pipelined meanwhile.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    # --- httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url, self._url = self._url, b""
        body = b"".join(self._body)
        self._body.clear()
        method = self._parser.get_method()
        close = not self._parser.should_keep_alive()
        path = url.split(b"?", 1)[0]
        server = self._server
        if path.startswith(_PREDICT_PREFIX) and path.endswith(_PREDICT_SUFFIX):
            if method != b"POST":
                self._send(_error(405, "POST only", close=close), close=close)
                return
            server.requests += 1
            if server.options.blackhole:
                server._hold(1)
                self._held += 1
                self._queue(_Slot(b"", ready=False))
                return
            self._answer_prediction(body, close)
        elif path == b"/healthz" and method == b"GET":
            self._send(_response(200, b'"ok"', close=close), close=close)
        elif path == b"/stats" and method == b"GET":
            self._send(_response(200, orjson.dumps(server.stats()), close=close), close=close)
        else:
            self._send(_error(404, "not found", close=close), close=close)

    # --- answers

    def _answer_prediction(self, body: bytes, close: bool) -> None:
        server = self._server
        try:
            doc = orjson.loads(body)
            instances = doc["instances"]
            if not isinstance(instances, list):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError, KeyError):
            message = 'expected {"instances": [...]}'
            self._send(_error(400, message, close=close), close=close)
            return
        predictions = server.predict(len(instances))
        if server.padding:
            head = b'{"predictions":' + predictions + b',"padding":"'
            size = len(head) + len(server.padding) + 2
            data = _head(200, size, close=close) + head
            tail = (server.padding, b'"}')
        else:
            data = _response(200, b'{"predictions":' + predictions + b"}", close=close)
            tail = ()
        delay = server.options.latency
        slot = _Slot(data, ready=not delay, close=close, tail=tail)
        self._queue(slot)
        if delay:
            asyncio.get_running_loop().call_later(delay, self._ready, slot)

    def _send(self, data: bytes, *, close: bool) -> None:
        self._queue(_Slot(data, ready=True, close=close))

    def _queue(self, slot: _Slot) -> None:
        if slot.ready and not self._pending:
            self._write(slot)  # the common case: nothing waits before it
            return
        self._pending.append(slot)
        if slot.ready:
            self._flush()

    def _ready(self, slot: _Slot) -> None:
        slot.ready = True
        self._flush()

    def _flush(self) -> None:
        pending = self._pending
        while pending and pending[0].ready:
            if not self._write(pending.popleft()):
                return

    def _write(self, slot: _Slot) -> bool:
        """Write one answer; False once the connection is closed or closing."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        transport.write(slot.data)
        for part in slot.tail:
            transport.write(part)
        self._server.answered += 1
        if slot.close:
            transport.close()
            return False
        return True


class RawBackend:
    """One stand-in server; its counters are plain attributes (one event loop).

    >>> async def demo() -> None:
    ...     backend = RawBackend(BackendOptions(disagree=0.1))
    ...     port = await backend.start()
    ...     ...  # POST http://127.0.0.1:{port}/v1/models/m:predict
    ...     await backend.stop()
    """

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self.requests = 0  # prediction requests received
        self.answered = 0  # answers written, of any kind
        self.instances = 0  # instances predicted
        self.flipped = 0  # of which predicted differently from production
        self.hanging = 0  # prediction requests held by --blackhole, on open connections
        fraction = Fraction(options.disagree).limit_denominator(1_000_000)
        self._num, self._den = fraction.numerator, fraction.denominator
        self._agreeing: dict[int, bytes] = {}
        # Built once: a big answer costs a write of a prebuilt buffer, not building it.
        self.padding = b"x" * max(0, options.answer_bytes - 64) if options.answer_bytes else b""
        self._connections: set[_Connection] = set()
        self._hang_changed: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "instances": self.instances,
            "flipped": self.flipped,
            "hanging": self.hanging,
        }

    def _hold(self, delta: int) -> None:
        self.hanging += delta
        if self._hang_changed is not None:
            self._hang_changed.set()

    async def wait_hanging(self, count: int) -> None:
        """Return once exactly ``count`` prediction requests are held (for tests)."""
        while self.hanging != count:
            self._hang_changed = changed = asyncio.Event()
            await changed.wait()
        self._hang_changed = None

    def predict(self, count: int) -> bytes:
        """The JSON array of predictions for the next `count` instances."""
        first = self.instances
        self.instances = last = first + count
        num, den = self._num, self._den
        if (last * num) // den == (first * num) // den:
            cached = self._agreeing.get(count)
            if cached is None:
                classes = self.options.classes
                cached = self._agreeing[count] = orjson.dumps([k % classes for k in range(count)])
            return cached
        classes = self.options.classes
        predictions = []
        for k in range(count):
            n = first + k
            flip = ((n + 1) * num) // den > (n * num) // den
            self.flipped += int(flip)
            predictions.append((k + flip) % classes)
        return orjson.dumps(predictions)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            if connection._transport is not None:
                connection._transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> RawBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _arg(parse: Any) -> Any:
    """Wrap a parser so argparse shows its ValueError message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.raw_backend", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    parser.add_argument(
        "--disagree", type=float, default=0.0, help="share of instances that flip (0: production)"
    )
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument(
        "--latency", type=_arg(parse_duration), default=0.0, help="fixed delay, e.g. 200ms"
    )
    parser.add_argument("--blackhole", action="store_true", help="read, never answer")
    parser.add_argument(
        "--answer-bytes", type=int, default=0, help="pad answers to about this many bytes"
    )
    return parser


async def _serve(options: BackendOptions, host: str, port: int) -> None:
    backend = RawBackend(options)
    bound = await backend.start(host, port)
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await backend.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = BackendOptions(
            disagree=args.disagree,
            classes=args.classes,
            latency=args.latency,
            blackhole=args.blackhole,
            answer_bytes=args.answer_bytes,
        )
    except ValueError as exc:
        parser.error(str(exc))
    uvloop.run(_serve(options, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

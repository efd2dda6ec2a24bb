"""The analysis process's end of the hand-off: a Unix-socket server that reads exchange frames
from every front process and passes each exchange on. A stream that is out of step is counted
and its connection closed (the front reconnects); nothing here can reach production."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from proxy.core.exchange import Exchange, FrameError, FrameReader

log = logging.getLogger(__name__)

OnExchange = Callable[[Exchange], None]


class _Reader(asyncio.Protocol):
    def __init__(self, intake: Intake) -> None:
        self._intake = intake
        self._frames = FrameReader(intake.max_frame)
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._intake.connections.add(transport)
        self._intake.accepted.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._intake.connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        try:
            exchanges = self._frames.feed(data)
        except FrameError as exc:
            self._intake.broken(exc)
            assert self._transport is not None
            self._transport.close()
            return
        for exchange in exchanges:
            self._intake.received(exchange)


class Intake:
    """Serves the hand-off socket at `path` and calls `on_exchange` for every exchange.

    >>> intake = Intake("/run/shadow-proxy/intake.sock", on_exchange, max_frame=64 << 20)
    >>> await intake.start()
    >>> await intake.close()
    """

    def __init__(
        self,
        path: str,
        on_exchange: OnExchange,
        *,
        max_frame: int,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = path
        self.max_frame = max_frame
        self.on_exchange = on_exchange
        self._on_error = on_error
        self.connections: set[asyncio.BaseTransport] = set()
        self.accepted = asyncio.Event()  # set once a front process has connected
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a socket left by a process that died
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Reader(self), self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self.connections):
                transport.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def received(self, exchange: Exchange) -> None:
        try:
            self.on_exchange(exchange)
        except Exception:
            # The intake's boundary: one exchange that cannot be handled loses only itself.
            log.exception("exchange from the front not handled", extra={"route": exchange.route})
            self._on_error()

    def broken(self, exc: FrameError) -> None:
        log.error("hand-off stream out of step; connection reset", extra={"error": str(exc)})
        self._on_error()

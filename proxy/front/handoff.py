"""The front's end of the hand-off: a Unix-socket connection to the analysis process that takes
exchange frames without ever waiting. A full channel or an absent analysis process drops the
frame and counts it; production never hears of it. Reconnects by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from functools import partial
from typing import Protocol

from proxy.core.outcomes import Handoff

log = logging.getLogger(__name__)


class Counts(Protocol):
    """A counter (prometheus-client's Counter, bound)."""

    def inc(self, amount: float = 1) -> None: ...


class _Sender(asyncio.Protocol):
    def __init__(self, lost: asyncio.Future[None]) -> None:
        self._lost = lost

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        pass  # the analysis process never answers


class HandoffChannel:
    """Frames to the analysis process, buffered up to `max_buffer` bytes and written once per
    loop iteration (one syscall for many frames).

    >>> channel = HandoffChannel("/run/shadow-proxy/intake.sock", max_buffer=16 << 20,
    ...                          counts={h: family.labels(h) for h in Handoff})
    >>> channel.start()
    >>> channel.offer(frame)      # never blocks, never raises
    >>> await channel.close()
    """

    def __init__(
        self,
        path: str,
        *,
        max_buffer: int,
        counts: Mapping[Handoff, Counts],
        retry: float = 0.2,
        max_retry: float = 2.0,
    ) -> None:
        self.path = path
        self._max_buffer = max_buffer
        self._sent = counts[Handoff.SENT]
        self._full = counts[Handoff.CHANNEL_FULL]
        self._down = counts[Handoff.ANALYSIS_DOWN]
        self._retry = retry
        self._max_retry = max_retry
        self._transport: asyncio.WriteTransport | None = None
        self._pending: list[bytes] = []
        self.written = 0  # frames written to a connection, over the channel's life
        self._pending_bytes = 0
        self._flush_scheduled = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()  # set while no analysis process is connected
        self.disconnected.set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()  # once: 3.11 asks for the pid on every call
        self._task = asyncio.create_task(self._connect_loop(), name="handoff:connect")

    async def close(self) -> None:
        """Write what is buffered, then close (frames offered afterwards are dropped)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._flush()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self.connected.clear()
        self.disconnected.set()

    # -- the hot path's only call -----------------------------------------------------------------

    def offer(self, frame: bytes) -> None:
        transport = self._transport
        if transport is None:
            self._down.inc()
            return
        size = len(frame)
        if transport.get_write_buffer_size() + self._pending_bytes + size > self._max_buffer:
            self._full.inc()
            return
        self._pending.append(frame)
        self._pending_bytes += size
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop
            assert loop is not None  # start() set it before any transport existed
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        if self._transport is None or self._transport.is_closing():
            self._down.inc(len(pending))
            return
        self._transport.writelines(pending)
        self._sent.inc(len(pending))
        self.written += len(pending)

    # -- connecting -------------------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._retry
        down_logged = False
        while True:
            lost: asyncio.Future[None] = loop.create_future()
            try:
                transport, _ = await loop.create_unix_connection(partial(_Sender, lost), self.path)
            except OSError as exc:
                if not down_logged:
                    log.warning(
                        "analysis process unreachable; exchanges are dropped and counted",
                        extra={"path": self.path, "error": str(exc)},
                    )
                    down_logged = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry)
                continue
            # Never let the kernel's buffer or ours make the hot path wait: writes only queue.
            transport.set_write_buffer_limits(high=self._max_buffer)
            self._transport = transport
            self.connected.set()
            self.disconnected.clear()
            if down_logged:
                log.info("analysis process reachable again", extra={"path": self.path})
                down_logged = False
            delay = self._retry
            await lost
            self._transport = None
            self.connected.clear()
            self.disconnected.set()
            # Frames already written to the lost connection are gone with it: the analysis
            # process counts what it received, so the difference shows them.
            log.warning("analysis process connection lost", extra={"path": self.path})

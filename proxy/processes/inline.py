"""The front and the analysis process in one event loop, joined by the same Unix sockets as in
production: what the tests and `run --inline` start. Production must not run this way: the
isolation between the two is the point of the separate processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.analysis.app import Serving, build_app, start_analysis
from proxy.analysis.state import STATE, ProxyState
from proxy.config import Config
from proxy.processes.front import Front, start_front


@dataclass(slots=True)
class Inline:
    """A front and an analysis process in this loop.

    >>> inline = await start_inline(config, CollectorRegistry(), at=("127.0.0.1", 0))
    >>> inline.url
    'http://127.0.0.1:40123'
    >>> await inline.settled()   # every exchange handed off so far has reached the analysis
    >>> await inline.stop()
    """

    app: web.Application
    serving: Serving
    front: Front
    runtime_dir: str
    _stopped: bool = False

    @property
    def state(self) -> ProxyState:
        return self.app[STATE]

    @property
    def url(self) -> str:
        host, port = self.front.addresses[0]
        return f"http://{host}:{port}"

    @property
    def urls(self) -> dict[str, str]:
        """The proxy's URL, then /metrics and the admin API's when they listen apart."""
        return {"proxy": self.url, **self.serving.urls}

    async def handed_off(self) -> None:
        """Until the analysis has received every exchange the front has written so far."""
        channel = self.front.channel
        if channel is not None:
            async with asyncio.timeout(10):
                await self.state.exchanges.wait_received(channel.written)

    async def stop(self) -> None:
        """As SIGTERM does in production: the front drains first, then the analysis."""
        if self._stopped:
            return
        self._stopped = True
        await self.front.stop()
        await self.handed_off()
        await self.serving.stop()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


async def start_inline(
    config: Config, registry: CollectorRegistry, *, at: tuple[str, int] | None = None
) -> Inline:
    # Short: a Unix socket's path is limited to 107 bytes.
    runtime_dir = tempfile.mkdtemp(prefix="sp-")
    control = os.path.join(runtime_dir, "control.sock")
    intake = os.path.join(runtime_dir, "intake.sock")
    app = build_app(config, registry)
    serving = await start_analysis(app, control=control, intake=intake)
    state = app[STATE]
    front = await start_front(config, state.metrics, intake=intake, control=control, at=at)
    state.on_reload.append(front.reload)
    if front.channel is not None:
        async with asyncio.timeout(10):
            await front.channel.connected.wait()
    return Inline(app, serving, front, runtime_dir)

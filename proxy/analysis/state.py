"""ProxyState: the long-lived objects of the running config, as the wiring built them, the
reload swaps them and the admin API reads them. No wiring, no reloading and no serving here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.analysis.capture import Capture
from proxy.analysis.exchanges import ExchangeHandler, RouteRuntime
from proxy.analysis.labels import LabelEndpoint
from proxy.analysis.overrides import Key, OverrideTable
from proxy.analysis.recording import Recorder
from proxy.analysis.reporter import Reporter
from proxy.analysis.shadow import ShadowDispatcher
from proxy.config import Config
from proxy.metrics import Metrics


@dataclass(slots=True)
class ProxyState:
    """The long-lived objects of one running config.

    >>> state = app[STATE]
    >>> state.dispatcher(("iris", "iris-rf")).paused
    False
    """

    config: Config
    routes: tuple[RouteRuntime, ...]
    exposition: CollectorRegistry  # what /metrics serves
    reporter: Reporter
    metrics: Metrics
    exchanges: ExchangeHandler  # takes the fronts' exchanges to the running routes
    labels: LabelEndpoint
    recorder: Recorder | None = None
    capture: Capture | None = None  # capture: in the config (its settings need a restart)
    ready: bool = False
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    retiring: set[asyncio.Task[None]] = field(default_factory=set)  # generations closing
    overrides: OverrideTable = field(default_factory=OverrideTable)  # kept over reloads
    # Called with every config a reload applies: the fronts follow (in this loop, or signalled).
    on_reload: list[Callable[[Config], Awaitable[None]]] = field(default_factory=list)
    # Where the running config is pickled (reload.config_pickle()); None until a reload.
    config_pickle: str | None = None

    def shadow_dispatchers(self) -> list[tuple[str, ShadowDispatcher]]:
        """(route, dispatcher) for every shadow of the running config."""
        return [(r.name, d) for r in self.routes for d in r.shadows.dispatchers]

    def dispatcher(self, key: Key) -> ShadowDispatcher | None:
        route, shadow = key
        found = (d for r, d in self.shadow_dispatchers() if (r, d.name) == (route, shadow))
        return next(found, None)


STATE = web.AppKey("state", ProxyState)

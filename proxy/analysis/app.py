"""build_app(config, registry): the only place that wires a validated config into a running
aiohttp application (the prediction store, the recorder, the routes, the reporter, the label
endpoint, the admin API and the proxy's own endpoints), and `start_listeners`, which serves it."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.analysis import routes as wiring
from proxy.analysis.admin import AdminAPI
from proxy.analysis.handler import ProductionHandler
from proxy.analysis.labels import LabelEndpoint
from proxy.analysis.overrides import OverrideTable
from proxy.analysis.recording import MeasuredStore, Recorder
from proxy.analysis.reload import reload_config, validate_reload
from proxy.analysis.reporter import Reporter
from proxy.analysis.responses import json_response, moved
from proxy.analysis.state import STATE, ProxyState
from proxy.config import Config, StoreConfig, config_hash
from proxy.metrics import Metrics
from proxy.store.base import PredictionStore

log = logging.getLogger(__name__)


def build_store(config: StoreConfig) -> PredictionStore:
    """The configured prediction store (not started)."""
    limits: dict[str, Any] = {
        "ttl": config.ttl,
        "tombstone_ttl": config.tombstone_ttl,
        "max_records": config.max_records,
        "timeout": config.timeout,
    }
    # Imported here: a proxy on SQLite never loads redis-py, and the reverse.
    if config.backend == "redis":
        from proxy.store.redis import RedisStore

        return RedisStore(config.url, prefix=config.prefix, **limits)
    from proxy.store.sqlite import SqliteStore

    return SqliteStore(config.path, **limits)


def build_app(config: Config, registry: CollectorRegistry | None = None) -> web.Application:
    """The proxy application for `config`, with its metrics on `registry`.

    >>> app = build_app(load_config("configs/demo.yaml"), CollectorRegistry())
    >>> serving = await start_listeners(app)
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry)
    store: PredictionStore | None = None
    recorder: Recorder | None = None
    scorers = wiring.scorers(config, metrics)
    if config.records:
        store = MeasuredStore(build_store(config.store), metrics)
        recorder = Recorder(store, config.store, wiring.recordings(config, scorers), metrics)
    routes = wiring.build_routes(config, metrics, recorder)
    wiring.publish(metrics, config)
    exposition = _exposition(registry)
    reporter = Reporter(exposition, metrics, config.verdict, config_hash(config))
    labels = LabelEndpoint(store, config.labels, scorers, metrics.bind_labels())
    handler = ProductionHandler(
        wiring.generation(config, routes),
        max_body=config.max_body,
        rejected=metrics.bind_rejections(),
    )
    state = ProxyState(
        config,
        routes,
        exposition,
        reporter,
        metrics,
        handler,
        labels,
        recorder=recorder,
        overrides=OverrideTable.for_process(),
    )
    state.overrides.apply(state.shadow_dispatchers())

    # max_body caps proxied requests; /labels streams its body under labels.max_body.
    app = web.Application(client_max_size=config.max_body, handler_args={"max_field_size": 16384})
    app[STATE] = state
    app.cleanup_ctx.append(_lifecycle)
    if config.metrics.listen is None:
        app.router.add_get("/metrics", _metrics)
    else:
        app.router.add_route("*", "/metrics", moved("/metrics", "metrics.listen"))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_post("/labels", labels.handle)
    app.router.add_get("/report", reporter.handle_json)
    app.router.add_get("/report.html", reporter.handle_html)
    admin = AdminAPI(state, partial(reload_config, state), partial(validate_reload, state))
    if config.admin.listen is None:
        admin.add_routes(app.router)
    else:
        for path in ("/admin", "/admin/{tail:.*}"):
            app.router.add_route("*", path, moved("the admin API", "admin.listen"))
    app[ADMIN] = admin
    app.router.add_route("*", "/{tail:.*}", handler.handle)
    return app


ADMIN = web.AppKey("admin", AdminAPI)


@dataclass(frozen=True, slots=True)
class Listener:
    """One address the proxy listens on, and the application served there."""

    name: str  # proxy | metrics | admin
    app: web.Application
    host: str
    port: int


def listeners(app: web.Application) -> list[Listener]:
    """The proxy's listener first, then /metrics and the admin API when they have their own."""
    state = app[STATE]
    config = state.config
    found = [Listener("proxy", app, config.listen_host, config.listen_port)]
    if config.metrics.listen is not None:
        side = web.Application()
        side[STATE] = state
        side.router.add_get("/metrics", _metrics)
        side.router.add_get("/healthz", _healthz)
        found.append(Listener("metrics", side, *config.metrics.listen))
    if config.admin.listen is not None:
        side = web.Application(client_max_size=64 * 1024)
        side[STATE] = state
        app[ADMIN].add_routes(side.router)
        found.append(Listener("admin", side, *config.admin.listen))
    return found


@dataclass(frozen=True, slots=True)
class Serving:
    """The running listeners of one app, the proxy's first: it is the one that drains
    in-flight requests at shutdown.

    >>> serving = await start_listeners(app)
    >>> serving.urls["proxy"]
    'http://127.0.0.1:8080'
    >>> await serving.stop()
    """

    runners: tuple[tuple[str, web.AppRunner], ...]

    @property
    def addresses(self) -> dict[str, list[str]]:
        """Per listener name, the host:port addresses it is bound to."""
        return {name: [f"{a[0]}:{a[1]}" for a in runner.addresses] for name, runner in self.runners}

    @property
    def urls(self) -> dict[str, str]:
        """Per listener name, the base URL of its first address."""
        return {name: f"http://{addresses[0]}" for name, addresses in self.addresses.items()}

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (shutdown_timeout), then the app's
        cleanup: shadows drain, the recorder flushes, the pools close."""
        for _, runner in self.runners:
            await runner.cleanup()


async def start_listeners(
    app: web.Application, *, reuse_port: bool = False, proxy_at: tuple[str, int] | None = None
) -> Serving:
    """Bind and serve every listener of `app` at the addresses of its config; the proxy's own
    at `proxy_at` instead when given (the tests take a free port of 127.0.0.1 that way)."""
    config = app[STATE].config
    access_log = logging.getLogger("proxy.access") if config.access_log else None
    runners: list[tuple[str, web.AppRunner]] = []
    for listener in listeners(app):
        runner = web.AppRunner(
            listener.app,
            handle_signals=False,
            access_log=access_log,
            shutdown_timeout=config.shutdown_timeout,
        )
        await runner.setup()
        host, port = listener.host, listener.port
        if listener.name == "proxy" and proxy_at is not None:
            host, port = proxy_at
        site = web.TCPSite(runner, host, port, backlog=2048, reuse_port=reuse_port or None)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await Serving(tuple(runners)).stop()
            raise
        runners.append((listener.name, runner))
    return Serving(tuple(runners))


def _exposition(registry: CollectorRegistry) -> CollectorRegistry:
    """With --workers (prometheus-client's multiprocess mode), /metrics sums every worker's
    files; otherwise it serves this process's registry."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return registry
    merged = CollectorRegistry()
    MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # untyped upstream
    return merged


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Open every pool and start every shadow worker; on shutdown (after in-flight production
    requests have finished) give shadow queues their drain time, then close the pools."""
    state = app[STATE]
    if state.recorder is not None:
        await state.recorder.start()
    await wiring.start(state.routes)
    await state.reporter.start()
    state.ready = True
    yield
    state.ready = False
    grace = state.config.shadow_drain_timeout  # the config running now, after any reloads
    await state.reporter.stop()
    await asyncio.gather(*state.retiring)  # configs replaced by reloads: already draining
    await asyncio.gather(*(r.shadows.drain(grace) for r in state.routes))
    # After the shadows: their last answers still add predictions to recorded requests.
    if state.recorder is not None:
        await state.recorder.stop(grace)
    await wiring.close_production(state.routes)


async def _healthz(request: web.Request) -> web.Response:
    return json_response(200, {"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    if request.app[STATE].ready:
        return json_response(200, {"status": "ready"})
    return json_response(503, {"status": "not ready"})


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        state.reporter.report()  # the verdict gauges are current at every scrape
    except Exception:
        log.exception("verdict gauges not updated")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(state.exposition)
    return web.Response(body=body, headers={"Content-Type": content_type})

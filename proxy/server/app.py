"""build_app(config, registry): the only place that wires a validated config into a running
aiohttp application: upstream pools, shadow dispatchers, metrics, and the proxy's own endpoints."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.config import (
    Config,
    ConfigError,
    Route,
    StoreConfig,
    config_hash,
    listen_text,
    load_config,
)
from proxy.core.routing import Router
from proxy.core.sampling import Sampler, WeightedSplit
from proxy.metrics import Metrics
from proxy.server.admin import AdminAPI, moved
from proxy.server.handler import Generation, ProductionHandler, ProductionTarget, RouteRuntime
from proxy.server.labels import LabelEndpoint, RouteScorer
from proxy.server.overrides import (
    RUNTIME_DIR_ENV,
    SUPERVISOR_ENV,
    Key,
    Overrides,
    OverridesFile,
    apply_overrides,
)
from proxy.server.recording import MeasuredStore, Recorder, RouteRecording
from proxy.server.reporter import Reporter
from proxy.server.shadow import PredictionsCallback, ShadowDispatcher, ShadowSet, Tee
from proxy.server.upstream import Upstream
from proxy.store.base import PredictionStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProxyState:
    """The long-lived objects of one running config."""

    config: Config
    routes: tuple[RouteRuntime, ...]
    exposition: CollectorRegistry  # what /metrics serves
    reporter: Reporter
    metrics: Metrics
    handler: ProductionHandler
    labels: LabelEndpoint
    recorder: Recorder | None = None
    ready: bool = False
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    retiring: set[asyncio.Task[None]] = field(default_factory=set)  # generations closing
    overrides: Overrides = field(default_factory=Overrides)  # the admin API's, kept over reloads
    shared: OverridesFile | None = None  # with --workers: the overrides every worker applies

    @property
    def production_upstreams(self) -> list[Upstream]:
        return [t.upstream for r in self.routes for t in r.production.targets]

    def shadow_dispatchers(self) -> list[tuple[str, ShadowDispatcher]]:
        """(route, dispatcher) for every shadow of the running config."""
        return [(r.name, d) for r in self.routes for d in r.shadows.dispatchers]

    def dispatcher(self, key: Key) -> ShadowDispatcher | None:
        route, shadow = key
        found = (d for r, d in self.shadow_dispatchers() if (r, d.name) == (route, shadow))
        return next(found, None)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: true when the new config runs, else the errors naming file, key and
    value."""

    ok: bool
    config_hash: str
    errors: tuple[str, ...] = ()
    shutting_down: bool = False  # refused because the proxy is stopping, not for the file

    def __bool__(self) -> bool:
        return self.ok


STATE = web.AppKey("state", ProxyState)


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


def _scorer(route: Route, metrics: Metrics) -> RouteScorer:
    return RouteScorer(
        kind=route.comparator.kind,
        production=metrics.bind_model(route.name, route.production.name, "production"),
        shadows={s.name: metrics.bind_model(route.name, s.name, "shadow") for s in route.shadows},
        pairs={s.name: metrics.bind_pair(route.name, s.name) for s in route.shadows},
        recording=metrics.bind_recording(route.name),
    )


def _shadow_writer(recorder: Recorder | None, route: str) -> PredictionsCallback:
    """Adds a recorded request's shadow predictions to its record."""
    assert recorder is not None

    def write(tee: Tee, shadow: str, predictions: list[Any]) -> None:
        recorder.shadow(route, tee.request_id, shadow, predictions)

    return write


def _build_routes(
    config: Config, metrics: Metrics, recorder: Recorder | None
) -> tuple[RouteRuntime, ...]:
    runtimes = []
    for route in config.routes:
        records = recorder is not None and route.record > 0
        on_predictions = _shadow_writer(recorder, route.name) if records else None

        prod = route.production
        route_metrics = metrics.bind_route(route.name, prod.name)
        target = ProductionTarget(
            prod.name,
            Upstream(
                prod.origin,
                # A URL without a path forwards the request's own path.
                prod.path or route.match,
                timeout=prod.timeout,
                connect_timeout=prod.connect_timeout,
                max_connections=prod.max_connections,
            ),
            route_metrics.production,
        )
        kind, classes = route.comparator.kind, route.classes
        production_classes = metrics.bind_classes(
            route.name, prod.name, "production", kind, classes
        )
        dispatchers, shadow_metrics = [], []
        for shadow in route.shadows:
            sm = metrics.bind_shadow(route.name, shadow.name)
            dispatcher = ShadowDispatcher(
                shadow.name,
                sample=shadow.sample,
                max_in_flight=shadow.max_in_flight,
                max_queue=shadow.max_queue,
                strip_headers=config.shadow_strip_headers,
                upstream=Upstream(
                    shadow.origin,
                    shadow.path or route.match,
                    timeout=shadow.timeout,
                    connect_timeout=shadow.connect_timeout,
                    # One connection per worker: a shadow can never open more than it uses.
                    max_connections=shadow.max_in_flight,
                ),
                extractor=route.extractor,
                comparator=route.comparator,
                metrics=sm,
                on_predictions=on_predictions,
                production_classes=production_classes,
                shadow_classes=metrics.bind_classes(
                    route.name, shadow.name, "shadow", kind, classes
                ),
            )
            dispatchers.append(dispatcher)
            shadow_metrics.append(sm)
        runtimes.append(
            RouteRuntime(
                name=route.name,
                production=WeightedSplit.of([(1.0, target)]),
                shadows=ShadowSet(dispatchers, shadow_metrics, config.shadow_max_body),
                metrics=route_metrics,
                recorder=recorder if records else None,
                record_threshold=Sampler(route.record).threshold if records else 0,
            )
        )
    return tuple(runtimes)


def build_app(config: Config, registry: CollectorRegistry | None = None) -> web.Application:
    """The proxy application for `config`, with its metrics on `registry`.

    >>> app = build_app(load_config("configs/demo.yaml"), CollectorRegistry())
    >>> web.run_app(app)
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry)
    store: PredictionStore | None = None
    recorder: Recorder | None = None
    scorers = {route.name: _scorer(route, metrics) for route in config.routes}
    if config.records:
        store = MeasuredStore(build_store(config.store), metrics)
        recorder = Recorder(
            store,
            config.store,
            {
                r.name: RouteRecording(r.production.name, r.extractor, scorers[r.name])
                for r in config.routes
            },
            metrics,
        )
    routes = _build_routes(config, metrics, recorder)
    _publish(metrics, config)
    exposition = _exposition(registry)
    reporter = Reporter(exposition, metrics, config.verdict, config_hash(config))
    labels = LabelEndpoint(store, config.labels, scorers, metrics.bind_labels())
    handler = ProductionHandler(
        _router(config, routes),
        request_id_header=config.request_id_header,
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
    )
    runtime_dir = os.environ.get(RUNTIME_DIR_ENV)
    if runtime_dir is not None and SUPERVISOR_ENV in os.environ:  # a worker of a supervisor
        state.shared = OverridesFile(Path(runtime_dir))
        state.overrides = state.shared.read()  # a restarted worker picks up the others' table
        apply_overrides(state.shadow_dispatchers(), state.overrides)

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
    admin = AdminAPI(state, partial(reload_config, app), partial(_validate_reload, state))
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


def _router(config: Config, routes: tuple[RouteRuntime, ...]) -> Router[RouteRuntime]:
    return Router((r.match, r.methods, rt) for r, rt in zip(config.routes, routes, strict=True))


def _publish(metrics: Metrics, config: Config, value: float = 1.0) -> None:
    """The info series of `config` set to `value`: 1 for the running config, 0 for the one a
    reload replaced (prometheus-client cannot remove series in multiprocess mode)."""
    for route in config.routes:
        kind = route.comparator.kind.value
        metrics.route_info.labels(route.name, kind, route.production.name).set(value)
    metrics.set_config_info(
        config_hash(config),
        config.source,
        routes=len(config.routes),
        shadows=sum(len(r.shadows) for r in config.routes),
        value=value,
    )


def _needs_restart(running: Config, new: Config) -> list[str]:
    """What a reload cannot change in a running process, as errors naming file, key and value."""
    problems = []

    def refuse(key: str, value: object, why: str) -> None:
        problems.append(f"{new.source}: {key}: {why} (got {value!r})")

    if (new.listen_host, new.listen_port) != (running.listen_host, running.listen_port):
        refuse("listen", f"{new.listen_host}:{new.listen_port}", "changing it needs a restart")
    if new.max_body != running.max_body:
        refuse("max_body", new.max_body, "changing it needs a restart")
    if new.records and not running.records:
        refuse("routes[].record", "on", "turning recording on needs a restart")
    if new.records and new.store != running.store:
        refuse("store", new.store.backend, "changing the store needs a restart")
    for key, old_listen, new_listen in (
        ("admin.listen", running.admin.listen, new.admin.listen),
        ("metrics.listen", running.metrics.listen, new.metrics.listen),
    ):
        if old_listen != new_listen:
            refuse(key, listen_text(new_listen), "changing it needs a restart")
    return problems


def _load_for_reload(state: ProxyState, path: str) -> Config:
    """The config at `path`, if a reload can apply it; else ConfigError."""
    new = load_config(path)
    problems = _needs_restart(state.config, new)
    if problems:
        raise ConfigError(problems)
    return new


async def _validate_reload(state: ProxyState) -> list[str]:
    """The errors a reload of the running config's file would meet (--workers: checked once
    before every worker reloads); a failure is counted and logged as a reload's would be."""
    path = state.config.source
    try:
        await asyncio.to_thread(_load_for_reload, state, path)
    except ConfigError as exc:
        _reload_failed(state, path, exc)
        return list(exc.errors)
    return []


def _reload_failed(state: ProxyState, path: str, exc: ConfigError) -> None:
    state.metrics.config_reloads.labels("failure").inc()
    log.error(
        "config reload failed; the running config serves on",
        extra={"config": path, "errors": list(exc.errors)},
    )


async def _start(routes: tuple[RouteRuntime, ...]) -> None:
    for route in routes:
        for target in route.production.targets:
            await target.upstream.start()
        await route.shadows.start()


async def _retire(generation: Generation, routes: tuple[RouteRuntime, ...], grace: float) -> None:
    """Once the last request on an old config is done: drain its shadows, close its pools."""
    await generation.retire()
    await asyncio.gather(*(r.shadows.drain(grace) for r in routes))
    for route in routes:
        for target in route.production.targets:
            await target.upstream.close()


async def reload_config(app: web.Application, path: str | None = None) -> ReloadResult:
    """Re-read and validate the config (SIGHUP). An invalid one changes nothing and is counted;
    a valid one swaps at once: requests in flight finish on the routes they started with, new
    shadows start, removed ones drain and stop, new sample rates and timeouts apply."""
    state = app[STATE]
    metrics = state.metrics
    path = path or state.config.source
    async with state.reload_lock:
        if not state.ready:  # shutting down: routes started now would never be drained
            errors = ("the proxy is shutting down; nothing was reloaded",)
            return ReloadResult(False, config_hash(state.config), errors, shutting_down=True)
        try:
            new = _load_for_reload(state, path)
        except ConfigError as exc:
            _reload_failed(state, path, exc)
            return ReloadResult(False, config_hash(state.config), exc.errors)
        scorers = {route.name: _scorer(route, metrics) for route in new.routes}
        recorder = state.recorder if new.records else None
        if recorder is not None:
            recorder.update_routes(
                {
                    r.name: RouteRecording(r.production.name, r.extractor, scorers[r.name])
                    for r in new.routes
                }
            )
        routes = _build_routes(new, metrics, recorder)
        await _keep_overrides(state, routes)
        await _start(routes)
        old_generation, old_routes = state.handler.generation, state.routes
        # The swap: one assignment, between two requests.
        state.handler.generation = Generation(_router(new, routes))
        state.handler.request_id_header = new.request_id_header
        old_config = state.config
        state.routes, state.config = routes, new
        state.labels.update(new.labels, scorers)
        state.reporter.update(new.verdict, config_hash(new))
        _publish(metrics, old_config, 0.0)
        _publish(metrics, new)
        task = asyncio.create_task(
            _retire(old_generation, old_routes, new.shadow_drain_timeout), name="retire-config"
        )
        state.retiring.add(task)
        task.add_done_callback(state.retiring.discard)
        metrics.config_reloads.labels("success").inc()
        log.info("config reloaded", extra={"config": path, "config_hash": config_hash(new)})
        return ReloadResult(True, config_hash(new))


async def _keep_overrides(state: ProxyState, routes: tuple[RouteRuntime, ...]) -> None:
    """The admin API's overrides carry over to the shadows a reload keeps (a paused shadow stays
    paused); those of removed shadows are forgotten, and their gauges zeroed."""
    new = [(r.name, d) for r in routes for d in r.shadows.dispatchers]
    kept = {(r, d.name) for r, d in new}
    gone: list[Key] = []
    if state.shared is None:
        gone = state.overrides.retain(kept)
    else:  # every worker reloads, and each forgets them in the shared file too (idempotent)
        shared = state.shared
        state.overrides = await asyncio.to_thread(
            shared.change, lambda overrides: gone.extend(overrides.retain(kept))
        )
    for route, shadow in gone:
        log.info(
            "admin override dropped: the shadow is gone", extra={"route": route, "shadow": shadow}
        )
    for route, dispatcher in state.shadow_dispatchers():
        if (route, dispatcher.name) not in kept:
            state.metrics.shadow_paused.labels(route, dispatcher.name).set(0)
            state.metrics.shadow_sample_ratio.labels(route, dispatcher.name).set(0)
    apply_overrides(new, state.overrides)


async def reload_overrides(app: web.Application) -> None:
    """--workers, on SIGUSR1: apply the overrides another worker's admin API changed (after any
    reload in progress, which would otherwise apply the table it read before)."""
    state = app[STATE]
    if state.shared is None:
        return
    async with state.reload_lock:
        state.overrides = await asyncio.to_thread(state.shared.read)
        apply_overrides(state.shadow_dispatchers(), state.overrides)
        log.info(
            "admin overrides applied",
            extra={"overrides": state.overrides.to_list(), "pid": os.getpid()},
        )


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
    await _start(state.routes)
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
    for upstream in state.production_upstreams:
        await upstream.close()


def _json(status: int, doc: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


async def _healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    if request.app[STATE].ready:
        return _json(200, {"status": "ready"})
    return _json(503, {"status": "not ready"})


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        state.reporter.report()  # the verdict gauges are current at every scrape
    except Exception:
        log.exception("verdict gauges not updated")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(state.exposition)
    return web.Response(body=body, headers={"Content-Type": content_type})

"""build_app(config, registry): the only place that wires a validated config into the analysis
process (the prediction store, the recorder, the shadow routes, the reporter, the label endpoint,
the admin API and /metrics: the control plane, an aiohttp application), and `start_analysis`,
which serves it on a Unix socket beside the intake of the fronts' exchanges."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.analysis import routes as wiring
from proxy.analysis.admin import AdminAPI
from proxy.analysis.capture import Capture, capture_off
from proxy.analysis.exchanges import ExchangeHandler
from proxy.analysis.intake import Intake
from proxy.analysis.labels import LabelEndpoint
from proxy.analysis.overrides import OverrideTable
from proxy.analysis.problems import Problems
from proxy.analysis.recording import MeasuredStore, Recorder
from proxy.analysis.reload import reload_config
from proxy.analysis.reporter import Reporter
from proxy.analysis.responses import client_payload_errors, json_errors, json_response, moved
from proxy.analysis.state import STATE, ProxyState
from proxy.config import Config, StoreConfig
from proxy.metric_batching import Batcher
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

    return SqliteStore(config.path, max_disk=config.max_disk, **limits)


def build_app(config: Config, registry: CollectorRegistry | None = None) -> web.Application:
    """The proxy application for `config`, with its metrics on `registry`.

    >>> app = build_app(load_config("configs/demo.yaml"), CollectorRegistry())
    >>> serving = await start_analysis(app, control=control_sock, intake=intake_sock)
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry, Batcher())
    store: PredictionStore | None = None
    recorder: Recorder | None = None
    scorers = wiring.scorers(config, metrics)
    problems = Problems()
    if config.records:
        store = MeasuredStore(build_store(config.store), metrics)
        metrics.store_max_records.set(config.store.max_records)
        sqlite = config.store.backend == "sqlite"
        metrics.store_max_bytes.set(config.store.max_disk or 0 if sqlite else 0)
        recordings = wiring.recordings(config, scorers)
        recorder = Recorder(store, config.store, recordings, metrics, problems)
    capture: Capture | None = None
    if config.capture.enabled:
        capture = Capture(config.capture, metrics)
        capture.update(config)
    routes = wiring.build_routes(config, metrics, recorder, problems, capture)
    wiring.publish(metrics, config)
    exposition = _exposition(registry)
    reporter = Reporter(exposition, metrics, config, problems, capture)
    joined = capture.label if capture is not None else None
    labels = LabelEndpoint(store, config.labels, scorers, metrics.bind_labels(), joined)
    exchanges = ExchangeHandler({r.name: r for r in routes}, unknown=metrics.intake_errors)
    state = ProxyState(
        config,
        routes,
        exposition,
        reporter,
        metrics,
        exchanges,
        labels,
        recorder=recorder,
        capture=capture,
        overrides=OverrideTable.for_process(),
    )
    state.overrides.apply(state.shadow_dispatchers())

    # /labels streams its body under labels.max_body; the admin API's are small.
    logging.getLogger("aiohttp.server").addFilter(client_payload_errors)  # once: same object
    app = web.Application(
        client_max_size=64 * 1024,
        handler_args={"max_field_size": 16384},
        middlewares=[json_errors],
    )
    app[STATE] = state
    app.cleanup_ctx.append(_lifecycle)
    if config.metrics.listen is None:
        app.router.add_get("/metrics", _metrics)
    else:
        app.router.add_route("*", "/metrics", moved("/metrics", "metrics.listen"))
    # /healthz and /readyz are the front's: production's health, not the analysis process's;
    # the front passes /readyz?verbose here, for the details.
    app.router.add_get("/readyz", _verbose_readiness)
    app.router.add_post("/labels", labels.handle)
    app.router.add_get("/report", reporter.handle_json)
    app.router.add_get("/report.html", reporter.handle_html)
    if capture is not None:
        app.router.add_get("/disagreements", capture.handle_disagreements)
        app.router.add_get("/exchanges/{request_id}", capture.handle_exchange)
    else:
        app.router.add_get("/disagreements", capture_off)
        app.router.add_get("/exchanges/{request_id}", capture_off)
    admin = AdminAPI(state, partial(reload_config, state))
    if config.admin.listen is None:
        admin.add_routes(app.router)
    else:
        for path in ("/admin", "/admin/{tail:.*}"):
            app.router.add_route("*", path, moved("the admin API", "admin.listen"))
    app[ADMIN] = admin
    return app


ADMIN = web.AppKey("admin", AdminAPI)


async def _verbose_readiness(request: web.Request) -> web.Response:
    """/readyz?verbose: production is ready (the front answers that itself and passes this on
    only then); the analysis process's own state; and what keeps routes from being measured,
    with the latest reason of each (a wrong `output` name, say). Problems never make the proxy
    unready: production is served all the same."""
    state = request.app[STATE]
    problems = state.reporter.problems.listed()
    return json_response(
        200,
        {
            "status": "ready",
            "analysis": "ready" if state.ready else "not ready",
            "problems": problems,
        },
    )


@dataclass(frozen=True, slots=True)
class Listener:
    """One address the analysis process listens on, and the application served there."""

    name: str  # control | metrics | admin
    app: web.Application
    host: str
    port: int


def listeners(app: web.Application) -> list[Listener]:
    """/metrics and the admin API when they have TCP addresses of their own."""
    state = app[STATE]
    config = state.config
    found = []
    if config.metrics.listen is not None:
        side = web.Application(middlewares=[json_errors])
        side[STATE] = state
        side.router.add_get("/metrics", _metrics)
        side.router.add_get("/healthz", _healthz)
        found.append(Listener("metrics", side, *config.metrics.listen))
    if config.admin.listen is not None:
        side = web.Application(client_max_size=64 * 1024, middlewares=[json_errors])
        side[STATE] = state
        app[ADMIN].add_routes(side.router)
        found.append(Listener("admin", side, *config.admin.listen))
    return found


MAX_FRAME = 512 * 1024 * 1024
"""The largest hand-off frame the intake reads (the fronts send at most 256 MiB of bodies)."""


@dataclass(frozen=True, slots=True)
class Serving:
    """The running analysis process: the control plane on its Unix socket (the fronts pass
    /labels, /report, /metrics and /admin to it), the intake, and the TCP listeners.

    >>> serving = await start_analysis(app, control="/run/sp/control.sock",
    ...                                intake="/run/sp/intake.sock")
    >>> serving.urls["metrics"]
    'http://127.0.0.1:9090'
    >>> await serving.stop()
    """

    runners: tuple[tuple[str, web.AppRunner], ...]
    intake: Intake | None

    @property
    def addresses(self) -> dict[str, list[str]]:
        """Per TCP listener name, the host:port addresses it is bound to."""
        return {
            name: [f"{a[0]}:{a[1]}" for a in runner.addresses if isinstance(a, tuple)]
            for name, runner in self.runners
            if name != "control"
        }

    @property
    def urls(self) -> dict[str, str]:
        """Per TCP listener name, the base URL of its first address."""
        return {name: f"http://{addresses[0]}" for name, addresses in self.addresses.items()}

    async def stop(self) -> None:
        """Stop taking exchanges and requests, then the app's cleanup: shadows drain, the
        recorder flushes, the pools close."""
        if self.intake is not None:
            await self.intake.close()
        for _, runner in self.runners:
            await runner.cleanup()


async def start_analysis(
    app: web.Application, *, control: str | None, intake: str | None
) -> Serving:
    """Serve the control plane of `app` on the Unix socket `control`, its TCP listeners at the
    addresses of its config, and take the fronts' exchanges on the Unix socket `intake`."""
    state = app[STATE]
    config = state.config
    # The listeners of their own (metrics.listen, admin.listen) log their requests while the
    # running config says access_log (a reload switches it); the control socket's requests came
    # through a front, which logs them.
    access_log = logging.getLogger("proxy.access.listeners")
    access_log.filters[:] = [lambda record: state.config.access_log]
    runners: list[tuple[str, web.AppRunner]] = []
    sites: list[tuple[Listener, str | None]] = [(listener, None) for listener in listeners(app)]
    if control is not None:
        sites.insert(0, (Listener("control", app, "", 0), control))
    taken: Intake | None = None
    try:
        for listener, path in sites:
            runner = web.AppRunner(
                listener.app,
                handle_signals=False,
                access_log=None if path is not None else access_log,
                shutdown_timeout=config.shutdown_timeout,
            )
            await runner.setup()
            runners.append((listener.name, runner))
            site: web.BaseSite
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a socket left by a process that died
                site = web.UnixSite(runner, path)
            else:
                site = web.TCPSite(runner, listener.host, listener.port, backlog=2048)
            await site.start()
        if intake is not None:
            taken = Intake(
                intake,
                state.exchanges,
                max_frame=MAX_FRAME,
                on_error=state.metrics.intake_errors.inc,
            )
            await taken.start()
    except BaseException:
        await Serving(tuple(runners), taken).stop()
        raise
    return Serving(tuple(runners), taken)


def _exposition(registry: CollectorRegistry) -> CollectorRegistry:
    """Under the supervisor (prometheus-client's multiprocess mode), /metrics sums every
    process's files; otherwise (the tests' one loop) it serves this process's registry. Both
    with the standard process_* series (CPU, memory, file descriptors) of the process serving
    it; every process's own are shadowproxy_process_*{role}."""
    exposition = registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        exposition = CollectorRegistry()
        MultiProcessCollector(exposition)  # type: ignore[no-untyped-call]  # untyped upstream
    with contextlib.suppress(ValueError):  # already there: a registry served twice (tests)
        ProcessCollector(registry=exposition)
    return exposition


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the recorder and every shadow worker; on shutdown give shadow queues their drain
    time, then flush the recorder and close the pools."""
    state = app[STATE]
    if state.recorder is not None:
        await state.recorder.start()
    if state.capture is not None:
        await state.capture.start()
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
    if state.capture is not None:
        await state.capture.stop()


async def _healthz(request: web.Request) -> web.Response:
    return json_response(200, {"status": "ok"})


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.metrics.flush()
    try:
        state.reporter.report()  # the verdict gauges are current at every scrape
    except Exception:
        log.exception("verdict gauges not updated")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(state.exposition)
    return web.Response(body=body, headers={"Content-Type": content_type})

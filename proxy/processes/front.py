"""The front process's wiring: a validated config into the hot path (routes, production pools,
the hand-off channel, the control-plane pass-through) served by the lean HTTP/1.1 server, and
its reloads. Never parses YAML: configs arrive validated (pickled by the supervisor's check)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry

from proxy import __version__
from proxy.config import Config, config_hash
from proxy.core.outcomes import RejectReason, Role
from proxy.core.sampling import WeightedSplit
from proxy.front.client import Upstream
from proxy.front.faults import Fault
from proxy.front.handoff import HandoffChannel
from proxy.front.hot_path import FrontRoute, FrontTarget, Generation, HotPath
from proxy.front.server import Limits, Server
from proxy.logs import set_level
from proxy.metric_batching import Batcher
from proxy.metrics import Metrics
from proxy.processes.runtime import PROCESS_SIGNALS, RESTARTED_ENV, RuntimePaths
from proxy.processes.stats import report_process
from proxy.validation import load_pickled

log = logging.getLogger(__name__)

MAX_FRAME = 256 * 1024 * 1024
"""An exchange whose request and answer bodies together pass this is not handed off (counted
too_large): the intake refuses bigger frames."""
CHANNEL_BUFFER = 64 * 1024 * 1024
"""Bytes the front buffers for the analysis process before it drops copies (channel_full)."""
PRODUCTION_MAX_RESPONSE = 256 * 1024 * 1024
"""The largest production answer the front passes on (a bigger one is a 502)."""
CONNECT_GRACE = 5.0
"""Seconds a starting front waits for the analysis process before it serves without it."""
CONTROL_HOST = "http://shadow-proxy"  # the Host header of requests passed to the control plane


def build_generation(config: Config, metrics: Metrics) -> Generation:
    """Every route of `config` as the front runs it, its pools built but not started; its
    per-request metrics written once per loop iteration (when `metrics` has a batcher)."""
    entries = []
    for route in config.routes:
        prod = route.production
        upstream_metrics = metrics.bind_upstream(route.name, prod.name, Role.PRODUCTION)
        target = FrontTarget(
            prod.name,
            Upstream(
                prod.origin,
                # A URL without a path forwards the request's own path.
                prod.path or route.match,
                timeout=prod.timeout,
                connect_timeout=prod.connect_timeout,
                max_connections=prod.max_connections,
                max_response=PRODUCTION_MAX_RESPONSE,
            ),
            {o: metrics.counting(c) for o, c in upstream_metrics.outcomes.items()},
            metrics.observing(upstream_metrics.duration),
            partial(metrics.upstream_error, route.name, prod.name, Role.PRODUCTION),
        )
        front_route = FrontRoute(
            route.name,
            WeightedSplit.of([(1.0, target)]),
            metrics.counting(metrics.requests.labels(route.name)),
            tees=bool(route.shadows) or (config.records and route.record > 0),
        )
        entries.append((route.match, route.methods, front_route))
    return Generation(entries, config.request_id_header, max_body=config.max_body)


async def _start(generation: Generation) -> None:
    for route in generation.routes:
        for target in route.production.targets:
            await target.upstream.start()


@dataclass(slots=True)
class Front:
    """A running front: its server, hot path and channels.

    >>> front = await start_front(config, metrics, intake="/run/sp/intake.sock",
    ...                           control="/run/sp/control.sock", at=("0.0.0.0", 8080))
    >>> await front.reload(new_config)
    >>> await front.stop()
    """

    config: Config
    metrics: Metrics
    server: Server
    hot_path: HotPath
    channel: HandoffChannel | None
    control: Upstream | None
    _retiring: set[asyncio.Task[None]] | None = None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return self.server.addresses

    async def reload(self, config: Config) -> None:
        """Swap to `config`'s routes between two requests; the old ones finish what they have
        in flight, then close their pools. Keys that need a restart were refused already."""
        generation = build_generation(config, self.metrics)
        await _start(generation)
        old, self.hot_path.generation = self.hot_path.generation, generation
        self.hot_path.access_log = config.access_log
        self.server.limits = limits(config)  # labels.max_body: for connections from now on
        if config.log_level != self.config.log_level:
            set_level(config.log_level)
        self.config = config
        task = asyncio.create_task(_retire(old), name="front:retire")
        if self._retiring is None:
            self._retiring = set()
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        log.info("front reloaded", extra={"routes": [r.name for r in generation.routes]})

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (shutdown_timeout), write what is
        buffered for the analysis process, and close the pools."""
        self.hot_path.ready = False
        await self.server.close(self.config.shutdown_timeout if grace is None else grace)
        if self._retiring:
            await asyncio.gather(*self._retiring)
        await self.hot_path.generation.close()
        if self.channel is not None:
            await self.channel.close()
        if self.control is not None:
            await self.control.close()
        self.metrics.flush()


async def _retire(generation: Generation) -> None:
    await generation.retire()
    await generation.close()


def limits(config: Config) -> Limits:
    """The front server's limits: bodies up to the largest the main port accepts (/labels has
    its own); routes check max_body themselves, so that their 413 names it and the request id."""
    return Limits(max_body=max(config.max_body, config.labels.max_body, 64 * 1024))


async def start_front(
    config: Config,
    metrics: Metrics,
    *,
    intake: str | None,
    control: str | None,
    at: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
    reuse_port: bool = False,
) -> Front:
    """Serve `config`'s routes at `at` (the config's listen address when None), handing
    exchanges to the Unix socket `intake` and passing control-plane paths to `control`."""
    handoff_counts = {h: metrics.counting(c) for h, c in metrics.bind_handoff().items()}
    channel: HandoffChannel | None = None
    if intake is not None:
        channel = HandoffChannel(intake, max_buffer=CHANNEL_BUFFER, counts=handoff_counts)
        channel.start()
    control_pool: Upstream | None = None
    if control is not None:
        control_pool = Upstream(CONTROL_HOST, timeout=60.0, max_connections=64, unix_socket=control)
        await control_pool.start()
    generation = build_generation(config, metrics)
    await _start(generation)
    if channel is not None:
        # At start-up the analysis process is usually a moment behind: give it that moment
        # rather than drop the first copies, but never more (production does not depend on it).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.connected.wait(), CONNECT_GRACE)
    rejected = metrics.bind_rejections()
    faults = metrics.bind_faults()
    too_large = rejected[RejectReason.BODY_TOO_LARGE]

    def count(fault: Fault) -> None:
        faults[fault].inc()
        if fault is Fault.BODY_TOO_LARGE:
            too_large.inc()

    hot_path = HotPath(
        generation,
        handoff=channel.offer if channel is not None else None,
        control=control_pool,
        rejected=rejected,
        handoff_counts=handoff_counts,
        max_frame=MAX_FRAME,
        access_log=config.access_log,
        answers=metrics.bind_client(),
    )
    server = Server(hot_path, limits(config), count=count)
    if sock is not None:
        await server.start(sock=sock, backlog=2048)
    else:
        host, port = at if at is not None else (config.listen_host, config.listen_port)
        await server.start(host, port, reuse_port=reuse_port, backlog=2048)
    hot_path.ready = True
    return Front(config, metrics, server, hot_path, channel, control_pool)


async def serve_front(config: Config, runtime_dir: str, *, reuse_port: bool) -> None:
    """The front process, until SIGTERM: then stop accepting and finish what is in flight.
    SIGUSR2 (from the supervisor, once the analysis process has applied a reload) re-reads
    the validated config the analysis process left in `runtime_dir`."""
    # prometheus-client's multiprocess mode: files, written once per loop iteration.
    metrics = Metrics(CollectorRegistry(), Batcher())
    if os.environ.get(RESTARTED_ENV):
        metrics.process_restarts.labels("front").inc()
    paths = RuntimePaths(runtime_dir)
    try:
        front = await start_front(
            config, metrics, intake=paths.intake, control=paths.control, reuse_port=reuse_port
        )
    except OSError as exc:  # the port was taken since the supervisor's check
        log.error(
            "cannot listen on %s:%s: %s",
            config.listen_host,
            config.listen_port,
            exc.strerror or exc,
            extra={"role": "front"},
        )
        raise SystemExit(1) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: set[asyncio.Task[None]] = set()

    async def follow() -> None:
        new = load_pickled(paths.config)
        if config_hash(new) != config_hash(front.config):
            await front.reload(new)

    def reload() -> None:
        task = asyncio.create_task(follow(), name="front:follow")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR2, reload)
    loop.add_signal_handler(signal.SIGHUP, reload)  # sent to the whole group, say: the same
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PROCESS_SIGNALS)
    stats = asyncio.create_task(
        report_process(metrics.process_cpu, metrics.process_rss, metrics.process_fds, "front"),
        name="front:stats",
    )
    log.info(
        "listening",
        extra={
            "addresses": [f"{h}:{p}" for h, p in front.addresses],
            "config": config.source,
            "config_hash": config_hash(config),
            "version": __version__,
            "pid": os.getpid(),
            "role": "front",
        },
    )
    await stop.wait()
    log.info("shutting down", extra={"shutdown_timeout": config.shutdown_timeout, "role": "front"})
    stats.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await front.stop()
    log.info("stopped", extra={"role": "front"})

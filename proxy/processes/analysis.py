"""The analysis process's entry: the control plane and the intake (analysis/app.py wires them)
served until SIGTERM, with reloads on SIGHUP whose validated config the fronts then follow."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from proxy import __version__
from proxy.analysis.app import build_app, start_analysis
from proxy.analysis.reload import reload_config
from proxy.analysis.state import STATE, ProxyState
from proxy.config import Config, config_hash
from proxy.processes.runtime import (
    PROCESS_SIGNALS,
    RESTARTED_ENV,
    RuntimePaths,
    share_config,
)
from proxy.processes.stats import report_process
from proxy.supervisor import signal_supervisor

log = logging.getLogger(__name__)


async def serve_analysis(config: Config, runtime_dir: str) -> None:
    """Serve until SIGTERM (the supervisor sends it once every front has stopped, so that the
    exchanges they handed off are all taken in), then drain the shadows and flush the recorder.
    SIGHUP reloads the config file."""
    paths = RuntimePaths(runtime_dir)
    app = build_app(config, CollectorRegistry())
    state = app[STATE]
    if os.environ.get(RESTARTED_ENV):
        state.metrics.process_restarts.labels("analysis").inc()

    async def tell_fronts(new: Config) -> None:
        if state.config_pickle is None:  # the reload could not keep it (logged there)
            log.error("the fronts stay on their config: the reloaded one is not pickled")
            return
        share_config(state.config_pickle, paths.config)
        signal_supervisor(signal.SIGUSR2)

    state.on_reload.append(tell_fronts)
    serving = await start_analysis(app, control=paths.control, intake=paths.intake)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    jobs: set[asyncio.Task[object]] = set()

    def run(job: Callable[[ProxyState], Coroutine[Any, Any, object]]) -> None:
        task = asyncio.create_task(job(state), name=job.__name__)
        jobs.add(task)
        task.add_done_callback(jobs.discard)

    loop.add_signal_handler(signal.SIGHUP, run, reload_config)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PROCESS_SIGNALS)
    m = state.metrics
    stats = asyncio.create_task(
        report_process(m.process_cpu, m.process_rss, m.process_fds, "analysis"),
        name="analysis:stats",
    )
    log.info(
        "analysis started",
        extra={
            "listeners": serving.addresses,
            "config": config.source,
            "config_hash": config_hash(config),
            "version": __version__,
            "pid": os.getpid(),
            "role": "analysis",
        },
    )
    await stop.wait()
    log.info("shutting down", extra={"role": "analysis"})
    stats.cancel()
    await asyncio.gather(*jobs)
    await serving.stop()
    log.info("stopped", extra={"role": "analysis"})

"""Reloads of a running proxy: re-read and validate the config file in a child process
(SIGHUP or the admin API), refuse what needs a restart, and swap to the new routes between two
exchanges while the old ones drain; then have the fronts follow (ProxyState.on_reload)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

from proxy.analysis import routes as wiring
from proxy.analysis.exchanges import RouteRuntime
from proxy.analysis.overrides import Key
from proxy.analysis.state import ProxyState
from proxy.config import Config, ConfigError, config_hash, listen_text
from proxy.core.outcomes import ReloadOutcome
from proxy.logs import set_level
from proxy.supervisor import RUNTIME_DIR_ENV
from proxy.validation import validate_in_child_async

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: true when the new config runs, else the errors naming file, key and
    value."""

    ok: bool
    config_hash: str
    errors: tuple[str, ...] = ()
    shutting_down: bool = False  # refused because the proxy is stopping, not for the file
    pickle: str | None = None  # ok: where the running config is pickled (see config_pickle)

    def __bool__(self) -> bool:
        return self.ok


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
    if new.capture.enabled != running.capture.enabled:
        turning = "on" if new.capture.enabled else "off"
        refuse("capture", turning, f"turning the capture {turning} needs a restart")
    elif new.capture.enabled and new.capture.path != running.capture.path:
        refuse("capture.path", new.capture.path, "moving the capture's file needs a restart")
    for key, old_listen, new_listen in (
        ("admin.listen", running.admin.listen, new.admin.listen),
        ("metrics.listen", running.metrics.listen, new.metrics.listen),
    ):
        if old_listen != new_listen:
            refuse(key, listen_text(new_listen), "changing it needs a restart")
    return problems


@functools.cache
def _own_runtime_dir() -> str:
    own = tempfile.mkdtemp(prefix="shadow-proxy-runtime-")
    atexit.register(shutil.rmtree, own, ignore_errors=True)  # the pickles hold tokens
    return own


def config_pickle() -> str:
    """Where this process keeps its running config pickled once a reload has validated it:
    config-PID.pickle in $SHADOW_PROXY_RUNTIME_DIR (the supervisor's), else in a private
    directory of this process's own. Replaced atomically by each successful reload, so a reader
    finds a whole pickle of the config running now or just before; see load_pickled."""
    directory = os.environ.get(RUNTIME_DIR_ENV) or _own_runtime_dir()
    return os.path.join(directory, f"config-{os.getpid()}.pickle")


async def _load_for_reload(running: Config, path: str) -> tuple[Config, str]:
    """The config at `path`, validated in a child process (never parsed here: a hostile file
    would stall every request), if a reload can apply it; and where the child pickled it, beside
    config_pickle(). Else ConfigError, and no pickle is left."""
    directory, name = os.path.split(config_pickle())
    try:
        # Again if a cleaner of /tmp removed it while the proxy ran.
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, candidate = tempfile.mkstemp(dir=directory, prefix=f"{name}.", suffix=".candidate")
    except OSError as exc:
        message = f"{path}: cannot write the validated config in {directory}: {exc.strerror}"
        raise ConfigError([message]) from None
    os.close(fd)
    try:
        new = await validate_in_child_async(path, candidate)
        problems = _needs_restart(running, new)
        if problems:
            raise ConfigError(problems)
    except BaseException:
        _discard(candidate)
        raise
    return new, candidate


def _discard(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _reload_failed(state: ProxyState, path: str, exc: ConfigError) -> None:
    state.metrics.config_reloads.labels(ReloadOutcome.FAILURE).inc()
    log.error(
        "config reload failed; the running config serves on",
        extra={"config": path, "errors": list(exc.errors)},
    )


async def reload_config(state: ProxyState, path: str | None = None) -> ReloadResult:
    """Re-read and validate the config (SIGHUP). An invalid one changes nothing and is counted;
    a valid one swaps at once: requests in flight finish on the routes they started with, new
    shadows start, removed ones drain and stop, new sample rates and timeouts apply."""
    metrics = state.metrics
    path = path or state.config.source
    async with state.reload_lock:
        if not state.ready:  # shutting down: routes started now would never be drained
            errors = ("the proxy is shutting down; nothing was reloaded",)
            return ReloadResult(False, config_hash(state.config), errors, shutting_down=True)
        try:
            new, candidate = await _load_for_reload(state.config, path)
        except ConfigError as exc:
            _reload_failed(state, path, exc)
            return ReloadResult(False, config_hash(state.config), exc.errors)
        scorers = wiring.scorers(new, metrics)
        recorder = state.recorder if new.records else None
        if recorder is not None:
            recorder.update_routes(wiring.recordings(new, scorers))
        routes = wiring.build_routes(new, metrics, recorder, state.reporter.problems, state.capture)
        if state.capture is not None:
            state.capture.update(new)
        await _keep_overrides(state, routes)
        await wiring.start(routes)
        old_routes = state.routes
        # The swap: one assignment, between two exchanges.
        state.exchanges.routes = {r.name: r for r in routes}
        old_config = state.config
        state.routes, state.config = routes, new
        if new.log_level != old_config.log_level:
            set_level(new.log_level)
        _keep_pickle(state, candidate)
        state.labels.update(new.labels, scorers)
        state.reporter.update(new)
        wiring.publish(metrics, old_config, 0.0)
        wiring.publish(metrics, new)
        task = asyncio.create_task(
            wiring.retire(old_routes, new.shadow_drain_timeout),
            name="retire-config",
        )
        state.retiring.add(task)
        task.add_done_callback(state.retiring.discard)
        for follow in state.on_reload:
            await follow(new)
        metrics.config_reloads.labels(ReloadOutcome.SUCCESS).inc()
        log.info("config reloaded", extra={"config": path, "config_hash": config_hash(new)})
        return ReloadResult(True, config_hash(new), pickle=state.config_pickle)


def _keep_pickle(state: ProxyState, candidate: str) -> None:
    """The validated pickle becomes config_pickle(), by a rename, right after the swap."""
    kept = config_pickle()
    try:
        os.replace(candidate, kept)
    except OSError as exc:
        _discard(candidate)
        state.config_pickle = None
        log.error(
            "cannot keep the reloaded config pickled", extra={"pickle": kept, "error": str(exc)}
        )
    else:
        state.config_pickle = kept


async def _keep_overrides(state: ProxyState, routes: tuple[RouteRuntime, ...]) -> None:
    """The admin API's overrides carry over to the shadows a reload keeps (a paused shadow stays
    paused); those of removed shadows are forgotten, and their gauges zeroed. With --workers
    every worker reloads, and each forgets them in the shared file too (idempotent)."""
    new = [(r.name, d) for r in routes for d in r.shadows.dispatchers]
    kept = {(r, d.name) for r, d in new}
    gone: list[Key] = []
    await state.overrides.change(lambda overrides: gone.extend(overrides.retain(kept)))
    for route, shadow in gone:
        log.info(
            "admin override dropped: the shadow is gone", extra={"route": route, "shadow": shadow}
        )
    for route, dispatcher in state.shadow_dispatchers():
        if (route, dispatcher.name) not in kept:
            state.metrics.shadow_paused.labels(route, dispatcher.name).set(0)
            state.metrics.shadow_sample_ratio.labels(route, dispatcher.name).set(0)
    state.overrides.apply(new)

"""`run`: the supervisor. It validates the config, then starts one analysis process and N front
processes (--workers; they share the port through SO_REUSEPORT), restarts any that dies, and
passes signals on: SIGHUP to the analysis process (which validates and applies a reload, then
asks, by SIGUSR2, that the fronts follow), SIGTERM to the fronts first and to the analysis process
once they are gone. Process concerns only: spawning, signals, restarts, the metrics directory."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from proxy.config import Config
from proxy.processes.runtime import RESTARTED_ENV, RuntimePaths
from proxy.validation import load_pickled

log = logging.getLogger("proxy.supervisor")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ENV = "SHADOW_PROXY_WORKER"
RUNTIME_DIR_ENV = "SHADOW_PROXY_RUNTIME_DIR"
"""Set for the processes: the directory of their sockets, config and admin overrides."""
SUPERVISOR_ENV = "SHADOW_PROXY_SUPERVISOR_PID"
"""Set by the supervisor for its processes: its pid, to which the analysis process sends SIGUSR2
(a reload applied) to have it passed on to the fronts."""


def busy_addresses(config: Config) -> list[str]:
    """The addresses of `config` something else already listens on, each in words naming its
    key: probed with a plain bind (no SO_REUSEPORT, which would share a port with another
    proxy's fronts) before any process starts."""
    found = []
    for key, address in (
        ("listen", (config.listen_host, config.listen_port)),
        ("admin.listen", config.admin.listen),
        ("metrics.listen", config.metrics.listen),
    ):
        if address is None or address[1] == 0:
            continue
        host, port = address
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)  # fmt: skip
        except OSError as exc:
            found.append(f"{config.source}: {key}: cannot resolve {host!r}: {exc}")
            continue
        for family, kind, proto, _, sockaddr in infos[:1]:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(sockaddr)
                except OSError as exc:
                    reason = exc.strerror or str(exc)
                    found.append(
                        f"{config.source}: {key}: cannot listen on {host}:{port}: {reason}"
                    )
    return found


def signal_supervisor(signum: int) -> None:
    """Ask the supervisor to pass `signum` on (SIGUSR2: to the fronts)."""
    os.kill(int(os.environ[SUPERVISOR_ENV]), signum)


# A role whose processes died this often within this many seconds is crash-looping: stop rather
# than spin. One death (say a kill -9, or the OOM killer) is only restarted.
_CRASH_LOOP = (5, 60.0)


def _prepare_child() -> None:
    """In the child before exec. SIGHUP and SIGUSR2 stay blocked until the child's loop
    handles them (the mask survives exec), so that one passed on while it starts is delivered
    then, instead of killing it or being lost. On Linux, SIGTERM comes when the supervisor dies,
    even by SIGKILL, so that no process is left serving on its own."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_SIGNALS)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_CHILD_SIGNALS = {signal.SIGHUP, signal.SIGUSR2}
_PR_SET_PDEATHSIG = 1


ANALYSIS, FRONT = "analysis", "front"
_MAX_SOCKET_PATH = 107


class Supervisor:
    """Runs the proxy's processes from the validated config `validate` leaves at the runtime
    directory's config path, and keeps them running.

    >>> Supervisor("/etc/shadow-proxy/config.yaml", workers=2, validate=check).run()
    0
    """

    def __init__(
        self,
        config_path: str,
        workers: int,
        validate: Callable[[str, str], list[str]],
    ) -> None:
        self.config_path = config_path
        self.workers = workers
        self._validate = validate  # (yaml path, pickle path) -> errors; [] when valid
        self._stopping = False
        self._children: dict[int, tuple[str, int]] = {}  # pid -> role, index
        self._analysis_stopped = False
        self._deaths: dict[str, list[float]] = {}  # per role: when its processes died lately

    def _spawn(self, role: str, index: int, env: dict[str, str], *, restarted: bool) -> None:
        argv = [sys.executable, "-m", "proxy", "run", "--role", role]
        argv += ["--config", self.config_path, "--runtime-dir", env[RUNTIME_DIR_ENV]]
        child_env = {**env, WORKER_ENV: str(index)}
        if restarted:
            child_env[RESTARTED_ENV] = "1"
        proc = subprocess.Popen(argv, env=child_env, preexec_fn=_prepare_child)
        self._children[proc.pid] = (role, index)
        log.info("process started", extra={"role": role, "worker": index, "pid": proc.pid})

    def _pids(self, role: str) -> list[int]:
        return [pid for pid, (r, _) in self._children.items() if r == role]

    def _kill(self, pids: list[int], signum: int) -> None:
        # os.kill, not Popen.send_signal: that polls, and would reap a child that just died
        # before os.wait() in run() sees it. Until os.wait() reaps it, its pid is still ours.
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        fronts = self._pids(FRONT)
        self._kill(fronts, signal.SIGTERM)
        if not fronts:
            self._stop_analysis()

    def _stop_analysis(self) -> None:
        if not self._analysis_stopped:
            self._analysis_stopped = True
            self._kill(self._pids(ANALYSIS), signal.SIGTERM)

    def _to_analysis(self, signum: int, frame: FrameType | None) -> None:
        self._kill(self._pids(ANALYSIS), signum)

    def _to_fronts(self, signum: int, frame: FrameType | None) -> None:
        self._kill(self._pids(FRONT), signum)

    def run(self) -> int:
        metrics_dir = os.environ.get(MULTIPROC_ENV) or None  # set but empty: unset
        owned = metrics_dir is None
        if metrics_dir is None:
            metrics_dir = tempfile.mkdtemp(prefix="shadow-proxy-metrics-")
        else:
            # Files left by an earlier run would be summed in as if they were live.
            for stale in Path(metrics_dir).glob("*.db"):
                stale.unlink()
        # Beside the metrics files (a volume, on a read-only root): the sockets between the
        # processes, the validated config, the admin API's overrides. mkdtemp makes it 0700.
        runtime_dir = tempfile.mkdtemp(prefix="runtime-", dir=metrics_dir)
        if len(RuntimePaths(runtime_dir).intake.encode()) > _MAX_SOCKET_PATH:
            # A Unix socket's path has at most 107 bytes: a deep metrics directory cannot hold
            # them, so they go to the system's temporary directory.
            os.rmdir(runtime_dir)
            runtime_dir = tempfile.mkdtemp(prefix="shadow-proxy-")
        try:
            errors = self._validate(self.config_path, RuntimePaths(runtime_dir).config)
            if errors:
                print(f"invalid config {self.config_path}:", file=sys.stderr)
                for error in errors:
                    print(f"  {error}", file=sys.stderr)
                return 1
            busy = busy_addresses(load_pickled(RuntimePaths(runtime_dir).config))
            if busy:
                # Before any process starts: nothing is created (no store file), no traceback.
                for error in busy:
                    print(f"shadow-proxy cannot start: {error}", file=sys.stderr)
                return 1
            return self._supervise(metrics_dir, runtime_dir)
        finally:
            shutil.rmtree(runtime_dir, ignore_errors=True)
            if owned:
                shutil.rmtree(metrics_dir, ignore_errors=True)

    def _supervise(self, metrics_dir: str, runtime_dir: str) -> int:
        env = {
            **os.environ,
            MULTIPROC_ENV: metrics_dir,
            RUNTIME_DIR_ENV: runtime_dir,
            SUPERVISOR_ENV: str(os.getpid()),
        }
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._to_analysis)  # it validates and reloads
        signal.signal(signal.SIGUSR2, self._to_fronts)  # a reload applied: the fronts follow
        status = 0
        self._spawn(ANALYSIS, 0, env, restarted=False)
        for index in range(self.workers):
            self._spawn(FRONT, index, env, restarted=False)
        while self._children:
            try:
                pid, code = os.wait()
            except ChildProcessError:  # no child left to wait for
                break
            if pid not in self._children:
                continue
            role, index = self._children.pop(pid)
            code = os.waitstatus_to_exitcode(code)
            mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]  # untyped upstream
            if self._stopping:
                status = status or code
                if not self._pids(FRONT):
                    self._stop_analysis()
                continue
            log.error(
                "process died", extra={"role": role, "worker": index, "pid": pid, "exit_code": code}
            )
            now = time.monotonic()
            deaths = self._deaths.setdefault(role, [])
            deaths[:] = [t for t in deaths if now - t < _CRASH_LOOP[1]] + [now]
            if len(deaths) >= _CRASH_LOOP[0]:
                log.error("process is crash-looping; stopping", extra={"role": role})
                status = 1
                self._stop(signal.SIGTERM, None)
                continue
            self._spawn(role, index, env, restarted=True)
        return status

"""`run --workers N`: N proxy processes sharing one port through SO_REUSEPORT, with
prometheus-client's multiprocess mode so that /metrics from any worker counts them all.
Process concerns only: spawning, signals, restarts, the metrics directory."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

log = logging.getLogger("proxy.supervisor")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ENV = "SHADOW_PROXY_WORKER"
RUNTIME_DIR_ENV = "SHADOW_PROXY_RUNTIME_DIR"
"""Set for the workers: the directory their shared admin overrides live in."""
SUPERVISOR_ENV = "SHADOW_PROXY_SUPERVISOR_PID"
"""Set by the supervisor for its workers: its pid, which passes SIGHUP and SIGUSR1 on to all."""


def signal_supervisor(signum: int) -> None:
    """Ask the supervisor to pass `signum` on to every worker (this one included)."""
    os.kill(int(os.environ[SUPERVISOR_ENV]), signum)


# A worker that dies sooner than this after starting is crash-looping: stop rather than spin.
_MIN_UPTIME = 5.0


WORKER_SIGNALS = {signal.SIGHUP, signal.SIGUSR1}
"""Passed on to every worker: reload, and admin overrides changed."""


def _prepare_worker() -> None:
    """In the child before exec. SIGHUP and SIGUSR1 stay blocked until the worker's loop handles
    them (the mask survives exec), so that one passed on while a worker starts is delivered
    then, instead of killing it or being lost. On Linux, SIGTERM comes when the supervisor dies,
    even by SIGKILL, so that no worker is left serving on its own."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class Supervisor:
    """Starts `workers` copies of `shadow-proxy run --reuse-port` and restarts one that dies.
    Passes SIGHUP (reload) and SIGUSR1 (admin overrides changed) on; on SIGTERM or SIGINT passes
    the signal on and waits for every worker's graceful shutdown.

    >>> Supervisor("/etc/shadow-proxy/config.yaml", workers=2).run()
    0
    """

    def __init__(self, config_path: str, workers: int) -> None:
        self.config_path = config_path
        self.workers = workers
        self._stopping = False
        self._children: dict[int, tuple[int, subprocess.Popen[bytes], float]] = {}

    def _spawn(self, index: int, env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", self.config_path, "--reuse-port"],
            env={**env, WORKER_ENV: str(index)},
            preexec_fn=_prepare_worker,
        )
        self._children[proc.pid] = (index, proc, time.monotonic())
        log.info("worker started", extra={"worker": index, "pid": proc.pid})

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        self._forward(signal.SIGTERM, frame)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        # os.kill, not Popen.send_signal: that polls, and would reap a worker that just died
        # before os.wait() in run() sees it. Until os.wait() reaps it, its pid is still ours.
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def run(self) -> int:
        metrics_dir = os.environ.get(MULTIPROC_ENV)
        owned = metrics_dir is None
        if metrics_dir is None:
            metrics_dir = tempfile.mkdtemp(prefix="shadow-proxy-metrics-")
        else:
            # Files left by an earlier run would be summed in as if they were live.
            for stale in Path(metrics_dir).glob("*.db"):
                stale.unlink()
        # Beside the metrics files (a volume, on a read-only root): the admin API's overrides.
        runtime_dir = tempfile.mkdtemp(prefix="runtime-", dir=metrics_dir)
        env = {
            **os.environ,
            MULTIPROC_ENV: metrics_dir,
            RUNTIME_DIR_ENV: runtime_dir,
            SUPERVISOR_ENV: str(os.getpid()),
        }
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        signal.signal(signal.SIGHUP, self._forward)  # each worker re-reads the file
        signal.signal(signal.SIGUSR1, self._forward)  # each worker re-reads the admin overrides
        status = 0
        try:
            for index in range(self.workers):
                self._spawn(index, env)
            while self._children:
                try:
                    pid, code = os.wait()
                except ChildProcessError:  # no child left to wait for
                    break
                if pid not in self._children:
                    continue
                index, _, started = self._children.pop(pid)
                code = os.waitstatus_to_exitcode(code)
                mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]  # untyped upstream
                if self._stopping:
                    status = status or code
                    continue
                log.error("worker died", extra={"worker": index, "pid": pid, "exit_code": code})
                if time.monotonic() - started < _MIN_UPTIME:
                    log.error("worker is crash-looping; stopping", extra={"worker": index})
                    status = 1
                    self._signal(signal.SIGTERM, None)
                    continue
                self._spawn(index, env)
        finally:
            shutil.rmtree(runtime_dir, ignore_errors=True)
            if owned:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        return status

"""What the supervisor and its processes share: the runtime directory's layout (the sockets and
the validated config's pickle), the signals they pass, and the environment they set."""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
from dataclasses import dataclass

from proxy.config import Config

RESTARTED_ENV = "SHADOW_PROXY_RESTARTED"
"""Set by the supervisor for a process it starts again after one died: counted at its start."""

PROCESS_SIGNALS = {signal.SIGHUP, signal.SIGUSR2}
"""Blocked from a child's start until its loop handles them (supervisor.py): reload, admin
and a reloaded config for the fronts."""


@dataclass(frozen=True, slots=True)
class RuntimePaths:
    """The files of one running proxy, in its private runtime directory."""

    directory: str

    @property
    def intake(self) -> str:
        return os.path.join(self.directory, "intake.sock")

    @property
    def control(self) -> str:
        return os.path.join(self.directory, "control.sock")

    @property
    def config(self) -> str:
        return os.path.join(self.directory, "config.pickle")


def write_config(config: Config, path: str) -> None:
    """Leave a validated config for the other processes, atomically (rename)."""
    directory = os.path.dirname(path)
    fd, temp = tempfile.mkstemp(prefix=".config-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(config, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise

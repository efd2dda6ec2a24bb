"""What the supervisor and its processes share: the runtime directory's layout (the sockets and
the validated config's pickle), the signals they pass, and the environment they set."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

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


def share_config(pickled: str, path: str) -> None:
    """Make the validated config pickled at `pickled` (by a reload, in the same directory) the
    one the fronts load from `path`: a hard link renamed over it, so that a reader finds the
    old file or the new one whole, and the config is pickled once."""
    temp = f"{path}.new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    os.link(pickled, temp)
    os.replace(temp, path)

"""Runtime overrides of the YAML, set through the admin API: per shadow, paused and a sample rate.
The table is plain data; `apply_overrides` sets it on running dispatchers; with --workers,
`OverridesFile` keeps it where every worker process re-reads it (on SIGUSR1)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from proxy.server.shadow import ShadowDispatcher

RUNTIME_DIR_ENV = "SHADOW_PROXY_RUNTIME_DIR"
"""Set by the supervisor for its workers: the directory their shared overrides live in."""
SUPERVISOR_ENV = "SHADOW_PROXY_SUPERVISOR_PID"
"""Set by the supervisor for its workers: its pid, which passes SIGHUP and SIGUSR1 on to all."""


def signal_supervisor(signum: int) -> None:
    """Ask the supervisor to pass `signum` on to every worker (this one included)."""
    os.kill(int(os.environ[SUPERVISOR_ENV]), signum)


Key = tuple[str, str]  # (route, shadow)


@dataclass(frozen=True, slots=True)
class ShadowOverride:
    paused: bool = False
    sample: float | None = None  # None: the config's rate

    def paused_as(self, paused: bool) -> ShadowOverride:
        return replace(self, paused=paused)

    def sampled_at(self, sample: float | None) -> ShadowOverride:
        return replace(self, sample=sample)


_NONE = ShadowOverride()


class Overrides:
    """(route, shadow) -> ShadowOverride; a shadow without an entry runs as configured.

    >>> overrides = Overrides()
    >>> overrides.set(("iris", "iris-rf"), ShadowOverride(paused=True))
    >>> overrides.get(("iris", "iris-rf")).paused
    True
    """

    def __init__(self, table: dict[Key, ShadowOverride] | None = None) -> None:
        self._table = dict(table or {})

    def get(self, key: Key) -> ShadowOverride:
        return self._table.get(key, _NONE)

    def set(self, key: Key, override: ShadowOverride) -> None:
        if override == _NONE:
            self._table.pop(key, None)
        else:
            self._table[key] = override

    def retain(self, present: Iterable[Key]) -> list[Key]:
        """Forget the overrides of shadows that are gone (a reload removed them); returns those."""
        keep = set(present)
        gone = sorted(key for key in self._table if key not in keep)
        for key in gone:
            del self._table[key]
        return gone

    def to_list(self) -> list[dict[str, Any]]:
        return [
            {"route": route, "shadow": shadow, "paused": o.paused, "sample": o.sample}
            for (route, shadow), o in sorted(self._table.items())
        ]

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_list())

    @classmethod
    def from_json(cls, data: bytes) -> Overrides:
        items = orjson.loads(data) if data.strip() else []
        return cls(
            {
                (item["route"], item["shadow"]): ShadowOverride(item["paused"], item["sample"])
                for item in items
            }
        )


def apply_overrides(shadows: Iterable[tuple[str, ShadowDispatcher]], overrides: Overrides) -> None:
    """Set every (route, dispatcher)'s pause and sample rate from the table."""
    for route, dispatcher in shadows:
        override = overrides.get((route, dispatcher.name))
        dispatcher.control(paused=override.paused, sample=override.sample)


class OverridesFile:
    """The overrides shared by the workers of one supervisor: a JSON file changed under an
    exclusive lock (read, change, write, rename), so that concurrent changes in two workers
    both land. Blocking file I/O: call it from a thread.

    >>> shared = OverridesFile(Path(os.environ[RUNTIME_DIR_ENV]))
    >>> shared.change(lambda overrides: overrides.set(key, ShadowOverride(paused=True)))
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "overrides.json"
        self._lock = directory / "overrides.lock"

    def read(self) -> Overrides:
        try:
            return Overrides.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return Overrides()

    def change(self, edit: Callable[[Overrides], object]) -> Overrides:
        with self._lock.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            overrides = self.read()
            edit(overrides)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_bytes(overrides.to_json())
            os.replace(temporary, self.path)
            return overrides

"""The admin API's overrides of the YAML, per shadow: paused, and a sample rate. `Overrides` is
the plain table; `OverridesFile` keeps it in the supervisor's runtime directory, where a
restarted analysis process takes it up again; `OverrideTable` is the one in force, local or kept
there, and sets it on the dispatchers.
Nothing here serves HTTP or reloads a config."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from proxy.analysis.shadow import ShadowDispatcher
from proxy.supervisor import RUNTIME_DIR_ENV, SUPERVISOR_ENV

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


class OverridesFile:
    """The overrides kept in the runtime directory of one supervisor: a JSON file changed under an
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


class OverrideTable:
    """The overrides in force: this process's own table, or under a supervisor the table
    kept in its `OverridesFile`. The one place that knows which.

    >>> table = OverrideTable.for_process()
    >>> await table.change(lambda overrides: overrides.set(key, ShadowOverride(paused=True)))
    >>> table.apply(state.shadow_dispatchers())
    """

    def __init__(self, shared: OverridesFile | None = None) -> None:
        self.shared = shared
        # A restarted analysis process picks up the table it had before.
        self.overrides = shared.read() if shared is not None else Overrides()

    @classmethod
    def for_process(cls) -> OverrideTable:
        """Kept in the runtime directory under a supervisor (both variables set)."""
        runtime_dir = os.environ.get(RUNTIME_DIR_ENV)
        if runtime_dir is not None and SUPERVISOR_ENV in os.environ:
            return cls(OverridesFile(Path(runtime_dir)))
        return cls()

    async def change(self, edit: Callable[[Overrides], object]) -> None:
        """Edit the table: in place, or in the shared file under its lock (in a thread)."""
        if self.shared is None:
            edit(self.overrides)
        else:
            self.overrides = await asyncio.to_thread(self.shared.change, edit)

    def apply(self, shadows: Iterable[tuple[str, ShadowDispatcher]]) -> None:
        """Set every (route, dispatcher)'s pause and sample rate from the table."""
        for route, dispatcher in shadows:
            override = self.overrides.get((route, dispatcher.name))
            dispatcher.control(paused=override.paused, sample=override.sample)

"""CPU time per process, read from /proc (Linux): which processes make up the thing under test,
what role each plays (read from its command line), and the CPU each spent over a window.

Owns: parsing /proc/<pid>/stat and /proc/<pid>/cmdline, walking a process tree, naming roles,
and the meter that turns two readings into CPU seconds per process. Must not touch: the load,
the scenarios, the figures' presentation (bench.py).

A process's role is, in order: the value of a ``--role`` argument; for nginx, which rewrites its
command line, ``master`` or ``worker``; for ``python -m proxy SUBCOMMAND`` (or the
``shadow-proxy`` script) the subcommand, except that ``run --workers N`` with N > 1 is the
``supervisor``; for ``python -m package.module``, the module's last name; else the
executable's name.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuMeter",
    "ProcessCpu",
    "children",
    "keyed",
    "parse_stat",
    "process_tree",
    "role",
    "with_role",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks, from the text of /proc/<pid>/stat."""
    # Field 2, the command name, is in parentheses and may itself hold spaces and ")":
    # everything after the last ")" is fields 3 (state) onwards, and utime, stime are 14, 15.
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _proxy_role(args: Sequence[str]) -> str:
    """The role of `shadow-proxy ARGS` (args after the program or `-m proxy`)."""
    command = next((arg for arg in args if not arg.startswith("-")), "proxy")
    if command != "run":
        return command
    workers = 1
    for index, arg in enumerate(args):
        value = None
        if arg == "--workers" and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith("--workers="):
            value = arg.partition("=")[2]
        if value is not None:
            with contextlib.suppress(ValueError):
                workers = int(value)
    return "supervisor" if workers > 1 else "run"


def role(cmdline: bytes) -> str:
    """A process's role, from the raw bytes of /proc/<pid>/cmdline (see the module's doc)."""
    argv = [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    if not argv:
        return "?"
    for index, arg in enumerate(argv):
        if arg == "--role" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--role="):
            return arg.partition("=")[2]
    if argv[0].startswith("nginx: "):
        # "nginx: master process /usr/sbin/nginx -c ...", "nginx: worker process"
        title = argv[0].removeprefix("nginx: ").partition(" process")[0]
        return title.strip().replace(" ", "_")
    if "-m" in argv[:-1]:
        at = argv.index("-m")
        module = argv[at + 1]
        if module == "proxy":
            return _proxy_role(argv[at + 2 :])
        return module.rpartition(".")[2]
    name = Path(argv[0]).name
    if name == "shadow-proxy":
        return _proxy_role(argv[1:])
    return name


def children(pid: int) -> list[int]:
    """The direct children of `pid` (of all its threads); [] once it is gone."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(kid) for kid in (task / "children").read_text().split())
    return found


def process_tree(roots: Iterable[int]) -> list[int]:
    """`roots` and all their descendants, parents first."""
    seen: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop(0)
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children(pid))
    return seen


def _ticks(pid: int) -> int | None:
    try:
        utime, stime = parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None
    return utime + stime


def _role_of(pid: int) -> str | None:
    try:
        return role(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return None


def with_role(roots: Iterable[int], wanted: str) -> list[int]:
    """The live processes of the trees under `roots` whose role is `wanted`."""
    return [pid for pid in process_tree(roots) if _role_of(pid) == wanted]


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    """What one process spent over the window. `key` is its role, numbered (`worker.1`,
    `worker.2`) when several processes share one."""

    key: str
    role: str
    pid: int
    cpu_seconds: float


def keyed(roles: Sequence[tuple[int, str]]) -> dict[int, str]:
    """pid -> a unique name: the role, or `role.N` (in pid order) when several share it."""
    counts = Counter(name for _, name in roles)
    seen: Counter[str] = Counter()
    names: dict[int, str] = {}
    for pid, name in sorted(roles):
        if counts[name] == 1:
            names[pid] = name
        else:
            seen[name] += 1
            names[pid] = f"{name}.{seen[name]}"
    return names


class CpuMeter:
    """CPU seconds (user + system) spent by the process trees under `roots()` between start()
    and stop(), per process. A process born in the window counts from 0; one that dies in it
    counts up to the last poll that saw it. With `every` set, a thread of its own polls at that
    interval between start() and stop(), whatever the caller is busy with, so that a
    short-lived child (a reload's validator, some 0.2 s) is not missed between two of the
    load's ticks.

    >>> meter = CpuMeter(lambda: [proxy_pid], every=0.01)  # doctest: +SKIP
    >>> meter.start(); run_the_load()  # doctest: +SKIP
    >>> [(p.key, p.cpu_seconds) for p in meter.stop()]  # doctest: +SKIP
    [('run', 1.93)]
    """

    def __init__(self, roots: Callable[[], Iterable[int]], *, every: float | None = None) -> None:
        self._roots = roots
        self._every = every
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._roles: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sampler: threading.Thread | None = None

    def _sample(self, every: float) -> None:
        while not self._stopping.wait(every):
            self.poll()

    def _read(self, *, at_start: bool) -> None:
        with self._lock:
            self._read_locked(at_start=at_start)

    def _read_locked(self, *, at_start: bool) -> None:
        for pid in process_tree(self._roots()):
            ticks = _ticks(pid)
            if ticks is None:
                continue
            found = _role_of(pid)
            if pid not in self._roles:
                if found is None:
                    continue
                self._roles[pid] = found
                self._first[pid] = ticks if at_start else 0
            elif found not in (None, "?"):
                # Read again each time: a child seen between fork and exec still carries its
                # parent's command line, and a zombie none ("?").
                self._roles[pid] = found
            self._last[pid] = ticks

    def start(self) -> None:
        self._halt()
        with self._lock:
            self._first.clear()
            self._last.clear()
            self._roles.clear()
        self._read(at_start=True)
        if self._every is not None:
            self._stopping.clear()
            self._sampler = threading.Thread(
                target=self._sample, args=(self._every,), name="cpu-meter", daemon=True
            )
            self._sampler.start()

    def poll(self) -> None:
        self._read(at_start=False)

    def _halt(self) -> None:
        if self._sampler is not None:
            self._stopping.set()
            self._sampler.join()
            self._sampler = None

    def stop(self) -> list[ProcessCpu]:
        self._halt()
        self.poll()
        names = keyed(list(self._roles.items()))
        return [
            ProcessCpu(
                names[pid],
                self._roles[pid],
                pid,
                (self._last[pid] - self._first[pid]) / CLOCK_TICKS,
            )
            for pid in sorted(self._roles)
        ]

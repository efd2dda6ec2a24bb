"""Each process's own CPU seconds, resident memory and open file descriptors, as gauges by role:
what the supervisor's processes cost, read from the kernel every few seconds."""

from __future__ import annotations

import asyncio
import os
import resource

from prometheus_client import Gauge

_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the peak, which is what getrusage knows
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return -1


async def report_process(cpu: Gauge, rss: Gauge, fds: Gauge, role: str, every: float = 5.0) -> None:
    """Set this process's gauges now and every `every` seconds, until cancelled."""
    cpu_child, rss_child, fds_child = cpu.labels(role), rss.labels(role), fds.labels(role)
    while True:
        cpu_child.set(cpu_seconds())
        rss_child.set(resident_bytes())
        fds_child.set(open_fds())
        await asyncio.sleep(every)

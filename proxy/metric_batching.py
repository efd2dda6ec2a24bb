"""Per-request counts kept as plain numbers and written to prometheus-client once per event-loop
iteration. In multiprocess mode every write is an mmap write behind a lock and a pid check (a
getpid() system call); on the hot path a request makes several, and under load one iteration
serves many requests. Idle, the write happens in the very next iteration, so /metrics is never
behind.

>>> batcher = Batcher()
>>> requests = BatchedCounter(batcher, family.labels("iris"))
>>> requests.inc()          # a number added; written when this loop iteration ends
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram


class _Pending(Protocol):
    def write(self) -> None: ...


class Inc(Protocol):
    """A counter as the code that counts sees it: prometheus-client's, or a batched one."""

    def inc(self, amount: float = 1) -> None: ...


class IncDec(Inc, Protocol):
    def dec(self, amount: float = 1) -> None: ...


class Observe(Protocol):
    def observe(self, amount: float) -> None: ...


class Batcher:
    """Writes what its batched metrics hold, once per loop iteration in which they changed."""

    def __init__(self) -> None:
        self._dirty: list[_Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # asked once: Python 3.11 asks
        # the kernel for its pid each time get_running_loop() is called

    def changed(self, metric: _Pending) -> None:
        if not self._dirty:
            loop = self._loop
            if loop is None or loop.is_closed():
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)
        self._dirty.append(metric)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for metric in dirty:
            metric.write()


class BatchedCounter:
    """A bound Counter child, written once per loop iteration."""

    __slots__ = ("_batcher", "_child", "_pending")

    def __init__(self, batcher: Batcher, child: Counter) -> None:
        self._batcher = batcher
        self._child = child
        self._pending = 0.0

    def inc(self, amount: float = 1) -> None:
        if not self._pending:
            self._batcher.changed(self)
        self._pending += amount

    def write(self) -> None:
        pending, self._pending = self._pending, 0.0
        if pending:
            self._child.inc(pending)


class BatchedGauge:
    """A bound Gauge child moved up and down (a queue's depth), written once per loop
    iteration. `set` is not batched: use the child itself for that."""

    __slots__ = ("_batcher", "_child", "_delta", "_dirty")

    def __init__(self, batcher: Batcher, child: Gauge) -> None:
        self._batcher = batcher
        self._child = child
        self._delta = 0.0
        self._dirty = False

    def inc(self, amount: float = 1) -> None:
        self._move(amount)

    def dec(self, amount: float = 1) -> None:
        self._move(-amount)

    def _move(self, amount: float) -> None:
        if not self._dirty:
            self._dirty = True
            self._batcher.changed(self)
        self._delta += amount

    def write(self) -> None:
        delta, self._delta = self._delta, 0.0
        self._dirty = False
        if delta:
            self._child.inc(delta)


class BatchedHistogram:
    """A bound Histogram child, written once per loop iteration: the bucket counts and the sum
    of the observations since the last write, added as they would have been one by one."""

    __slots__ = ("_batcher", "_bounds", "_child", "_counts", "_dirty", "_sum")

    def __init__(self, batcher: Batcher, child: Histogram) -> None:
        self._batcher = batcher
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)  # fixed at creation
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._dirty = False

    def observe(self, amount: float) -> None:
        if not self._dirty:
            self._dirty = True
            self._batcher.changed(self)
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def write(self) -> None:
        # What Histogram.observe does per observation, once per bucket: prometheus-client has
        # no public call that adds counts, so its two value lists are used directly.
        child = self._child
        buckets = child._buckets
        for index, count in enumerate(self._counts):
            if count:
                buckets[index].inc(count)
                self._counts[index] = 0
        child._sum.inc(self._sum)
        self._sum = 0.0
        self._dirty = False

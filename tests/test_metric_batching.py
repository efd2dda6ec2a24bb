"""Batched metrics: written once per loop iteration, they end exactly where writing each
observation at once would have: same bucket counts, same sums, same gauge."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy.metric_batching import BatchedCounter, BatchedGauge, BatchedHistogram, Batcher

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 7.5]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


async def test_batched_metrics_end_where_direct_ones_do() -> None:
    direct, batched = CollectorRegistry(), CollectorRegistry()
    batcher = Batcher()
    made = []
    for registry in (direct, batched):
        made.append(
            (
                Counter("c", "c", ["r"], registry=registry).labels("x"),
                Histogram("h", "h", ["r"], buckets=BUCKETS, registry=registry).labels("x"),
                Gauge("g", "g", ["r"], registry=registry).labels("x"),
            )
        )
    (c, h, g), (bc, bh, bg) = made
    counter = BatchedCounter(batcher, bc)
    histogram = BatchedHistogram(batcher, bh)
    gauge = BatchedGauge(batcher, bg)
    for value in VALUES:
        c.inc(2)
        counter.inc(2)
        h.observe(value)
        histogram.observe(value)
        g.inc(3)
        gauge.inc(3)
        g.dec()
        gauge.dec()
    assert _samples(batched)[("c_total", (("r", "x"),))] == 0  # not written yet
    await asyncio.sleep(0)  # one loop iteration: the batcher writes
    assert _samples(batched) == _samples(direct)
    assert _samples(batched)[("h_bucket", (("le", "0.01"), ("r", "x")))] == 4


async def test_a_flush_writes_at_once_and_an_idle_batcher_writes_nothing() -> None:
    registry = CollectorRegistry()
    batcher = Batcher()
    counter = BatchedCounter(batcher, Counter("c", "c", ["r"], registry=registry).labels("x"))
    counter.inc()
    batcher.flush()
    assert registry.get_sample_value("c_total", {"r": "x"}) == 1
    await asyncio.sleep(0)  # the iteration's own write finds nothing more
    assert registry.get_sample_value("c_total", {"r": "x"}) == 1

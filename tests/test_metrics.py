"""Tests for proxy.metrics: the bounded per-class counters, on a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from proxy.core.comparison import MAX_CLASSES, CompareKind
from proxy.metrics import Metrics

NAME = "shadowproxy_predicted_instances_total"
LABELS = {"route": "r", "model": "m", "role": "shadow"}


def counts(registry: CollectorRegistry) -> dict[str, float]:
    return {
        sample.labels["class"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == NAME
    }


def test_configured_classes_exist_at_zero_and_count_exactly() -> None:
    registry = CollectorRegistry()
    counter = Metrics(registry).bind_classes(
        "r", "m", "shadow", CompareKind.CLASSIFICATION, ("b", "a")
    )
    assert counter is not None
    assert counts(registry) == {"a": 0, "b": 0, "other": 0}
    counter.count(["a", "a", "z", "b", "a"])
    counter.count(["b"])
    counter.count([])
    assert counts(registry) == {"a": 3, "b": 2, "other": 1}
    assert registry.get_sample_value(NAME, {**LABELS, "class": "a"}) == 3


def test_without_classes_at_most_max_classes_series_and_other() -> None:
    registry = CollectorRegistry()
    counter = Metrics(registry).bind_classes("r", "m", "shadow", CompareKind.CLASSIFICATION, None)
    assert counter is not None
    assert counts(registry) == {}  # without named classes, "other" appears with its first
    for start in range(0, 100, 10):
        counter.count([f"c{i}" for i in range(start, start + 10)])
    expected = {f"c{i}": 1.0 for i in range(MAX_CLASSES)} | {"other": 100.0 - MAX_CLASSES}
    assert counts(registry) == expected


def test_the_same_model_gets_the_same_counter_so_a_reload_keeps_the_bound() -> None:
    metrics = Metrics(CollectorRegistry())
    kind = CompareKind.PROBABILITIES
    first = metrics.bind_classes("r", "m", "production", kind, None)
    assert first is not None
    assert metrics.bind_classes("r", "m", "production", kind, None) is first
    assert metrics.bind_classes("r", "m", "shadow", kind, None) is not first
    assert metrics.bind_classes("r", "m", "production", kind, ("a", "b")) is not first


def test_regression_has_no_class_counter() -> None:
    registry = CollectorRegistry()
    assert Metrics(registry).bind_classes("r", "m", "shadow", CompareKind.REGRESSION, None) is None
    assert counts(registry) == {}

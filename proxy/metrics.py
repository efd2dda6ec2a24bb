"""Every Prometheus metric: name, help, labels and buckets, declared once on an injected registry,
and bound to its label values when the config is loaded, so the hot path never formats labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy import __version__
from proxy.core.comparison import OTHER_CLASS, ClassLabels, CompareKind

PREFIX = "shadowproxy"

# Millisecond resolution at the low end, where model servers live, up to the longest timeouts.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)  # fmt: skip
DISTANCE_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

OUTCOMES = ("ok", "http_error", "timeout", "connect_error")
"""Upstream outcomes: an answer below 500, an answer of 500 or above, no answer in time,
and a connection that could not be made or broke."""

SKIP_REASONS = ("sampled_out", "paused", "queue_full", "body_too_large", "shutting_down")
"""Why a request was not sent to a shadow (paused: by the admin API, of those sampled in)."""

COMPARISON_RESULTS = (
    "agree",  # every instance agrees
    "disagree",  # at least one instance disagrees
    "status_mismatch",  # production and shadow answered with different status codes
    "same_error",  # both answered the same non-2xx status: nothing to compare
    "shadow_unparseable",  # the shadow's 2xx answer holds no predictions
    "production_unparseable",  # production's 2xx answer holds no predictions
    "shape_mismatch",  # different instance counts or vector lengths
    "shadow_failed",  # the shadow gave no answer (timeout or connection error)
    "production_failed",  # production gave no answer: nothing to compare against
)

REJECT_REASONS = ("no_route", "body_too_large")
"""Requests the proxy answers itself, without asking production."""

LABEL_RESULTS = ("joined", "unknown_id", "expired", "duplicate", "invalid")
"""What became of each label received; they always add up to the labels received."""

LABEL_REJECTIONS = ("unauthorized", "forbidden", "too_large", "store_unavailable", "disabled")
"""Label requests refused as a whole, before any of their labels counted as received."""

RECORD_KINDS = ("record", "shadow")
"""Store writes: a request's record (production's predictions), or a shadow's predictions."""

RECORD_DROPS = ("queue_full", "store_unavailable", "no_predictions", "orphan")
"""Why a write never reached the store: the recorder's queue was full, the store failed, the
answer held no predictions (non-2xx or unparseable), or a shadow's record was not there."""

PAIRED_OUTCOMES = ("both_right", "production_only", "shadow_only", "both_wrong")

STORE_OPERATIONS = ("put_records", "put_shadows", "get_records", "set_labels", "remove_old")

# From a second to a month: labels arrive in minutes (corrections) or weeks (chargebacks).
DELAY_BUCKETS = (
    1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 86400.0,
    2 * 86400.0, 3 * 86400.0, 7 * 86400.0, 14 * 86400.0, 30 * 86400.0,
)  # fmt: skip
ERROR_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0, 1000.0)


def _counter(registry: CollectorRegistry, name: str, doc: str, labels: list[str]) -> Counter:
    return Counter(f"{PREFIX}_{name}", doc, labels, registry=registry)


def _gauge(
    registry: CollectorRegistry,
    name: str,
    doc: str,
    labels: list[str],
    mode: Literal["livesum", "livemax", "mostrecent"],
) -> Gauge:
    """With --workers, `mode` says how the workers' values combine: livesum (queues), livemax
    (state every worker shares), mostrecent (values computed from the merged counters)."""
    return Gauge(f"{PREFIX}_{name}", doc, labels, registry=registry, multiprocess_mode=mode)


class Metrics:
    """The metric families of one proxy, on one registry.

    >>> metrics = Metrics(CollectorRegistry())
    >>> route_metrics = metrics.bind_route("iris", "iris-lr")
    >>> route_metrics.outcomes["ok"].inc()
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._counter = partial(_counter, registry)
        self._gauge = partial(_gauge, registry)
        self.upstream_duration = Histogram(
            f"{PREFIX}_upstream_request_duration_seconds",
            "Time from sending a request to an upstream to having its whole answer.",
            ["route", "target", "role"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_requests = self._counter(
            "upstream_requests",
            "Requests sent to upstreams, by outcome: ok (status < 500), http_error (status >= 500),"
            " timeout, connect_error (could not connect, or the connection broke).",
            ["route", "target", "role", "outcome"],
        )
        self.requests = self._counter(
            "requests",
            "Requests matched to a route.",
            ["route"],
        )
        self.rejected = self._counter(
            "rejected_requests",
            "Requests the proxy answered itself with an error, by reason.",
            ["reason"],
        )
        self.shadow_enqueued = self._counter(
            "shadow_enqueued",
            "Requests put on a shadow's queue.",
            ["route", "shadow"],
        )
        self.shadow_skipped = self._counter(
            "shadow_skipped",
            "Requests not sent to a shadow, by reason: sampled_out, paused (sampled in while the"
            " shadow was paused), queue_full, body_too_large, shutting_down.",
            ["route", "shadow", "reason"],
        )
        # livesum: with --workers, the sum over the live worker processes.
        self.shadow_queue_depth = self._gauge(
            "shadow_queue_depth",
            "Requests waiting in a shadow's queue.",
            ["route", "shadow"],
            "livesum",
        )
        self.shadow_paused = self._gauge(
            "shadow_paused",
            "1 while a shadow is paused through the admin API, else 0.",
            ["route", "shadow"],
            "livemax",
        )
        self.shadow_sample_ratio = self._gauge(
            "shadow_sample_ratio",
            "The share of requests a shadow is sent: the config's, or the admin API's override.",
            ["route", "shadow"],
            "livemax",
        )
        self.shadow_in_flight = self._gauge(
            "shadow_in_flight",
            "Requests being sent to or compared for a shadow.",
            ["route", "shadow"],
            "livesum",
        )
        self.admin_requests = self._counter(
            "admin_requests",
            "Admin API requests, by action (config, shadows, pause, resume, sample, reload,"
            " unknown) and result (ok, unauthorized, forbidden, off, not_found, invalid, failure).",
            ["action", "result"],
        )
        self.comparisons = self._counter(
            "comparisons",
            "Shadow answers compared with production's, by result.",
            ["route", "shadow", "result"],
        )
        self.compared_instances = self._counter(
            "compared_instances",
            "Prediction instances compared between production and a shadow.",
            ["route", "shadow"],
        )
        self.disagreed_instances = self._counter(
            "disagreed_instances",
            "Prediction instances on which a shadow disagrees with production.",
            ["route", "shadow"],
        )
        self.probability_distance = Histogram(
            f"{PREFIX}_probability_distance",
            "Distance between production's and a shadow's probability vectors, per instance.",
            ["route", "shadow"],
            buckets=DISTANCE_BUCKETS,
            registry=registry,
        )
        self.predicted_instances = self._counter(
            "predicted_instances",
            "Predicted instances per class (classification; probabilities: the argmax), on teed"
            " requests: production's once per request, a shadow's once per answer. class is one"
            " of compare.classes or other; without classes, one of the first 20 classes a process"
            " sees, or other.",
            ["route", "model", "role", "class"],
        )
        self._class_counters: dict[tuple[Any, ...], ClassCounter] = {}
        # A gauge, not an Info: Info has no multiprocess mode.
        self._declare_label_metrics(registry)
        self.config_reloads = self._counter(
            "config_reloads",
            "Config reloads (SIGHUP), by result: success, or failure (the old config serves on).",
            ["result"],
        )
        self.route_info = self._gauge(
            "route_info",
            "One series per route: its comparison kind and production target; 1 for the running"
            " config, 0 for routes a reload removed.",
            ["route", "kind", "production"],
            "livemax",
        )

        # The verdict, for alerts and for promotion gates (Flagger, Argo Rollouts); with
        # --workers, the value of the worker that computed it last (every one computes the same).
        def verdict_gauge(name: str, doc: str) -> Gauge:
            return self._gauge(name, doc, ["route", "shadow"], "mostrecent")

        self.verdict = verdict_gauge(
            "verdict",
            "The shadow's verdict: +1 better, -1 worse, 0 inconclusive or insufficient data.",
        )
        self.verdict_p = verdict_gauge(
            "verdict_sequential_p_value",
            "Always-valid p-value of the shadow-versus-production comparison (1 when unknown).",
        )
        self.verdict_low = verdict_gauge(
            "verdict_difference_lower",
            "Lower bound of the 1-alpha interval of the shadow's advantage: accuracy difference"
            " (classification) or production's minus the shadow's absolute error (regression).",
        )
        self.verdict_high = verdict_gauge(
            "verdict_difference_upper", "Upper bound of the same interval."
        )
        self.config_info = self._gauge(
            "config_info",
            "The configuration: its hash, source file and version; 1 for the running one, 0 for"
            " those reloads replaced.",
            ["hash", "source", "version", "routes", "shadows"],
            "livemax",
        )

    def _declare_label_metrics(self, registry: CollectorRegistry) -> None:
        self.labels_received = self._counter("labels_received", "Labels received.", [])
        self.labels = self._counter(
            "labels",
            "Labels by result: joined, unknown_id, expired, duplicate, invalid. They add up to"
            " labels_received_total.",
            ["result"],
        )
        self.label_requests_rejected = self._counter(
            "label_requests_rejected",
            "Label requests refused as a whole (their labels are not counted as received), by"
            " reason: unauthorized, forbidden, too_large, store_unavailable, disabled.",
            ["reason"],
        )
        self.label_delay = Histogram(
            f"{PREFIX}_label_delay_seconds",
            "Time from production's answer to the label's arrival.",
            ["route"],
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        model = ["route", "model", "role"]
        self.labelled_instances = self._counter(
            "labelled_instances", "Instances scored against a label, per model.", model
        )
        self.correct_instances = self._counter(
            "correct_instances",
            "Labelled instances a model got right (classification; probabilities: argmax).",
            model,
        )
        self.unscorable_instances = self._counter(
            "unscorable_instances",
            "Labelled instances whose prediction could not be scored (not a number, a malformed"
            " probability vector, or a label that does not fit the model's answer).",
            model,
        )
        self.absolute_error = Histogram(
            f"{PREFIX}_absolute_error",
            "Regression: |prediction - label| per labelled instance; _sum / _count is the MAE.",
            model,
            buckets=ERROR_BUCKETS,
            registry=registry,
        )
        self.squared_error = self._counter(
            "squared_error",
            "Regression: sum of squared errors; sqrt(this / labelled_instances) is the RMSE.",
            model,
        )
        self.log_loss = self._counter(
            "log_loss",
            "Probabilities: sum of -ln(p[label]); divided by labelled_instances, the log loss.",
            model,
        )
        pair = ["route", "shadow"]
        self.paired_outcomes = self._counter(
            "paired_outcomes",
            "Labelled instances scored for both production and a shadow, by outcome:"
            " both_right, production_only, shadow_only, both_wrong (McNemar's table).",
            ["route", "shadow", "outcome"],
        )
        self.paired_errors = self._counter(
            "paired_error_instances",
            "Regression: instances with both production's and the shadow's absolute error.",
            pair,
        )
        self.paired_shadow_worse = self._counter(
            "paired_error_shadow_worse",
            "Regression: sum of d = |shadow error| - |production error| where d > 0.",
            pair,
        )
        self.paired_shadow_better = self._counter(
            "paired_error_shadow_better",
            "Regression: sum of -d where d < 0, so sum(d) = shadow_worse - shadow_better.",
            pair,
        )
        self.paired_difference_squares = self._counter(
            "paired_error_difference_squares", "Regression: sum of d squared.", pair
        )
        self.recorded = self._counter(
            "recorded",
            "Writes that reached the prediction store, by kind: record (production's"
            " predictions for a request) or shadow (a shadow's predictions added to it).",
            ["route", "kind"],
        )
        self.recording_dropped = self._counter(
            "recording_dropped",
            "Writes that never reached the store, by kind and reason: queue_full,"
            " store_unavailable, no_predictions, orphan.",
            ["route", "kind", "reason"],
        )
        self.store_removed = self._counter(
            "store_removed",
            "Records removed from the store, by reason: expired (older than ttl +"
            " tombstone_ttl) or evicted (beyond max_records).",
            ["reason"],
        )
        self.store_records = self._gauge(
            "store_records",
            "Records in the prediction store, as of the last sweep.",
            [],
            "livemax",
        )
        self.recording_queue_depth = self._gauge(
            "recording_queue_depth",
            "Writes waiting for the prediction store.",
            [],
            "livesum",
        )
        self.store_duration = Histogram(
            f"{PREFIX}_store_operation_duration_seconds",
            "Time a prediction-store operation took, by operation (failures included).",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def bind_labels(self) -> LabelMetrics:
        return LabelMetrics(
            received=self.labels_received,
            results={r: self.labels.labels(r) for r in LABEL_RESULTS},
            rejected={r: self.label_requests_rejected.labels(r) for r in LABEL_REJECTIONS},
        )

    def bind_model(self, route: str, model: str, role: str) -> ModelMetrics:
        labels = (route, model, role)
        return ModelMetrics(
            labelled=self.labelled_instances.labels(*labels),
            correct=self.correct_instances.labels(*labels),
            unscorable=self.unscorable_instances.labels(*labels),
            absolute_error=self.absolute_error.labels(*labels),
            squared_error=self.squared_error.labels(*labels),
            log_loss=self.log_loss.labels(*labels),
        )

    def bind_pair(self, route: str, shadow: str) -> PairMetrics:
        return PairMetrics(
            outcomes={o: self.paired_outcomes.labels(route, shadow, o) for o in PAIRED_OUTCOMES},
            n=self.paired_errors.labels(route, shadow),
            shadow_worse=self.paired_shadow_worse.labels(route, shadow),
            shadow_better=self.paired_shadow_better.labels(route, shadow),
            difference_squares=self.paired_difference_squares.labels(route, shadow),
        )

    def bind_recording(self, route: str) -> RecordingMetrics:
        return RecordingMetrics(
            written={k: self.recorded.labels(route, k) for k in RECORD_KINDS},
            dropped={
                (k, r): self.recording_dropped.labels(route, k, r)
                for k in RECORD_KINDS
                for r in RECORD_DROPS
            },
            delay=self.label_delay.labels(route),
        )

    def set_config_info(
        self, config_hash: str, source: str, routes: int, shadows: int, value: float = 1.0
    ) -> None:
        labels = (config_hash, source, __version__, str(routes), str(shadows))
        self.config_info.labels(*labels).set(value)

    def bind_route(self, route: str, production: str) -> RouteMetrics:
        return RouteMetrics(
            requests=self.requests.labels(route),
            production=self.bind_upstream(route, production, "production"),
        )

    def bind_upstream(self, route: str, target: str, role: str) -> UpstreamMetrics:
        return UpstreamMetrics(
            duration=self.upstream_duration.labels(route, target, role),
            outcomes={o: self.upstream_requests.labels(route, target, role, o) for o in OUTCOMES},
        )

    def bind_shadow(self, route: str, shadow: str) -> ShadowMetrics:
        return ShadowMetrics(
            upstream=self.bind_upstream(route, shadow, "shadow"),
            enqueued=self.shadow_enqueued.labels(route, shadow),
            skipped={r: self.shadow_skipped.labels(route, shadow, r) for r in SKIP_REASONS},
            results={r: self.comparisons.labels(route, shadow, r) for r in COMPARISON_RESULTS},
            compared=self.compared_instances.labels(route, shadow),
            disagreed=self.disagreed_instances.labels(route, shadow),
            distance=self.probability_distance.labels(route, shadow),
            queue_depth=self.shadow_queue_depth.labels(route, shadow),
            in_flight=self.shadow_in_flight.labels(route, shadow),
            paused=self.shadow_paused.labels(route, shadow),
            sample=self.shadow_sample_ratio.labels(route, shadow),
        )

    def bind_classes(
        self,
        route: str,
        model: str,
        role: str,
        kind: CompareKind,
        classes: tuple[str, ...] | None,
    ) -> ClassCounter | None:
        """The predicted-class counter of one model of a route; None for regression, which has
        no classes. The same arguments give the same counter, so a reload keeps the classes a
        process has already named and the bound on them holds for the life of the process."""
        if kind is CompareKind.REGRESSION:
            return None
        key = (route, model, role, kind, classes)
        counter = self._class_counters.get(key)
        if counter is None:
            counter = ClassCounter(
                self.predicted_instances, (route, model, role), ClassLabels(kind, classes)
            )
            self._class_counters[key] = counter
        return counter

    def bind_rejections(self) -> dict[str, Counter]:
        return {r: self.rejected.labels(r) for r in REJECT_REASONS}


# prometheus-client gives bound children no type of their own: labels() returns the family type.
@dataclass(frozen=True, slots=True)
class UpstreamMetrics:
    duration: Histogram
    outcomes: dict[str, Counter]


@dataclass(frozen=True, slots=True)
class RouteMetrics:
    requests: Counter
    production: UpstreamMetrics


@dataclass(frozen=True, slots=True)
class ShadowMetrics:
    upstream: UpstreamMetrics
    enqueued: Counter
    skipped: dict[str, Counter]
    results: dict[str, Counter]
    compared: Counter
    disagreed: Counter
    distance: Histogram
    queue_depth: Gauge
    in_flight: Gauge
    paused: Gauge
    sample: Gauge


@dataclass(frozen=True, slots=True)
class LabelMetrics:
    received: Counter
    results: dict[str, Counter]
    rejected: dict[str, Counter]


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    labelled: Counter
    correct: Counter
    unscorable: Counter
    absolute_error: Histogram
    squared_error: Counter
    log_loss: Counter


@dataclass(frozen=True, slots=True)
class PairMetrics:
    outcomes: dict[str, Counter]
    n: Counter
    shadow_worse: Counter
    shadow_better: Counter
    difference_squares: Counter


@dataclass(frozen=True, slots=True)
class RecordingMetrics:
    written: dict[str, Counter]
    dropped: dict[tuple[str, str], Counter]
    delay: Histogram


class ClassCounter:
    """Counts one model's predicted instances per class. ClassLabels bounds the class labels;
    each label's child is bound once, on first use (configured classes and "other" at once, so
    that their series exist, at 0, before any prediction).

    >>> counter = metrics.bind_classes("iris", "iris-lr", "production", kind, ("setosa",))
    >>> counter.count(["setosa", "virginica", "setosa"])  # setosa += 2, other += 1
    """

    __slots__ = ("_children", "_family", "_labels", "_values")

    def __init__(self, family: Counter, values: tuple[str, str, str], labels: ClassLabels) -> None:
        self._family = family
        self._values = values
        self._labels = labels
        self._children: dict[str, Counter] = {}
        for name in (*sorted(labels.named), OTHER_CLASS):
            self._child(name)

    def _child(self, name: str) -> Counter:
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = self._family.labels(*self._values, name)
        return child

    def count(self, predictions: Sequence[Any]) -> None:
        """Count each instance of one answer under its class."""
        label = self._labels.label
        if len(predictions) == 1:
            self._child(label(predictions[0])).inc()
            return
        tally: dict[str, int] = {}
        for prediction in predictions:
            name = label(prediction)
            tally[name] = tally.get(name, 0) + 1
        for name, n in tally.items():
            self._child(name).inc(n)

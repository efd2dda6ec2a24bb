"""Every Prometheus metric: name, help, labels and buckets, declared once on an injected registry,
and bound to its label values when the config is loaded, so the hot path never formats labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy import __version__
from proxy import metric_names as n
from proxy.core.comparison import OTHER_CLASS, ClassLabels, CompareKind, Comparison
from proxy.core.joining import Paired, Score
from proxy.core.outcomes import (
    Cause,
    ComparisonResult,
    Handoff,
    LabelRejection,
    LabelResult,
    Outcome,
    PairedOutcome,
    RecordDrop,
    RecordKind,
    RejectReason,
    RequestSum,
    Role,
    SkipReason,
)
from proxy.core.segments import SegmentLabels
from proxy.front.faults import Fault
from proxy.metric_batching import (
    BatchedCounter,
    BatchedGauge,
    BatchedHistogram,
    Batcher,
    Inc,
    IncDec,
    Observe,
)
from proxy.metric_names import Family

# 1-2-5 steps from a millisecond, where model servers live, up to the longest timeouts: each
# upstream and route has one series per bucket, so each bound costs (routes x models) lines.
LATENCY_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip
DISTANCE_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

# From a second to a month: labels arrive in minutes (corrections) or weeks (chargebacks).
DELAY_BUCKETS = (
    10.0, 60.0, 600.0, 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0,
)  # fmt: skip
# A store operation is a batch: fast, slow (tens of milliseconds), or broken (seconds).
STORE_BUCKETS = (0.01, 0.1, 1.0)
ERROR_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0, 1000.0)


def _counter(registry: CollectorRegistry, family: Family, doc: str) -> Counter:
    return Counter(family.name, doc, family.labels, registry=registry)


def _gauge(
    registry: CollectorRegistry,
    family: Family,
    doc: str,
    mode: Literal["livesum", "livemax", "mostrecent"],
) -> Gauge:
    """With --workers, `mode` says how the workers' values combine: livesum (queues), livemax
    (state every worker shares), mostrecent (values computed from the merged counters)."""
    return Gauge(family.name, doc, family.labels, registry=registry, multiprocess_mode=mode)


def _histogram(
    registry: CollectorRegistry, family: Family, doc: str, buckets: Sequence[float]
) -> Histogram:
    return Histogram(family.name, doc, family.labels, buckets=buckets, registry=registry)


class Metrics:
    """The metric families of one proxy, on one registry.

    >>> metrics = Metrics(CollectorRegistry())
    >>> route_metrics = metrics.bind_route("iris", "iris-lr")
    >>> route_metrics.outcomes[Outcome.OK].inc()
    """

    def __init__(self, registry: CollectorRegistry, batcher: Batcher | None = None) -> None:
        self.registry = registry
        self.batcher = batcher  # the per-request metrics are batched with it
        self._counter = partial(_counter, registry)
        self._gauge = partial(_gauge, registry)
        self.upstream_duration = _histogram(
            registry,
            n.UPSTREAM_DURATION,
            "Time from sending a request to an upstream to having its whole answer.",
            LATENCY_BUCKETS,
        )
        self.upstream_requests = self._counter(
            n.UPSTREAM_REQUESTS,
            "Requests sent to upstreams, by outcome: ok (status < 500), http_error (status >= 500),"
            " timeout, connect_error (could not connect, or the connection broke), too_large (an"
            " answer over the size cap, cut while it was read).",
        )
        self.upstream_errors = self._counter(
            n.UPSTREAM_ERRORS,
            "Upstream requests that got no usable answer, by cause: dns, refused, tls,"
            " connect_timeout, unreachable, reset, timeout, too_large, bad_response, closed."
            " A series appears with its first failure.",
        )
        self._upstream_errors: dict[tuple[str, str, str, str], Inc] = {}
        self.requests = self._counter(
            n.REQUESTS,
            "Requests matched to a route.",
        )
        self.http_requests = self._counter(
            n.HTTP_REQUESTS,
            "Client requests the front answered, by route (empty when none matched) and status"
            " code; the proxy's own endpoints are not counted.",
        )
        self.http_duration = _histogram(
            registry,
            n.HTTP_DURATION,
            "Time from a client request's arrival to its answer, by route: production's latency"
            " plus the proxy's own (compare with upstream_request_duration_seconds).",
            LATENCY_BUCKETS,
        )
        self.rejected = self._counter(
            n.REJECTED,
            "Requests the proxy answered itself with an error, by reason.",
        )
        self.shadow_enqueued = self._counter(
            n.SHADOW_ENQUEUED,
            "Requests put on a shadow's queue.",
        )
        self.shadow_skipped = self._counter(
            n.SHADOW_SKIPPED,
            "Requests not sent to a shadow, by reason: sampled_out, paused (sampled in while the"
            " shadow was paused), queue_full, body_too_large, shutting_down.",
        )
        # livesum: with --workers, the sum over the live worker processes.
        self.shadow_queue_depth = self._gauge(
            n.SHADOW_QUEUE_DEPTH,
            "Requests waiting in a shadow's queue.",
            "livesum",
        )
        self.shadow_paused = self._gauge(
            n.SHADOW_PAUSED,
            "1 while a shadow is paused through the admin API, else 0.",
            "livemax",
        )
        self.shadow_ejected = self._gauge(
            n.SHADOW_EJECTED,
            "1 while a shadow is ejected: it failed eject_after times in a row, and copies are"
            " skipped (reason ejected) until a probe after eject_for gets an answer.",
            "livemax",
        )
        self.shadow_sample_ratio = self._gauge(
            n.SHADOW_SAMPLE_RATIO,
            "The share of requests a shadow is sent: the config's, or the admin API's override.",
            "livemax",
        )
        self.shadow_in_flight = self._gauge(
            n.SHADOW_IN_FLIGHT,
            "Requests being sent to or compared for a shadow.",
            "livesum",
        )
        self.admin_requests = self._counter(
            n.ADMIN_REQUESTS,
            "Admin API requests, by action (config, shadows, pause, resume, sample, reload,"
            " unknown) and result (ok, unauthorized, forbidden, off, not_found, invalid, failure).",
        )
        self.comparisons = self._counter(
            n.COMPARISONS,
            "Shadow answers compared with production's, by result.",
        )
        self.compared_instances = self._counter(
            n.COMPARED_INSTANCES,
            "Prediction instances compared between production and a shadow.",
        )
        self.disagreed_instances = self._counter(
            n.DISAGREED_INSTANCES,
            "Prediction instances on which a shadow disagrees with production.",
        )
        self.segment_compared = self._counter(
            n.SEGMENT_COMPARED,
            "Compared instances by the request's segment (routes[].segment): its value, among"
            " the first 20 seen, else other; none when the request has no such field.",
        )
        self.segment_disagreed = self._counter(
            n.SEGMENT_DISAGREED,
            "Of those, the instances on which the shadow disagrees with production.",
        )
        self._segment_labels: dict[str, SegmentLabels] = {}
        self.probability_distance = _histogram(
            registry,
            n.PROBABILITY_DISTANCE,
            "Distance between production's and a shadow's probability vectors, per instance.",
            DISTANCE_BUCKETS,
        )
        self.labelled_predicted = self._counter(
            n.LABELLED_PREDICTED,
            "Labelled instances by the class the model predicted for them (production's): set"
            " against predicted_instances, whether labels arrive for some classes more than for"
            " others (the report's selection-bias check).",
        )
        self.predicted_instances = self._counter(
            n.PREDICTED_INSTANCES,
            "Predicted instances per class (classification; probabilities: the argmax), on teed"
            " requests: production's once per request, a shadow's once per answer. class is one"
            " of compare.classes or other; without classes, one of the first 20 classes a process"
            " sees, or other.",
        )
        self._class_counters: dict[tuple[Any, ...], ClassCounter] = {}
        # A gauge, not an Info: Info has no multiprocess mode.
        self._declare_label_metrics(registry)
        self.config_reloads = self._counter(
            n.CONFIG_RELOADS,
            "Config reloads (SIGHUP), by result: success, or failure (the old config serves on).",
        )
        self.route_info = self._gauge(
            n.ROUTE_INFO,
            "One series per route: its comparison kind and production target; 1 for the running"
            " config, 0 for routes a reload removed.",
            "livemax",
        )
        self.shadow_info = self._gauge(
            n.SHADOW_INFO,
            "One series per configured shadow of a route, traffic or not, with its role"
            " (candidate, or baseline: an A/A comparison, the others' noise floor): 1 for the"
            " running config, 0 for shadows a reload removed.",
            "livemax",
        )

        # The verdict, for alerts and for promotion gates (Flagger, Argo Rollouts); with
        # --workers, the value of the worker that computed it last (every one computes the same).
        def verdict_gauge(family: Family, doc: str) -> Gauge:
            return self._gauge(family, doc, "mostrecent")

        self.verdict = verdict_gauge(
            n.VERDICT,
            "The shadow's verdict: 1 better, 0.5 equivalent, 0 inconclusive, -0.5 insufficient"
            " data, -1 worse. Decisions are held once made (until the comparison's config"
            " changes). Promote on >= 0.5; roll back on == -1.",
        )
        self.verdict_state = verdict_gauge(
            n.VERDICT_STATE,
            "The shadow's verdict as one series per state (better, equivalent, inconclusive,"
            " insufficient_data, worse): 1 for the current one, 0 for the others.",
        )
        self.verdict_p = verdict_gauge(
            n.VERDICT_P,
            "Always-valid p-value of the quality test (a running minimum; 1 when unknown).",
        )
        self.verdict_low = verdict_gauge(
            n.VERDICT_LOWER,
            "Lower end of the always-valid confidence sequence of the shadow's advantage per"
            " instance, the request as the unit: accuracy points (classification) or production's"
            " mean absolute error minus the shadow's (regression). Safe to gate on at any moment.",
        )
        self.verdict_high = verdict_gauge(n.VERDICT_UPPER, "Upper end of the same sequence.")
        # The fleet-wide verdict (verdict.fleet_prometheus): every replica's counts pooled.
        self.fleet_verdict = verdict_gauge(
            n.FLEET_VERDICT,
            "The verdict on every replica's counts together (sum of increase over"
            " verdict.fleet_window, from Prometheus), encoded as shadowproxy_verdict; every"
            " replica computes the same. Gate rollouts on this one.",
        )
        self.fleet_verdict_p = verdict_gauge(
            n.FLEET_VERDICT_P, "The fleet verdict's always-valid p-value (running minimum)."
        )
        self.fleet_verdict_low = verdict_gauge(
            n.FLEET_VERDICT_LOWER, "Lower end of the fleet verdict's always-valid sequence."
        )
        self.fleet_verdict_high = verdict_gauge(
            n.FLEET_VERDICT_UPPER, "Upper end of the fleet verdict's always-valid sequence."
        )
        self.label_coverage = verdict_gauge(
            n.LABEL_COVERAGE,
            "Share of a model's recorded requests that have a label scored for it (production:"
            " of the requests recorded; a shadow: of production's labelled requests).",
        )
        self.selection_bias_p = verdict_gauge(
            n.SELECTION_BIAS_P,
            "Chi-square test that the label rate does not depend on production's predicted class"
            " (small: labels arrive for some classes more than others; 1 when unknown).",
        )
        self.labels_needed = verdict_gauge(
            n.LABELS_NEEDED,
            "About how many labelled requests in all the verdict needs to decide an advantage of"
            " 1 accuracy point (regression: verdict.margin of production's MAE) at the observed"
            " variance (median); -1 while it cannot be estimated.",
        )
        self.fleet_verdict_updated = verdict_gauge(
            n.FLEET_VERDICT_UPDATED,
            "When the fleet verdict was last computed (Unix time); 0 before the first time.",
        )
        self.config_info = self._gauge(
            n.CONFIG_INFO,
            "The configuration: its hash, source file and version; 1 for the running one, 0 for"
            " those reloads replaced.",
            "livemax",
        )

    def _declare_label_metrics(self, registry: CollectorRegistry) -> None:
        self.labels_received = self._counter(n.LABELS_RECEIVED, "Labels received.")
        self.labels = self._counter(
            n.LABELS,
            "Labels by result: joined, unknown_id, expired, duplicate, invalid. They add up to"
            " labels_received_total.",
        )
        self.label_requests_rejected = self._counter(
            n.LABEL_REQUESTS_REJECTED,
            "Label requests refused as a whole (their labels are not counted as received), by"
            " reason: unauthorized, forbidden, too_large, store_unavailable, disabled.",
        )
        self.label_delay = _histogram(
            registry,
            n.LABEL_DELAY,
            "Time from production's answer to the label's arrival.",
            DELAY_BUCKETS,
        )
        self.labelled_instances = self._counter(
            n.LABELLED_INSTANCES, "Instances scored against a label, per model."
        )
        self.correct_instances = self._counter(
            n.CORRECT_INSTANCES,
            "Labelled instances a model got right (classification; probabilities: argmax).",
        )
        self.unscorable_instances = self._counter(
            n.UNSCORABLE_INSTANCES,
            "Labelled instances whose prediction could not be scored (not a number, a malformed"
            " probability vector, or a label that does not fit the model's answer).",
        )
        self.absolute_error = _histogram(
            registry,
            n.ABSOLUTE_ERROR,
            "Regression: |prediction - label| per labelled instance; _sum / _count is the MAE.",
            ERROR_BUCKETS,
        )
        self.squared_error = self._counter(
            n.SQUARED_ERROR,
            "Regression: sum of squared errors; sqrt(this / labelled_instances) is the RMSE.",
        )
        self.log_loss = self._counter(
            n.LOG_LOSS,
            "Probabilities: sum of -ln(p[label]); divided by labelled_instances, the log loss.",
        )
        self.brier = self._counter(
            n.BRIER,
            "Probabilities: sum of Brier scores (sum over classes of (p - [label])^2, 0 to 2);"
            " divided by the scored instances, the mean Brier score.",
        )
        self.calibration_instances = self._counter(
            n.CALIBRATION_INSTANCES,
            "Probabilities: labelled instances by the model's confidence (its largest"
            " probability), in tenths: bin 0.9 holds confidences from 0.9 to 1.",
        )
        self.calibration_correct = self._counter(
            n.CALIBRATION_CORRECT,
            "Probabilities: of those, the ones whose most probable class was the label (the"
            " reliability chart: a calibrated model is right 90% of the time at confidence 0.9).",
        )
        self.paired_outcomes = self._counter(
            n.PAIRED_OUTCOMES,
            "Labelled instances scored for both production and a shadow, by outcome:"
            " both_right, production_only, shadow_only, both_wrong (McNemar's table).",
        )
        self.paired_errors = self._counter(
            n.PAIRED_ERRORS,
            "Regression: instances with both production's and the shadow's absolute error.",
        )
        self.paired_shadow_worse = self._counter(
            n.PAIRED_SHADOW_WORSE,
            "Regression: sum of d = |shadow error| - |production error| where d > 0.",
        )
        self.paired_shadow_better = self._counter(
            n.PAIRED_SHADOW_BETTER,
            "Regression: sum of -d where d < 0, so sum(d) = shadow_worse - shadow_better.",
        )
        self.paired_difference_squares = self._counter(
            n.PAIRED_DIFFERENCE_SQUARES, "Regression: sum of d squared."
        )
        self.paired_request_sums = self._counter(
            n.PAIRED_REQUEST_SUMS,
            "The verdict's per-request sums over labelled requests scored for both models (the"
            " request is the unit of analysis; m its instances, d how much better the shadow"
            " did, summed over them): requests, instances_squared (m^2), advantage_squared"
            " (d^2), and m*d as cross_positive and cross_negative. The sums of m and d are"
            " paired_outcomes (shadow_only - production_only), or for regression"
            " paired_error_instances and shadow_better - shadow_worse. They pool exactly.",
        )
        self.paired_log_loss_sums = self._counter(
            n.PAIRED_LOG_LOSS_SUMS,
            "Probabilities: the per-request sums of the shadow's advantage in log loss"
            " (production's minus the shadow's, over instances scorable on both sides).",
        )
        self.paired_brier_sums = self._counter(
            n.PAIRED_BRIER_SUMS,
            "Probabilities: the per-request sums of the shadow's advantage in Brier score.",
        )
        self.compared_request_sums = self._counter(
            n.COMPARED_REQUEST_SUMS,
            "The same per-request sums for disagreement (d: instances disagreeing in a compared"
            " request), behind the disagreement guardrail: requests, instances_squared,"
            " advantage_squared and cross_positive (instances and d are compared_instances and"
            " disagreed_instances; d is never negative).",
        )
        self.recorded = self._counter(
            n.RECORDED,
            "Writes that reached the prediction store, by kind: record (production's"
            " predictions for a request) or shadow (a shadow's predictions added to it).",
        )
        self.recording_dropped = self._counter(
            n.RECORDING_DROPPED,
            "Writes that never reached the store, by kind and reason: queue_full,"
            " store_unavailable, no_predictions, orphan.",
        )
        self.store_removed = self._counter(
            n.STORE_REMOVED,
            "Records removed from the store, by reason: expired (older than ttl +"
            " tombstone_ttl) or evicted (beyond max_records).",
        )
        self.store_records = self._gauge(
            n.STORE_RECORDS,
            "Records in the prediction store, as of the last sweep.",
            "livemax",
        )
        self.store_max_records = self._gauge(
            n.STORE_MAX_RECORDS,
            "store.max_records: beyond it the oldest records are evicted (alert before).",
            "livemax",
        )
        self.store_max_bytes = self._gauge(
            n.STORE_MAX_BYTES,
            "store.max_disk of the embedded store, in bytes: beyond it the oldest records are"
            " removed (over_disk); 0 when the store has no such limit (Redis).",
            "livemax",
        )
        self.store_file_bytes = self._gauge(
            n.STORE_FILE_BYTES,
            "The embedded store's files on disk, in bytes, as of the last sweep: database and"
            " wal (its write-ahead log, kept under 64 MiB by truncating checkpoints); capture"
            " (the capture's database, with capture: in the config).",
            "livemax",
        )
        self.recording_queue_depth = self._gauge(
            n.RECORDING_QUEUE_DEPTH,
            "Writes waiting for the prediction store.",
            "livesum",
        )
        self.store_duration = _histogram(
            registry,
            n.STORE_DURATION,
            "Time a prediction-store operation took, by operation (failures included).",
            STORE_BUCKETS,
        )
        capture = self._counter(
            n.CAPTURE,
            "Compared exchanges the capture (capture: in the config) saw, by result: kept"
            " (written), sampled_out (an agreement outside capture.agreements), rate_limited"
            " (a disagreement over capture.max_per_second), queue_full, failed (not written).",
        )
        self.capture = {r: lazy(capture, r) for r in CAPTURE_RESULTS}
        removed = self._counter(
            n.CAPTURE_REMOVED,
            "Captured exchanges removed, by reason: aged (older than capture.max_age),"
            " over_disk (the oldest, beyond capture.max_disk).",
        )
        self.capture_removed = {r: lazy(removed, r) for r in ("aged", "over_disk")}
        self.handoff = self._counter(
            n.HANDOFF,
            "Exchanges the front processes handed to the analysis process, by result: sent,"
            " channel_full (the analysis process is behind), analysis_down (none connected),"
            " too_large (over the hand-off's frame cap). Only `sent` ones reach the shadows.",
        )
        self.intake_errors = self._counter(
            n.INTAKE_ERRORS,
            "Exchanges the analysis process received but could not handle, and broken hand-off"
            " streams (the connection is reset; the front reconnects).",
        )
        self.client_faults = self._counter(
            n.CLIENT_FAULTS,
            "Client connections the front ended badly, by fault: bad_request, header_too_large,"
            " body_too_large, timeout, disconnect, app_error.",
        )
        # liveall: one series per live process (a pid label is added), by role.
        self.process_cpu = Gauge(
            n.PROCESS_CPU.name,
            "CPU seconds a proxy process has used (user and system), by role: front, analysis.",
            n.PROCESS_CPU.labels,
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.process_rss = Gauge(
            n.PROCESS_RSS.name,
            "Resident memory of a proxy process, in bytes, by role: front, analysis.",
            n.PROCESS_RSS.labels,
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.process_fds = Gauge(
            n.PROCESS_FDS.name,
            "File descriptors a proxy process has open (sockets included), by role.",
            n.PROCESS_FDS.labels,
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.process_restarts = self._counter(
            n.PROCESS_RESTARTS,
            "Processes the supervisor restarted after they died, by role: front, analysis.",
        )

    def flush(self) -> None:
        """Write what the batched metrics hold now (before a scrape, say)."""
        if self.batcher is not None:
            self.batcher.flush()

    def bind_handoff(self) -> dict[Handoff, Inc]:
        """`sent` exists from the start; the failures appear with their first count."""
        return {
            h: self.handoff.labels(h) if h is Handoff.SENT else lazy(self.handoff, h)
            for h in Handoff
        }

    def bind_faults(self) -> dict[Fault, Inc]:
        return {f: lazy(self.client_faults, f) for f in Fault}

    def bind_labels(self) -> LabelMetrics:
        return LabelMetrics(
            received=self.labels_received,
            results={r: self.labels.labels(r) for r in LabelResult},
            rejected={r: lazy(self.label_requests_rejected, r) for r in LabelRejection},
        )

    def bind_model(self, route: str, model: str, role: Role, kind: CompareKind) -> ModelMetrics:
        """A model's label metrics. Families of another kind of route are not bound (their
        series would stay at 0 for ever): a classification route has no absolute error, a
        regression one no correct instances, and only probabilities have log loss, Brier score
        and calibration."""
        labels = (route, model, role)
        regression = kind is CompareKind.REGRESSION
        probabilities = kind is CompareKind.PROBABILITIES
        return ModelMetrics(
            labelled=self.labelled_instances.labels(*labels),
            correct=NOTHING if regression else self.correct_instances.labels(*labels),
            unscorable=self.unscorable_instances.labels(*labels),
            absolute_error=self.absolute_error.labels(*labels) if regression else NOTHING,
            squared_error=self.squared_error.labels(*labels) if regression else NOTHING,
            log_loss=self.log_loss.labels(*labels) if probabilities else NOTHING,
            brier=self.brier.labels(*labels) if probabilities else NOTHING,
            calibration_instances=[
                self.calibration_instances.labels(*labels, bin) if probabilities else NOTHING
                for bin in n.CALIBRATION_BINS
            ],
            calibration_correct=[
                self.calibration_correct.labels(*labels, bin) if probabilities else NOTHING
                for bin in n.CALIBRATION_BINS
            ],
        )

    def bind_pair(self, route: str, shadow: str, kind: CompareKind) -> PairMetrics:
        """A shadow's paired label metrics, those of its route's kind only (as bind_model)."""
        regression = kind is CompareKind.REGRESSION
        probabilities = kind is CompareKind.PROBABILITIES

        def bound(family: Counter, on: bool) -> Inc:
            return family.labels(route, shadow) if on else NOTHING

        def sums(family: Counter, on: bool = True) -> dict[RequestSum, Inc]:
            return {s: family.labels(route, shadow, s) if on else NOTHING for s in RequestSum}

        return PairMetrics(
            outcomes={
                o: NOTHING if regression else self.paired_outcomes.labels(route, shadow, o)
                for o in PairedOutcome
            },
            n=bound(self.paired_errors, regression),
            shadow_worse=bound(self.paired_shadow_worse, regression),
            shadow_better=bound(self.paired_shadow_better, regression),
            difference_squares=bound(self.paired_difference_squares, regression),
            # Instances and advantage are other series already: the paired outcomes
            # (classification, probabilities) or paired_error_instances and shadow_better -
            # shadow_worse (regression). The report rebuilds them from those.
            request_sums={
                s: self.paired_request_sums.labels(route, shadow, s)
                if s in PAIRED_SUMS
                else NOTHING
                for s in RequestSum
            },
            log_loss_sums=sums(self.paired_log_loss_sums, probabilities),
            brier_sums=sums(self.paired_brier_sums, probabilities),
        )

    def bind_recording(self, route: str) -> RecordingMetrics:
        return RecordingMetrics(
            written={k: self.recorded.labels(route, k) for k in RecordKind},
            dropped={
                (k, r): lazy(self.recording_dropped, route, k, r)
                for k in RecordKind
                for r in RecordDrop
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
            production=self.bind_upstream(route, production, Role.PRODUCTION),
        )

    def bind_upstream(self, route: str, target: str, role: Role) -> UpstreamMetrics:
        return UpstreamMetrics(
            duration=self.upstream_duration.labels(route, target, role),
            outcomes={o: self.upstream_requests.labels(route, target, role, o) for o in Outcome},
        )

    def bind_shadow(self, route: str, shadow: str, kind: CompareKind) -> ShadowMetrics:
        """With a batcher, the per-request ones are written once per loop iteration. The
        probability distance is bound on probabilities routes only."""
        c, h, g = self.counting, self.observing, self.moving
        upstream = self.bind_upstream(route, shadow, Role.SHADOW)
        return ShadowMetrics(
            upstream=UpstreamMetrics(
                duration=h(upstream.duration),
                outcomes={o: c(child) for o, child in upstream.outcomes.items()},
            ),
            errors=partial(self.upstream_error, route, shadow, Role.SHADOW),
            enqueued=c(self.shadow_enqueued.labels(route, shadow)),
            skipped={r: lazy(self.shadow_skipped, route, shadow, r, wrap=c) for r in SkipReason},
            results={
                r: c(self.comparisons.labels(route, shadow, r))
                if r in _HEADLINE_RESULTS
                else lazy(self.comparisons, route, shadow, r, wrap=c)
                for r in ComparisonResult
            },
            compared=c(self.compared_instances.labels(route, shadow)),
            disagreed=c(self.disagreed_instances.labels(route, shadow)),
            # Instances and disagreements are compared_ and disagreed_instances; disagreements
            # never subtract, so the negative parts stay 0: neither is exported twice.
            compared_sums={
                s: c(self.compared_request_sums.labels(route, shadow, s))
                if s in COMPARED_SUMS
                else NOTHING
                for s in RequestSum
            },
            distance=(
                h(self.probability_distance.labels(route, shadow))
                if kind is CompareKind.PROBABILITIES
                else NOTHING
            ),
            queue_depth=g(self.shadow_queue_depth.labels(route, shadow)),
            in_flight=g(self.shadow_in_flight.labels(route, shadow)),
            paused=self.shadow_paused.labels(route, shadow),
            sample=self.shadow_sample_ratio.labels(route, shadow),
            ejected=self.shadow_ejected.labels(route, shadow),
        )

    def counting(self, child: Inc) -> Inc:
        """`child` written once per loop iteration, when this Metrics has a batcher."""
        if self.batcher is None or not isinstance(child, Counter):
            return child
        return BatchedCounter(self.batcher, child)

    def moving(self, child: Gauge) -> IncDec:
        return child if self.batcher is None else BatchedGauge(self.batcher, child)

    def observing(self, child: Observe) -> Observe:
        if self.batcher is None or not isinstance(child, Histogram):
            return child
        return BatchedHistogram(self.batcher, child)

    def bind_classes(
        self,
        route: str,
        model: str,
        role: Role,
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
                self.predicted_instances,
                (route, model, role),
                ClassLabels(kind, classes),
                self.counting,
            )
            self._class_counters[key] = counter
        return counter

    def bind_labelled_classes(
        self, route: str, model: str, kind: CompareKind, classes: tuple[str, ...] | None
    ) -> ClassCounter | None:
        """Labelled instances by production's predicted class, with the same class labels as
        `bind_classes` (so the two line up); None for regression."""
        if kind is CompareKind.REGRESSION:
            return None
        key = ("labelled", route, model, kind, classes)
        counter = self._class_counters.get(key)
        if counter is None:
            counter = ClassCounter(
                self.labelled_predicted,
                (route, model, Role.PRODUCTION),
                ClassLabels(kind, classes),
            )
            self._class_counters[key] = counter
        return counter

    def upstream_error(self, route: str, target: str, role: Role, cause: Cause) -> Inc:
        """The failure counter of one upstream and cause, bound on its first failure."""
        key = (route, target, role.value, cause.value)
        child = self._upstream_errors.get(key)
        if child is None:
            child = self.counting(self.upstream_errors.labels(*key))
            self._upstream_errors[key] = child
        return child

    def bind_segments(self, route: str, shadow: str) -> SegmentCounter:
        """A shadow's disagreement by segment. The route's shadows share one bound on the
        segment labels, so that their series line up."""
        labels = self._segment_labels.setdefault(route, SegmentLabels())
        return SegmentCounter(self, route, shadow, labels)

    def bind_client(self) -> ClientMetrics:
        return ClientMetrics(self)

    def bind_rejections(self) -> dict[RejectReason, Inc]:
        return {r: lazy(self.rejected, r, wrap=self.counting) for r in RejectReason}


class SegmentCounter:
    """Compared and disagreeing instances of one shadow by segment, children bound on first
    use (batched)."""

    __slots__ = ("_children", "_labels", "_metrics", "_pair")

    def __init__(self, metrics: Metrics, route: str, shadow: str, labels: SegmentLabels) -> None:
        self._metrics = metrics
        self._pair = (route, shadow)
        self._labels = labels
        self._children: dict[str, tuple[Inc, Inc]] = {}

    def count(self, segment: str, compared: int, disagreed: int) -> None:
        name = self._labels.label(segment)
        children = self._children.get(name)
        if children is None:
            m = self._metrics
            children = (
                m.counting(m.segment_compared.labels(*self._pair, name)),
                m.counting(m.segment_disagreed.labels(*self._pair, name)),
            )
            self._children[name] = children
        children[0].inc(compared)
        children[1].inc(disagreed)  # 0 too: the series exists beside its compared one


class ClientMetrics:
    """Client requests by route and status, and their duration by route (the front's
    CountsAnswers): children bound on first use, written once per loop iteration.

    >>> answers = metrics.bind_client()
    >>> answers.count("/v2/models/iris/infer", 200, 0.0042)
    """

    __slots__ = ("_counts", "_durations", "_metrics")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counts: dict[tuple[str, int], Inc] = {}
        self._durations: dict[str, Observe] = {}

    def count(self, route: str, status: int, seconds: float) -> None:
        counter = self._counts.get((route, status))
        if counter is None:
            m = self._metrics
            counter = m.counting(m.http_requests.labels(route, str(status)))
            self._counts[(route, status)] = counter
        counter.inc()
        duration = self._durations.get(route)
        if duration is None:
            duration = self._metrics.observing(self._metrics.http_duration.labels(route))
            self._durations[route] = duration
        duration.observe(seconds)


# prometheus-client gives bound children no type of their own: labels() returns the family type.
@dataclass(frozen=True, slots=True)
class UpstreamMetrics:
    duration: Observe
    outcomes: dict[Outcome, Inc]


@dataclass(frozen=True, slots=True)
class RouteMetrics:
    requests: Counter
    production: UpstreamMetrics


@dataclass(frozen=True, slots=True)
class ShadowMetrics:
    """Counted per shadow request: batched (metric_batching.py) when Metrics has a batcher."""

    upstream: UpstreamMetrics
    errors: Callable[[Cause], Inc]  # failures by cause, bound on first use
    enqueued: Inc
    skipped: dict[SkipReason, Inc]
    results: dict[ComparisonResult, Inc]
    compared: Inc
    disagreed: Inc
    compared_sums: dict[RequestSum, Inc]
    distance: Observe
    queue_depth: IncDec
    in_flight: IncDec
    paused: Gauge
    sample: Gauge
    ejected: Gauge

    def count_comparison(self, comparison: Comparison) -> None:
        """Count one compared answer: its instances, those that differ, the per-request sums
        of the disagreement guardrail, and the probability distances."""
        self.compared.inc(comparison.instances)
        if comparison.disagreements:
            self.disagreed.inc(comparison.disagreements)
        add_request_sums(self.compared_sums, comparison.instances, comparison.disagreements)
        for distance in comparison.distances:
            self.distance.observe(distance)


@dataclass(frozen=True, slots=True)
class LabelMetrics:
    received: Counter
    results: dict[LabelResult, Counter]
    rejected: dict[LabelRejection, Inc]


CAPTURE_RESULTS = ("kept", "sampled_out", "rate_limited", "queue_full", "failed")
_HEADLINE_RESULTS = frozenset({ComparisonResult.AGREE, ComparisonResult.DISAGREE})
COMPARED_SUMS = frozenset(
    {
        RequestSum.REQUESTS,
        RequestSum.INSTANCES_SQUARED,
        RequestSum.ADVANTAGE_SQUARED,
        RequestSum.CROSS_POSITIVE,
    }
)
"""The disagreement sums exported as compared_request_sums (the others are other series)."""
PAIRED_SUMS = frozenset(
    {
        RequestSum.REQUESTS,
        RequestSum.INSTANCES_SQUARED,
        RequestSum.ADVANTAGE_SQUARED,
        RequestSum.CROSS_POSITIVE,
        RequestSum.CROSS_NEGATIVE,
    }
)
"""The accuracy sums exported as paired_request_sums (instances and advantage are other series)."""


class Lazy:
    """A counter child bound on its first count: rare reasons (a fault, a drop, a failure)
    appear in /metrics when they happen, instead of as a zero series per label set from the
    start. Families whose counts the verdict pools across replicas are bound eagerly."""

    __slots__ = ("_bind", "_child")

    def __init__(self, bind: Callable[[], Inc]) -> None:
        self._bind = bind
        self._child: Inc | None = None

    def inc(self, amount: float = 1) -> None:
        if not amount:
            return
        child = self._child
        if child is None:
            child = self._child = self._bind()
        child.inc(amount)


def lazy(family: Counter, *labels: str, wrap: Callable[[Inc], Inc] | None = None) -> Lazy:
    """`family`'s child for `labels`, bound (and wrapped: batched, say) on its first count."""

    def bind() -> Inc:
        child: Inc = family.labels(*labels)
        return child if wrap is None else wrap(child)

    return Lazy(bind)


class _Nothing:
    """A metric of another kind of route: counts nothing, exports nothing."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


NOTHING = _Nothing()


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    labelled: Counter
    correct: Inc
    unscorable: Counter
    absolute_error: Observe
    squared_error: Inc
    log_loss: Inc
    brier: Inc
    calibration_instances: list[Inc]
    calibration_correct: list[Inc]

    def count(self, s: Score) -> None:
        """Count one model's score of a labelled request."""
        self.labelled.inc(s.instances)
        self.correct.inc(s.correct)
        self.unscorable.inc(s.unscorable)
        for error in s.absolute_errors:
            self.absolute_error.observe(error)
        self.squared_error.inc(s.squared_error)
        self.log_loss.inc(s.log_loss)
        if s.confidences:
            self.brier.inc(s.brier)
            for confidence, right in s.confidences:
                tenth = min(9, int(confidence * 10))
                self.calibration_instances[tenth].inc()
                if right:
                    self.calibration_correct[tenth].inc()


@dataclass(frozen=True, slots=True)
class PairMetrics:
    outcomes: dict[PairedOutcome, Inc]
    n: Inc
    shadow_worse: Inc
    shadow_better: Inc
    difference_squares: Inc
    request_sums: dict[RequestSum, Inc]
    log_loss_sums: dict[RequestSum, Inc]
    brier_sums: dict[RequestSum, Inc]

    def count(self, paired: Paired) -> None:
        """Count one labelled request scored for both production and the shadow."""
        for outcome in self.outcomes:
            self.outcomes[outcome].inc(getattr(paired, outcome))
        instances, advantage = paired.request()
        if instances:
            add_request_sums(self.request_sums, instances, advantage)
        if paired.scored_probabilities:
            scored = paired.scored_probabilities
            add_request_sums(self.log_loss_sums, scored, paired.log_loss_advantage)
            add_request_sums(self.brier_sums, scored, paired.brier_advantage)
        if paired.n:
            self.n.inc(paired.n)
            self.difference_squares.inc(paired.d_squared_sum)
            # Counters only go up: the sum of d is kept as its positive and negative parts.
            self.shadow_worse.inc(paired.d_positive_sum)
            self.shadow_better.inc(paired.d_positive_sum - paired.d_sum)


def add_request_sums(sums: dict[RequestSum, Inc], instances: float, advantage: float) -> None:
    """Add one request's instances and advantage to the sums of the verdict's tests."""
    for name, value in RequestSum.of(instances, advantage).items():
        if value:
            sums[name].inc(value)


@dataclass(frozen=True, slots=True)
class RecordingMetrics:
    written: dict[RecordKind, Counter]
    dropped: dict[tuple[RecordKind, RecordDrop], Inc]
    delay: Histogram


class ClassCounter:
    """Counts one model's predicted instances per class. ClassLabels bounds the class labels;
    each label's child is bound once, on first use (configured classes and "other" at once, so
    that their series exist, at 0, before any prediction; without configured classes, each on
    its first instance).

    >>> counter = metrics.bind_classes("iris", "iris-lr", "production", kind, ("setosa",))
    >>> counter.count(["setosa", "virginica", "setosa"])  # setosa += 2, other += 1
    """

    __slots__ = ("_children", "_family", "_labels", "_values", "_wrap")

    def __init__(
        self,
        family: Counter,
        values: tuple[str, str, str],
        labels: ClassLabels,
        wrap: Callable[[Inc], Inc] = lambda child: child,
    ) -> None:
        self._family = family
        self._values = values
        self._labels = labels
        self._wrap = wrap  # batches each class's child
        self._children: dict[str, Inc] = {}
        if labels.named:  # without named classes, "other" appears once 20 classes are seen
            for name in (*sorted(labels.named), OTHER_CLASS):
                self._child(name)

    def _child(self, name: str) -> Inc:
        child = self._children.get(name)
        if child is None:
            child = self._wrap(self._family.labels(*self._values, name))
            self._children[name] = child
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
        for name, count in tally.items():
            self._child(name).inc(count)

"""Every metric family's name and label names, written once: metrics.py declares them on a
registry, the report reads their samples, and the report CLI queries Prometheus for them. Pure.

>>> LABELLED_INSTANCES.total
'shadowproxy_labelled_instances_total'
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "shadowproxy"


@dataclass(frozen=True, slots=True)
class Family:
    """One family: its full name (without the `_total` a counter's samples add) and labels."""

    name: str
    labels: tuple[str, ...]

    @property
    def total(self) -> str:
        """A counter's sample name."""
        return f"{self.name}_total"

    @property
    def bucket(self) -> str:
        return f"{self.name}_bucket"

    @property
    def sum(self) -> str:
        return f"{self.name}_sum"

    @property
    def count(self) -> str:
        return f"{self.name}_count"


def _family(name: str, *labels: str) -> Family:
    return Family(f"{PREFIX}_{name}", labels)


ROUTE = ("route",)
UPSTREAM = ("route", "target", "role")
PAIR = ("route", "shadow")
MODEL = ("route", "model", "role")

UPSTREAM_DURATION = _family("upstream_request_duration_seconds", *UPSTREAM)
UPSTREAM_REQUESTS = _family("upstream_requests", *UPSTREAM, "outcome")
UPSTREAM_ERRORS = _family("upstream_errors", *UPSTREAM, "cause")
HTTP_REQUESTS = _family("http_requests", "route", "code")
HTTP_DURATION = _family("http_request_duration_seconds", "route")
REQUESTS = _family("requests", *ROUTE)
REJECTED = _family("rejected_requests", "reason")
SHADOW_ENQUEUED = _family("shadow_enqueued", *PAIR)
SHADOW_SKIPPED = _family("shadow_skipped", *PAIR, "reason")
SHADOW_QUEUE_DEPTH = _family("shadow_queue_depth", *PAIR)
SHADOW_PAUSED = _family("shadow_paused", *PAIR)
SHADOW_EJECTED = _family("shadow_ejected", *PAIR)
SHADOW_SAMPLE_RATIO = _family("shadow_sample_ratio", *PAIR)
SHADOW_IN_FLIGHT = _family("shadow_in_flight", *PAIR)
ADMIN_REQUESTS = _family("admin_requests", "action", "result")
COMPARISONS = _family("comparisons", *PAIR, "result")
COMPARED_INSTANCES = _family("compared_instances", *PAIR)
SEGMENT_COMPARED = _family("segment_compared_instances", *PAIR, "segment")
SEGMENT_DISAGREED = _family("segment_disagreed_instances", *PAIR, "segment")
DISAGREED_INSTANCES = _family("disagreed_instances", *PAIR)
PROBABILITY_DISTANCE = _family("probability_distance", *PAIR)
PREDICTED_INSTANCES = _family("predicted_instances", *MODEL, "class")
CONFIG_RELOADS = _family("config_reloads", "result")
ROUTE_INFO = _family("route_info", "route", "kind", "production")
SHADOW_INFO = _family("shadow_info", *PAIR, "role")
VERDICT = _family("verdict", *PAIR)
VERDICT_P = _family("verdict_sequential_p_value", *PAIR)
VERDICT_LOWER = _family("verdict_difference_lower", *PAIR)
VERDICT_UPPER = _family("verdict_difference_upper", *PAIR)
CONFIG_INFO = _family("config_info", "hash", "source", "version", "routes", "shadows")
LABELS_RECEIVED = _family("labels_received")
LABELS = _family("labels", "result")
LABEL_REQUESTS_REJECTED = _family("label_requests_rejected", "reason")
LABEL_DELAY = _family("label_delay_seconds", *ROUTE)
LABELLED_INSTANCES = _family("labelled_instances", *MODEL)
LABELLED_PREDICTED = _family("labelled_predicted_instances", *MODEL, "class")
CORRECT_INSTANCES = _family("correct_instances", *MODEL)
UNSCORABLE_INSTANCES = _family("unscorable_instances", *MODEL)
ABSOLUTE_ERROR = _family("absolute_error", *MODEL)
SQUARED_ERROR = _family("squared_error", *MODEL)
LOG_LOSS = _family("log_loss", *MODEL)
BRIER = _family("brier_score", *MODEL)
CALIBRATION_INSTANCES = _family("calibration_instances", *MODEL, "bin")
CALIBRATION_CORRECT = _family("calibration_correct", *MODEL, "bin")
CALIBRATION_BINS = tuple(f"{tenth / 10:.1f}" for tenth in range(10))
"""The reliability chart's bins, by their lower edge: "0.0" holds confidences below 0.1."""
PAIRED_OUTCOMES = _family("paired_outcomes", *PAIR, "outcome")
PAIRED_ERRORS = _family("paired_error_instances", *PAIR)
PAIRED_SHADOW_WORSE = _family("paired_error_shadow_worse", *PAIR)
PAIRED_SHADOW_BETTER = _family("paired_error_shadow_better", *PAIR)
PAIRED_DIFFERENCE_SQUARES = _family("paired_error_difference_squares", *PAIR)
PAIRED_REQUEST_SUMS = _family("paired_request_sums", *PAIR, "sum")
COMPARED_REQUEST_SUMS = _family("compared_request_sums", *PAIR, "sum")
PAIRED_LOG_LOSS_SUMS = _family("paired_log_loss_sums", *PAIR, "sum")
PAIRED_BRIER_SUMS = _family("paired_brier_sums", *PAIR, "sum")
VERDICT_STATE = _family("verdict_state", *PAIR, "state")
FLEET_VERDICT = _family("fleet_verdict", *PAIR)
FLEET_VERDICT_P = _family("fleet_verdict_sequential_p_value", *PAIR)
FLEET_VERDICT_LOWER = _family("fleet_verdict_difference_lower", *PAIR)
FLEET_VERDICT_UPPER = _family("fleet_verdict_difference_upper", *PAIR)
FLEET_VERDICT_UPDATED = _family("fleet_verdict_updated_timestamp_seconds")
LABEL_COVERAGE = _family("label_coverage", *MODEL)
SELECTION_BIAS_P = _family("selection_bias_p_value", *ROUTE)
LABELS_NEEDED = _family("verdict_labels_needed", *PAIR)
RECORDED = _family("recorded", "route", "kind")
RECORDING_DROPPED = _family("recording_dropped", "route", "kind", "reason")
STORE_REMOVED = _family("store_removed", "reason")
STORE_RECORDS = _family("store_records")
STORE_MAX_RECORDS = _family("store_max_records")
STORE_MAX_BYTES = _family("store_max_bytes")
STORE_FILE_BYTES = _family("store_file_bytes", "file")
RECORDING_QUEUE_DEPTH = _family("recording_queue_depth")
STORE_DURATION = _family("store_operation_duration_seconds", "operation")
HANDOFF = _family("handoff", "result")
CAPTURE = _family("capture", "result")
CAPTURE_REMOVED = _family("capture_removed", "reason")
INTAKE_ERRORS = _family("intake_errors")
CLIENT_FAULTS = _family("client_faults", "fault")
PROCESS_CPU = _family("process_cpu_seconds", "role")
PROCESS_RSS = _family("process_resident_memory_bytes", "role")
PROCESS_FDS = _family("process_open_fds", "role")
PROCESS_RESTARTS = _family("process_restarts", "role")

"""Every Prometheus metric: name, help, labels and buckets, declared once on an injected registry,
and bound to its label values when the config is loaded, so the hot path never formats labels."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy import __version__

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

SKIP_REASONS = ("sampled_out", "queue_full", "body_too_large", "shutting_down")
"""Why a request was not sent to a shadow."""

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


class Metrics:
    """The metric families of one proxy, on one registry.

    >>> metrics = Metrics(CollectorRegistry())
    >>> route_metrics = metrics.bind_route("iris", "iris-lr")
    >>> route_metrics.outcomes["ok"].inc()
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.upstream_duration = Histogram(
            f"{PREFIX}_upstream_request_duration_seconds",
            "Time from sending a request to an upstream to having its whole answer.",
            ["route", "target", "role"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_requests = Counter(
            f"{PREFIX}_upstream_requests",
            "Requests sent to upstreams, by outcome: ok (status < 500), http_error (status >= 500),"
            " timeout, connect_error (could not connect, or the connection broke).",
            ["route", "target", "role", "outcome"],
            registry=registry,
        )
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests matched to a route.",
            ["route"],
            registry=registry,
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected_requests",
            "Requests the proxy answered itself with an error, by reason.",
            ["reason"],
            registry=registry,
        )
        self.shadow_enqueued = Counter(
            f"{PREFIX}_shadow_enqueued",
            "Requests put on a shadow's queue.",
            ["route", "shadow"],
            registry=registry,
        )
        self.shadow_skipped = Counter(
            f"{PREFIX}_shadow_skipped",
            "Requests not sent to a shadow, by reason: sampled_out, queue_full, body_too_large,"
            " shutting_down.",
            ["route", "shadow", "reason"],
            registry=registry,
        )
        # livesum: with --workers, the sum over the live worker processes.
        self.shadow_queue_depth = Gauge(
            f"{PREFIX}_shadow_queue_depth",
            "Requests waiting in a shadow's queue.",
            ["route", "shadow"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.shadow_in_flight = Gauge(
            f"{PREFIX}_shadow_in_flight",
            "Requests being sent to or compared for a shadow.",
            ["route", "shadow"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.comparisons = Counter(
            f"{PREFIX}_comparisons",
            "Shadow answers compared with production's, by result.",
            ["route", "shadow", "result"],
            registry=registry,
        )
        self.compared_instances = Counter(
            f"{PREFIX}_compared_instances",
            "Prediction instances compared between production and a shadow.",
            ["route", "shadow"],
            registry=registry,
        )
        self.disagreed_instances = Counter(
            f"{PREFIX}_disagreed_instances",
            "Prediction instances on which a shadow disagrees with production.",
            ["route", "shadow"],
            registry=registry,
        )
        self.probability_distance = Histogram(
            f"{PREFIX}_probability_distance",
            "Distance between production's and a shadow's probability vectors, per instance.",
            ["route", "shadow"],
            buckets=DISTANCE_BUCKETS,
            registry=registry,
        )
        # A gauge, not an Info: Info has no multiprocess mode.
        self.config_info = Gauge(
            f"{PREFIX}_config_info",
            "The active configuration: its hash, source file and version; the value is 1.",
            ["hash", "source", "version", "routes", "shadows"],
            registry=registry,
            multiprocess_mode="livemax",
        )

    def set_config_info(self, config_hash: str, source: str, routes: int, shadows: int) -> None:
        self.config_info.labels(config_hash, source, __version__, str(routes), str(shadows)).set(1)

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
        )

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

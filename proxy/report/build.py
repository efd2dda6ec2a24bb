"""The verdict and the report: per route and shadow, every figure with its interval, computed from
metric samples (the proxy's own, or Prometheus's summed over replicas), and the decision better,
worse, inconclusive or insufficient_data with its reason in words. Pure: samples in, a `Report`
(proxy.report.model) out."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from proxy import metric_names as names
from proxy.config import VerdictConfig
from proxy.core.outcomes import PairedOutcome, Verdict
from proxy.core.stats import (
    histogram_quantile,
    mcnemar_p,
    paired_accuracy_difference,
    paired_t,
    sequential_paired_binary,
    sequential_paired_mean,
    wilson,
)
from proxy.report.model import (
    Accuracy,
    Disagreement,
    ErrorFigures,
    HistoryPoint,
    LatencyFigures,
    PairedClassification,
    PairedOutcomes,
    PairedRegression,
    Proportion,
    Report,
    RouteReport,
    ShadowReport,
)


class Samples:
    """Metric samples by name and labels, summed over any label not asked for.

    >>> samples = Samples([("shadowproxy_labels_total", {"result": "joined"}, 3.0)])
    >>> samples.total("shadowproxy_labels_total", result="joined")
    3.0
    """

    def __init__(self, samples: Iterable[tuple[str, Mapping[str, str], float]]) -> None:
        self._by_name: dict[str, list[tuple[Mapping[str, str], float]]] = {}
        for name, labels, value in samples:
            self._by_name.setdefault(name, []).append((labels, value))

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for have, value in self._by_name.get(name, ())
            if all(have.get(k) == v for k, v in labels.items())
        )

    def label_sets(self, name: str) -> list[Mapping[str, str]]:
        """The label sets of a series with a non-zero value (an info series set to 0 is gone)."""
        return [labels for labels, value in self._by_name.get(name, ()) if value]

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """Cumulative (upper bound, count) pairs of a histogram, summed over other labels."""
        totals: dict[float, float] = {}
        for have, value in self._by_name.get(f"{name}_bucket", ()):
            if all(have.get(k) == v for k, v in labels.items()):
                bound = float(have["le"])
                totals[bound] = totals.get(bound, 0.0) + value
        return sorted(totals.items())


def samples_of(metrics: Iterable[Any]) -> Samples:
    """Samples from prometheus_client metric families (a registry's collect())."""
    return Samples(
        (s.name, s.labels, s.value)
        for family in metrics
        if family.name.startswith(names.PREFIX)
        for s in family.samples
    )


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else x


def _latency(samples: Samples, **labels: str) -> LatencyFigures:
    name = names.UPSTREAM_DURATION.name
    buckets = samples.buckets(name, **labels)
    count = buckets[-1][1] if buckets else 0.0

    def quantile(q: float) -> float | None:
        return _num(histogram_quantile(q, buckets)) if count else None

    return {"count": int(count), "p50": quantile(0.5), "p95": quantile(0.95), "p99": quantile(0.99)}


def _per_bucket(samples: Samples, **labels: str) -> tuple[list[float], list[int]]:
    buckets = samples.buckets(names.UPSTREAM_DURATION.name, **labels)
    bounds = [b for b, _ in buckets if not math.isinf(b)]
    counts, previous = [], 0.0
    for _, cumulative in buckets:
        counts.append(int(cumulative - previous))
        previous = cumulative
    return bounds, counts


def _proportion(successes: float, n: float, confidence: float) -> Proportion:
    estimate = wilson(int(successes), int(n), confidence)
    return {
        "value": _num(estimate.value),
        "low": _num(estimate.interval.low) if n else None,
        "high": _num(estimate.interval.high) if n else None,
    }


def _model_figures(
    samples: Samples, route: str, model: str, role: str, confidence: float
) -> tuple[Accuracy, ErrorFigures]:
    labels = {"route": route, "model": model, "role": role}
    labelled = samples.total(names.LABELLED_INSTANCES.total, **labels)
    correct = samples.total(names.CORRECT_INSTANCES.total, **labels)
    accuracy: Accuracy = {
        "labelled": int(labelled),
        "correct": int(correct),
        **_proportion(correct, labelled, confidence),
    }
    errors = samples.total(names.ABSOLUTE_ERROR.count, **labels)
    error_sum = samples.total(names.ABSOLUTE_ERROR.sum, **labels)
    squares = samples.total(names.SQUARED_ERROR.total, **labels)
    error: ErrorFigures = {
        "labelled": int(errors),
        "mae": error_sum / errors if errors else None,
        "rmse": math.sqrt(squares / errors) if errors else None,
    }
    return accuracy, error


def _cs_on_difference(theta: float, outcomes: PairedOutcomes, n: int) -> float | None:
    if not n or math.isnan(theta):
        return None
    discordant = (outcomes["production_only"] + outcomes["shadow_only"]) / n
    return discordant * (2 * theta - 1)


def decide(
    settings: VerdictConfig,
    *,
    kind: str,
    requests: float,
    error_rate: float | None,
    latency_ratio: float | None,
    shadow_p99: float | None,
    production_p99: float | None,
    disagreement: Proportion,
    paired: PairedClassification,
    regression: PairedRegression | None,
) -> tuple[Verdict, str]:
    """The verdict and its reason in words. Guardrails first: they can force `worse`."""
    if requests >= settings.min_requests:
        if error_rate is not None and error_rate > settings.max_error_rate:
            return Verdict.WORSE, (
                f"the shadow fails {error_rate:.1%} of its requests, above the "
                f"{settings.max_error_rate:.1%} guardrail"
            )
        if latency_ratio is not None and latency_ratio > settings.max_latency_ratio:
            assert shadow_p99 is not None
            assert production_p99 is not None
            return Verdict.WORSE, (
                f"the shadow's p99 latency is {shadow_p99 * 1000:.0f} ms, {latency_ratio:.1f}x "
                f"production's {production_p99 * 1000:.0f} ms (guardrail "
                f"{settings.max_latency_ratio:g}x)"
            )
    confidence = 1 - settings.alpha
    n = paired["n"] if regression is None else regression["n"]
    if n < settings.min_labels:
        limit = settings.max_disagreement
        low = disagreement.get("low")
        if limit is not None and low is not None and low > limit:
            return Verdict.WORSE, (
                f"no verdict on labels yet ({n} of {settings.min_labels}), but the shadow "
                f"disagrees with production on {disagreement['value']:.1%} of instances "
                f"({confidence:.0%} CI from {low:.1%}), above the {limit:.0%} guardrail"
            )
        return Verdict.INSUFFICIENT_DATA, (
            f"{n} labelled instances scored for both models; a verdict needs {settings.min_labels}"
        )
    if regression is None:
        p, diff = paired["sequential_p"], paired["difference"]
        low, high = paired["low"], paired["high"]
        # n >= min_labels >= 1 labelled pairs: the difference and its interval are numbers.
        assert diff is not None
        assert low is not None
        assert high is not None
        what = (
            f"accuracy difference {diff * 100:+.1f} points ({confidence:.0%} CI "
            f"{low * 100:+.1f} to {high * 100:+.1f}), sequential p = {p:.3g}"
        )
        if p <= settings.alpha:
            better = diff > 0
            return (Verdict.BETTER if better else Verdict.WORSE), (
                f"the shadow is {'more' if better else 'less'} accurate: {what}"
            )
        return Verdict.INCONCLUSIVE, f"no significant difference yet: {what}"
    p, mean = regression["sequential_p"], regression["mean_difference"]
    # A mean needs 2 pairs: null only with min_labels 1 and a single pair, which fails here as
    # its format below would.
    assert mean is not None
    what = (
        f"mean absolute error difference {mean:+.4g} ({confidence:.0%} CI "
        f"{regression['low']:+.4g} to {regression['high']:+.4g}), sequential p = {p:.3g}"
    )
    if p <= settings.alpha:
        # d = |shadow error| - |production error|: negative is the shadow doing better.
        return (Verdict.BETTER if mean < 0 else Verdict.WORSE), (
            f"the shadow's errors are {'smaller' if mean < 0 else 'larger'}: {what}"
        )
    return Verdict.INCONCLUSIVE, f"no significant difference yet: {what}"


def _shadow_report(
    samples: Samples,
    settings: VerdictConfig,
    route: str,
    kind: str,
    shadow: str,
    production_latency: LatencyFigures,
) -> ShadowReport:
    confidence = 1 - settings.alpha
    upstream = {"route": route, "target": shadow, "role": "shadow"}
    requests = samples.total(names.UPSTREAM_REQUESTS.total, **upstream)
    errors = requests - samples.total(names.UPSTREAM_REQUESTS.total, **upstream, outcome="ok")
    latency = _latency(samples, **upstream)
    _, latency_counts = _per_bucket(samples, **upstream)
    pair = {"route": route, "shadow": shadow}
    compared = samples.total(names.COMPARED_INSTANCES.total, **pair)
    disagreed = samples.total(names.DISAGREED_INSTANCES.total, **pair)
    disagreement: Disagreement = {
        "compared": int(compared),
        "disagreed": int(disagreed),
        **_proportion(disagreed, compared, confidence),
    }
    accuracy, error = _model_figures(samples, route, shadow, "shadow", confidence)

    counts = {
        o: int(samples.total(names.PAIRED_OUTCOMES.total, **pair, outcome=o)) for o in PairedOutcome
    }
    outcomes: PairedOutcomes = {
        "both_right": counts[PairedOutcome.BOTH_RIGHT],
        "production_only": counts[PairedOutcome.PRODUCTION_ONLY],
        "shadow_only": counts[PairedOutcome.SHADOW_ONLY],
        "both_wrong": counts[PairedOutcome.BOTH_WRONG],
    }
    n = sum(counts.values())
    difference = paired_accuracy_difference(**outcomes, confidence=confidence)
    sequential = sequential_paired_binary(
        outcomes["production_only"], outcomes["shadow_only"], alpha=settings.alpha
    )
    paired: PairedClassification = {
        **outcomes,
        "n": n,
        "difference": _num(difference.value),
        "low": _num(difference.interval.low),
        "high": _num(difference.interval.high),
        "mcnemar_p": mcnemar_p(outcomes["production_only"], outcomes["shadow_only"]),
        "sequential_p": sequential.p_value,
        # The confidence sequence is for theta, the chance the shadow is the one that is right
        # when the two disagree; on the accuracy-difference scale that is D * (2 theta - 1),
        # with D the observed share of discordant instances.
        "cs_low": _cs_on_difference(sequential.interval.low, outcomes, n),
        "cs_high": _cs_on_difference(sequential.interval.high, outcomes, n),
    }
    regression: PairedRegression | None = None
    if kind == "regression":
        d_n = int(samples.total(names.PAIRED_ERRORS.total, **pair))
        d_sum = samples.total(names.PAIRED_SHADOW_WORSE.total, **pair) - samples.total(
            names.PAIRED_SHADOW_BETTER.total, **pair
        )
        d_squares = samples.total(names.PAIRED_DIFFERENCE_SQUARES.total, **pair)
        t = paired_t(d_n, d_sum, d_squares, confidence)
        seq = sequential_paired_mean(d_n, d_sum, d_squares, alpha=settings.alpha)
        regression = {
            "n": d_n,
            "mean_difference": _num(t.value),
            "low": _num(t.interval.low),
            "high": _num(t.interval.high),
            "sequential_p": seq.p_value,
            "cs_low": _num(seq.interval.low),
            "cs_high": _num(seq.interval.high),
        }

    error_rate = errors / requests if requests else None
    prod_p99, shadow_p99 = production_latency["p99"], latency["p99"]
    ratio = shadow_p99 / prod_p99 if shadow_p99 and prod_p99 else None
    verdict, reason = decide(
        settings,
        kind=kind,
        requests=requests,
        error_rate=error_rate,
        latency_ratio=ratio,
        shadow_p99=shadow_p99,
        production_p99=prod_p99,
        disagreement=disagreement,
        paired=paired,
        regression=regression,
    )
    return {
        "shadow": shadow,
        "verdict": verdict,
        "reason": reason,
        "requests": int(requests),
        "errors": int(errors),
        "error_rate": error_rate,
        "latency": latency,
        "latency_counts": latency_counts,
        "disagreement": disagreement,
        "accuracy": accuracy,
        "error": error,
        "paired": paired,
        "regression": regression,
        "history": [],
    }


def build_report(
    samples: Samples,
    settings: VerdictConfig,
    *,
    generated_at: float,
    config_hash: str = "",
    history: Mapping[tuple[str, str], Sequence[HistoryPoint]] | None = None,
) -> Report:
    """The whole report (its shape is the JSON of GET /report)."""
    routes: list[RouteReport] = []
    for info in sorted(samples.label_sets(names.ROUTE_INFO.name), key=lambda i: i["route"]):
        route, kind, production_name = info["route"], info["kind"], info["production"]
        upstream = {"route": route, "target": production_name, "role": "production"}
        accuracy, error = _model_figures(
            samples, route, production_name, "production", 1 - settings.alpha
        )
        bounds, counts = _per_bucket(samples, **upstream)
        production_latency = _latency(samples, **upstream)
        shadows = sorted(
            {
                labels["shadow"]
                for labels in samples.label_sets(names.SHADOW_ENQUEUED.total)
                if labels.get("route") == route
            }
        )
        shadow_reports = []
        for shadow in shadows:
            report = _shadow_report(samples, settings, route, kind, shadow, production_latency)
            report["history"] = list((history or {}).get((route, shadow), ()))
            shadow_reports.append(report)
        routes.append(
            {
                "route": route,
                "kind": kind,
                "production": production_name,
                "production_latency": production_latency,
                "production_accuracy": accuracy,
                "production_error": error,
                "latency_buckets": bounds,
                "production_latency_counts": counts,
                "shadows": shadow_reports,
            }
        )
    return {
        "generated_at": generated_at,
        "config_hash": config_hash,
        "alpha": settings.alpha,
        "routes": routes,
    }


def history_point(shadow: ShadowReport, now: float) -> HistoryPoint:
    """What the report's history keeps of a shadow at one moment."""
    paired = shadow["paired"]
    regression = shadow["regression"]
    if regression is not None:
        # mean_difference is the shadow's error minus production's; the advantage is its
        # negation, so that up is the shadow doing better, as for accuracy, and the interval's
        # ends swap.
        def negated(value: float | None) -> float | None:
            return None if value is None else -value

        return {
            "t": now,
            "labelled": regression["n"],
            "difference": negated(regression["mean_difference"]),
            "low": negated(regression["high"]),
            "high": negated(regression["low"]),
        }
    return {
        "t": now,
        "labelled": paired["n"],
        "difference": paired["difference"],
        "low": paired["low"],
        "high": paired["high"],
    }


def advantage_interval(shadow: ShadowReport) -> tuple[float | None, float | None]:
    """The interval of the shadow's advantage (up is better) for the gauges."""
    point = history_point(shadow, 0.0)
    return point["low"], point["high"]

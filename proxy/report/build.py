"""The verdict and the report: per route and shadow, every figure with its interval, computed from
metric samples (the proxy's own, or Prometheus's summed over replicas), and the decision better,
equivalent, worse, inconclusive or insufficient_data with its reason in words (the rules are
proxy.core.verdict's). Pure: samples in, a `Report` (proxy.report.model) out; decisions held
between reports live with the caller."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from scipy import stats as sps

from proxy import metric_names as names
from proxy.config import VerdictConfig
from proxy.core.comparison import CompareKind
from proxy.core.outcomes import PairedOutcome, RequestSum, Verdict
from proxy.core.stats import (
    Interval,
    RequestSums,
    histogram_quantile,
    mcnemar_p,
    paired_accuracy_difference,
    paired_t,
    ratio_estimate,
    sequential_paired_binary,
    sequential_paired_mean,
    sequential_ratio,
    wilson,
)
from proxy.core.verdict import (
    Hold,
    classification_sums,
    error_guardrail,
    judge,
    labels_needed,
    latency_guardrail,
    quality,
    split_alpha,
)
from proxy.report.model import (
    Accuracy,
    CalibrationBin,
    ClassLabelling,
    Disagreement,
    DrillDown,
    ErrorFigures,
    Guardrail,
    HistoryPoint,
    LatencyFigures,
    PairedClassification,
    PairedOutcomes,
    PairedRegression,
    ProbabilityFigures,
    Proportion,
    QualityFigures,
    Report,
    RouteDiagnostics,
    RouteReport,
    ScoreDifference,
    SegmentFigures,
    ShadowDiagnostics,
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

    def series(self, name: str) -> list[tuple[Mapping[str, str], float]]:
        """Every sample of a series, as (labels, value), zeros included."""
        return list(self._by_name.get(name, ()))

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
    samples: Samples, route: str, model: str, role: str, confidence: float, kind: str
) -> tuple[Accuracy, ErrorFigures]:
    """A model's accuracy (null on a regression route, which has none) and errors (null on
    the others)."""
    labels = {"route": route, "model": model, "role": role}
    labelled = samples.total(names.LABELLED_INSTANCES.total, **labels)
    correct = samples.total(names.CORRECT_INSTANCES.total, **labels)
    share: Proportion = (
        _proportion(correct, labelled, confidence)
        if kind != "regression"
        else {"value": None, "low": None, "high": None}
    )
    accuracy: Accuracy = {"labelled": int(labelled), "correct": int(correct), **share}
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


def _request_sums(samples: Samples, name: str, route: str, shadow: str) -> RequestSums:
    def total(which: RequestSum) -> float:
        return samples.total(name, route=route, shadow=shadow, sum=which)

    return RequestSums(
        requests=int(total(RequestSum.REQUESTS)),
        instances=total(RequestSum.INSTANCES),
        instances_squared=total(RequestSum.INSTANCES_SQUARED),
        advantage=total(RequestSum.ADVANTAGE_POSITIVE) - total(RequestSum.ADVANTAGE_NEGATIVE),
        advantage_squared=total(RequestSum.ADVANTAGE_SQUARED),
        cross=total(RequestSum.CROSS_POSITIVE) - total(RequestSum.CROSS_NEGATIVE),
    )


def _paired_sums(samples: Samples, route: str, shadow: str, kind: str) -> RequestSums:
    """A pair's accuracy sums. Their instances and advantage are not exported twice: they are
    the paired outcomes (classification, probabilities: shadow_only - production_only), or
    paired_error_instances and shadow_better - shadow_worse (regression)."""
    pair = {"route": route, "shadow": shadow}
    sums = _request_sums(samples, names.PAIRED_REQUEST_SUMS.total, route, shadow)
    if kind == "regression":
        instances = samples.total(names.PAIRED_ERRORS.total, **pair)
        advantage = samples.total(names.PAIRED_SHADOW_BETTER.total, **pair) - samples.total(
            names.PAIRED_SHADOW_WORSE.total, **pair
        )
    else:

        def outcome(which: PairedOutcome) -> float:
            return samples.total(names.PAIRED_OUTCOMES.total, **pair, outcome=which)

        instances = sum(outcome(o) for o in PairedOutcome)
        advantage = outcome(PairedOutcome.SHADOW_ONLY) - outcome(PairedOutcome.PRODUCTION_ONLY)
    return dataclasses.replace(sums, instances=instances, advantage=advantage)


class Holds(Protocol):
    """Where decisions are held between reports (proxy.analysis.reporter keeps them)."""

    def __call__(self, route: str, shadow: str, check: str) -> Hold: ...


def _fresh(route: str, shadow: str, check: str) -> Hold:
    return Hold("")


def _p_text(p: float, digits: int = 3) -> str:
    """`p = 0.0123`, `p = 2.3e-12`: never `p = 0`, which an underflow prints."""
    return "p < 1e-300" if p < 1e-300 else f"p = {p:.{digits}g}"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}"


def _figure(kind: str, x: float) -> str:
    return f"{x * 100:+.1f} points" if kind != "regression" else f"{x:+.4g}"


def _guardrails(
    samples: Samples,
    settings: VerdictConfig,
    alpha: float,
    route: str,
    shadow: str,
    production: str,
    hold: Holds,
) -> list[Guardrail]:
    upstream = {"route": route, "role": "shadow", "target": shadow}
    production_upstream = {"route": route, "role": "production", "target": production}
    requests = samples.total(names.UPSTREAM_REQUESTS.total, **upstream)
    errors = requests - samples.total(names.UPSTREAM_REQUESTS.total, **upstream, outcome="ok")
    production_requests = samples.total(names.UPSTREAM_REQUESTS.total, **production_upstream)
    production_errors = production_requests - samples.total(
        names.UPSTREAM_REQUESTS.total, **production_upstream, outcome="ok"
    )
    enough = requests >= settings.min_requests
    found: list[Guardrail] = []

    def add(name: str, value: float | None, interval: Interval, limit: float | None) -> None:
        low, high = _num(interval.low), _num(interval.high)
        trips = enough and limit is not None and low is not None and low > limit
        held = hold(route, shadow, name)
        decision, _ = held.update(held.fingerprint, Verdict.WORSE if trips else None, 1.0)
        found.append(
            {
                "name": name,
                "value": value,
                "low": low,
                "high": high,
                "limit": limit,
                "alpha": alpha,
                "tripped": decision is Verdict.WORSE,
            }
        )

    error_interval = error_guardrail(
        int(errors),
        int(requests),
        int(production_errors),
        int(production_requests),
        alpha=alpha,
        margin=settings.max_error_rate,
    )
    error_value = (
        errors / requests - production_errors / production_requests
        if requests and production_requests
        else None
    )
    add("error_rate", error_value, error_interval, settings.max_error_rate)
    shadow_buckets = samples.buckets(names.UPSTREAM_DURATION.name, **upstream)
    production_buckets = samples.buckets(names.UPSTREAM_DURATION.name, **production_upstream)
    _, slow = latency_guardrail(shadow_buckets, production_buckets, alpha=alpha)
    slow_value = None if math.isnan(slow.low) else (slow.low + slow.high) / 2
    add("slow_requests", slow_value, slow, settings.latency_margin)
    # Its instances and disagreements are compared_ and disagreed_instances (not exported
    # twice); disagreements never subtract.
    pair = {"route": route, "shadow": shadow}
    compared = dataclasses.replace(
        _request_sums(samples, names.COMPARED_REQUEST_SUMS.total, route, shadow),
        instances=samples.total(names.COMPARED_INSTANCES.total, **pair),
        advantage=samples.total(names.DISAGREED_INSTANCES.total, **pair),
    )
    disagreement = sequential_ratio(compared, alpha) if compared.requests >= 2 else None
    interval = disagreement.interval if disagreement else Interval(math.nan, math.nan)
    value = compared.advantage / compared.instances if compared.instances else None
    add("disagreement", value, interval, settings.max_disagreement)
    return found


SELECTION_BIAS_ALPHA = 0.001  # the report warns below this p
MIN_EXPECTED = 5.0  # chi-square needs this many expected labels per class


def _route_diagnostics(samples: Samples, route: str, production: str) -> RouteDiagnostics:
    recorded = samples.total(names.RECORDED.total, route=route, kind="record")
    delay = samples.buckets(names.LABEL_DELAY.name, route=route)
    labelled = delay[-1][1] if delay else 0.0
    model = {"route": route, "model": production, "role": "production"}
    predicted_by_class: dict[str, float] = {}
    labelled_by_class: dict[str, float] = {}
    for name, into in (
        (names.PREDICTED_INSTANCES.total, predicted_by_class),
        (names.LABELLED_PREDICTED.total, labelled_by_class),
    ):
        for labels in samples.label_sets(name):
            if all(labels.get(k) == v for k, v in model.items()):
                into[labels["class"]] = samples.total(name, **model, **{"class": labels["class"]})
    classes: list[ClassLabelling] = [
        {"name": c, "predicted": int(p), "labelled": int(labelled_by_class.get(c, 0.0))}
        for c, p in sorted(predicted_by_class.items())
    ]
    bias_p = _selection_bias(classes)
    warnings = []
    if bias_p is not None and bias_p < SELECTION_BIAS_ALPHA:
        rates = ", ".join(
            f"{c['name']} {c['labelled'] / c['predicted']:.1%}" for c in classes if c["predicted"]
        )
        warnings.append(
            f"labels arrive for some of production's predicted classes more than for others"
            f" (chi-square {_p_text(bias_p, 2)}; labelled share by class: {rates}): the verdict is"
            " about the labelled requests, which are not a random sample"
        )
    return {
        "recorded_requests": int(recorded),
        "labelled_requests": int(labelled),
        "labelled_instances": int(samples.total(names.LABELLED_INSTANCES.total, **model)),
        "coverage": min(1.0, labelled / recorded) if recorded else None,
        "label_delay_p50": _num(histogram_quantile(0.5, delay)) if labelled else None,
        "label_delay_p95": _num(histogram_quantile(0.95, delay)) if labelled else None,
        "classes": classes,
        "selection_bias_p": bias_p,
        "warnings": warnings,
    }


_NOT_READ = {
    "shadow_unparseable": "{shadow}'s answers held no predictions the route could read",
    "shape_mismatch": "{shadow}'s answers hold a different number of predictions than production's",
    "too_many_instances": "{shadow}: answers hold more instances than compare.max_instances",
}
PROBLEM_SHARE = 0.05
"""A route's comparisons or recordings failing at least this often is a problem, in red."""


def route_problems(samples: Samples, route: str, details: Sequence[str] = ()) -> list[str]:
    """What keeps a route from being measured, in words: answers the route cannot read (a wrong
    `output`, `prediction_path` or protocol, typically), and predictions never recorded.
    `details` (the latest reasons, from the process that saw them) follow the counts."""
    found: list[str] = []
    shadows = sorted(
        {
            labels["shadow"]
            for labels in samples.label_sets(names.COMPARISONS.total)
            if labels.get("route") == route
        }
    )

    def share(count: float, total: float, what: str, of: str, then: str) -> None:
        if total and count / total >= PROBLEM_SHARE:
            found.append(f"{what}: {int(count)} of {int(total)} {of} ({count / total:.0%}); {then}")

    # Production's unreadable answers, once: from the shadow that compared the most.
    worst = max(
        shadows,
        key=lambda s: samples.total(names.COMPARISONS.total, route=route, shadow=s),
        default=None,
    )
    if worst is not None:
        total = samples.total(names.COMPARISONS.total, route=route, shadow=worst)
        count = samples.total(
            names.COMPARISONS.total, route=route, shadow=worst, result="production_unparseable"
        )
        share(
            count, total, "production's answers held no predictions the route could read",
            "compared answers", "nothing is compared for them",
        )  # fmt: skip
    for shadow in shadows:
        total = samples.total(names.COMPARISONS.total, route=route, shadow=shadow)
        for result, text in _NOT_READ.items():
            count = samples.total(
                names.COMPARISONS.total, route=route, shadow=shadow, result=result
            )
            share(
                count, total, text.format(shadow=shadow), "compared answers",
                "nothing is compared for them",
            )  # fmt: skip
    recorded = samples.total(names.RECORDED.total, route=route, kind="record")
    unreadable = samples.total(
        names.RECORDING_DROPPED.total, route=route, kind="record", reason="unreadable"
    )
    share(
        unreadable, unreadable + recorded, "production's answers were not recorded",
        "answers to record", "they held no predictions the route could read, so their labels"
        " will be unknown_id",
    )  # fmt: skip
    if found:
        found.extend(f"latest: {detail}" for detail in details)
    return found


def _selection_bias(classes: Sequence[ClassLabelling]) -> float | None:
    """Pearson's chi-square test that the labelled share is the same for every predicted class
    (scipy's chi2_contingency on labelled and unlabelled counts by class); None with fewer than
    two classes or too few labels to test."""
    rows = [(c["labelled"], c["predicted"] - c["labelled"]) for c in classes if c["predicted"]]
    if len(rows) < 2:
        return None
    table = [[r[0] for r in rows], [max(0, r[1]) for r in rows]]
    totals = [sum(table[0]), sum(table[1])]
    if min(totals) == 0:
        return None
    grand = sum(totals)
    if any(totals[i] * (a + b) / grand < MIN_EXPECTED for a, b in rows for i in (0, 1)):
        return None
    return float(sps.chi2_contingency(table, correction=False).pvalue)


def _shadow_diagnostics(
    samples: Samples,
    settings: VerdictConfig,
    route: str,
    kind: str,
    shadow: str,
    labelled: int,
    quality_figures: QualityFigures,
    production_error: ErrorFigures,
) -> ShadowDiagnostics:
    sums = _paired_sums(samples, route, shadow, kind)
    if kind != "regression":
        sums = classification_sums(sums)
        effect: float | None = 0.01
    else:
        mae = production_error["mae"]
        effect = settings.margin * mae if mae else None
    _, variance = ratio_estimate(sums)
    needed = (
        labels_needed(
            variance, effect, alpha=quality_figures["alpha"], effect_size=settings.effect_size
        )
        if effect is not None and sums.requests >= 2  # no variance to go on before
        else None
    )
    paired = quality_figures["requests"]
    model = {"route": route, "model": shadow, "role": "shadow"}
    return {
        "paired_requests": paired,
        "lost_pairs": max(0, labelled - paired),
        "unscorable_instances": int(samples.total(names.UNSCORABLE_INSTANCES.total, **model)),
        "coverage": min(1.0, paired / labelled) if labelled else None,
        "effect": effect,
        "labels_needed": needed,
    }


def _calibration(samples: Samples, route: str, model: str, role: str) -> list[CalibrationBin]:
    labels = {"route": route, "model": model, "role": role}
    bins: list[CalibrationBin] = []
    for low in names.CALIBRATION_BINS:
        instances = samples.total(names.CALIBRATION_INSTANCES.total, **labels, bin=low)
        correct = samples.total(names.CALIBRATION_CORRECT.total, **labels, bin=low)
        bins.append({"low": float(low), "instances": int(instances), "correct": int(correct)})
    return bins


def _score_difference(
    samples: Samples, family: str, route: str, shadow: str, alpha: float, effect_size: float
) -> ScoreDifference:
    sums = _request_sums(samples, family, route, shadow)
    test = sequential_ratio(sums, alpha, effect_size) if sums.requests >= 2 else None
    interval = test.interval if test else Interval(math.nan, math.nan)
    return {
        "requests": sums.requests,
        "instances": int(sums.instances),
        "advantage": sums.advantage / sums.instances if sums.instances else None,
        "low": _num(interval.low),
        "high": _num(interval.high),
        "p_value": test.p_value if test else 1.0,
    }


def _probabilities(
    samples: Samples,
    settings: VerdictConfig,
    alpha: float,
    route: str,
    shadow: str,
    production: str,
) -> ProbabilityFigures:
    def mean(family: str, model: str, role: str) -> float | None:
        labels = {"route": route, "model": model, "role": role}
        scored = samples.total(names.LABELLED_INSTANCES.total, **labels) - samples.total(
            names.UNSCORABLE_INSTANCES.total, **labels
        )
        return samples.total(family, **labels) / scored if scored > 0 else None

    return {
        "production_log_loss": mean(names.LOG_LOSS.total, production, "production"),
        "shadow_log_loss": mean(names.LOG_LOSS.total, shadow, "shadow"),
        "production_brier": mean(names.BRIER.total, production, "production"),
        "shadow_brier": mean(names.BRIER.total, shadow, "shadow"),
        "log_loss": _score_difference(
            samples, names.PAIRED_LOG_LOSS_SUMS.total, route, shadow, alpha, settings.effect_size
        ),
        "brier": _score_difference(
            samples, names.PAIRED_BRIER_SUMS.total, route, shadow, alpha, settings.effect_size
        ),
        "calibration": _calibration(samples, route, shadow, "shadow"),
    }


def decide(
    settings: VerdictConfig,
    *,
    kind: str,
    quality: QualityFigures,
    guardrails: Sequence[Guardrail],
    labelled: bool,
) -> tuple[Verdict, str]:
    """The verdict and its reason in words, from the held decisions: a tripped guardrail makes
    it worse; then the quality test decides, once enough requests are labelled."""
    for guard in guardrails:
        if not guard["tripped"] or (guard["name"] == "disagreement" and labelled):
            continue
        low, limit = guard["low"], guard["limit"]
        assert low is not None
        assert limit is not None
        share = f"{guard['alpha']:.2g}"
        if guard["name"] == "error_rate":
            return Verdict.WORSE, (
                f"the shadow fails more often than production: at least {low:.1%} more of its"
                f" requests (always-valid bound, alpha {share}), above the {limit:.1%} guardrail"
            )
        if guard["name"] == "slow_requests":
            return Verdict.WORSE, (
                f"the shadow is slower: at least {low:.1%} more of its requests are slower than"
                f" production's p99 than production's own (always-valid bound, alpha {share}),"
                f" above the {limit:.1%} guardrail"
            )
        return Verdict.WORSE, (
            f"no verdict on labels yet, but the shadow disagrees with production on at least"
            f" {low:.1%} of instances (always-valid bound, alpha {share}), above the"
            f" {limit:.0%} guardrail"
        )
    requests = quality["requests"]
    if requests < settings.min_labels:
        return Verdict.INSUFFICIENT_DATA, (
            f"{requests} labelled requests scored for both models; a verdict needs "
            f"{settings.min_labels}"
        )
    low, high, p = quality["low"], quality["high"], quality["p_value"]
    what = "accuracy advantage" if kind != "regression" else "mean absolute error advantage"
    unit = "exact test" if quality["method"] == "exact" else "test on requests"
    if low is None or high is None:
        return Verdict.INCONCLUSIVE, (
            f"not enough labelled requests for the {unit} yet ({requests})"
        )
    advantage = quality["advantage"]
    assert advantage is not None
    stated = (
        f"{what} {_figure(kind, advantage)} (always-valid {1 - quality['alpha']:.1%} interval"
        f" {_figure(kind, low)} to {_figure(kind, high)}, {unit}, {_p_text(p)})"
    )
    decision = quality["decision"]
    if decision == Verdict.BETTER:
        return decision, f"the shadow is better: {stated}"
    if decision == Verdict.WORSE:
        return decision, f"the shadow is worse: {stated}"
    if decision == Verdict.EQUIVALENT:
        margin = quality["margin"]
        assert margin is not None
        size = f"{margin * 100:.1f} points" if kind != "regression" else f"{margin:.4g}"
        return decision, f"the shadow is as good as production within +-{size}: {stated}"
    return Verdict.INCONCLUSIVE, f"not decided yet: {stated}"


def _quality(
    samples: Samples,
    settings: VerdictConfig,
    alpha: float,
    route: str,
    kind: str,
    shadow: str,
    outcomes: PairedOutcomes,
    production_error: ErrorFigures,
    hold: Holds,
) -> QualityFigures:
    sums = _paired_sums(samples, route, shadow, kind)
    compare_kind = CompareKind.REGRESSION if kind == "regression" else CompareKind.CLASSIFICATION
    test = quality(
        compare_kind,
        sums,
        production_only=outcomes["production_only"],
        shadow_only=outcomes["shadow_only"],
        instances=sum(outcomes.values()),  # type: ignore[arg-type]  # four counts
        alpha=alpha,
        effect_size=settings.effect_size,
    )
    margin: float | None = settings.margin
    if kind == "regression":
        mae = production_error["mae"]
        margin = settings.margin * mae if mae else None
    held = hold(route, shadow, "quality")
    interval = held.narrow(test.sequential.interval)
    enough = sums.requests >= settings.min_labels
    decision = judge(interval, margin or 0.0) if enough else None
    decision, p_value = held.update(held.fingerprint, decision, test.sequential.p_value)
    advantage = sums.advantage / sums.instances if sums.instances else None
    if test.method == "exact" and sum(outcomes.values()):  # type: ignore[arg-type]
        advantage = (outcomes["shadow_only"] - outcomes["production_only"]) / sum(
            outcomes.values()  # type: ignore[arg-type]
        )
    return {
        "method": test.method,
        "requests": sums.requests,
        "instances": int(sums.instances),
        "advantage": _num(advantage) if advantage is not None else None,
        "low": _num(interval.low),
        "high": _num(interval.high),
        "p_value": p_value,
        "alpha": alpha,
        "margin": margin,
        "decision": decision,
    }


def _shadow_report(
    samples: Samples,
    settings: VerdictConfig,
    route: str,
    kind: str,
    shadow: str,
    production: str,
    production_latency: LatencyFigures,
    production_error: ErrorFigures,
    shadows: int,
    labelled: int,
    hold: Holds,
) -> ShadowReport:
    confidence = 1 - settings.alpha
    alphas = split_alpha(settings.alpha, shadows)
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
    accuracy, error = _model_figures(samples, route, shadow, "shadow", confidence, kind)

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
        "cs_low": _cs_on_difference(sequential.interval.low, outcomes, n),
        "cs_high": _cs_on_difference(sequential.interval.high, outcomes, n),
    }
    regression: PairedRegression | None = None
    if kind == "regression":
        d_n = int(samples.total(names.PAIRED_ERRORS.total, **pair))
        # The advantage per instance: production's absolute error minus the shadow's.
        a_sum = samples.total(names.PAIRED_SHADOW_BETTER.total, **pair) - samples.total(
            names.PAIRED_SHADOW_WORSE.total, **pair
        )
        d_squares = samples.total(names.PAIRED_DIFFERENCE_SQUARES.total, **pair)
        t = paired_t(d_n, a_sum, d_squares, confidence)
        seq = sequential_paired_mean(d_n, a_sum, d_squares, alpha=settings.alpha)
        regression = {
            "n": d_n,
            "advantage": _num(t.value),
            "low": _num(t.interval.low),
            "high": _num(t.interval.high),
            "sequential_p": seq.p_value,
            "cs_low": _num(seq.interval.low),
            "cs_high": _num(seq.interval.high),
        }
    test = _quality(
        samples, settings, alphas.quality, route, kind, shadow, outcomes, production_error, hold
    )
    guardrails = _guardrails(samples, settings, alphas.guardrail, route, shadow, production, hold)
    diagnostics = _shadow_diagnostics(
        samples, settings, route, kind, shadow, labelled, test, production_error
    )
    verdict, reason = decide(
        settings,
        kind=kind,
        quality=test,
        guardrails=guardrails,
        labelled=test["requests"] >= settings.min_labels,
    )
    return {
        "shadow": shadow,
        "role": "candidate",
        "sample": _sample(samples, route, shadow),
        "verdict": verdict,
        "reason": reason,
        "requests": int(requests),
        "errors": int(errors),
        "error_rate": errors / requests if requests else None,
        "latency": latency,
        "latency_counts": latency_counts,
        "disagreement": disagreement,
        "accuracy": accuracy,
        "error": error,
        "quality": test,
        "guardrails": guardrails,
        "diagnostics": diagnostics,
        "probabilities": (
            _probabilities(samples, settings, alphas.quality, route, shadow, production)
            if kind == "probabilities"
            else None
        ),
        "paired": paired,
        "regression": regression,
        "history": [],
        "noise_floor": None,
        "segments": _segments(samples, route, shadow, confidence),
        "drilldown": {"capture": False, "exchanges": [], "flips": [], "largest_differences": []},
    }


def build_report(
    samples: Samples,
    settings: VerdictConfig,
    *,
    generated_at: float,
    config_hash: str = "",
    history: Mapping[tuple[str, str], Sequence[HistoryPoint]] | None = None,
    hold: Holds | None = None,
    problems: Mapping[str, Sequence[str]] | None = None,
    drilldowns: Mapping[tuple[str, str], DrillDown] | None = None,
) -> Report:
    """The whole report (its shape is the JSON of GET /report). `hold` keeps decisions between
    reports (a running minimum of p, decisions held); without it each report stands alone.
    `problems` are, per route, the latest reasons its answers could not be read, in words
    (proxy.analysis.problems keeps them), added to what the counts say. `drilldowns` are, per
    (route, shadow), what the capture holds of its disagreements (proxy.analysis.capture)."""
    routes: list[RouteReport] = []
    for info in sorted(samples.label_sets(names.ROUTE_INFO.name), key=lambda i: i["route"]):
        route, kind, production_name = info["route"], info["kind"], info["production"]
        upstream = {"route": route, "target": production_name, "role": "production"}
        accuracy, error = _model_figures(
            samples, route, production_name, "production", 1 - settings.alpha, kind
        )
        bounds, counts = _per_bucket(samples, **upstream)
        production_latency = _latency(samples, **upstream)
        # Every configured shadow, traffic or not, and any a reload removed that has some.
        shadows = sorted(
            {
                labels["shadow"]
                for family in (names.SHADOW_INFO.name, names.SHADOW_ENQUEUED.total)
                for labels in samples.label_sets(family)
                if labels.get("route") == route
            }
        )
        roles = {
            labels["shadow"]: labels.get("role", "candidate")
            for labels in samples.label_sets(names.SHADOW_INFO.name)
            if labels.get("route") == route
        }
        diagnostics = _route_diagnostics(samples, route, production_name)
        shadow_reports = []
        for shadow in shadows:
            report = _shadow_report(
                samples,
                settings,
                route,
                kind,
                shadow,
                production_name,
                production_latency,
                error,
                len(shadows),
                diagnostics["labelled_requests"],
                hold or _fresh,
            )
            report["history"] = list((history or {}).get((route, shadow), ()))
            report["role"] = roles.get(shadow, "candidate")
            found = (drilldowns or {}).get((route, shadow))
            if found is not None:
                report["drilldown"] = found
            shadow_reports.append(report)
        _noise_floors(shadow_reports, 1 - settings.alpha)
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
                "production_calibration": (
                    _calibration(samples, route, production_name, "production")
                    if kind == "probabilities"
                    else []
                ),
                "diagnostics": diagnostics,
                "problems": route_problems(samples, route, (problems or {}).get(route, ())),
                "shadows": shadow_reports,
            }
        )
    return {
        "generated_at": generated_at,
        "config_hash": config_hash,
        "alpha": settings.alpha,
        "routes": routes,
    }


def _sample(samples: Samples, route: str, shadow: str) -> float | None:
    """The share of requests the shadow is sent now (the config's, or the admin API's)."""
    found = [
        value
        for labels, value in samples.series(names.SHADOW_SAMPLE_RATIO.name)
        if labels.get("route") == route and labels.get("shadow") == shadow
    ]
    return max(found) if found else None


def _segments(samples: Samples, route: str, shadow: str, confidence: float) -> list[SegmentFigures]:
    """The shadow's disagreement by segment, the most compared first."""
    found: list[SegmentFigures] = []
    pair = {"route": route, "shadow": shadow}
    names_seen = sorted(
        {
            labels["segment"]
            for labels in samples.label_sets(names.SEGMENT_COMPARED.total)
            if labels.get("route") == route and labels.get("shadow") == shadow
        }
    )
    for segment in names_seen:
        compared = samples.total(names.SEGMENT_COMPARED.total, **pair, segment=segment)
        disagreed = samples.total(names.SEGMENT_DISAGREED.total, **pair, segment=segment)
        found.append(
            {
                "segment": segment,
                "compared": int(compared),
                "disagreed": int(disagreed),
                **_proportion(disagreed, compared, confidence),
            }
        )
    found.sort(key=lambda s: (-s["compared"], s["segment"]))
    return found


def _noise_floors(shadows: Sequence[ShadowReport], confidence: float) -> None:
    """Each candidate's disagreement set against the route's baseline (an A/A comparison: its
    disagreement is what production's own nondeterminism gives), and said in its reason."""
    baseline = next((s for s in shadows if s["role"] == "baseline"), None)
    if baseline is None:
        return
    floor = baseline["disagreement"]
    for shadow in shadows:
        if shadow is baseline:
            continue
        mine = shadow["disagreement"]
        within: bool | None = None
        if mine["low"] is not None and floor["high"] is not None:
            within = mine["low"] <= floor["high"]
        shadow["noise_floor"] = {
            "baseline": baseline["shadow"],
            "disagreement": floor["value"],
            "low": floor["low"],
            "high": floor["high"],
            "within": within,
        }
        if within is not None and mine["value"] is not None and floor["value"] is not None:
            where = "within" if within else "above"
            shadow["reason"] += (
                f"; its disagreement ({mine['value']:.1%}) is {where} the noise floor"
                f" (baseline {baseline['shadow']}: {floor['value']:.1%},"
                f" {confidence:.0%} interval up to {floor['high']:.1%})"
            )


def history_point(shadow: ShadowReport, now: float) -> HistoryPoint:
    """What the report's history keeps of a shadow at one moment: the quality test's advantage
    (up is the shadow doing better) and its always-valid interval."""
    quality = shadow["quality"]
    return {
        "t": now,
        "labelled": quality["requests"],
        "difference": quality["advantage"],
        "low": quality["low"],
        "high": quality["high"],
    }


def advantage_interval(shadow: ShadowReport) -> tuple[float | None, float | None]:
    """The interval of the shadow's advantage (up is better) for the gauges."""
    point = history_point(shadow, 0.0)
    return point["low"], point["high"]

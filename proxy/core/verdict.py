"""The verdict's decision rules: which always-valid test judges a shadow, how alpha is split
between shadows and checks, what each check may decide, and how a decision is held once made.
Pure: sums and counts in, decisions out (proxy.report.build turns metric samples into them).

The request is the unit of analysis. A shadow's quality is its advantage per instance over
production (accuracy points, or for regression production's mean absolute error minus its
own), tested on per-request sums:

- single-instance classification keeps the exact tests: the beta-mixture test on the
  discordant pairs, boxed with an always-valid sequence for the discordance rate
  (``stats.discordance_box``);
- anything batched, and all regression, uses the normal-mixture test on the ratio estimator
  with its cluster-robust variance, in standardised units (``stats.sequential_ratio``).

Every decision is read off an always-valid confidence sequence, so it may be checked after
every label and acted on at once:

- ``better`` when the sequence is above 0, ``worse`` when below;
- ``equivalent`` when it lies within +-margin (better and worse come first);
- guardrails (error rate, slow requests, disagreement before labels) can only say ``worse``,
  each from sequences, never from a point estimate.

Family-wise: alpha is split equally between a route's shadows; within a shadow, half goes to
quality and half to the three guardrails (Bonferroni), so P(any false decision on a route) <=
alpha, whatever is checked how often.

    >>> a = split_alpha(0.05, shadows=1)
    >>> a.quality, round(a.guardrail, 5)
    (0.025, 0.00833)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.core.comparison import CompareKind
from proxy.core.outcomes import Verdict
from proxy.core.stats import (
    DEFAULT_EFFECT_SIZE,
    DEFAULT_MIN_N,
    Interval,
    RequestSums,
    Sequential,
    discordance_box,
    sequential_proportion,
    sequential_ratio,
)

__all__ = [
    "GUARDRAILS",
    "Alphas",
    "Hold",
    "Quality",
    "classification_sums",
    "error_guardrail",
    "judge",
    "labels_needed",
    "latency_guardrail",
    "quality",
    "slow_bound",
    "split_alpha",
]

GUARDRAILS = 3  # error rate, slow requests, disagreement before labels
QUALITY_SHARE = 0.5

# Classification's per-request variance can be exactly 0 by chance (no discordant instance
# yet): one pseudo-request each way keeps it away from a degenerate sequence. Advantages of a
# classification instance lie in [-1, 1], so this is one discordant pair's worth of doubt.
_PSEUDO = RequestSums.of([(1.0, 1.0), (1.0, -1.0)])


@dataclass(frozen=True, slots=True)
class Alphas:
    """Alpha for one shadow's quality test and for each of its guardrails."""

    quality: float
    guardrail: float


def split_alpha(alpha: float, shadows: int) -> Alphas:
    """Bonferroni over a route's shadows, then half to quality and half to the guardrails."""
    per_shadow = alpha / max(1, shadows)
    return Alphas(per_shadow * QUALITY_SHARE, per_shadow * (1 - QUALITY_SHARE) / GUARDRAILS)


@dataclass(frozen=True, slots=True)
class Quality:
    """The quality test's answer: its always-valid p-value and sequence for the advantage per
    instance (up is the shadow doing better), and which test gave them."""

    sequential: Sequential
    method: str  # "exact" (single-instance discordant pairs) or "requests" (cluster-robust)


def classification_sums(sums: RequestSums) -> RequestSums:
    """A classification pair's sums as the cluster-robust test takes them (see _PSEUDO)."""
    return sums + _PSEUDO


def quality(
    kind: CompareKind,
    sums: RequestSums,
    *,
    production_only: int,
    shadow_only: int,
    instances: int,
    alpha: float,
    effect_size: float = DEFAULT_EFFECT_SIZE,
    min_requests: int = DEFAULT_MIN_N,
) -> Quality:
    """Test a shadow's advantage. ``production_only``, ``shadow_only`` and ``instances`` are the
    discordant and total scored instances (classification); ``sums`` the per-request sums."""
    if kind is CompareKind.REGRESSION:
        return Quality(sequential_ratio(sums, alpha, effect_size, min_requests), "requests")
    if sums.single_instance or sums.requests == 0:
        box = discordance_box(production_only, shadow_only, instances, alpha)
        return Quality(box, "exact")
    test = sequential_ratio(classification_sums(sums), alpha, effect_size, min_requests)
    return Quality(test, "requests")


def judge(interval: Interval, margin: float) -> Verdict | None:
    """What an always-valid interval of the advantage decides, if anything."""
    low, high = interval.low, interval.high
    if math.isnan(low) or math.isnan(high):
        return None
    if low > 0.0:
        return Verdict.BETTER
    if high < 0.0:
        return Verdict.WORSE
    if margin > 0.0 and -margin < low and high < margin:
        return Verdict.EQUIVALENT
    return None


def error_guardrail(
    shadow_errors: int,
    shadow_requests: int,
    production_errors: int,
    production_requests: int,
    *,
    alpha: float,
    margin: float,
) -> Interval:
    """Always-valid interval of the shadow's error rate minus production's (a box of two
    sequences at alpha / 2 each); the guardrail trips when its low end passes ``margin``."""
    shadow = sequential_proportion(shadow_errors, shadow_requests, alpha / 2).interval
    production = sequential_proportion(production_errors, production_requests, alpha / 2).interval
    return Interval(shadow.low - production.high, shadow.high - production.low)


def slow_bound(production_buckets: Sequence[tuple[float, float]], q: float = 0.99) -> float:
    """Production's latency quantile ``q`` as a bucket's upper bound: the smallest bound below
    which at least ``q`` of its requests fall (+Inf when none is). Cumulative buckets."""
    if not production_buckets:
        return math.inf
    total = production_buckets[-1][1]
    for bound, count in production_buckets:
        if total and count >= q * total:
            return bound
    return math.inf


def latency_guardrail(
    shadow_buckets: Sequence[tuple[float, float]],
    production_buckets: Sequence[tuple[float, float]],
    *,
    alpha: float,
    q: float = 0.99,
) -> tuple[float, Interval]:
    """The bound b of production's ``q`` latency quantile (``slow_bound``), and an always-valid
    interval of the share of shadow requests slower than b minus production's share: order
    statistics on the buckets, as two binomial sequences at alpha / 2 each. Identical latency
    distributions put it around 0; the guardrail trips when its low end passes a margin."""
    bound = slow_bound(production_buckets, q)
    if math.isinf(bound) or not shadow_buckets or not shadow_buckets[-1][1]:
        return bound, Interval(math.nan, math.nan)  # nothing to compare: no shadow requests

    def above(buckets: Sequence[tuple[float, float]]) -> tuple[int, int]:
        total = int(buckets[-1][1])
        below = max((int(c) for b, c in buckets if b <= bound), default=0)
        return total - below, total

    shadow_slow, shadow_total = above(shadow_buckets)
    production_slow, production_total = above(production_buckets)
    shadow = sequential_proportion(shadow_slow, shadow_total, alpha / 2).interval
    production = sequential_proportion(production_slow, production_total, alpha / 2).interval
    return bound, Interval(shadow.low - production.high, shadow.high - production.low)


def labels_needed(
    variance: float,
    effect: float,
    *,
    alpha: float,
    effect_size: float = DEFAULT_EFFECT_SIZE,
    min_requests: int = DEFAULT_MIN_N,
) -> int | None:
    """About how many labelled requests the normal-mixture sequence needs before its half-width
    falls to `effect` (the median number to decide an advantage of that size): the smallest n
    with ``V (1 + n k^2) / (n k)^2 * log((1 + n k^2) / alpha^2) <= effect^2``, V being the
    variance of one request's advantage. None when V or the effect is not positive.

        >>> labels_needed(0.1, 0.01, alpha=0.025)   # 1 point at 10% discordance
        12297
    """
    if not (variance > 0.0 and effect > 0.0) or math.isnan(variance):
        return None
    k2 = effect_size**2

    def half_squared(n: int) -> float:
        growth = 1.0 + n * k2
        return variance * growth / (n * n * k2) * (math.log(growth) - 2.0 * math.log(alpha))

    high = max(min_requests, 2)
    while half_squared(high) > effect * effect:
        high *= 2
        if high > 10**12:
            return None
    low = high // 2
    while low + 1 < high:
        middle = (low + high) // 2
        if half_squared(middle) > effect * effect:
            low = middle
        else:
            high = middle
    return max(high, min_requests)


@dataclass(slots=True)
class Hold:
    """Decisions held once made: the p-value as a running minimum and a decision kept, until
    the comparison's fingerprint (its config) changes. One per route and shadow, per check.
    `equivalent` may be refined into `better` or `worse` (within the margin, both hold at
    once); `better` and `worse` never change, and nothing goes back to undecided.

    >>> held = Hold("cfg-1")
    >>> held.update("cfg-1", Verdict.BETTER, 0.01), held.update("cfg-1", None, 0.2)
    ((<Verdict.BETTER: 'better'>, 0.01), (<Verdict.BETTER: 'better'>, 0.01))
    """

    fingerprint: str
    decision: Verdict | None = None
    p_value: float = 1.0
    low: float = -math.inf
    high: float = math.inf

    def narrow(self, interval: Interval) -> Interval:
        """The running intersection of the sequences seen so far (itself an always-valid
        sequence, and monotone); an undefined one leaves it as it was, and one that would
        empty it is ignored (it can only miss the truth where the others hold it)."""
        low, high = interval.low, interval.high
        if not (math.isnan(low) or math.isnan(high)):
            new_low, new_high = max(self.low, low), min(self.high, high)
            if new_low <= new_high:
                self.low, self.high = new_low, new_high
        if math.isinf(self.low) and math.isinf(self.high):
            return Interval(math.nan, math.nan)
        return Interval(self.low, self.high)

    def update(
        self, fingerprint: str, decision: Verdict | None, p_value: float
    ) -> tuple[Verdict | None, float]:
        if fingerprint != self.fingerprint:
            self.fingerprint, self.decision, self.p_value = fingerprint, None, 1.0
            self.low, self.high = -math.inf, math.inf
        self.p_value = min(self.p_value, p_value)
        if decision is not None and self.decision in (None, Verdict.EQUIVALENT):
            self.decision = decision
        return self.decision, self.p_value

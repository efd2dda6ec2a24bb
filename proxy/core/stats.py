"""Statistics for the verdict: intervals, paired tests and always-valid sequential tests.

Owns the maths that turns counts and running sums (joined predictions and labels) into a
statistically sound answer to "is the shadow better, worse, or not known yet?". Every input is a
count or a sum, so callers can keep O(1) state per model pair and ask at any moment.
Pure: no I/O, no asyncio, no metrics. scipy supplies every distribution; nothing is hand-written.

Two kinds of answer, for two kinds of reader:

- Fixed-sample results (``wilson``, ``mcnemar_p``, ``paired_accuracy_difference``, ``paired_t``)
  are exact or classical answers for the data as it stands. They are *not* safe to re-check after
  every new label and stop at the first small p-value: that inflates the false-positive rate.
- Sequential results (``sequential_paired_binary``, ``sequential_paired_mean``) are always valid:
  their p-values and confidence sequences may be monitored continuously and acted on the first
  time p <= alpha, and the false-positive rate stays <= alpha (Ville's inequality).

Example::

    >>> est = paired_accuracy_difference(both_right=59, production_only=16, shadow_only=6,
    ...                                  both_wrong=80)
    >>> round(est.value, 4), round(est.interval.low, 4), round(est.interval.high, 4)
    (-0.0621, -0.1186, -0.0046)
    >>> sequential_paired_binary(production_only=16, shadow_only=6).p_value > 0.05
    True
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special
from scipy import stats as sps

__all__ = [
    "DEFAULT_BETA_PRIOR",
    "DEFAULT_EFFECT_SIZE",
    "DEFAULT_MIN_N",
    "DEFAULT_TAU",
    "Estimate",
    "Interval",
    "RequestSums",
    "Sequential",
    "discordance_box",
    "histogram_quantile",
    "mcnemar_p",
    "paired_accuracy_difference",
    "paired_binary_p_paths",
    "paired_t",
    "ratio_estimate",
    "sequential_paired_binary",
    "sequential_paired_mean",
    "sequential_proportion",
    "sequential_ratio",
    "sequential_ratio_paths",
    "wilson",
]

# Beta(a, a) mixing prior over theta = P(shadow right | the two models disagree). a = 10 puts
# the prior's mass (sd ~0.11) on theta in 0.4..0.6, where a real upgrade or regression shows up
# among the disagreements; a flat prior (a = 1) spends its mass on lopsided effects nobody ships.
# Simulated (20% discordant, 1,000 labels, checked after each): power 0.91 (a = 10) vs 0.89
# (a = 1) at theta = 0.65 and 0.58 vs 0.48 at theta = 0.6; past a ~ 20 power falls again.
DEFAULT_BETA_PRIOR = 10.0

# Normal mixing prior N(0, tau^2) for the mean paired difference, in the units of the differences
# (|shadow error| - |production error|). The mSPRT is most powerful near |effect| ~ tau; callers
# should pass the smallest difference in error that matters to them.
DEFAULT_TAU = 1.0

# The mSPRT's plug-in variance is exact only asymptotically. From n = 2 a tiny sample variance
# makes Lambda explode: monitored from n = 2, 29% of N(0, 1) null paths reach p <= 0.05 within
# 500 steps. Waiting for 30 differences brings that to ~2% (tau = 1) .. ~4% (tau = 0.3).
DEFAULT_MIN_N = 30

# The normal mixture's width for per-request statistics, in standardised units: tau = k * sd of
# the per-request values, so the test is the same whatever the unit of the predictions (cents
# or dollars). The mixture is most powerful for effects near k sd at the sample size where
# n k^2 ~ 1; 0.1 suits the small effects (a tenth of an sd) a model release usually has.
DEFAULT_EFFECT_SIZE = 0.1

_NAN = math.nan
# Smallest positive double: the bracket end for root finding next to theta = 0 or 1, where the
# log likelihood ratio is infinite.
_TINY = sys.float_info.min * sys.float_info.epsilon
_EPS_HALF = sys.float_info.epsilon / 2.0


@dataclass(frozen=True, slots=True)
class Interval:
    """A closed interval ``[low, high]``; both ends are nan when it is undefined."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its confidence interval.

    Example::

        >>> wilson(3, 10).value
        0.3
    """

    value: float
    interval: Interval


@dataclass(frozen=True, slots=True)
class Sequential:
    """An always-valid p-value and confidence sequence, safe to check after every observation.

    Example::

        >>> s = sequential_paired_binary(production_only=10, shadow_only=40)
        >>> s.p_value <= 0.05 and s.interval.low > 0.5
        True
    """

    p_value: float
    interval: Interval


_UNDEFINED = Interval(_NAN, _NAN)


@dataclass(frozen=True, slots=True)
class RequestSums:
    """Additive sums over labelled requests of one production-vs-shadow pair, the request being
    the unit of analysis: request i has m_i scored instances and an advantage d_i (the sum over
    its instances of how much better the shadow did: +1 for an instance only the shadow got
    right, -1 for one only production got right; for regression, |production error| - |shadow
    error|). Sums of sums pool exactly, across replicas or restarts.

        >>> sums = RequestSums.of([(1, 1), (1, -1), (20, 20)])
        >>> sums.requests, sums.instances, sums.advantage
        (3, 22.0, 20.0)
    """

    requests: int = 0  # n
    instances: float = 0.0  # sum of m_i
    instances_squared: float = 0.0  # sum of m_i^2
    advantage: float = 0.0  # sum of d_i
    advantage_squared: float = 0.0  # sum of d_i^2
    cross: float = 0.0  # sum of m_i d_i

    @staticmethod
    def of(requests: Sequence[tuple[float, float]]) -> RequestSums:
        """The sums of (m_i, d_i) pairs."""
        return RequestSums(
            len(requests),
            float(sum(m for m, _ in requests)),
            float(sum(m * m for m, _ in requests)),
            float(sum(d for _, d in requests)),
            float(sum(d * d for _, d in requests)),
            float(sum(m * d for m, d in requests)),
        )

    def __add__(self, other: RequestSums) -> RequestSums:
        return RequestSums(
            self.requests + other.requests,
            self.instances + other.instances,
            self.instances_squared + other.instances_squared,
            self.advantage + other.advantage,
            self.advantage_squared + other.advantage_squared,
            self.cross + other.cross,
        )

    @property
    def single_instance(self) -> bool:
        """Every request had one instance: the exact tests on instances apply."""
        return self.requests > 0 and self.instances == self.requests == self.instances_squared


def wilson(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """Proportion with the Wilson score interval (Wilson 1927, JASA 22:209-212).

    ``n == 0`` gives a nan estimate and the uninformative interval (0, 1).
    """
    _check_counts(successes=successes, n=n)
    if successes > n:
        raise ValueError(f"successes={successes} exceeds n={n}")
    _check_confidence(confidence)
    if n == 0:
        return Estimate(_NAN, Interval(0.0, 1.0))
    ci = sps.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(successes / n, Interval(float(ci.low), float(ci.high)))


def mcnemar_p(production_only: int, shadow_only: int, exact_below: int = 25) -> float:
    """McNemar's test on the discordant counts (McNemar 1947, Psychometrika 12:153-157).

    Exact two-sided binomial test when ``b + c < exact_below``, else the chi-square test with
    Edwards' continuity correction, ``(|b - c| - 1)^2 / (b + c)`` on 1 df (the same convention as
    ``statsmodels.stats.contingency_tables.mcnemar(..., correction=True)``). No discordant pairs
    means no evidence: 1.0.
    """
    _check_counts(production_only=production_only, shadow_only=shadow_only)
    discordant = production_only + shadow_only
    if discordant == 0:
        return 1.0
    if discordant < exact_below:
        k = min(production_only, shadow_only)
        return float(sps.binomtest(k, discordant, 0.5).pvalue)
    statistic = (abs(production_only - shadow_only) - 1) ** 2 / discordant
    return float(sps.chi2.sf(statistic, 1))


def paired_accuracy_difference(
    both_right: int,
    production_only: int,
    shadow_only: int,
    both_wrong: int,
    confidence: float = 0.95,
) -> Estimate:
    """Paired accuracy difference with Newcombe's hybrid score interval (Newcombe 1998, method 10).

    Reference: Newcombe RG, Stat Med 17:2635-2650 (1998). The estimate is shadow accuracy minus
    production accuracy on the same instances, ``(shadow_only - production_only) / n``. The
    interval combines the Wilson intervals of both accuracies ("square and add") and corrects for
    their correlation with Newcombe's continuity-corrected phi coefficient. ``n == 0`` gives a
    nan estimate and (-1, 1).
    """
    _check_counts(
        both_right=both_right,
        production_only=production_only,
        shadow_only=shadow_only,
        both_wrong=both_wrong,
    )
    _check_confidence(confidence)
    n = both_right + production_only + shadow_only + both_wrong
    if n == 0:
        return Estimate(_NAN, Interval(-1.0, 1.0))
    shadow_right = both_right + shadow_only
    production_right = both_right + production_only
    p1 = shadow_right / n
    p2 = production_right / n
    difference = (shadow_only - production_only) / n
    w1 = wilson(shadow_right, n, confidence).interval
    w2 = wilson(production_right, n, confidence).interval
    phi = _newcombe_phi(both_right, shadow_only, production_only, both_wrong)
    below1, above1 = p1 - w1.low, w1.high - p1
    below2, above2 = p2 - w2.low, w2.high - p2
    delta = math.sqrt(max(0.0, below1**2 - 2.0 * phi * below1 * above2 + above2**2))
    epsilon = math.sqrt(max(0.0, above1**2 - 2.0 * phi * above1 * below2 + below2**2))
    # The construction stays inside [-1, 1] in exact arithmetic; clamp away rounding only.
    low = min(difference, max(-1.0, difference - delta))
    high = max(difference, min(1.0, difference + epsilon))
    return Estimate(difference, Interval(low, high))


def paired_t(n: int, d_sum: float, d_squared_sum: float, confidence: float = 0.95) -> Estimate:
    """Mean paired difference with Student's t interval (Student 1908, Biometrika 6:1-25).

    Computed from running sums of the differences ``d`` and of ``d**2``. Fewer than two
    differences give a nan estimate and an undefined interval; zero variance gives a degenerate
    interval at the mean.
    """
    _check_counts(n=n)
    _check_confidence(confidence)
    if n < 2:
        return Estimate(_NAN, _UNDEFINED)
    mean, variance = _mean_variance(n, d_sum, d_squared_sum)
    if variance == 0.0:
        return Estimate(mean, Interval(mean, mean))
    half = float(sps.t.ppf(0.5 + confidence / 2.0, n - 1)) * math.sqrt(variance / n)
    return Estimate(mean, Interval(mean - half, mean + half))


def sequential_paired_binary(
    production_only: int,
    shadow_only: int,
    alpha: float = 0.05,
    prior: float = DEFAULT_BETA_PRIOR,
) -> Sequential:
    """Mixture SPRT on the discordant pairs with a Beta(a, a) prior (Robbins 1970, AMS 41:1397).

    Reference for the always-valid p-value and confidence sequence: Howard, Ramdas, McAuliffe,
    Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences", AoS 49(2).

    Under H0 each discordant pair is Bernoulli(1/2) between shadow_only and production_only. With
    ``b = production_only``, ``c = shadow_only`` and ``a = prior``:
    ``Lambda = B(a + c, a + b) / B(a, a) / 0.5^(b + c)`` and ``p = min(1, 1 / Lambda)``. By Ville's
    inequality, rejecting the first time ``p <= alpha`` keeps the false-positive rate <= alpha
    however often one checks.

    The interval is the confidence sequence for ``theta = P(shadow right | discordant)``:
    ``{theta : Lambda(theta) < 1 / alpha}`` with the same mixture. 0.5 means no difference;
    above 0.5 the shadow is better. No discordant pairs give p = 1 and the interval [0, 1].
    """
    _check_counts(production_only=production_only, shadow_only=shadow_only)
    _check_alpha(alpha)
    if not prior > 0.0:
        raise ValueError(f"prior={prior!r} must be > 0")
    b, c = production_only, shadow_only
    log_marginal = float(special.betaln(prior + c, prior + b) - special.betaln(prior, prior))
    p_value = float(paired_binary_p_paths(np.array([b]), np.array([c]), prior)[0])
    threshold = math.log(1.0 / alpha)

    def excess(theta: float) -> float:
        # log Lambda(theta) - log(1 / alpha); convex in theta, minimal at the MLE c / (b + c).
        log_lik = float(special.xlogy(c, theta) + special.xlog1py(b, -theta))
        return log_marginal - log_lik - threshold

    if b + c == 0:
        return Sequential(p_value, Interval(0.0, 1.0))
    mle = c / (b + c)
    low = 0.0 if excess(_TINY) < 0.0 else _root(excess, _TINY, mle)
    high = 1.0 if excess(1.0 - _EPS_HALF) < 0.0 else _root(excess, mle, 1.0 - _EPS_HALF)
    return Sequential(p_value, Interval(low, high))


def paired_binary_p_paths(
    production_only: NDArray[np.float64] | NDArray[np.int64],
    shadow_only: NDArray[np.float64] | NDArray[np.int64],
    prior: float = DEFAULT_BETA_PRIOR,
) -> NDArray[np.float64]:
    """``sequential_paired_binary``'s p-value for many moments at once (its one implementation)."""
    b = np.asarray(production_only, dtype=np.float64)
    c = np.asarray(shadow_only, dtype=np.float64)
    log_lr = special.betaln(prior + c, prior + b) - special.betaln(prior, prior)
    log_lr = log_lr + (b + c) * math.log(2.0)
    with np.errstate(over="ignore"):
        return np.where(log_lr <= 0.0, 1.0, np.minimum(1.0, np.exp(-np.maximum(log_lr, 0.0))))


def sequential_paired_mean(
    n: int,
    d_sum: float,
    d_squared_sum: float,
    alpha: float = 0.05,
    tau: float = DEFAULT_TAU,
    min_n: int = DEFAULT_MIN_N,
) -> Sequential:
    """mSPRT for a mean paired difference, normal mixture N(0, tau^2) (Johari et al. 2022, OR 70).

    Reference: Johari, Koomen, Pekelis, Walsh, "Always valid inference: continuous monitoring of
    A/B tests", Operations Research 70(3):1806-1821 (2022). With the plug-in sample variance V
    (n - 1 denominator) and mean ``m``:
    ``Lambda = sqrt(V / (V + n tau^2)) * exp(n^2 tau^2 m^2 / (2 V (V + n tau^2)))``,
    ``p = min(1, 1 / Lambda)``, and the confidence sequence is
    ``m +- sqrt(V (V + n tau^2) / (n^2 tau^2) * log((V + n tau^2) / (V alpha^2)))``.
    Before ``min_n`` differences (the plug-in variance is not yet trustworthy, see
    ``DEFAULT_MIN_N``) or with zero variance: p = 1 and an undefined interval.
    """
    _check_counts(n=n)
    _check_alpha(alpha)
    if not tau > 0.0:
        raise ValueError(f"tau={tau!r} must be > 0")
    if min_n < 2:
        raise ValueError(f"min_n={min_n} must be >= 2 (a variance needs two differences)")
    if n < min_n:
        return Sequential(1.0, _UNDEFINED)
    mean, variance = _mean_variance(n, d_sum, d_squared_sum)
    if variance == 0.0:
        return Sequential(1.0, _UNDEFINED)
    spread = variance + n * tau**2
    log_lr = 0.5 * math.log(variance / spread) + (n * tau * mean) ** 2 / (2.0 * variance * spread)
    p_value = 1.0 if log_lr <= 0.0 else min(1.0, math.exp(-log_lr))
    half = math.sqrt(
        variance * spread / (n * tau) ** 2 * (math.log(spread / variance) - 2.0 * math.log(alpha))
    )
    return Sequential(p_value, Interval(mean - half, mean + half))


def ratio_estimate(sums: RequestSums) -> tuple[float, float]:
    """The advantage per instance, ``sum d / sum m``, and the variance of one request's
    linearised contribution, ``sum (d_i - r m_i)^2 / ((n - 1) mbar^2)``: the cluster-robust
    (delta-method, ratio-estimator) variance, so that ``variance / n`` is the estimate's.
    Instances of one request are not counted as independent, however they are correlated
    (Cochran 1977, Sampling Techniques, section 6.4). nan for no instances; the variance is nan
    for fewer than two requests.

        >>> ratio_estimate(RequestSums.of([(2, 2), (2, 0), (2, -2), (2, 2)]))
        (0.25, 0.9166666666666666)
    """
    ratio, variance = _ratio_paths(*_columns([sums]))
    return float(ratio[0]), float(variance[0])


def sequential_ratio(
    sums: RequestSums,
    alpha: float = 0.05,
    effect_size: float = DEFAULT_EFFECT_SIZE,
    min_requests: int = DEFAULT_MIN_N,
) -> Sequential:
    """Always-valid p-value and confidence sequence for the advantage per instance, with the
    request as the unit: the normal-mixture mSPRT (Johari et al. 2022, OR 70(3); Robbins 1970)
    applied to the ratio estimator with its cluster-robust variance V (``ratio_estimate``), and
    the mixture set in standardised units, tau^2 = k^2 V (k = ``effect_size``), so the same
    evidence gives the same answer in any unit. With r the estimate:
    ``Lambda(x) = (1 + n k^2)^(-1/2) exp(n^2 k^2 (r - x)^2 / (2 V (1 + n k^2)))``,
    ``p = min(1, 1 / Lambda(0))`` and the sequence is
    ``r +- sqrt(V (1 + n k^2) / (n^2 k^2) * log((1 + n k^2) / alpha^2))``.
    It excludes x exactly when Lambda(x) >= 1 / alpha.

    Asymptotic (the plug-in variance): below ``min_requests`` requests, p = 1 and the interval
    is undefined. A zero variance with n >= min_requests is a constant advantage: the sequence
    is that point, and p is 0 unless the point is 0.
    """
    p, low, high = sequential_ratio_paths(
        *_columns([sums]), alpha=alpha, effect_size=effect_size, min_requests=min_requests
    )
    return Sequential(float(p[0]), Interval(float(low[0]), float(high[0])))


def sequential_ratio_paths(
    requests: NDArray[np.float64],
    instances: NDArray[np.float64],
    instances_squared: NDArray[np.float64],
    advantage: NDArray[np.float64],
    advantage_squared: NDArray[np.float64],
    cross: NDArray[np.float64],
    *,
    alpha: float = 0.05,
    effect_size: float = DEFAULT_EFFECT_SIZE,
    min_requests: int = DEFAULT_MIN_N,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``sequential_ratio`` for many moments at once (arrays of running sums, as a simulation
    of continuous monitoring has them): p-values, lower and upper ends. The one implementation:
    ``sequential_ratio`` calls it."""
    _check_alpha(alpha)
    if not effect_size > 0.0:
        raise ValueError(f"effect_size={effect_size!r} must be > 0")
    if min_requests < 2:
        raise ValueError(f"min_requests={min_requests} must be >= 2")
    n = requests
    ratio, variance = _ratio_paths(
        requests, instances, instances_squared, advantage, advantage_squared, cross
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        growth = 1.0 + n * effect_size**2
        log_lr = -0.5 * np.log(growth) + (n * effect_size * ratio) ** 2 / (2.0 * variance * growth)
        p = np.where(log_lr <= 0.0, 1.0, np.exp(-np.maximum(log_lr, 0.0)))
        half = np.sqrt(
            variance * growth / (n * effect_size) ** 2 * (np.log(growth) - 2.0 * math.log(alpha))
        )
    low, high = ratio - half, ratio + half
    constant = variance == 0.0
    p = np.where(constant, np.where(ratio == 0.0, 1.0, 0.0), p)
    low = np.where(constant, ratio, low)
    high = np.where(constant, ratio, high)
    undecided = (n < min_requests) | np.isnan(ratio) | np.isnan(variance)
    p = np.where(undecided, 1.0, np.minimum(p, 1.0))
    low = np.where(undecided, np.nan, low)
    high = np.where(undecided, np.nan, high)
    return p, low, high


def _columns(sums: Sequence[RequestSums]) -> tuple[NDArray[np.float64], ...]:
    return tuple(
        np.array([getattr(s, name) for s in sums], dtype=np.float64)
        for name in (
            "requests", "instances", "instances_squared", "advantage", "advantage_squared",
            "cross",
        )
    )  # fmt: skip


def _ratio_paths(
    n: NDArray[np.float64],
    instances: NDArray[np.float64],
    instances_squared: NDArray[np.float64],
    advantage: NDArray[np.float64],
    advantage_squared: NDArray[np.float64],
    cross: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((n > 0) & (instances > 0.0), advantage / instances, np.nan)
        mean_m = instances / n
        squares = advantage_squared - 2.0 * ratio * cross + ratio * ratio * instances_squared
        scale = advantage_squared + ratio * ratio * instances_squared
        # Cancellation leaves noise of the order of n eps scale: below that it is zero.
        squares = np.where(squares <= 8.0 * n * np.finfo(np.float64).eps * scale, 0.0, squares)
        variance = np.where(n >= 2, squares / ((n - 1) * mean_m * mean_m), np.nan)
    return ratio, variance


def sequential_proportion(successes: int, n: int, alpha: float = 0.05) -> Sequential:
    """Always-valid confidence sequence for a proportion: the Beta(1, 1) mixture martingale,
    ``{q : B(1 + s, 1 + n - s) / (q^s (1 - q)^(n - s)) < 1 / alpha}`` (Robbins 1970; Howard et al.
    2021). p is for q = 1/2 (rarely wanted; the interval is what is used). n = 0: [0, 1].

        >>> s = sequential_proportion(0, 1000, alpha=0.05)
        >>> s.interval.low, round(s.interval.high, 4)
        (0.0, 0.0098)
    """
    _check_counts(successes=successes, n=n)
    if successes > n:
        raise ValueError(f"successes={successes} exceeds n={n}")
    _check_alpha(alpha)
    if n == 0:
        return Sequential(1.0, Interval(0.0, 1.0))
    failures = n - successes
    log_marginal = float(special.betaln(1.0 + successes, 1.0 + failures))
    threshold = math.log(1.0 / alpha)

    def excess(q: float) -> float:
        log_lik = float(special.xlogy(successes, q) + special.xlog1py(failures, -q))
        return log_marginal - log_lik - threshold

    log_lr_half = log_marginal + n * math.log(2.0)
    p_value = 1.0 if log_lr_half <= 0.0 else min(1.0, math.exp(-log_lr_half))
    mle = successes / n
    low = 0.0 if mle == 0.0 or excess(_TINY) < 0.0 else _root(excess, _TINY, mle)
    top = 1.0 - _EPS_HALF
    high = 1.0 if mle == 1.0 or excess(top) < 0.0 else _root(excess, mle, top)
    return Sequential(p_value, Interval(low, high))


def discordance_box(
    production_only: int,
    shadow_only: int,
    n: int,
    alpha: float = 0.05,
    prior: float = DEFAULT_BETA_PRIOR,
) -> Sequential:
    """Always-valid test and confidence sequence for the accuracy difference of single-instance
    requests, exact (no normal approximation): the difference is D (2 theta - 1), with D the
    share of discordant instances and theta the chance that the shadow is the one right when
    they disagree. Half of alpha goes to each: theta's sequence is the beta-mixture test's
    (``sequential_paired_binary``), D's is ``sequential_proportion``'s, and the box they make
    holds the difference with probability >= 1 - alpha, at every moment. The p-value is the
    beta-mixture test's, doubled for the half of alpha it gets: the interval excludes 0 when
    p <= alpha (and D's lower end is above 0).

        >>> box = discordance_box(production_only=160, shadow_only=240, n=400, alpha=0.025)
        >>> box.p_value < 0.025 < box.interval.low + 0.025
        True
    """
    _check_counts(production_only=production_only, shadow_only=shadow_only, n=n)
    discordant = production_only + shadow_only
    if discordant > n:
        raise ValueError(f"{discordant} discordant instances of n={n}")
    _check_alpha(alpha)
    direction = sequential_paired_binary(production_only, shadow_only, alpha / 2.0, prior)
    rate = sequential_proportion(discordant, n, alpha / 2.0).interval
    t_low, t_high = (2.0 * x - 1.0 for x in (direction.interval.low, direction.interval.high))
    if t_low > 0.0:
        low, high = rate.low * t_low, rate.high * t_high
    elif t_high < 0.0:
        low, high = rate.high * t_low, rate.low * t_high
    else:
        low, high = rate.high * t_low, rate.high * t_high
    return Sequential(min(1.0, 2.0 * direction.p_value), Interval(low, high))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Bucket quantile by linear interpolation (Prometheus docs, "histogram_quantile()" function).

    The same algorithm and edge rules as Prometheus's promql/quantile.go ``bucketQuantile``.
    ``buckets`` are cumulative ``(upper_bound, count)`` pairs; the last bound must be +Inf. Linear
    interpolation within the bucket holding rank ``q * total``; the lowest bucket interpolates from
    0 when its bound is > 0 (else returns that bound); a rank in the +Inf bucket returns the highest
    finite bound. NaN for q = nan, an empty histogram, fewer than two buckets or no +Inf bucket;
    -Inf for q < 0 and +Inf for q > 1. Buckets are sorted, equal bounds merged and counts made
    monotonic, as Prometheus does.
    """
    if math.isnan(q):
        return _NAN
    if q < 0.0:
        return -math.inf
    if q > 1.0:
        return math.inf
    if not buckets:
        return _NAN
    ordered = sorted(buckets, key=lambda bucket: bucket[0])
    if ordered[-1][0] != math.inf:
        return _NAN
    bounds: list[float] = []
    counts: list[float] = []
    for bound, count in ordered:
        if bounds and bound == bounds[-1]:
            counts[-1] += count
        else:
            bounds.append(float(bound))
            counts.append(float(count))
    for i in range(1, len(counts)):
        counts[i] = max(counts[i], counts[i - 1])
    if len(bounds) < 2:
        return _NAN
    total = counts[-1]
    if total == 0.0:
        return _NAN
    rank = q * total
    b = next((i for i in range(len(bounds) - 1) if counts[i] >= rank), len(bounds) - 1)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0.0:
        return bounds[0]
    start, in_bucket = 0.0, counts[b]
    if b > 0:
        start = bounds[b - 1]
        in_bucket -= counts[b - 1]
        rank -= counts[b - 1]
    if in_bucket == 0.0:
        # Only q == 0 with an empty lowest bucket gets here; Prometheus computes 0/0 = NaN.
        return _NAN
    return start + (bounds[b] - start) * (rank / in_bucket)


def _root(function: Callable[[float], float], low: float, high: float) -> float:
    return float(optimize.brentq(function, low, high, xtol=1e-14, rtol=4 * sys.float_info.epsilon))


def _newcombe_phi(e: int, f: int, g: int, h: int) -> float:
    """Newcombe's (1998) phi for the table [[e, f], [g, h]], with his continuity correction.

    The numerator ``eh - fg`` is reduced by n/2 when positive (and set to 0 if that makes it
    negative); phi is 0 when any margin is empty.
    """
    margins = (e + f) * (g + h) * (e + g) * (f + h)
    if margins == 0:
        return 0.0
    n = e + f + g + h
    cross = e * h - f * g
    numerator = max(0.0, cross - n / 2.0) if cross > 0 else float(cross)
    return numerator / math.sqrt(margins)


def _mean_variance(n: int, d_sum: float, d_squared_sum: float) -> tuple[float, float]:
    """Mean and unbiased variance from running sums; rounding noise near zero counts as zero."""
    mean = d_sum / n
    squares = d_squared_sum - d_sum * mean
    # Cancellation leaves ~n * eps * sum(d^2) of noise in `squares`; below that it is zero.
    if squares <= 4.0 * n * sys.float_info.epsilon * abs(d_squared_sum):
        return mean, 0.0
    return mean, squares / (n - 1)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name}={value} must be >= 0")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")

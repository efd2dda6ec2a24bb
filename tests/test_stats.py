from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import integrate, special
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from proxy.core.stats import (
    DEFAULT_BETA_PRIOR,
    DEFAULT_MIN_N,
    Estimate,
    Interval,
    Sequential,
    histogram_quantile,
    mcnemar_p,
    paired_accuracy_difference,
    paired_t,
    sequential_paired_binary,
    sequential_paired_mean,
    wilson,
)

REL = 1e-9
# Discordant counts (production_only, shadow_only) from the brief: small, zero and large.
DISCORDANT = [(0, 0), (0, 5), (3, 9), (10, 10), (25, 40), (200, 260)]

Floats = npt.NDArray[np.float64]


# --- Wilson -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 5), (5, 5), (3, 9), (10, 20), (25, 65), (200, 460)])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_wilson_matches_statsmodels(k: int, n: int, confidence: float) -> None:
    low, high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    est = wilson(k, n, confidence)
    assert est.value == k / n
    assert est.interval.low == pytest.approx(low, rel=REL, abs=1e-15)
    assert est.interval.high == pytest.approx(high, rel=REL)


def test_wilson_without_data_is_uninformative() -> None:
    est = wilson(0, 0)
    assert math.isnan(est.value)
    assert est.interval == Interval(0.0, 1.0)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        wilson(6, 5)
    with pytest.raises(ValueError, match="confidence"):
        wilson(1, 5, confidence=1.0)


# --- McNemar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("b", "c"), [*DISCORDANT, (30, 30), (12, 13), (5, 0)])
def test_mcnemar_matches_statsmodels(b: int, c: int) -> None:
    table = [[7, b], [c, 11]]
    expected = mcnemar(table, exact=b + c < 25, correction=True).pvalue
    assert mcnemar_p(b, c) == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize(("b", "c"), [(3, 9), (10, 10), (25, 40)])
def test_mcnemar_threshold_selects_the_test(b: int, c: int) -> None:
    table = [[0, b], [c, 0]]
    exact = mcnemar(table, exact=True).pvalue
    asymptotic = mcnemar(table, exact=False, correction=True).pvalue
    assert mcnemar_p(b, c, exact_below=10_000) == pytest.approx(exact, rel=REL)
    assert mcnemar_p(b, c, exact_below=0) == pytest.approx(asymptotic, rel=REL)


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 0, exact_below=0) == 1.0


# --- Newcombe's paired difference ------------------------------------------------------------


def _wilson_closed_form(k: int, n: int, z: float) -> tuple[float, float]:
    # Wilson (1927) in its textbook closed form, independent of scipy's implementation.
    p = k / n
    centre = (2 * n * p + z * z) / (2 * (n + z * z))
    half = z * math.sqrt(z * z + 4 * n * p * (1 - p)) / (2 * (n + z * z))
    return max(0.0, centre - half), min(1.0, centre + half)


def _newcombe_reference(
    e: int, f: int, g: int, h: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Newcombe (1998) method 10 for the table [[e, f], [g, h]], theta = p1+ - p+1, written out
    from the paper's formulas: Wilson limits, phi with the continuity-corrected numerator."""
    n = e + f + g + h
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = _wilson_closed_form(e + f, n, z)
    l2, u2 = _wilson_closed_form(e + g, n, z)
    denominator = (e + f) * (g + h) * (e + g) * (f + h)
    cross = e * h - f * g
    if denominator == 0:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(denominator)
    elif cross >= 0:
        phi = 0.0
    else:
        phi = cross / math.sqrt(denominator)
    theta = p1 - p2
    delta = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    epsilon = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return theta, theta - delta, theta + epsilon


def _paired(e: int, f: int, g: int, h: int, confidence: float = 0.95) -> Estimate:
    # Table [[e, f], [g, h]] with rows = shadow right/wrong, columns = production right/wrong,
    # so p1+ - p+1 is shadow accuracy minus production accuracy.
    return paired_accuracy_difference(
        both_right=e, production_only=g, shadow_only=f, both_wrong=h, confidence=confidence
    )


def test_paired_difference_matches_the_textbook_example() -> None:
    # Cavo et al. (2012), complete response before/after consolidation therapy, [[59, 6], [16, 80]]:
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8,
    # Newcombe square-and-add interval: -0.0621 (95% CI -0.1186 to -0.0046).
    est = _paired(59, 6, 16, 80)
    assert est.value == pytest.approx(-10 / 161, rel=REL)
    assert est.interval.low == pytest.approx(-0.1186, abs=5e-5)
    assert est.interval.high == pytest.approx(-0.0046, abs=5e-5)


@pytest.mark.parametrize(
    "table",
    [
        (59, 6, 16, 80),
        (1, 1, 7, 12),
        (0, 3, 9, 0),
        (40, 10, 10, 40),
        (100, 25, 40, 35),
        (300, 260, 200, 240),
        (0, 0, 0, 7),
        (7, 0, 0, 0),
        (5, 0, 0, 5),
        (0, 0, 4, 0),
        (0, 4, 0, 0),
        (0, 5, 5, 0),
        (1, 0, 0, 0),
    ],
)
@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_paired_difference_matches_an_independent_implementation(
    table: tuple[int, int, int, int], confidence: float
) -> None:
    theta, low, high = _newcombe_reference(*table, confidence=confidence)
    est = _paired(*table, confidence=confidence)
    assert est.value == pytest.approx(theta, rel=REL, abs=1e-15)
    assert est.interval.low == pytest.approx(max(-1.0, low), rel=1e-9, abs=1e-12)
    assert est.interval.high == pytest.approx(min(1.0, high), rel=1e-9, abs=1e-12)


def test_paired_difference_edges() -> None:
    empty = _paired(0, 0, 0, 0)
    assert math.isnan(empty.value)
    assert empty.interval == Interval(-1.0, 1.0)
    concordant = _paired(30, 0, 0, 20)
    assert concordant.value == 0.0
    assert concordant.interval.low < 0.0 < concordant.interval.high
    shadow_always = _paired(0, 12, 0, 0)
    assert shadow_always.value == 1.0
    assert shadow_always.interval.high == 1.0
    assert 0.0 < shadow_always.interval.low < 1.0
    production_always = _paired(0, 0, 12, 0)
    assert production_always.value == -1.0
    assert production_always.interval.low == -1.0


def test_paired_interval_is_inside_bounds_and_contains_the_estimate() -> None:
    # Every table with 1 <= n <= 8: the interval lies in [-1, 1] and contains the estimate.
    for n in range(1, 9):
        for e, f, g in itertools.product(range(n + 1), repeat=3):
            h = n - e - f - g
            if h < 0:
                continue
            est = _paired(e, f, g, h)
            assert -1.0 <= est.interval.low <= est.value <= est.interval.high <= 1.0


# --- paired t ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "loc", "scale"), [(2, 0.0, 1.0), (15, 0.3, 2.0), (400, -0.05, 0.1)])
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_paired_t_matches_scipy(n: int, loc: float, scale: float, confidence: float) -> None:
    d = np.random.default_rng(n).normal(loc, scale, n)
    ci = sps.ttest_1samp(d, 0.0).confidence_interval(confidence_level=confidence)
    est = paired_t(n, float(d.sum()), float((d * d).sum()), confidence)
    assert est.value == pytest.approx(float(d.mean()), rel=1e-12)
    assert est.interval.low == pytest.approx(float(ci.low), rel=1e-9)
    assert est.interval.high == pytest.approx(float(ci.high), rel=1e-9)


def test_paired_t_edges() -> None:
    for n in (0, 1):
        est = paired_t(n, 0.5 * n, 0.25 * n)
        assert math.isnan(est.value)
        assert math.isnan(est.interval.low)
        assert math.isnan(est.interval.high)
    # 0.1 is not a binary fraction: the sums carry rounding, the variance is still zero.
    same = paired_t(10, sum([0.1] * 10), sum([0.01] * 10))
    assert same.value == pytest.approx(0.1, rel=1e-15)
    assert same.interval == Interval(same.value, same.value)


# --- sequential: paired binary ----------------------------------------------------------------


def _mixture_lr_by_quadrature(b: int, c: int, a: float, theta0: float) -> float:
    """Lambda(theta0) as the integral of the likelihood ratio over the Beta(a, a) prior."""

    def integrand(theta: float) -> float:
        ratio = (theta / theta0) ** c * ((1 - theta) / (1 - theta0)) ** b
        return float(ratio * sps.beta.pdf(theta, a, a))

    value, _ = integrate.quad(integrand, 0.0, 1.0, epsabs=0.0, epsrel=1e-12, limit=200)
    return float(value)


@pytest.mark.parametrize(("b", "c"), DISCORDANT[1:5])
def test_sequential_binary_matches_the_mixture_integral(b: int, c: int) -> None:
    got = sequential_paired_binary(b, c)
    likelihood_ratio = _mixture_lr_by_quadrature(b, c, DEFAULT_BETA_PRIOR, 0.5)
    assert got.p_value == pytest.approx(min(1.0, 1.0 / likelihood_ratio), rel=1e-8)
    # Each finite end of the confidence sequence is where Lambda(theta) reaches 1 / alpha.
    for end in (got.interval.low, got.interval.high):
        if 0.0 < end < 1.0:
            assert _mixture_lr_by_quadrature(b, c, DEFAULT_BETA_PRIOR, end) == pytest.approx(
                20.0, rel=1e-7
            )


def test_sequential_binary_closed_form_values() -> None:
    # (b, c) = (200, 260), a = 10: log Lambda = betaln(270, 210) - betaln(10, 10) + 460 log 2.
    log_lr = special.betaln(270, 210) - special.betaln(10, 10) + 460 * math.log(2)
    assert sequential_paired_binary(200, 260).p_value == pytest.approx(math.exp(-log_lr), rel=1e-12)
    # A flat prior: Lambda = B(c + 1, b + 1) * 2^(b + c) = 2^5 / 6 for (b, c) = (0, 5).
    assert sequential_paired_binary(0, 5, prior=1.0).p_value == pytest.approx(6 / 32, rel=1e-12)


def test_sequential_binary_edges() -> None:
    assert sequential_paired_binary(0, 0) == Sequential(1.0, Interval(0.0, 1.0))
    shadow_only = sequential_paired_binary(0, 40)
    assert shadow_only.interval.high == 1.0
    assert 0.5 < shadow_only.interval.low < 1.0
    production_only = sequential_paired_binary(40, 0)
    assert production_only.interval.low == 0.0
    assert production_only.interval.high == pytest.approx(1.0 - shadow_only.interval.low, rel=1e-9)
    with pytest.raises(ValueError, match="prior"):
        sequential_paired_binary(1, 2, prior=0.0)
    with pytest.raises(ValueError, match="alpha"):
        sequential_paired_binary(1, 2, alpha=0.0)


@pytest.mark.parametrize(("b", "c"), [*DISCORDANT, (10, 30), (30, 10), (60, 95), (0, 9)])
def test_sequential_binary_interval_agrees_with_its_test(b: int, c: int) -> None:
    s = sequential_paired_binary(b, c)
    assert s.interval.low <= (c / (b + c) if b + c else 0.5) <= s.interval.high
    # 1/2 is outside the confidence sequence exactly when the test rejects.
    assert (s.p_value <= 0.05) == (not s.interval.low < 0.5 < s.interval.high)


def _discordant_paths(
    rng: np.random.Generator, experiments: int, labels: int, theta: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Running (production_only, shadow_only) counts after each label."""
    discordant = rng.random((experiments, labels)) < 0.2
    shadow_right = rng.random((experiments, labels)) < theta
    b = np.cumsum(discordant & ~shadow_right, axis=1)
    c = np.cumsum(discordant & shadow_right, axis=1)
    return b, c


def _sequential_binary_p(b: npt.NDArray[np.int64], c: npt.NDArray[np.int64]) -> Floats:
    a = DEFAULT_BETA_PRIOR
    log_lr = special.betaln(a + c, a + b) - special.betaln(a, a) + (b + c) * math.log(2.0)
    return np.minimum(1.0, np.exp(-log_lr))


def _naive_mcnemar_p(b: npt.NDArray[np.int64], c: npt.NDArray[np.int64]) -> Floats:
    total = b + c
    exact = np.minimum(1.0, 2.0 * sps.binom.cdf(np.minimum(b, c), total, 0.5))
    chi2 = sps.chi2.sf((np.abs(b - c) - 1.0) ** 2 / np.maximum(total, 1), 1)
    return np.where(total == 0, 1.0, np.where(total < 25, exact, chi2))


ALPHA = 0.05


def _fpr_bound(experiments: int) -> float:
    return ALPHA + 2.0 * math.sqrt(ALPHA * (1.0 - ALPHA) / experiments)


def test_sequential_binary_keeps_the_false_positive_rate_under_continuous_monitoring() -> None:
    experiments = 300
    b, c = _discordant_paths(np.random.default_rng(20240601), experiments, 1_000, theta=0.5)
    sequential = _sequential_binary_p(b, c)
    naive = _naive_mcnemar_p(b, c)
    # The vectorised p-values are the module's own, checked at a sample of states.
    for i, j in [(0, 0), (7, 99), (150, 500), (299, 999), (42, 37)]:
        bij, cij = int(b[i, j]), int(c[i, j])
        assert sequential[i, j] == pytest.approx(sequential_paired_binary(bij, cij).p_value)
        assert naive[i, j] == pytest.approx(mcnemar_p(bij, cij))
    sequential_fpr = float((sequential <= ALPHA).any(axis=1).mean())
    naive_fpr = float((naive <= ALPHA).any(axis=1).mean())
    assert sequential_fpr <= _fpr_bound(experiments)
    assert naive_fpr >= 0.10
    # This seed: 7 of 300 sequential experiments ever reject, 77 of 300 naive ones.
    assert (sequential_fpr, naive_fpr) == (7 / 300, 77 / 300)


def test_sequential_binary_detects_a_better_shadow() -> None:
    b, c = _discordant_paths(np.random.default_rng(20240602), 300, 1_000, theta=0.65)
    power = float((_sequential_binary_p(b, c) <= ALPHA).any(axis=1).mean())
    assert power >= 0.5
    assert power == 279 / 300


# --- sequential: paired mean ------------------------------------------------------------------


def test_sequential_mean_matches_the_formula() -> None:
    d = np.random.default_rng(7).normal(0.25, 1.5, 200)
    n, m, v = 200, float(d.mean()), float(d.var(ddof=1))
    tau, alpha = 0.5, 0.1
    spread = v + n * tau**2
    likelihood_ratio = math.sqrt(v / spread) * math.exp(n**2 * tau**2 * m**2 / (2 * v * spread))
    half = math.sqrt(v * spread / (n**2 * tau**2) * math.log(spread / (v * alpha**2)))
    got = sequential_paired_mean(n, float(d.sum()), float((d * d).sum()), alpha=alpha, tau=tau)
    assert got.p_value == pytest.approx(min(1.0, 1 / likelihood_ratio), rel=1e-9)
    assert got.interval.low == pytest.approx(m - half, rel=1e-9)
    assert got.interval.high == pytest.approx(m + half, rel=1e-9)


def test_sequential_mean_edges() -> None:
    for n in (0, 1, DEFAULT_MIN_N - 1):
        got = sequential_paired_mean(n, 1.0 * n, 4.0 * n)
        assert got.p_value == 1.0
        assert math.isnan(got.interval.low)
        assert math.isnan(got.interval.high)
    constant = sequential_paired_mean(50, sum([0.1] * 50), sum([0.01] * 50))
    assert constant.p_value == 1.0
    assert math.isnan(constant.interval.low)
    assert sequential_paired_mean(2, 2.1, 2.21, min_n=2).p_value < 0.05  # d = 1.0, 1.1
    with pytest.raises(ValueError, match="min_n"):
        sequential_paired_mean(5, 1.0, 5.0, min_n=1)
    with pytest.raises(ValueError, match="tau"):
        sequential_paired_mean(5, 1.0, 5.0, tau=0.0)


@pytest.mark.parametrize(("n", "loc"), [(30, 0.0), (100, 0.4), (1_000, 0.1), (1_000, -0.2)])
def test_sequential_mean_interval_agrees_with_its_test(n: int, loc: float) -> None:
    d = np.random.default_rng(n).normal(loc, 1.0, n)
    s = sequential_paired_mean(n, float(d.sum()), float((d * d).sum()))
    assert s.interval.low < float(d.mean()) < s.interval.high
    assert (s.p_value <= ALPHA) == (not s.interval.low < 0.0 < s.interval.high)


def _sequential_mean_p(d: Floats, tau: float, min_n: int) -> Floats:
    n = np.arange(1, d.shape[1] + 1, dtype=np.float64)
    total = np.cumsum(d, axis=1)
    mean = total / n
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (np.cumsum(d * d, axis=1) - total * mean) / (n - 1)
        spread = variance + n * tau**2
        log_lr = 0.5 * np.log(variance / spread) + (n * tau * mean) ** 2 / (2 * variance * spread)
    p = np.minimum(1.0, np.exp(-log_lr))
    p[:, : min_n - 1] = 1.0
    return p


def test_sequential_mean_keeps_the_false_positive_rate_under_continuous_monitoring() -> None:
    experiments = 200
    d = np.random.default_rng(20240603).standard_normal((experiments, 500))
    p = _sequential_mean_p(d, tau=1.0, min_n=DEFAULT_MIN_N)
    for i, j in [(0, DEFAULT_MIN_N - 1), (13, 250), (199, 499)]:
        row = d[i, : j + 1]
        expected = sequential_paired_mean(j + 1, float(row.sum()), float((row * row).sum()))
        assert p[i, j] == pytest.approx(expected.p_value, rel=1e-9)
    fpr = float((p <= ALPHA).any(axis=1).mean())
    assert fpr <= _fpr_bound(experiments)
    # Why the burn-in exists: with the plug-in variance from n = 2 the guarantee is lost.
    unguarded = float((_sequential_mean_p(d, tau=1.0, min_n=2) <= ALPHA).any(axis=1).mean())
    assert unguarded >= 0.10
    # This seed: 2 of 200 experiments ever reject with the burn-in, 49 of 200 without.
    assert (fpr, unguarded) == (2 / 200, 49 / 200)


def test_sequential_mean_detects_a_real_difference() -> None:
    d = np.random.default_rng(20240604).normal(0.25, 1.0, (200, 500))
    power = float((_sequential_mean_p(d, tau=1.0, min_n=DEFAULT_MIN_N) <= ALPHA).any(axis=1).mean())
    assert power >= 0.5
    assert power == 198 / 200


# --- histogram_quantile -----------------------------------------------------------------------

LATENCY = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 50.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.0, 0.0),  # rank 0 lands in the first bucket, interpolated from 0
        (0.05, 0.025),  # rank 2.5 of 10 in (0, 0.1]
        (0.2, 0.1),  # rank 10: exactly the first bucket's bound
        (0.5, 0.4),  # rank 25: 15 of 20 in (0.1, 0.5] -> 0.1 + 0.4 * 0.75
        (0.8, 1.0),  # rank 40: the top of (0.5, 1.0]
        (0.79, 0.975),  # rank 39.5: 9.5 of 10 in (0.5, 1.0] -> 0.5 + 0.5 * 0.95
        (0.9, 1.0),  # rank 45 is in the +Inf bucket -> highest finite bound
        (1.0, 1.0),
    ],
)
def test_histogram_quantile_interpolates_like_prometheus(q: float, expected: float) -> None:
    assert histogram_quantile(q, LATENCY) == pytest.approx(expected, rel=1e-12)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(-0.1, LATENCY) == -math.inf
    assert histogram_quantile(1.1, LATENCY) == math.inf
    assert math.isnan(histogram_quantile(math.nan, LATENCY))
    assert math.isnan(histogram_quantile(0.5, []))
    assert math.isnan(histogram_quantile(0.5, [(math.inf, 5.0)]))  # fewer than two buckets
    assert math.isnan(histogram_quantile(0.5, LATENCY[:-1]))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))  # no observations
    # An empty lowest bucket at q = 0 is 0/0 in Prometheus too.
    assert math.isnan(histogram_quantile(0.0, [(0.1, 0.0), (math.inf, 4.0)]))
    # A lowest bound <= 0 is returned as is, not interpolated from 0.
    signed = [(-1.0, 5.0), (1.0, 10.0), (math.inf, 10.0)]
    assert histogram_quantile(0.2, signed) == -1.0
    assert histogram_quantile(0.75, signed) == pytest.approx(0.0, abs=1e-15)  # -1 + 2 * 2.5/5


def test_histogram_quantile_sorts_merges_and_forces_monotonic_counts() -> None:
    assert histogram_quantile(0.5, list(reversed(LATENCY))) == pytest.approx(0.4, rel=1e-12)
    # Two series for the same bound are summed, as Prometheus coalesces le="1" and le="1.0".
    split = [(0.1, 4.0), (0.1, 6.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 50.0)]
    assert histogram_quantile(0.05, split) == pytest.approx(0.025, rel=1e-12)
    # A dip (20 after 30) is lifted to the envelope 10, 30, 30, 35, 40: rank 32 is then 2 of 5
    # in (1, 2] -> 1.4 (without the envelope it would be 12 of 15 -> 1.8).
    dip = [(0.1, 10.0), (0.5, 30.0), (1.0, 20.0), (2.0, 35.0), (math.inf, 40.0)]
    assert histogram_quantile(0.8, dip) == pytest.approx(1.4, rel=1e-12)

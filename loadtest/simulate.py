"""Seeded simulations of the verdict under continuous monitoring: how often it decides falsely
when there is no difference (checked after every label, or every scrape), and how many labels
it needs to decide a real one. Uses the verdict's own tests (proxy.core.stats, proxy.core.verdict),
vectorised over the moments of a path, never a copy of them.

    python -m loadtest.simulate power            # the README's table of labels to decision
    python -m loadtest.simulate validity         # false-decision rates, CI-sized
    python -m loadtest.simulate validity --long  # the same over 20,000 labels and more paths

The tests (tests/test_simulation.py) run the CI-sized versions and assert the rates.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from proxy.core.stats import (
    DEFAULT_EFFECT_SIZE,
    DEFAULT_MIN_N,
    RequestSums,
    paired_binary_p_paths,
    sequential_ratio_paths,
)
from proxy.core.verdict import (
    classification_sums,
    error_guardrail,
    latency_guardrail,
    split_alpha,
)

Array = NDArray[np.float64]
ALPHA = 0.05


# -- traffic ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Classification:
    """Labelled requests of `batch` instances. Each instance is discordant with probability
    `discordance`, and then the shadow is the one right with probability theta (0.5: no
    difference; drawn per request from Beta(spread, spread) when `spread` is set). With
    `correlation` rho, each instance copies its request's template outcome with probability rho
    (1: fully clustered discordance, every instance of a request going the same way)."""

    batch: int = 1
    discordance: float = 0.2
    theta: float = 0.5
    correlation: float = 0.0
    spread: float | None = None

    def draw(self, rng: np.random.Generator, requests: int) -> tuple[Array, Array, Array]:
        """Per request: production-only and shadow-only instance counts, and instances."""
        theta: Array | float = self.theta
        if self.spread is not None:
            mean_shift = self.theta - 0.5
            theta = np.clip(rng.beta(self.spread, self.spread, requests) + mean_shift, 0, 1)
        if self.batch == 1 and self.correlation == 0.0:
            discordant = rng.random(requests) < self.discordance
            shadow_wins = rng.random(requests) < theta
            c = (discordant & shadow_wins).astype(np.float64)
            b = (discordant & ~shadow_wins).astype(np.float64)
            return b, c, np.ones(requests)
        shape = (requests, self.batch)
        theta_column = np.broadcast_to(np.asarray(theta, dtype=np.float64), (requests,))[:, None]
        template_discordant = rng.random(requests)[:, None] < self.discordance
        template_wins = rng.random(requests)[:, None] < theta_column
        follow = rng.random(shape) < self.correlation
        discordant = np.where(follow, template_discordant, rng.random(shape) < self.discordance)
        wins = np.where(follow, template_wins, rng.random(shape) < theta_column)
        c = (discordant & wins).sum(axis=1).astype(np.float64)
        b = (discordant & ~wins).sum(axis=1).astype(np.float64)
        return b, c, np.full(requests, float(self.batch))


@dataclass(frozen=True, slots=True)
class Regression:
    """Labelled requests of `batch` instances whose advantage (|production error| - |shadow
    error|) has mean `mean` and sd `sd` per instance, with intra-request correlation rho."""

    batch: int = 1
    mean: float = 0.0
    sd: float = 1.0
    correlation: float = 0.0

    def draw(self, rng: np.random.Generator, requests: int) -> tuple[Array, Array]:
        """Per request: the advantage summed over its instances, and instances."""
        shared = rng.standard_normal(requests)[:, None]
        own = rng.standard_normal((requests, self.batch))
        rho = self.correlation
        per_instance = self.mean + self.sd * (math.sqrt(rho) * shared + math.sqrt(1 - rho) * own)
        return per_instance.sum(axis=1), np.full(requests, float(self.batch))


# -- the quality test along a path ------------------------------------------------------------


def _sums_paths(
    m: Array, d: Array, *, pseudo: bool, weight: Array | None = None
) -> tuple[Array, ...]:
    """Running sums after each request; `weight` 0 leaves a request out (lost)."""
    n = np.cumsum(np.ones(len(m)) if weight is None else weight)
    columns = (n, np.cumsum(m), np.cumsum(m * m), np.cumsum(d), np.cumsum(d * d), np.cumsum(m * d))
    if not pseudo:
        return columns
    extra = classification_sums(RequestSums())
    add = (
        extra.requests, extra.instances, extra.instances_squared, extra.advantage,
        extra.advantage_squared, extra.cross,
    )  # fmt: skip
    return tuple(c + a for c, a in zip(columns, add, strict=True))


def classification_p(
    b: Array,
    c: Array,
    m: Array,
    *,
    alpha: float,
    effect_size: float = DEFAULT_EFFECT_SIZE,
    min_requests: int = DEFAULT_MIN_N,
    weight: Array | None = None,
) -> tuple[Array, Array, Array]:
    """The quality test's p-value and interval after each labelled request (the interval ends
    are nan for the exact path, whose decision is p <= alpha with the sign of c - b). Requests
    of `weight` 0 are left out (their m is 0 too)."""
    kept = m if weight is None else m[weight > 0]
    if np.all(kept == 1.0):
        cb, cc = np.cumsum(b), np.cumsum(c)
        p = np.minimum(1.0, 2.0 * paired_binary_p_paths(cb, cc))
        sign = np.sign(cc - cb)
        low = np.where(p <= alpha, np.where(sign > 0, 0.0, -np.inf), np.nan)
        high = np.where(p <= alpha, np.where(sign < 0, 0.0, np.inf), np.nan)
        return p, low, high
    columns = _sums_paths(m, c - b, pseudo=True, weight=weight)
    return sequential_ratio_paths(
        *columns, alpha=alpha, effect_size=effect_size, min_requests=min_requests
    )


def regression_p(
    d: Array,
    m: Array,
    *,
    alpha: float,
    effect_size: float = DEFAULT_EFFECT_SIZE,
    min_requests: int = DEFAULT_MIN_N,
) -> tuple[Array, Array, Array]:
    columns = _sums_paths(m, d, pseudo=False)
    return sequential_ratio_paths(
        *columns, alpha=alpha, effect_size=effect_size, min_requests=min_requests
    )


def first_decision(p: Array, alpha: float) -> int | None:
    """The index of the first moment p <= alpha (a decision held from then on), if any."""
    hits = np.flatnonzero(p <= alpha)
    return int(hits[0]) if hits.size else None


# -- false-decision rates ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """A Monte-Carlo rate with its margin: rate + margin is a one-sided 99% upper bound."""

    name: str
    hits: int
    paths: int

    @property
    def rate(self) -> float:
        return self.hits / self.paths

    @property
    def margin(self) -> float:
        """2.33 binomial sds at alpha (the one-sided 99% normal quantile)."""
        return 2.33 * math.sqrt(ALPHA * (1 - ALPHA) / self.paths)

    def __str__(self) -> str:
        return f"{self.name:<58} {self.rate:6.3f}  (+-{self.margin:.3f}, {self.paths} paths)"


def false_rate_quality(
    name: str,
    traffic: Classification | Regression,
    *,
    paths: int,
    horizon: int,
    seed: int,
    alpha: float = ALPHA,
) -> Rate:
    """Paths under no difference, checked after every labelled request: how often the quality
    test ever decides better or worse at `alpha`."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(paths):
        if isinstance(traffic, Classification):
            b, c, m = traffic.draw(rng, horizon)
            p, _, _ = classification_p(b, c, m, alpha=alpha)
        else:
            d, m = traffic.draw(rng, horizon)
            p, _, _ = regression_p(d, m, alpha=alpha)
        hits += first_decision(p, alpha) is not None
    return Rate(name, hits, paths)


def false_rate_replicas(
    name: str,
    traffic: Classification,
    *,
    paths: int,
    horizon: int,
    seed: int,
    replicas: int = 4,
    restart_every: int = 1000,
    scrape_every: int = 20,
    alpha: float = ALPHA,
) -> Rate:
    """A fleet: labels spread over `replicas`, each restarting (its counters back to 0) at a
    random label with probability 1 / `restart_every`. Prometheus scrapes every replica every
    `scrape_every` labels, and the report pools `sum(increase(...))`, which counts across
    resets; what a replica counted after its last scrape before a restart is lost. The verdict
    is checked at every scrape."""
    rng = np.random.default_rng(seed)
    hits = 0
    scrapes = np.arange(scrape_every - 1, horizon, scrape_every)
    index = np.arange(horizon)
    next_scrape = (index // scrape_every + 1) * scrape_every - 1
    for _ in range(paths):
        b, c, m = traffic.draw(rng, horizon)
        replica = rng.integers(0, replicas, horizon)
        restart = rng.random(horizon) < 1.0 / restart_every
        kept = np.ones(horizon, dtype=bool)
        for r in range(replicas):
            mine = replica == r
            restarts = np.flatnonzero(mine & restart)
            labels = np.flatnonzero(mine)
            if not restarts.size:
                continue
            following = np.searchsorted(restarts, labels, side="right")
            next_restart = np.where(
                following < len(restarts), restarts[np.minimum(following, len(restarts) - 1)],
                horizon,
            )  # fmt: skip
            kept[labels] = next_restart > next_scrape[labels]
        weight = kept.astype(np.float64)
        p, _, _ = classification_p(b * weight, c * weight, m * weight, alpha=alpha, weight=weight)
        hits += first_decision(p[scrapes], alpha) is not None
    return Rate(name, hits, paths)


def false_rate_family(
    *,
    shadows: int,
    paths: int,
    horizon: int,
    seed: int,
    check_every: int = 50,
    alpha: float = ALPHA,
    error_rate: float = 0.005,
    error_margin: float = 0.01,
    latency_margin: float = 0.01,
    disagreement: float = 0.2,
    max_disagreement: float = 0.3,
) -> Rate:
    """`shadows` shadows identical to production (same accuracy, errors and latency), every
    check on: quality after every label; the error, slow-request and disagreement guardrails
    (this one with verdict.max_disagreement 0.3, the shadows disagreeing on 20%) every
    `check_every` requests. How often anything at all is falsely decided, with alpha split."""
    rng = np.random.default_rng(seed)
    alphas = split_alpha(alpha, shadows)
    bounds = np.array([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, np.inf])
    hits = 0
    traffic = Classification(discordance=0.2)
    for _ in range(paths):
        decided = False
        production_errors = rng.random(horizon) < error_rate
        production_latency = rng.lognormal(-3.0, 0.8, horizon)
        production_buckets = _cumulative_buckets(production_latency, bounds)
        for _shadow in range(shadows):
            b, c, m = traffic.draw(rng, horizon)
            p, _, _ = classification_p(b, c, m, alpha=alphas.quality)
            if first_decision(p, alphas.quality) is not None:
                decided = True
            errors = rng.random(horizon) < error_rate
            latency = rng.lognormal(-3.0, 0.8, horizon)
            buckets = _cumulative_buckets(latency, bounds)
            disagreed = (rng.random(horizon) < disagreement).astype(np.float64)
            ones = np.ones(horizon)
            _, disagreement_low, _ = sequential_ratio_paths(
                *_sums_paths(ones, disagreed, pseudo=False), alpha=alphas.guardrail
            )
            if np.any(disagreement_low[check_every - 1 :: check_every] > max_disagreement):
                decided = True
            for t in range(check_every, horizon + 1, check_every):
                e = error_guardrail(
                    int(errors[:t].sum()), t, int(production_errors[:t].sum()), t,
                    alpha=alphas.guardrail, margin=error_margin,
                )  # fmt: skip
                _, slow = latency_guardrail(
                    list(zip(bounds, buckets[t - 1], strict=True)),
                    list(zip(bounds, production_buckets[t - 1], strict=True)),
                    alpha=alphas.guardrail,
                )
                if e.low > error_margin or slow.low > latency_margin:
                    decided = True
                    break
        hits += decided
    return Rate(f"{shadows} identical shadows, every check", hits, paths)


def _cumulative_buckets(latency: Array, bounds: Array) -> NDArray[np.float64]:
    """Cumulative bucket counts after each request: shape (requests, buckets)."""
    index = np.searchsorted(bounds, latency)
    onehot = np.zeros((len(latency), len(bounds)))
    onehot[np.arange(len(latency)), index] = 1.0
    return np.cumsum(np.cumsum(onehot, axis=0), axis=1)


# -- power ------------------------------------------------------------------------------------


def labels_to_decide(
    points: float,
    discordance: float,
    *,
    paths: int,
    horizon: int,
    seed: int,
    alpha: float,
) -> float | None:
    """Median labelled single-instance requests until the verdict decides an accuracy gain of
    `points` percentage points (the right way), at `discordance`; None past `horizon`."""
    theta = 0.5 + points / 100 / (2 * discordance)
    traffic = Classification(discordance=discordance, theta=theta)
    rng = np.random.default_rng(seed)
    found: list[float] = []
    for _ in range(paths):
        b, c, m = traffic.draw(rng, horizon)
        p, _, _ = classification_p(b, c, m, alpha=alpha)
        at = first_decision(p, alpha)
        found.append(math.inf if at is None else at + 1)
    median = float(np.median(found))
    return None if math.isinf(median) else median


def power_table(*, paths: int = 200, seed: int = 7, alpha: float = ALPHA) -> str:
    """Markdown: median labels to decision, one shadow (quality alpha = alpha / 2)."""
    quality_alpha = split_alpha(alpha, 1).quality
    rows = [
        "| accuracy gain | 5% discordance | 10% discordance | 20% discordance |",
        "|---|---|---|---|",
    ]
    for points in (1, 2, 5):
        cells = []
        for discordance in (0.05, 0.10, 0.20):
            horizon = int(min(400_000, 60 * discordance * 10_000 / points**2) + 2_000)
            median = labels_to_decide(
                points, discordance, paths=paths, horizon=horizon, seed=seed, alpha=quality_alpha
            )
            cells.append(f"> {horizon:,}" if median is None else f"{median:,.0f}")
        rows.append(f"| +{points} point{'s' if points > 1 else ''} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# -- the command ------------------------------------------------------------------------------

Scenario = Callable[[int, int, int], Rate]


QUALITY_CASES: tuple[tuple[str, Classification | Regression], ...] = (
    ("independent instances (single-instance requests)", Classification()),
    ("batches of 10, per-request effects Beta(2,2)", Classification(batch=10, spread=2.0)),
    ("batches of 10, within-request correlation 0.5", Classification(batch=10, correlation=0.5)),
    ("batches of 50, within-request correlation 0.5", Classification(batch=50, correlation=0.5)),
    ("batches of 10, fully clustered discordance", Classification(batch=10, correlation=1.0)),
    ("batches of 50, fully clustered discordance", Classification(batch=50, correlation=1.0)),
    ("regression, sd 1", Regression(sd=1.0)),
    ("regression, sd 1,000", Regression(sd=1000.0)),
    ("regression, batches of 20, correlation 0.1", Regression(20, sd=1000.0, correlation=0.1)),
)
REPLICAS = "4 replicas restarting every ~1,000 labels, pooled by increase()"


def validity_scenarios() -> list[tuple[str, Scenario]]:
    """(name, run(paths, horizon, seed)) for every case the README reports."""

    def quality_case(name: str, traffic: Classification | Regression) -> Scenario:
        return lambda p, h, s: false_rate_quality(name, traffic, paths=p, horizon=h, seed=s)

    def replicas(p: int, h: int, s: int) -> Rate:
        return false_rate_replicas(REPLICAS, Classification(), paths=p, horizon=h, seed=s)

    def family(p: int, h: int, s: int) -> Rate:
        return false_rate_family(shadows=3, paths=max(1, p // 4), horizon=h, seed=s)

    cases = [(name, quality_case(name, traffic)) for name, traffic in QUALITY_CASES]
    return [*cases, (REPLICAS, replicas), ("3 identical shadows, every check", family)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    power = sub.add_parser("power", help="median labels to decision (the README's table)")
    power.add_argument("--paths", type=int, default=200)
    validity = sub.add_parser("validity", help="false-decision rates under no difference")
    validity.add_argument("--long", action="store_true", help="20,000 labels, 1,000 paths")
    validity.add_argument("--paths", type=int)
    validity.add_argument("--horizon", type=int)
    args = parser.parse_args(argv)
    if args.command == "power":
        print(power_table(paths=args.paths))
        return 0
    paths = args.paths or (1000 if args.long else 300)
    horizon = args.horizon or (20_000 if args.long else 3_000)
    print(f"false-decision rate at alpha = {ALPHA}, checked after every label ({horizon:,} labels)")
    for index, (_, run) in enumerate(validity_scenarios()):
        print(run(paths, horizon, 1000 + index), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

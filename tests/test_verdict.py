"""The verdict end to end over real sockets, the request as the unit: fake model servers answer
scripted predictions, labels are posted, and /report and the gauges say better, equivalent or
inconclusive exactly as the statistics say they should."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.conftest import (
    Answer,
    FakeModelFactory,
    ProxyFactory,
    Received,
    RunningProxy,
    Script,
    v1,
)

ROUTE = "/v1/models/m:predict"


async def run(
    fake_model: FakeModelFactory,
    proxy: ProxyFactory,
    tmp_path: Path,
    production: Script,
    shadow: Script,
    requests: list[list[Any]],
    labels: list[Any],
    *,
    kind: str = "classification",
    verdict: str = "",
) -> RunningProxy:
    """Each request's instances through production and the shadow, then its label."""
    prod = await fake_model(production)
    cand = await fake_model(shadow)
    p = await proxy(
        f"""
store: {{path: '{tmp_path / "p.db"}', flush_interval: 1ms}}
verdict: {{latency_margin: 100%{verdict or ", min_labels: 10"}}}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    compare: {{kind: {kind}}}
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
    shadows: [{{name: cand, url: "{cand.url}{ROUTE}"}}]
"""
    )
    for i, instances in enumerate(requests):
        status, _, _ = await p.post(
            ROUTE, {"instances": instances}, headers={"X-Request-ID": f"r{i}"}
        )
        assert status == 200
    await p.settled()
    posted = [{"request_id": f"r{i}", "label": label} for i, label in enumerate(labels)]
    for start in range(0, len(posted), 1000):
        status, _, body = await p.post("/labels", posted[start : start + 1000])
        assert status == 200, body
        assert orjson.loads(body)["counts"]["joined"] == len(posted[start : start + 1000])
    return p


async def shadow_report(p: RunningProxy) -> dict[str, Any]:
    async with p.session.get(p.url + "/report") as resp:
        assert resp.status == 200
        report = await resp.json()
    [route] = report["routes"]
    [shadow] = route["shadows"]
    return shadow  # type: ignore[no-any-return]


def gauges(p: RunningProxy) -> tuple[float | None, float | None]:
    labels = {"route": ROUTE, "shadow": "cand"}
    state = {
        s
        for s in ("better", "equivalent", "inconclusive", "insufficient_data", "worse")
        if p.value("shadowproxy_verdict_state", **labels, state=s) == 1
    }
    assert len(state) == 1
    return p.value("shadowproxy_verdict", **labels), p.value(
        "shadowproxy_verdict_state", **labels, state=state.pop()
    )


# Instances are ints; request k's are k * 1000 + j. "Shadow's way" requests are those with
# k < SHADOW_WAY: there the shadow is right on every instance and production wrong on every
# one, and the other way round on the others.
def clustered(shadow_way: int, requests: int, batch: int) -> tuple[Script, Script, list[Any]]:
    def production(r: Received) -> Any:
        return v1([v + 1 if v // 1000 < shadow_way else v for v in r.json()["instances"]])

    def shadow(r: Received) -> Any:
        return v1([v if v // 1000 < shadow_way else v + 1 for v in r.json()["instances"]])

    return production, shadow, [[k * 1000 + j for j in range(batch)] for k in range(requests)]


async def test_fully_clustered_discordance_of_20_requests_is_inconclusive(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    # 12 requests of 20 instances go the shadow's way, 8 production's: 240 instances against
    # 160, but only 20 independent units.
    production, shadow, requests = clustered(12, 20, 20)
    p = await run(fake_model, proxy, tmp_path, production, shadow, requests, requests)
    report = await shadow_report(p)
    paired = report["paired"]
    assert (paired["shadow_only"], paired["production_only"]) == (240, 160)
    quality = report["quality"]
    assert (quality["method"], quality["requests"], quality["instances"]) == ("requests", 20, 400)
    assert quality["advantage"] == 0.2
    assert report["verdict"] == "inconclusive"
    assert report["reason"] == "not enough labelled requests for the test on requests yet (20)"
    assert gauges(p) == (0.0, 1.0)


async def test_the_same_counts_in_single_instance_requests_are_better(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    production, shadow, _ = clustered(240, 400, 1)
    requests = [[k * 1000] for k in range(400)]
    p = await run(
        fake_model, proxy, tmp_path, production, shadow, requests, [r[0] for r in requests]
    )
    report = await shadow_report(p)
    quality = report["quality"]
    assert (quality["method"], quality["requests"], quality["instances"]) == ("exact", 400, 400)
    assert quality["advantage"] == 0.2
    assert 0 < quality["low"] < 0.2 < quality["high"]
    assert quality["p_value"] < quality["alpha"] == 0.025
    assert report["verdict"] == "better"
    assert report["reason"].startswith("the shadow is better: accuracy advantage +20.0 points")
    assert gauges(p) == (1.0, 1.0)
    labels = {"route": ROUTE, "shadow": "cand"}
    assert p.value("shadowproxy_verdict_difference_lower", **labels) == quality["low"]
    assert p.value("shadowproxy_verdict_sequential_p_value", **labels) == quality["p_value"]


async def test_regression_minus_100_at_sd_1000_over_3000_requests_is_better(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    # Every label is 0. Production's error is 5,000 on every request; the shadow's is 5,000 + d
    # with d from N(-100, 1000^2): the shadow is closer by 100 on average, in units where one
    # request's difference has an sd of 1,000 (prices in cents, say).
    d = np.random.default_rng(12).normal(-100.0, 1000.0, 3000)

    def production(r: Received) -> Any:
        return v1([5000.0 for _ in r.json()["instances"]])

    def shadow(r: Received) -> Any:
        return v1([5000.0 + float(d[i]) for i in r.json()["instances"]])

    requests = [[i] for i in range(3000)]
    p = await run(
        fake_model, proxy, tmp_path, production, shadow, requests, [0] * 3000, kind="regression"
    )
    report = await shadow_report(p)
    quality = report["quality"]
    assert (quality["method"], quality["requests"]) == ("requests", 3000)
    assert abs(quality["advantage"] - float(-d.mean())) < 1e-6
    assert quality["low"] > 0
    assert report["verdict"] == "better"
    assert report["reason"].startswith("the shadow is better: mean absolute error advantage +")
    assert gauges(p) == (1.0, 1.0)


async def test_a_shadow_equal_within_the_margin_is_equivalent(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    # 1,000 single-instance requests; the shadow differs from production on 8, 4 each way.
    def production(r: Received) -> Any:
        return v1([v + 1 if v in (1, 2, 3, 4) else v for v in r.json()["instances"]])

    def shadow(r: Received) -> Any:
        return v1([v + 1 if v in (5, 6, 7, 8) else v for v in r.json()["instances"]])

    requests = [[k] for k in range(1000)]
    p = await run(
        fake_model, proxy, tmp_path, production, shadow, requests, list(range(1000)),
        verdict=", min_labels: 10, margin: 5%",
    )  # fmt: skip
    report = await shadow_report(p)
    quality = report["quality"]
    assert quality["advantage"] == 0.0
    assert -0.05 < quality["low"] < 0 < quality["high"] < 0.05
    assert report["verdict"] == "equivalent"
    assert report["reason"].startswith("the shadow is as good as production within +-5.0 points")
    assert gauges(p) == (0.5, 1.0)


# -- the rules, without a proxy -----------------------------------------------------------------


def test_a_constant_regression_advantage_is_decided() -> None:
    from proxy.core.stats import RequestSums, sequential_ratio
    from proxy.core.verdict import judge

    test = sequential_ratio(RequestSums.of([(1.0, 2.5)] * 40), alpha=0.025)
    assert (test.p_value, test.interval.low, test.interval.high) == (0.0, 2.5, 2.5)
    assert judge(test.interval, margin=0.1) == "better"
    same = sequential_ratio(RequestSums.of([(1.0, 0.0)] * 40), alpha=0.025)
    assert judge(same.interval, margin=0.1) == "equivalent"


def test_decisions_are_held_and_p_is_a_running_minimum() -> None:
    from proxy.core.outcomes import Verdict
    from proxy.core.stats import Interval
    from proxy.core.verdict import Hold

    hold = Hold("a")
    assert hold.update("a", None, 0.5) == (None, 0.5)
    assert hold.update("a", Verdict.EQUIVALENT, 0.3) == (Verdict.EQUIVALENT, 0.3)
    assert hold.update("a", Verdict.BETTER, 0.6) == (Verdict.BETTER, 0.3)  # refined, p kept
    assert hold.update("a", Verdict.WORSE, 0.01) == (Verdict.BETTER, 0.01)  # never flips
    assert hold.update("a", None, 0.9) == (Verdict.BETTER, 0.01)
    assert hold.narrow(Interval(0.01, 0.09)) == Interval(0.01, 0.09)
    assert hold.narrow(Interval(0.02, 0.2)) == Interval(0.02, 0.09)  # the intersection
    assert hold.narrow(Interval(0.1, 0.2)) == Interval(0.02, 0.09)  # disjoint: ignored
    assert hold.update("b", None, 0.7) == (None, 0.7)  # the comparison's config changed


def test_guardrails_do_not_trip_on_a_point_estimate() -> None:
    from proxy.core.verdict import error_guardrail, latency_guardrail

    # The shadow fails 0.5% of 10,000 requests, production none: under the 1-point margin.
    errors = error_guardrail(50, 10_000, 0, 10_000, alpha=0.0083, margin=0.01)
    assert errors.low < 0.01  # not tripped (the point estimate, 0.5 points, is no evidence)
    # ... and 3% of them: tripped.
    assert error_guardrail(300, 10_000, 0, 10_000, alpha=0.0083, margin=0.01).low > 0.01
    # Identical latency histograms: no share of slow requests beyond production's own.
    buckets = [(0.01, 5000.0), (0.05, 9800.0), (0.1, 9905.0), (float("inf"), 10_000.0)]
    bound, slow = latency_guardrail(buckets, buckets, alpha=0.0083)
    assert bound == 0.1
    assert slow.low < 0 < slow.high
    # A shadow with a tenth of its requests past production's p99: tripped at a 1% margin.
    slower = [(0.01, 4000.0), (0.05, 8000.0), (0.1, 9000.0), (float("inf"), 10_000.0)]
    assert latency_guardrail(slower, buckets, alpha=0.0083)[1].low > 0.01


def test_the_single_instance_box_holds_the_true_difference_at_every_moment() -> None:
    """cs_low and cs_high used to be theta's sequence scaled by the observed discordance: not a
    sequence for the difference. The box is: over paths checked every 50 labels, it misses
    the true difference (+4 points at 20% discordance) in fewer than alpha of them."""
    from loadtest.simulate import Classification
    from proxy.core.stats import discordance_box

    rng = np.random.default_rng(21)
    traffic = Classification(discordance=0.2, theta=0.6)
    truth, misses, paths = 0.2 * (2 * 0.6 - 1), 0, 100
    for _ in range(paths):
        b, c, _ = traffic.draw(rng, 2000)
        cb, cc = np.cumsum(b), np.cumsum(c)
        for t in range(49, 2000, 50):
            box = discordance_box(int(cb[t]), int(cc[t]), t + 1, alpha=0.05).interval
            if not box.low <= truth <= box.high:
                misses += 1
                break
    assert misses / paths <= 0.05


async def test_min_labels_1_with_one_regression_pair_reports(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    def production(r: Received) -> Any:
        return v1([1.0 for _ in r.json()["instances"]])

    def shadow(r: Received) -> Any:
        return v1([2.0 for _ in r.json()["instances"]])

    p = await run(
        fake_model, proxy, tmp_path, production, shadow, [[0]], [0], kind="regression",
        verdict=", min_labels: 1",
    )  # fmt: skip
    report = await shadow_report(p)
    assert report["quality"]["requests"] == 1
    assert report["verdict"] == "inconclusive"
    assert report["reason"] == "not enough labelled requests for the test on requests yet (1)"


async def test_the_report_says_what_the_verdict_rests_on(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """Coverage, lost pairs, the labels still needed, and selection bias: labels arrive only
    for requests production predicted 0 for, and the shadow failed on a fifth of those."""

    def production(r: Received) -> Any:
        return v1([v % 2 for v in r.json()["instances"]])

    def shadow(r: Received) -> Any:
        [v] = r.json()["instances"]
        return Answer(status=500) if v % 10 == 0 else v1([v % 2])

    requests = [[v] for v in range(200)]
    prod = await fake_model(production)
    cand = await fake_model(shadow)
    p = await proxy(
        f"""
store: {{path: '{tmp_path / "p.db"}', flush_interval: 1ms}}
verdict: {{latency_margin: 100%, max_error_rate: 100%, min_labels: 10}}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
    shadows: [{{name: cand, url: "{cand.url}{ROUTE}"}}]
"""
    )
    for i, instances in enumerate(requests):
        status, _, _ = await p.post(
            ROUTE, {"instances": instances}, headers={"X-Request-ID": f"r{i}"}
        )
        assert status == 200
    await p.settled()
    # Labels only where production predicted 0 (the even ones), all right.
    labels = [{"request_id": f"r{v}", "label": 0} for v in range(0, 200, 2)]
    status, _, _ = await p.post("/labels", labels)
    assert status == 200
    async with p.session.get(p.url + "/report") as resp:
        report = await resp.json()
    [route] = report["routes"]
    diagnostics = route["diagnostics"]
    assert {k: diagnostics[k] for k in ("recorded_requests", "labelled_requests", "coverage")} == {
        "recorded_requests": 200,
        "labelled_requests": 100,
        "coverage": 0.5,
    }
    assert diagnostics["classes"] == [
        {"name": "0", "predicted": 100, "labelled": 100},
        {"name": "1", "predicted": 100, "labelled": 0},
    ]
    assert diagnostics["selection_bias_p"] < 1e-40
    [warning] = diagnostics["warnings"]
    assert warning.startswith(
        "labels arrive for some of production's predicted classes more than for others"
    )
    assert "labelled share by class: 0 100.0%, 1 0.0%" in warning
    [shadow] = route["shadows"]
    assert shadow["diagnostics"] == {
        "paired_requests": 80,
        "lost_pairs": 20,
        "unscorable_instances": 0,
        "coverage": 0.8,
        "effect": 0.01,
        "labels_needed": shadow["diagnostics"]["labels_needed"],
    }
    assert shadow["diagnostics"]["labels_needed"] > 80
    labels_of = {"route": ROUTE}
    assert (
        p.value("shadowproxy_selection_bias_p_value", **labels_of)
        == diagnostics["selection_bias_p"]
    )
    assert (
        p.value("shadowproxy_label_coverage", **labels_of, model="prod", role="production") == 0.5
    )
    assert p.value("shadowproxy_label_coverage", **labels_of, model="cand", role="shadow") == 0.8
    async with p.session.get(p.url + "/report.html") as resp:
        page = await resp.text()
    assert '<p class="warning" role="alert">Warning: labels arrive for some' in page
    assert "100 labelled requests (50.0% of 200 recorded)" in page


async def test_probabilities_report_log_loss_brier_and_reliability(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    # Label v % 2. Production says [0.6, 0.4] whatever it sees; the shadow is sharp and right:
    # [0.9, 0.1] on class 0 and [0.2, 0.8] on class 1.
    def production(r: Received) -> Any:
        return v1([[0.6, 0.4] for _ in r.json()["instances"]])

    def shadow(r: Received) -> Any:
        return v1([[0.9, 0.1] if v % 2 == 0 else [0.2, 0.8] for v in r.json()["instances"]])

    requests = [[v] for v in range(200)]
    p = await run(
        fake_model, proxy, tmp_path, production, shadow, requests, [v % 2 for v in range(200)],
        kind="probabilities",
    )  # fmt: skip
    async with p.session.get(p.url + "/report") as resp:
        report = await resp.json()
    [route] = report["routes"]
    [shadow_report_] = route["shadows"]
    figures = shadow_report_["probabilities"]
    production_log_loss = (-math.log(0.6) - math.log(0.4)) / 2
    shadow_log_loss = (-math.log(0.9) - math.log(0.8)) / 2
    assert figures["production_log_loss"] == pytest.approx(production_log_loss)
    assert figures["shadow_log_loss"] == pytest.approx(shadow_log_loss)
    assert figures["production_brier"] == pytest.approx((0.32 + 0.72) / 2)
    assert figures["shadow_brier"] == pytest.approx((0.02 + 0.08) / 2)
    log_loss = figures["log_loss"]
    assert (log_loss["requests"], log_loss["instances"]) == (200, 200)
    assert log_loss["advantage"] == pytest.approx(production_log_loss - shadow_log_loss)
    assert 0 < log_loss["low"] < log_loss["advantage"] < log_loss["high"]
    assert figures["brier"]["advantage"] == pytest.approx(0.52 - 0.05)
    assert figures["brier"]["low"] > 0
    by_bin = {
        b["low"]: (b["instances"], b["correct"]) for b in figures["calibration"] if b["instances"]
    }
    assert by_bin == {0.8: (100, 100), 0.9: (100, 100)}
    production_bins = {
        b["low"]: (b["instances"], b["correct"])
        for b in route["production_calibration"]
        if b["instances"]
    }
    assert production_bins == {0.6: (200, 100)}
    async with p.session.get(p.url + "/report.html") as resp:
        page = await resp.text()
    assert page.count('class="chart chart-reliability"') == 1
    assert "Log loss advantage" in page
    assert "log loss minus the shadow" in page


def test_the_verdict_never_contradicts_the_interval_it_prints() -> None:
    """An interval that excludes 0 is never printed next to "inconclusive", nor one that
    includes it next to "better" or "worse": both come from the same always-valid sequence.
    Checked on report after report along simulated paths, through build_report itself."""
    from loadtest.simulate import Classification
    from proxy.config import VerdictConfig
    from proxy.core.outcomes import RequestSum
    from proxy.report.build import Samples, build_report

    settings = VerdictConfig(min_labels=30)
    rng = np.random.default_rng(17)
    seen = set()
    for traffic in (
        Classification(theta=0.6),
        Classification(batch=5, correlation=0.5, theta=0.58),
    ):
        b, c, m = traffic.draw(rng, 3000)
        for t in range(100, 3000, 100):
            samples: list[tuple[str, dict[str, str], float]] = [
                ("shadowproxy_route_info", {"route": "/r", "kind": "classification",
                                            "production": "p"}, 1.0),
                ("shadowproxy_shadow_enqueued_total", {"route": "/r", "shadow": "s"}, float(t)),
            ]  # fmt: skip
            pair = {"route": "/r", "shadow": "s"}
            outcomes = {"production_only": b[:t].sum(), "shadow_only": c[:t].sum(),
                        "both_right": (m[:t] - b[:t] - c[:t]).sum(), "both_wrong": 0.0}  # fmt: skip
            for outcome, value in outcomes.items():
                samples.append(("shadowproxy_paired_outcomes_total", {**pair, "outcome": outcome},
                                float(value)))  # fmt: skip
            sums: dict[RequestSum, float] = {}
            for mi, d in zip(m[:t], c[:t] - b[:t], strict=True):
                for name, value in RequestSum.of(float(mi), float(d)).items():
                    sums[name] = sums.get(name, 0.0) + value
            for name, value in sums.items():
                samples.append(("shadowproxy_paired_request_sums_total", {**pair, "sum": name},
                                value))  # fmt: skip
            report = build_report(Samples(samples), settings, generated_at=0.0)
            [shadow] = report["routes"][0]["shadows"]
            verdict, low, high = (
                shadow["verdict"],
                shadow["quality"]["low"],
                shadow["quality"]["high"],
            )
            seen.add(verdict)
            if verdict == "better":
                assert low > 0, shadow["reason"]
            elif verdict == "worse":
                assert high < 0, shadow["reason"]
            elif verdict == "inconclusive" and low is not None:
                assert low <= 0 <= high, shadow["reason"]
                assert "not decided yet" in shadow["reason"]
    assert {"better", "inconclusive"} <= seen

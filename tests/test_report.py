"""The verdict end to end: labelled traffic through the proxy to two scripted models of known
accuracy, then /report, /report.html, the gauges, and `shadow-proxy report`."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints, is_typeddict

import orjson
import pytest
from aiohttp import web

from proxy.analysis.reload import reload_config
from proxy.config import VerdictConfig
from proxy.report.cli import format_table, report_from_prometheus
from proxy.report.model import Report
from tests.conftest import FakeModelFactory, ProxyFactory, Received, RunningProxy, Script, v1

ROUTE = "/v1/models/m:predict"
N = 300
# These tests judge accuracy; on a loaded test machine the fake shadow may well be slower than
# production, so the latency guardrail is set out of reach (its rule is tested below).
NO_LATENCY_GUARDRAIL = VerdictConfig(latency_margin=1.0)


def production(r: Received) -> Any:
    # Right (label = i) except on multiples of 5: 80% accurate.
    return v1([i + 1 if i % 5 == 0 else i for i in r.json()["instances"]])


def candidate(r: Received) -> Any:
    # Wrong only on multiples of 10: 90% accurate, and right wherever production is, but 0 mod 10.
    return v1([i + 1 if i % 10 == 0 else i for i in r.json()["instances"]])


async def labelled_traffic(
    fake_model: FakeModelFactory,
    proxy: ProxyFactory,
    tmp_path: Path,
    models: tuple[Script, Script] = (production, candidate),
    compare: str = "{kind: classification}",
    before: Callable[[RunningProxy], Awaitable[None]] | None = None,
) -> RunningProxy:
    """N single-instance requests i through production and the candidate, then label i for
    each, all joined. `before` runs once the proxy is up, before any traffic."""
    prod = await fake_model(models[0])
    shadow = await fake_model(models[1])
    p = await proxy(
        f"""
store: {{path: '{tmp_path / "p.db"}', flush_interval: 1ms}}
verdict: {{latency_margin: 100%}}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    compare: {compare}
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
    shadows: [{{name: cand, url: "{shadow.url}{ROUTE}"}}]
"""
    )
    if before is not None:
        await before(p)
    for i in range(N):
        status, _, _ = await p.post(ROUTE, {"instances": [i]}, headers={"X-Request-ID": f"r{i}"})
        assert status == 200
    await p.settled()
    labels = [{"request_id": f"r{i}", "label": i} for i in range(N)]
    status, _, body = await p.post("/labels", labels)
    assert status == 200
    assert orjson.loads(body)["counts"]["joined"] == N
    return p


async def test_report_gives_the_verdict_the_figures_and_the_gauges(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    p = await labelled_traffic(fake_model, proxy, tmp_path)
    async with p.session.get(p.url + "/report") as resp:
        assert resp.status == 200
        report = await resp.json()
    [route] = report["routes"]
    assert route["route"] == ROUTE
    assert route["kind"] == "classification"
    assert route["production_accuracy"]["labelled"] == N
    assert route["production_accuracy"]["correct"] == 240
    assert route["production_accuracy"]["value"] == pytest.approx(0.8)
    [shadow] = route["shadows"]
    assert shadow["shadow"] == "cand"
    assert shadow["accuracy"]["correct"] == 270
    assert shadow["disagreement"]["compared"] == N
    assert shadow["disagreement"]["disagreed"] == 30
    paired = shadow["paired"]
    assert {
        k: paired[k] for k in ("both_right", "production_only", "shadow_only", "both_wrong")
    } == {
        "both_right": 240,
        "production_only": 0,
        "shadow_only": 30,
        "both_wrong": 30,
    }
    assert paired["difference"] == pytest.approx(0.1)
    assert 0 < paired["low"] < 0.1 < paired["high"]
    assert paired["sequential_p"] < 0.05
    quality = shadow["quality"]
    assert (quality["method"], quality["requests"], quality["instances"]) == ("exact", N, N)
    assert quality["advantage"] == pytest.approx(0.1)
    assert 0 < quality["low"] < 0.1 < quality["high"]
    assert quality["p_value"] < quality["alpha"] == 0.025
    assert quality["decision"] == "better"
    assert shadow["verdict"] == "better"
    assert shadow["reason"].startswith("the shadow is better: accuracy advantage +10.0 points")
    assert shadow["errors"] == 0
    assert [g["name"] for g in shadow["guardrails"]] == [
        "error_rate",
        "slow_requests",
        "disagreement",
    ]
    assert not any(g["tripped"] for g in shadow["guardrails"])

    labels = {"route": ROUTE, "shadow": "cand"}
    assert p.value("shadowproxy_verdict", **labels) == 1
    assert p.value("shadowproxy_verdict_state", **labels, state="better") == 1
    assert p.value("shadowproxy_verdict_state", **labels, state="worse") == 0
    assert p.value("shadowproxy_verdict_sequential_p_value", **labels) == quality["p_value"]
    assert p.value("shadowproxy_verdict_difference_lower", **labels) == quality["low"]
    assert p.value("shadowproxy_verdict_difference_upper", **labels) == quality["high"]

    async with p.session.get(p.url + "/report.html") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        page = await resp.text()
    assert 'class="verdict verdict-better"' in page
    assert 'data-shadow="cand"' in page

    table = format_table(report)
    assert re.search(r"cand\s+better\s+10\.0%\s+90\.0%\s+\+10\.0", table)
    assert "[+" in table  # the always-valid sequence, on the advantage's scale


async def test_too_few_labels_is_insufficient_data(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(production)
    shadow = await fake_model(candidate)
    p = await proxy(
        f"""
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
    shadows: [{{name: cand, url: "{shadow.url}{ROUTE}"}}]
"""
    )
    await p.post(ROUTE, {"instances": [1]})
    await p.settled()
    report = p.state.reporter.report()
    [shadow] = report["routes"][0]["shadows"]
    assert shadow["verdict"] == "insufficient_data"
    assert shadow["reason"] == "0 labelled requests scored for both models; a verdict needs 100"
    assert p.value("shadowproxy_verdict", route=ROUTE, shadow="cand") == -0.5


async def test_report_command_reads_a_proxy_and_prometheus(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path, unused_tcp_port: int
) -> None:
    p = await labelled_traffic(fake_model, proxy, tmp_path)
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "report", "--url", p.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await done.communicate()
    assert done.returncode == 0, err
    assert re.search(rb"cand\s+better", out)

    # Prometheus's query API, answering `sum by (...) (increase(name[30d]))` (and the route
    # info's `sum by (...) (name)`) from the proxy's own samples as if two replicas had each
    # seen exactly the same traffic since they started.
    samples = [
        (s.name, s.labels, s.value) for family in p.registry.collect() for s in family.samples
    ]

    async def query(request: web.Request) -> web.Response:
        if request.query["query"] == "max(timestamp(shadowproxy_route_info))":
            at = [{"metric": {}, "value": [1700000000.5, "1700000000.5"]}]
            return web.json_response({"status": "success", "data": {"result": at}})
        assert request.query["time"] == "1700000000.5"
        found = re.fullmatch(
            r"(?:sum|max) by \(([^)]*)\) \("
            r"(?:increase\((\w+)\[30d\]\)|(shadowproxy_(?:route_info|shadow_info"
            r"|shadow_sample_ratio)))\)",
            request.query["query"],
        )
        assert found is not None
        by = [label.strip() for label in found[1].split(",")]
        wanted = found[2] or found[3]
        sums: dict[tuple[tuple[str, str], ...], float] = {}
        for name, labels, value in samples:
            if name == wanted:
                key = tuple((k, labels[k]) for k in by if k in labels)
                sums[key] = sums.get(key, 0.0) + 2 * value
        result = [{"metric": dict(k), "value": [0, str(v)]} for k, v in sums.items()]
        return web.json_response({"status": "success", "data": {"result": result}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        url = f"http://127.0.0.1:{unused_tcp_port}"
        fleet = await asyncio.to_thread(report_from_prometheus, url, NO_LATENCY_GUARDRAIL)
    finally:
        await runner.cleanup()
    [shadow] = fleet["routes"][0]["shadows"]
    assert shadow["paired"]["shadow_only"] == 60
    assert shadow["paired"]["n"] == 2 * N
    assert shadow["verdict"] == "better"


async def test_the_html_report_renders_in_headless_chromium(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    p = await labelled_traffic(fake_model, proxy, tmp_path)
    p.state.reporter.sample()  # a point of history, so the accuracy chart has something
    chromium = shutil.which("chromium")
    assert chromium is not None, "the test command installs Debian's chromium"
    with tempfile.TemporaryDirectory() as profile:
        args = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}",
        ]  # fmt: skip
        dom = await asyncio.to_thread(
            subprocess.run,
            [*args, "--dump-dom", p.url + "/report.html"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        shot = tmp_path / "report.png"
        await asyncio.to_thread(
            subprocess.run,
            [*args, f"--screenshot={shot}", "--window-size=1280,1600", p.url + "/report.html"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
    assert 'class="verdict verdict-better"' in dom.stdout
    assert dom.stdout.count('class="chart chart-accuracy"') == 1
    assert dom.stdout.count('class="chart chart-latency"') == 1
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("name", ["flagger-metric-template.yaml", "argo-analysis-template.yaml"])
def test_rollout_templates_query_metrics_the_proxy_exports(name: str) -> None:
    import yaml
    from prometheus_client import CollectorRegistry

    from proxy.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    exported = {s for family in registry.collect() for s in [family.name]}
    exported |= {f.name for f in registry.collect()}
    text = (Path(__file__).resolve().parents[1] / "configs" / "rollouts" / name).read_text()
    docs = list(yaml.safe_load_all(text))
    assert docs
    used = set(re.findall(r"\b(shadowproxy_\w+)\{", text))
    assert used
    assert used <= exported, used - exported


# -- the verdict's rules, without a proxy ------------------------------------------------------


def _quality(**overrides: Any) -> Any:
    quality = {
        "method": "exact",
        "requests": 500,
        "instances": 500,
        "advantage": 0.04,
        "low": 0.01,
        "high": 0.07,
        "p_value": 0.01,
        "alpha": 0.025,
        "margin": 0.01,
        "decision": "better",
    }
    return quality | overrides


def _guard(name: str, low: float, limit: float, tripped: bool = True) -> Any:
    return {
        "name": name,
        "value": low + 0.01,
        "low": low,
        "high": low + 0.02,
        "limit": limit,
        "alpha": 0.00833,
        "tripped": tripped,
    }


def _decide(
    kind: str = "classification", guardrails: Any = (), labelled: bool = True, **quality: Any
) -> tuple[str, str]:
    from proxy.report.build import decide

    return decide(
        VerdictConfig(max_disagreement=0.3),
        kind=kind,
        quality=_quality(**quality),
        guardrails=list(guardrails),
        labelled=labelled,
    )


def test_tripped_guardrails_make_it_worse_whatever_the_labels_say() -> None:
    assert _decide(guardrails=[_guard("error_rate", 0.03, 0.01)]) == (
        "worse",
        "the shadow fails more often than production: at least 3.0% more of its requests"
        " (always-valid bound, alpha 0.0083), above the 1.0% guardrail",
    )
    assert _decide(guardrails=[_guard("slow_requests", 0.05, 0.01)]) == (
        "worse",
        "the shadow is slower: at least 5.0% more of its requests are slower than production's"
        " p99 than production's own (always-valid bound, alpha 0.0083), above the 1.0% guardrail",
    )
    assert _decide(guardrails=[_guard("error_rate", 0.03, 0.01, tripped=False)])[0] == "better"
    # Disagreement judges only while labels are missing.
    disagreement = [_guard("disagreement", 0.42, 0.3)]
    assert _decide(guardrails=disagreement, labelled=True)[0] == "better"
    assert _decide(guardrails=disagreement, labelled=False, requests=0) == (
        "worse",
        "no verdict on labels yet, but the shadow disagrees with production on at least 42.0% of"
        " instances (always-valid bound, alpha 0.0083), above the 30% guardrail",
    )


def test_the_quality_decision_gives_the_verdict_and_its_reason() -> None:
    assert _decide() == (
        "better",
        "the shadow is better: accuracy advantage +4.0 points (always-valid 97.5% interval +1.0"
        " points to +7.0 points, exact test, p = 0.01)",
    )
    assert _decide(decision="worse", advantage=-0.04, low=-0.07, high=-0.01)[0] == "worse"
    assert _decide(decision="equivalent", advantage=0.0, low=-0.005, high=0.005)[1].startswith(
        "the shadow is as good as production within +-1.0 points: accuracy advantage +0.0"
    )
    assert _decide(decision=None, p_value=0.2, low=-0.01) == (
        "inconclusive",
        "not decided yet: accuracy advantage +4.0 points (always-valid 97.5% interval -1.0"
        " points to +7.0 points, exact test, p = 0.2)",
    )
    assert _decide(decision=None, low=None, high=None, requests=120, method="requests") == (
        "inconclusive",
        "not enough labelled requests for the test on requests yet (120)",
    )
    assert _decide(requests=99) == (
        "insufficient_data",
        "99 labelled requests scored for both models; a verdict needs 100",
    )
    assert _decide(kind="regression", advantage=0.3, low=0.1, high=0.5, method="requests") == (
        "better",
        "the shadow is better: mean absolute error advantage +0.3 (always-valid 97.5% interval"
        " +0.1 to +0.5, test on requests, p = 0.01)",
    )


async def test_a_regression_route_reports_errors_and_a_paired_verdict(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    def off_by_one(r: Received) -> Any:
        return v1([i + 1.0 for i in r.json()["instances"]])

    def closer(r: Received) -> Any:
        return v1([i + (0.25 if i % 2 == 0 else 0.75) for i in r.json()["instances"]])

    p = await labelled_traffic(
        fake_model, proxy, tmp_path, (off_by_one, closer), "{kind: regression, tolerance: 0.1}"
    )
    n = N
    report = p.state.reporter.report()
    [route] = report["routes"]
    assert route["kind"] == "regression"
    assert route["production_error"] == {"labelled": n, "mae": 1.0, "rmse": 1.0}
    [s] = route["shadows"]
    assert s["error"]["mae"] == pytest.approx(0.5)
    assert s["error"]["rmse"] == pytest.approx((0.25**2 / 2 + 0.75**2 / 2) ** 0.5)
    assert s["disagreement"]["disagreed"] == n  # every shadow answer is beyond the 0.1 tolerance
    regression = s["regression"]
    assert regression["n"] == n
    assert regression["advantage"] == pytest.approx(0.5)  # up is the shadow doing better
    assert 0 < regression["low"] < 0.5 < regression["high"]
    assert s["verdict"] == "better"
    assert s["reason"].startswith("the shadow is better: mean absolute error advantage +0.5")
    # The gauges carry the shadow's advantage: production's error minus the shadow's.
    quality = s["quality"]
    assert quality["advantage"] == pytest.approx(0.5)
    assert 0 < quality["low"] < 0.5 < quality["high"]
    assert quality["margin"] == pytest.approx(0.01)  # 1% of production's MAE of 1.0
    labels = {"route": ROUTE, "shadow": "cand"}
    assert p.value("shadowproxy_verdict", **labels) == 1
    assert p.value("shadowproxy_verdict_difference_lower", **labels) == quality["low"]
    assert p.value("shadowproxy_verdict_difference_upper", **labels) == quality["high"]


# -- the model: what build_report makes is what proxy/report/model.py says -----------------------


def assert_shape(value: Any, hint: Any, at: str = "report") -> None:
    """`value` is of type `hint` at every level: a TypedDict's keys exactly, every item of a list,
    null only where the model allows it, and leaves of their very type (an int is no float)."""
    if is_typeddict(hint):
        assert isinstance(value, dict), at
        required, optional = hint.__required_keys__, hint.__optional_keys__
        assert required <= value.keys() <= required | optional, (at, value.keys() ^ required)
        for key, item in get_type_hints(hint).items():
            if key in value:
                assert_shape(value[key], item, f"{at}.{key}")
    elif get_origin(hint) is list:
        assert isinstance(value, list), at
        [item] = get_args(hint)
        for i, element in enumerate(value):
            assert_shape(element, item, f"{at}[{i}]")
    elif isinstance(hint, types.UnionType):
        [member] = [a for a in get_args(hint) if a is not type(None)]
        if value is not None:
            assert_shape(value, member, at)
    else:
        assert type(value) is hint, (at, type(value))


@pytest.mark.parametrize(
    "compare", ["{kind: classification}", "{kind: regression, tolerance: 0.1}"]
)
async def test_a_built_report_has_the_shape_of_the_model(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path, compare: str
) -> None:
    p = await labelled_traffic(fake_model, proxy, tmp_path, compare=compare)
    p.state.reporter.sample()
    report = p.state.reporter.report()
    [shadow] = report["routes"][0]["shadows"]
    # Every level is there to be checked: a history point, and the regression figures or null.
    assert len(shadow["history"]) == 1
    assert (shadow["regression"] is not None) == ("regression" in compare)
    assert_shape(report, Report)


async def test_a_reload_resizes_the_history_keeping_its_newest_points(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, cand = await fake_model(production), await fake_model(candidate)
    path = tmp_path / "proxy.yaml"

    def text(points: int) -> str:
        return f"""
verdict: {{history_points: {points}, history_interval: 1h}}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
    shadows: [{{name: cand, url: "{cand.url}{ROUTE}"}}]
"""

    p = await proxy(text(3), path)
    reporter = p.state.reporter

    def times() -> list[float]:
        [shadow] = reporter.report()["routes"][0]["shadows"]
        return [point["t"] for point in shadow["history"]]

    async def sampled(times_: int, then_points: int) -> list[float]:
        """Sample `times_` times, then reload with history_points `then_points`."""
        for _ in range(times_):
            reporter.sample()
        before = times()
        await asyncio.to_thread(path.write_text, text(then_points))
        assert await reload_config(p.state)
        return before

    kept = await sampled(5, 10)
    assert len(kept) == 3
    assert times() == kept  # the same three, room for ten now
    ten = await sampled(9, 2)
    assert len(ten) == 10
    assert times() == ten[-2:]  # the newest two

"""`shadow-proxy report` as a user runs it: a real `python -m proxy` process against a real
aiohttp server on port 0 serving a proxy's /report (or Prometheus's query API), its exact
output and exit status. The reports served are built by `report_of` below: every key of
proxy/report/model.py, checked against the model by test_report.assert_shape."""

from __future__ import annotations

import asyncio
import copy
import os
import pty
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy.core.outcomes import Verdict
from proxy.report.model import Report, RouteReport, ShadowReport
from tests.conftest import free_port, read_terminal
from tests.test_report import assert_shape

ROUTE = "/v1/models/m:predict"
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]


# -- report dicts for tests --------------------------------------------------------------------


def _latency(count: int, p99: float | None) -> dict[str, Any]:
    return {"count": count, "p50": p99, "p95": p99, "p99": p99}


def _score(advantage: float | None, low: float | None, high: float | None) -> dict[str, Any]:
    return {
        "requests": 300,
        "instances": 300,
        "advantage": advantage,
        "low": low,
        "high": high,
        "p_value": 0.01,
    }


def shadow_of(
    name: str = "cand",
    kind: str = "classification",
    verdict: Verdict = Verdict.BETTER,
    *,
    requests: int = 300,
) -> ShadowReport:
    """A shadow of a route of `kind` that saw `requests` single-instance requests, all labelled
    and paired: 90% accurate against production's 80%, its advantage +10 points (regression:
    MAE 1.0 against production's 1.5, advantage +0.5). Change what a test needs in place."""
    seen = requests > 0
    regression = kind == "regression"
    low, high = (0.3, 0.7) if regression else (0.04, 0.16)
    advantage = (0.5 if regression else 0.1) if seen else None
    shadow: dict[str, Any] = {
        "shadow": name,
        "role": "candidate",
        "sample": 1.0,
        "verdict": verdict,
        "reason": (
            "0 labelled requests scored for both models; a verdict needs 100"
            if not seen
            else "the shadow is better: mean absolute error advantage +0.5"
            if regression
            else "the shadow is better: accuracy advantage +10.0 points"
        ),
        "requests": requests,
        "errors": 0,
        "error_rate": 0.0 if seen else None,
        "latency": _latency(requests, 0.0031 if seen else None),
        "latency_counts": [requests, 0, 0, 0, 0, 0, 0, 0, 0],
        "disagreement": {
            "compared": requests,
            "disagreed": requests // 10,
            "value": 0.1 if seen else None,
            "low": 0.07 if seen else None,
            "high": 0.14 if seen else None,
        },
        "accuracy": {
            "labelled": 0 if regression else requests,
            "correct": 0 if regression else requests * 9 // 10,
            "value": 0.9 if seen and not regression else None,
            "low": 0.86 if seen and not regression else None,
            "high": 0.93 if seen and not regression else None,
        },
        "error": {
            "labelled": requests if regression else 0,
            "mae": 1.0 if seen and regression else None,
            "rmse": 1.25 if seen and regression else None,
        },
        "quality": {
            "method": "requests" if regression else "exact",
            "requests": requests,
            "instances": requests,
            "advantage": advantage,
            "low": low if seen else None,
            "high": high if seen else None,
            "p_value": 0.0002 if seen else 1.0,
            "alpha": 0.025,
            "margin": 0.015 if regression else 0.01,
            "decision": verdict if seen else None,
        },
        "guardrails": [
            {
                "name": guardrail,
                "value": None,
                "low": None,
                "high": None,
                "limit": 0.01,
                "alpha": 0.0083,
                "tripped": False,
            }
            for guardrail in ("error_rate", "slow_requests", "disagreement")
        ],
        "diagnostics": {
            "paired_requests": requests,
            "lost_pairs": 0,
            "unscorable_instances": 0,
            "coverage": 1.0 if seen else None,
            "effect": 0.01,
            "labels_needed": 900 if seen else None,
        },
        "probabilities": None,
        "paired": {
            "both_right": 0,
            "production_only": 0,
            "shadow_only": 0,
            "both_wrong": 0,
            "n": 0,
            "difference": None,
            "low": None,
            "high": None,
            "mcnemar_p": 1.0,
            "sequential_p": 1.0,
            "cs_low": None,
            "cs_high": None,
        },
        "regression": None,
        "history": [],
        "noise_floor": None,
        "segments": [],
        "drilldown": {"capture": False, "exchanges": [], "flips": [], "largest_differences": []},
    }
    if regression:
        shadow["regression"] = {
            "n": requests,
            "advantage": advantage,
            "low": 0.35,
            "high": 0.65,
            "sequential_p": 0.001,
            "cs_low": 0.3,
            "cs_high": 0.7,
        }
    if kind == "probabilities":
        shadow["probabilities"] = {
            "production_log_loss": 0.5,
            "shadow_log_loss": 0.4 if seen else None,
            "production_brier": 0.3,
            "shadow_brier": 0.25 if seen else None,
            "log_loss": _score(0.1, 0.02, 0.18) if seen else _score(None, None, None),
            "brier": _score(0.05, -0.01, 0.11) if seen else _score(None, None, None),
            "calibration": [],
        }
    return shadow  # type: ignore[return-value]


def route_of(kind: str = "classification", *shadows: ShadowReport) -> RouteReport:
    """A route of `kind` with `shadows` (one default shadow of that kind if none), production
    `prod` 80% accurate (regression: MAE 1.5, RMSE 2.0) on 300 labelled instances."""
    regression = kind == "regression"
    route: dict[str, Any] = {
        "route": ROUTE,
        "kind": kind,
        "production": "prod",
        "production_latency": _latency(300, 0.0025),
        "production_accuracy": {
            "labelled": 0 if regression else 300,
            "correct": 0 if regression else 240,
            "value": None if regression else 0.8,
            "low": None if regression else 0.75,
            "high": None if regression else 0.84,
        },
        "production_error": {
            "labelled": 300 if regression else 0,
            "mae": 1.5 if regression else None,
            "rmse": 2.0 if regression else None,
        },
        "latency_buckets": BUCKETS,
        "production_latency_counts": [300, 0, 0, 0, 0, 0, 0, 0, 0],
        "production_calibration": [],
        "diagnostics": {
            "recorded_requests": 360,
            "labelled_requests": 300,
            "labelled_instances": 600,
            "coverage": 300 / 360,
            "label_delay_p50": 2.0,
            "label_delay_p95": 2.5,
            "classes": [],
            "selection_bias_p": None,
            "warnings": [],
        },
        "problems": [],
        "shadows": list(shadows) or [shadow_of(kind=kind)],
    }
    return route  # type: ignore[return-value]


def report_of(*routes: RouteReport) -> Report:
    report: Report = {
        "generated_at": 1700000000.0,
        "config_hash": "bf20d978f062",
        "alpha": 0.05,
        "routes": list(routes),
    }
    assert_shape(report, Report)
    return copy.deepcopy(report)


def test_the_helper_builds_reports_of_the_models_shape() -> None:
    for kind in ("classification", "regression", "probabilities"):
        report_of(route_of(kind, shadow_of(kind=kind), shadow_of("new", kind, requests=0)))


# -- a proxy's /report, and the command ---------------------------------------------------------


@dataclass
class Done:
    code: int
    out: str
    err: str


async def run_cli(*args: str, stdout: int = subprocess.PIPE) -> Done:
    """`python -m proxy ARGS` to its end: exit status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *args, stdout=stdout, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Done(proc.returncode, (out or b"").decode(), err.decode())


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
def serve(aiohttp_server: AiohttpServer) -> Serve:
    """Serve `report` at /report (or answer `status` with `body`) on 127.0.0.1:0; the URL is
    returned without its scheme, as a user may well type it."""

    async def start(
        report: Report | None = None, status: int = 200, body: bytes | None = None
    ) -> str:
        async def answer(request: web.Request) -> web.Response:
            if body is not None or report is None:
                return web.Response(status=status, body=body, content_type="application/json")
            return web.json_response(report, status=status)

        app = web.Application()
        app.router.add_get("/report", answer)
        server = await aiohttp_server(app, host="127.0.0.1")
        return f"127.0.0.1:{server.port}"

    return start


def a_route(kind: str) -> Report:
    """A route of `kind` with a shadow that is better and one with no traffic yet."""
    return report_of(
        route_of(
            kind,
            shadow_of("cand", kind),
            shadow_of("new", kind, Verdict.INSUFFICIENT_DATA, requests=0),
        )
    )


TABLES = {
    "classification": """\
/v1/models/m:predict  (classification; production prod: accuracy 80.0% on 300 labelled instances, p99 2.5 ms)
  labels: 300 of 360 recorded requests labelled (83.3%), 600 labelled instances; label delay p50 2 s, p95 2.5 s
  shadow  verdict            disagree  accuracy  advantage, points (+ = shadow better)       p  labelled req  requests  p99 ms  errors
  ------------------------------------------------------------------------------------------------------------------------------------
  cand    better                10.0%     90.0%                    +10.0 [+4.0, +16.0]  <0.001           300       300     3.1    0.0%
  new     insufficient_data         -         -                         no traffic yet       -             0         0       -       -
  cand: the shadow is better: accuracy advantage +10.0 points
  new: no traffic yet (insufficient_data: 0 labelled requests scored for both models; a verdict needs 100)

""",  # noqa: E501
    "regression": """\
/v1/models/m:predict  (regression; production prod: MAE 1.5, RMSE 2 on 300 labelled instances, p99 2.5 ms)
  labels: 300 of 360 recorded requests labelled (83.3%), 600 labelled instances; label delay p50 2 s, p95 2.5 s
  shadow  verdict            disagree  MAE  RMSE  MAE advantage (+ = shadow better)       p  labelled req  requests  p99 ms  errors
  ---------------------------------------------------------------------------------------------------------------------------------
  cand    better                10.0%    1  1.25                  +0.5 [+0.3, +0.7]  <0.001           300       300     3.1    0.0%
  new     insufficient_data         -    -     -                     no traffic yet       -             0         0       -       -
  cand: the shadow is better: mean absolute error advantage +0.5
  new: no traffic yet (insufficient_data: 0 labelled requests scored for both models; a verdict needs 100)

""",  # noqa: E501
    "probabilities": """\
/v1/models/m:predict  (probabilities; production prod: accuracy 80.0% on 300 labelled instances, log loss 0.5, Brier 0.3, p99 2.5 ms)
  labels: 300 of 360 recorded requests labelled (83.3%), 600 labelled instances; label delay p50 2 s, p95 2.5 s
  shadow  verdict            disagree  accuracy  log loss  Brier  advantage, points (+ = shadow better)       p  labelled req  requests  p99 ms  errors
  -----------------------------------------------------------------------------------------------------------------------------------------------------
  cand    better                10.0%     90.0%       0.4   0.25                    +10.0 [+4.0, +16.0]  <0.001           300       300     3.1    0.0%
  new     insufficient_data         -         -         -      -                         no traffic yet       -             0         0       -       -
  cand: the shadow is better: accuracy advantage +10.0 points
    log loss advantage +0.1 [+0.02, +0.18], Brier advantage +0.05 [-0.01, +0.11] (+ = shadow better; on 300 labelled requests)
  new: no traffic yet (insufficient_data: 0 labelled requests scored for both models; a verdict needs 100)

""",  # noqa: E501
}


async def test_a_url_without_a_scheme_is_taken_as_http(serve: Serve) -> None:
    url = await serve(a_route("classification"))
    done = await run_cli("report", "--url", url)
    assert (done.code, done.out, done.err) == (0, TABLES["classification"], "")
    with_scheme = await run_cli("report", "--url", f"http://{url}/")
    assert (with_scheme.code, with_scheme.out) == (0, TABLES["classification"])


@pytest.mark.parametrize("kind", TABLES)
async def test_each_route_is_printed_with_the_figures_of_its_kind(serve: Serve, kind: str) -> None:
    # Regression: MAE and RMSE, the advantage in the target's units, never an accuracy.
    # Probabilities: accuracy, and the log loss and Brier score with their advantages.
    # Every advantage is the shadow's: + = shadow better, as the header says. A shadow with no
    # traffic yet shows no figure but its counts, and says so.
    done = await run_cli("report", "--url", await serve(a_route(kind)))
    assert (done.code, done.out, done.err) == (0, TABLES[kind], "")


async def test_a_shadow_that_does_worse_shows_a_negative_advantage(serve: Serve) -> None:
    worse = shadow_of("cand", "regression", Verdict.WORSE)
    worse["quality"].update(advantage=-0.5, low=-0.7, high=-0.3)
    worse["error"].update(mae=2.0, rmse=2.5)
    done = await run_cli("report", "--url", await serve(report_of(route_of("regression", worse))))
    assert done.code == 0
    [row] = [line for line in done.out.splitlines() if line.startswith("  cand ")]
    assert row.split() == [
        "cand", "worse", "10.0%", "2", "2.5", "-0.5", "[-0.7,", "-0.3]", "<0.001", "300", "300",
        "3.1", "0.0%",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("p_value", "shown"), [(0.0, "<0.001"), (5e-324, "<0.001"), (0.0123, "0.0123"), (1.0, "1")]
)
async def test_a_p_value_is_never_printed_as_a_bare_0(
    serve: Serve, p_value: float, shown: str
) -> None:
    shadow = shadow_of()
    shadow["quality"]["p_value"] = p_value
    done = await run_cli(
        "report", "--url", await serve(report_of(route_of("classification", shadow)))
    )
    [row] = [line for line in done.out.splitlines() if line.startswith("  cand ")]
    assert row.split()[7] == shown  # after the advantage and its interval


PROBLEM = (
    "production's answers held no predictions the route could read: 30 of 300 compared answers"
    " (10%); nothing is compared for them"
)


async def test_problems_come_before_the_shadows_in_red_only_on_a_terminal(serve: Serve) -> None:
    route = route_of()
    route["problems"] = [PROBLEM, "latest: no output named 'predict'"]
    url = await serve(report_of(route))
    done = await run_cli("report", "--url", url)
    lines = done.out.splitlines()
    assert lines[2:5] == [
        f"  PROBLEM: {PROBLEM}",
        "  PROBLEM: latest: no output named 'predict'",
        "  shadow  verdict  disagree  accuracy  advantage, points (+ = shadow better)       p"
        "  labelled req  requests  p99 ms  errors",
    ]
    assert "\x1b" not in done.out  # a pipe: no colour

    code, out = await asyncio.to_thread(run_on_a_terminal, "report", "--url", url)
    assert code == 0
    assert out.splitlines()[2:4] == [
        f"  \x1b[1;31mPROBLEM: {PROBLEM}\x1b[0m",
        "  \x1b[1;31mPROBLEM: latest: no output named 'predict'\x1b[0m",
    ]
    code, out = await asyncio.to_thread(run_on_a_terminal, "report", "--url", url, no_color=True)
    assert "\x1b" not in out


def run_on_a_terminal(*args: str, no_color: bool = False) -> tuple[int, str]:
    """`python -m proxy ARGS` with its stdout on a pseudo-terminal: exit status and output."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = "1"
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "proxy", *args], stdout=secondary, stderr=subprocess.PIPE, env=env
    ) as proc:
        os.close(secondary)
        out = read_terminal(primary)
        assert proc.stderr is not None
        assert proc.stderr.read() == b""
        code = proc.wait(timeout=30)
    return code, out.decode().replace("\r\n", "\n")


async def test_counts_say_requests_or_instances(serve: Serve) -> None:
    route = route_of()
    route["diagnostics"].update(
        recorded_requests=1, labelled_requests=1, labelled_instances=20, coverage=1.0
    )
    route["production_accuracy"].update(labelled=1)
    done = await run_cli("report", "--url", await serve(report_of(route)))
    lines = done.out.splitlines()
    assert "production prod: accuracy 80.0% on 1 labelled instance, p99 2.5 ms" in lines[0]
    assert lines[1] == (
        "  labels: 1 of 1 recorded request labelled (100.0%), 20 labelled instances;"
        " label delay p50 2 s, p95 2.5 s"
    )


async def test_a_route_without_recording_says_where_labels_come_from(serve: Serve) -> None:
    route = route_of()
    route["diagnostics"].update(
        recorded_requests=0, labelled_requests=0, labelled_instances=0, coverage=None,
        label_delay_p50=None, label_delay_p95=None,
    )  # fmt: skip
    done = await run_cli("report", "--url", await serve(report_of(route)))
    assert done.out.splitlines()[1] == (
        "  labels: no request recorded for labels yet (routes[].record)"
    )


async def test_a_route_without_shadows_keeps_its_figures_and_warnings(serve: Serve) -> None:
    route = route_of()
    route["shadows"] = []
    route["diagnostics"]["warnings"] = ["labels arrive for some classes more than for others"]
    done = await run_cli("report", "--url", await serve(report_of(route)))
    assert done.out.splitlines()[2:] == [
        "  no shadows configured",
        "  warning: labels arrive for some classes more than for others",
        "",
    ]


async def test_no_routes_yet(serve: Serve) -> None:
    done = await run_cli("report", "--url", await serve(report_of()))
    assert (done.code, done.out, done.err) == (0, "no routes reported yet\n", "")


# -- where the report comes from: errors, and what --url cannot take ----------------------------


async def test_an_http_error_is_one_line_naming_the_url_and_the_status(serve: Serve) -> None:
    url = await serve(status=404, body=b'{"error": "no route matches /report"}')
    done = await run_cli("report", "--url", url)
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy report: cannot get http://{url}/report: HTTP 404 Not Found:"
        " no route matches /report\n"
    )
    url = await serve(status=503, body=b"")
    done = await run_cli("report", "--url", url)
    assert (done.code, done.out, done.err) == (
        1,
        "",
        f"shadow-proxy report: cannot get http://{url}/report: HTTP 503 Service Unavailable\n",
    )


async def test_a_proxy_that_is_not_there_is_one_line_too() -> None:
    port = free_port()
    done = await run_cli("report", "--url", f"127.0.0.1:{port}")
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy report: cannot get http://127.0.0.1:{port}/report: connection refused"
        " (is it running, and on that port?)\n"
    )


async def test_an_answer_that_is_not_a_report_says_so(serve: Serve) -> None:
    url = await serve(body=b"<html>Grafana</html>")
    done = await run_cli("report", "--url", url)
    assert (done.code, done.err) == (
        1,
        f"shadow-proxy report: cannot read http://{url}/report: the answer is not JSON"
        " (it starts b'<html>Grafana</html>')\n",
    )
    url = await serve(body=b'{"status": "success"}')
    done = await run_cli("report", "--url", url)
    assert (done.code, done.err) == (
        1,
        f"shadow-proxy report: cannot read http://{url}/report: it is not a shadow-proxy report"
        f" (no 'routes'); is http://{url} the proxy's own port?\n",
    )


@pytest.fixture
def prometheus(aiohttp_server: AiohttpServer) -> Callable[..., Awaitable[tuple[str, list[str]]]]:
    """A Prometheus query API on 127.0.0.1:0 answering every query with no series (or `status`
    with `error`): its address without a scheme, and the queries it was asked."""

    async def start(status: int = 200, error: str | None = None) -> tuple[str, list[str]]:
        asked: list[str] = []

        async def query(request: web.Request) -> web.Response:
            asked.append(request.query["query"])
            if error is not None:
                doc = {"status": "error", "errorType": "bad_data", "error": error}
                return web.json_response(doc, status=status)
            return web.json_response({"status": "success", "data": {"result": []}})

        app = web.Application()
        app.router.add_get("/api/v1/query", query)
        server = await aiohttp_server(app, host="127.0.0.1")
        return f"127.0.0.1:{server.port}", asked

    return start


async def test_a_prometheus_url_without_a_scheme_is_taken_as_http(
    prometheus: Callable[..., Awaitable[tuple[str, list[str]]]],
) -> None:
    url, asked = await prometheus()
    done = await run_cli("report", "--prometheus", url, "--since", "7d", "--alpha", "1%")
    assert (done.code, done.out, done.err) == (0, "no routes reported yet\n", "")
    assert asked[0] == "max(timestamp(shadowproxy_route_info))"
    assert "sum by (route, kind, production) (shadowproxy_route_info)" in asked
    assert all("[7d]" in q for q in asked if "increase(" in q)


async def test_a_prometheus_error_names_the_query_and_what_prometheus_said(
    prometheus: Callable[..., Awaitable[tuple[str, list[str]]]],
) -> None:
    url, _ = await prometheus(status=422, error="query timed out in expression evaluation")
    done = await run_cli("report", "--prometheus", url)
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy report: cannot get http://{url}/api/v1/query?query="
        "max(timestamp(shadowproxy_route_info)): HTTP 422 Unprocessable Entity: query timed out"
        " in expression evaluation\n"
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ["--alpha", "0.01"],
            "--alpha applies with --prometheus only: with --url the proxy decides with its own"
            " verdict.alpha (the `verdict:` section of its config; the report's JSON shows it)",
        ),
        (
            ["--min-labels", "50"],
            "--min-labels applies with --prometheus only: with --url the proxy decides with its"
            " own verdict.min_labels (the `verdict:` section of its config)",
        ),
        (
            ["--since", "7d"],
            "--since applies with --prometheus only: with --url the proxy counts everything"
            " since it started",
        ),
    ],
)
async def test_what_only_prometheus_takes_is_refused_with_url(
    serve: Serve, option: list[str], message: str
) -> None:
    done = await run_cli("report", "--url", await serve(a_route("classification")), *option)
    assert (done.code, done.out) == (2, "")
    assert done.err.splitlines()[-1] == f"shadow-proxy report: error: {message}"


BAD_ARGUMENTS = {
    "--url: not an http:// or https:// URL: 'ftp://proxy:8080'": ["--url", "ftp://proxy:8080"],
    "--url: not a valid URL: 'proxy:80a' (Port could not be cast to integer value as '80a')": [
        "--url",
        "proxy:80a",
    ],
    "--alpha: must be between 0 and 0.5, like 0.05 or 5% (got '0.7')": [
        *("--prometheus", "p:9090", "--alpha", "0.7"),
    ],
    "--since: expected a PromQL duration such as 30d, 12h or 1h30m (got '30 days')": [
        *("--prometheus", "p:9090", "--since", "30 days"),
    ],
    "--min-labels: must be a whole number of at least 1 (got '0')": [
        *("--prometheus", "p:9090", "--min-labels", "0"),
    ],
    "--fail-on: unknown verdict 'wrose' (choose from better, equivalent, inconclusive,"
    " insufficient_data, worse)": ["--url", "p:8080", "--fail-on", "wrose"],
}


@pytest.mark.parametrize(("message", "args"), BAD_ARGUMENTS.items())
async def test_bad_arguments_are_usage_errors(message: str, args: list[str]) -> None:
    done = await run_cli("report", *args)
    assert (done.code, done.out) == (2, "")
    assert done.err.splitlines()[-1] == f"shadow-proxy report: error: argument {message}"


# -- --fail-on: the exit status follows the verdicts --------------------------------------------


def two_shadows() -> Report:
    worse = shadow_of("cand-a", verdict=Verdict.WORSE)
    worse["quality"].update(advantage=-0.1, low=-0.16, high=-0.04)
    return report_of(route_of("classification", worse, shadow_of("cand-b", verdict=Verdict.BETTER)))


@pytest.mark.parametrize(
    ("fail_on", "code", "failing"),
    [
        ([], 0, []),
        (["--fail-on", "worse"], 3, ["cand-a on /v1/models/m:predict is worse (--fail-on worse)"]),
        (["--fail-on", "inconclusive,insufficient_data"], 0, []),
        (
            ["--fail-on", "worse,better"],
            3,
            [
                "cand-a on /v1/models/m:predict is worse (--fail-on better,worse)",
                "cand-b on /v1/models/m:predict is better (--fail-on better,worse)",
            ],
        ),
        (
            ["--fail-on", "inconclusive", "--fail-on", "better"],
            3,
            ["cand-b on /v1/models/m:predict is better (--fail-on better,inconclusive)"],
        ),
    ],
)
async def test_fail_on_exits_3_when_a_verdict_is_one_of_them(
    serve: Serve, fail_on: list[str], code: int, failing: list[str]
) -> None:
    url = await serve(two_shadows())
    done = await run_cli("report", "--url", url, *fail_on)
    assert done.code == code
    assert done.out.startswith("/v1/models/m:predict  (classification;")  # printed all the same
    assert done.err.splitlines() == [f"shadow-proxy report: {line}" for line in failing]
    as_json = await run_cli("report", "--url", url, "--json", *fail_on)
    assert as_json.code == code


async def test_fail_on_is_in_the_help() -> None:
    done = await run_cli("report", "--help")
    assert done.code == 0
    assert "--fail-on VERDICTS" in done.out
    assert "exit 3 (after printing) when any shadow's verdict is" in " ".join(done.out.split())
    assert "3  a shadow's verdict is one of --fail-on's" in done.out


# -- a reader that goes away (`| head -1`) -------------------------------------------------------


def closed_pipe() -> int:
    """The write end of a pipe whose reader has already gone: every write to it fails."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize(("fail_on", "code"), [([], 0), (["--fail-on", "worse"], 3)])
async def test_a_report_into_a_closed_pipe_ends_quietly(
    serve: Serve, fail_on: list[str], code: int
) -> None:
    url = await serve(two_shadows())
    write = closed_pipe()
    try:
        done = await run_cli("report", "--url", url, *fail_on, stdout=write)
    finally:
        os.close(write)
    assert done.code == code  # its own status, as if the reader had read it all
    failing = ["cand-a on /v1/models/m:predict is worse (--fail-on worse)"] if fail_on else []
    assert done.err.splitlines() == [f"shadow-proxy report: {line}" for line in failing]


async def test_help_into_a_closed_pipe_ends_quietly() -> None:
    write = closed_pipe()
    try:
        done = await run_cli("report", "--help", stdout=write)
    finally:
        os.close(write)
    assert (done.code, done.err) == (0, "")

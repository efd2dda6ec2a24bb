"""No silent failures (issue 14): a wrong `output` name, an unreachable production, a shadow that
fails, each logged once per period with its cause, counted, and shown where an operator looks
(/readyz?verbose, /report); shadows with no traffic yet listed; client requests counted."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from proxy.logs import Throttled
from tests.conftest import Answer, FakeModelFactory, ProxyFactory, Received, free_port

N = 12


def _oip(request: Received) -> Answer:
    """A model server whose only output is named `predict`."""
    rows = request.json()["inputs"][0]["data"]
    out = {"name": "predict", "shape": [len(rows)], "datatype": "INT64", "data": rows}
    return Answer(body=orjson.dumps({"model_name": "m", "outputs": [out]}))


def _v2(rows: list[int]) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [len(rows)], "datatype": "INT64", "data": rows}]}


async def test_a_wrong_output_name_is_loud_logged_counted_ready_detail_and_report(
    fake_model: FakeModelFactory,
    proxy: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING, logger="proxy.analysis.problems")
    prod = await fake_model(_oip)
    shadow = await fake_model(_oip)
    p = await proxy(
        f"""
store: {{backend: sqlite, path: "{tmp_path / "predictions.db"}"}}
routes:
  - match: /v2/models/m/infer
    protocol: open-inference-v2
    output: predicted_price
    record: 100%
    production: {{name: m-prod, url: "{prod.url}/v2/models/m/infer"}}
    shadows:
      - {{name: m-next, url: "{shadow.url}/v2/models/m/infer"}}
"""
    )
    for i in range(N):
        status, _, _ = await p.post("/v2/models/m/infer", _v2([i]))
        assert status == 200  # production is served all the same
    await p.settled()

    route = "/v2/models/m/infer"
    assert p.value(
        "shadowproxy_comparisons_total", route=route, shadow="m-next",
        result="production_unparseable",
    ) == N  # fmt: skip
    assert (
        p.value(
            "shadowproxy_recording_dropped_total", route=route, kind="record", reason="unreadable"
        )
        == N
    )
    detail = "output 'predicted_price' not among outputs ['predict']"
    # One line per route, model and kind of problem a minute, naming what was found instead.
    lines = [r for r in caplog.records if r.name == "proxy.analysis.problems"]
    found = sorted((r.route, r.model, r.problem, r.detail) for r in lines)  # type: ignore[attr-defined]
    assert found == [
        (route, "m-prod", "production_unparseable", detail),
        (route, "m-prod", "unreadable", detail),
    ]
    assert all(r.levelno == logging.WARNING for r in lines)

    async with p.session.get(p.url + "/readyz?verbose") as resp:
        assert resp.status == 200
        ready = await resp.json()
    assert ready["status"] == "ready"
    assert sorted(
        (x["problem"], x["model"], x["detail"], x["count"]) for x in ready["problems"]
    ) == [
        ("production_unparseable", "m-prod", detail, N),
        ("unreadable", "m-prod", detail, N),
    ]
    async with p.session.get(p.url + "/readyz") as resp:  # what a kubelet probes: unchanged
        assert (resp.status, await resp.read()) == (200, b'{"status":"ready"}')

    async with p.session.get(p.url + "/report") as resp:
        report = await resp.json()
    problems = report["routes"][0]["problems"]
    assert problems[:2] == [
        f"production's answers held no predictions the route could read: {N} of {N} compared"
        " answers (100%); nothing is compared for them",
        f"production's answers were not recorded: {N} of {N} answers to record (100%); they held"
        " no predictions the route could read, so their labels will be unknown_id",
    ]
    assert sorted(problems[2:]) == [
        f"latest: m-prod: {detail} (production_unparseable, {N} since start)",
        f"latest: m-prod: {detail} (unreadable, {N} since start)",
    ]
    async with p.session.get(p.url + "/report.html") as resp:
        page = await resp.text()
    assert "nothing is compared for them" in page


async def test_production_failures_are_logged_with_their_cause_and_counted(
    proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="proxy.front.hot_path")
    closed = free_port()  # nothing listens there
    p = await proxy(
        f"""
routes:
  - match: /refused
    protocol: kserve-v1
    production: {{name: down, url: "http://127.0.0.1:{closed}/v1/models/m:predict"}}
  - match: /dns
    protocol: kserve-v1
    production: {{name: nowhere, url: "http://no-such-host.invalid/v1/models/m:predict"}}
"""
    )
    for _ in range(3):
        for path in ("/refused", "/dns"):
            status, _, body = await p.post(path, {"instances": [1]})
            assert status == 502
            assert orjson.loads(body)["error"].startswith("production target")
    assert p.value(
        "shadowproxy_upstream_errors_total", route="/refused", target="down",
        role="production", cause="refused",
    ) == 3  # fmt: skip
    assert p.value(
        "shadowproxy_upstream_errors_total", route="/dns", target="nowhere",
        role="production", cause="dns",
    ) == 3  # fmt: skip
    assert p.value("shadowproxy_http_requests_total", route="/refused", code="502") == 3
    # Once per route, target and cause in ten seconds, with the cause and the error.
    lines = [r for r in caplog.records if r.name == "proxy.front.hot_path"]
    assert [(r.route, r.cause, r.suppressed) for r in lines] == [  # type: ignore[attr-defined]
        ("/refused", "refused", 0),
        ("/dns", "dns", 0),
    ]
    assert "ConnectionRefusedError" in lines[0].getMessage()
    assert "no-such-host.invalid" in lines[1].getMessage()


async def test_a_failing_shadow_is_logged_with_its_cause_and_counted(
    fake_model: FakeModelFactory, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="proxy.analysis.shadow")
    prod = await fake_model(lambda r: Answer(body=b'{"predictions": [1]}'))
    closed = free_port()
    p = await proxy(
        f"""
routes:
  - match: /predict
    protocol: kserve-v1
    production: {{name: prod, url: "{prod.url}/predict"}}
    shadows:
      - {{name: gone, url: "http://127.0.0.1:{closed}/predict"}}
"""
    )
    for _ in range(4):
        assert (await p.post("/predict", {"instances": [1]}))[0] == 200
    await p.settled()
    assert p.value(
        "shadowproxy_upstream_errors_total", route="/predict", target="gone", role="shadow",
        cause="refused",
    ) == 4  # fmt: skip
    lines = [r for r in caplog.records if r.name == "proxy.analysis.shadow"]
    assert [(r.route, r.shadow, r.cause) for r in lines] == [  # type: ignore[attr-defined]
        ("/predict", "gone", "refused")
    ]


async def test_configured_shadows_with_no_traffic_are_listed_as_insufficient_data(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: Answer(body=b'{"predictions": [1]}'))
    p = await proxy(
        f"""
routes:
  - match: /predict
    protocol: kserve-v1
    production: {{name: prod, url: "{prod.url}/predict"}}
    shadows:
      - {{name: idle, url: "{prod.url}/predict", sample: 0%}}
      - {{name: later, url: "{prod.url}/predict"}}
"""
    )
    async with p.session.get(p.url + "/report") as resp:
        report = await resp.json()
    shadows = report["routes"][0]["shadows"]
    assert [(s["shadow"], s["verdict"], s["requests"]) for s in shadows] == [
        ("idle", "insufficient_data", 0),
        ("later", "insufficient_data", 0),
    ]
    assert [s["sample"] for s in shadows] == [0.0, 1.0]
    async with p.session.get(p.url + "/report.html") as resp:
        page = await resp.text()
    assert "(it is sampled at 0%: it gets no copies until its sample is raised)" in page
    assert "(it is new, or every copy was dropped before it was sent)" in page
    for name in ("idle", "later"):
        assert p.value("shadowproxy_verdict", route="/predict", shadow=name) == -0.5
        assert (
            p.value("shadowproxy_shadow_info", route="/predict", shadow=name, role="candidate") == 1
        )


async def test_client_requests_are_counted_by_route_and_status(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: Answer(body=b'{"predictions": [1]}'))
    p = await proxy(
        f"""
max_body: 1KiB
routes:
  - match: /predict
    protocol: kserve-v1
    production: {{name: prod, url: "{prod.url}/predict"}}
"""
    )
    for _ in range(5):
        assert (await p.post("/predict", {"instances": [1]}))[0] == 200
    assert (await p.post("/nowhere", {}))[0] == 404
    assert (await p.post("/predict", b"x" * 2048))[0] == 413
    assert (await p.post("/predict/../admin", {}))[0] == 400
    assert p.value("shadowproxy_http_requests_total", route="/predict", code="200") == 5
    assert p.value("shadowproxy_http_requests_total", route="/predict", code="413") == 1
    assert p.value("shadowproxy_http_requests_total", route="", code="404") == 1
    assert p.value("shadowproxy_http_requests_total", route="", code="400") == 1
    assert p.value("shadowproxy_http_request_duration_seconds_count", route="/predict") == 6
    # The proxy's own endpoints are not client traffic.
    async with p.session.get(p.url + "/metrics") as resp:
        await resp.read()
    assert p.value("shadowproxy_http_requests_total", route="", code="200") == 0


def test_throttled_logs_once_per_key_and_period_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = logging.getLogger("test.throttled")
    caplog.set_level(logging.WARNING, logger="test.throttled")
    throttled = Throttled(log, every=10.0, clock=lambda: now[0], max_keys=2)
    assert throttled.warning("a", "a %d", 1, extra={}) is True
    assert throttled.warning("a", "a %d", 2, extra={}) is False
    assert throttled.warning("b", "b", extra={}) is True
    now[0] += 10.0
    assert throttled.warning("a", "a %d", 3, extra={}) is True
    assert throttled.warning("c", "c", extra={}) is True  # over max_keys: "b" is forgotten
    assert throttled.warning("b", "b", extra={}) is True
    assert [(r.getMessage(), r.suppressed) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("a 1", 0),
        ("b", 0),
        ("a 3", 1),
        ("c", 0),
        ("b", 0),
    ]

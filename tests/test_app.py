"""The proxy's own endpoints: liveness, readiness, and /metrics content negotiation."""

from __future__ import annotations

from tests.conftest import FakeModelFactory, ProxyFactory, v1


def one_route(url: str) -> str:
    return f"""
routes:
  - match: /
    protocol: kserve-v1
    production: {{name: prod, url: "{url}"}}
"""


async def test_health_and_readiness(fake_model: FakeModelFactory, proxy: ProxyFactory) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(one_route(prod.url))
    async with p.session.get(p.url + "/healthz") as r:
        assert (r.status, await r.json()) == (200, {"status": "ok"})
    async with p.session.get(p.url + "/readyz") as r:
        assert (r.status, await r.json()) == (200, {"status": "ready"})
    # Even a catch-all route never shadows the proxy's own endpoints, whatever the method.
    for path in ("/healthz", "/readyz"):
        async with p.session.post(p.url + path, data=b"{}") as r:
            assert (r.status, r.headers["Allow"]) == (405, "GET, HEAD")
            assert await r.json() == {"error": f"{path} takes GET or HEAD, not POST"}
    assert prod.received == []


async def test_metrics_speak_prometheus_text_and_openmetrics(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(one_route(prod.url))
    await p.post("/predict", {"instances": [1]})
    async with p.session.get(p.url + "/metrics") as r:
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await r.text()
    assert (
        'shadowproxy_upstream_requests_total{outcome="ok",role="production",route="/",target="prod"}'
        " 1.0" in text.splitlines()
    )
    assert (
        'shadowproxy_upstream_request_duration_seconds_count{role="production",route="/",'
        'target="prod"} 1.0' in text.splitlines()
    )
    async with p.session.get(
        p.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    ) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await r.text()).endswith("# EOF\n")


async def test_the_control_planes_own_errors_are_json(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    """aiohttp's plain-text 404 and 405 pages, turned into the JSON every endpoint answers."""
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(one_route(prod.url))
    cases = [
        ("POST", "/report", 405, "POST /report: method not allowed; use GET, HEAD", "GET, HEAD"),
        ("GET", "/labels", 405, "GET /labels: method not allowed; use POST", "POST"),
        ("DELETE", "/metrics", 405, "DELETE /metrics: method not allowed; use GET, HEAD",
         "GET, HEAD"),
        ("GET", "/exchanges/", 404, "no such endpoint: GET /exchanges/", None),
    ]  # fmt: skip
    for method, path, status, message, allow in cases:
        async with p.session.request(method, p.url + path) as r:
            assert (r.status, r.content_type) == (status, "application/json"), path
            assert await r.json() == {"error": message}
            assert r.headers.get("Allow") == allow
    assert prod.received == []

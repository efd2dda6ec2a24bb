"""The proxy's own endpoints: liveness, readiness, and /metrics content negotiation."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson

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


async def test_a_control_plane_body_in_an_encoding_it_cannot_read_is_a_json_4xx(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path, caplog: Any
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(
        f"store: {{path: '{tmp_path / 'p.db'}'}}\n"
        "routes: [{match: /, protocol: kserve-v1, record: 100%,"
        f" production: {{name: prod, url: '{prod.url}'}}}}]"
    )
    label = orjson.dumps({"request_id": "r1", "label": 1})
    cases = [
        # gzip that is not: aiohttp's decoder fails (it was a 500 with a traceback)
        ("gzip", b"not gzip", 400, "body cannot be decoded (gzip): "),
        # one aiohttp cannot decode at all: refused by the front (it was plain text)
        ("br", label, 415, "Content-Encoding 'br' is not accepted: use gzip, deflate"),
        # gzip that is: read as any other body
        ("gzip", gzip.compress(label), 404, None),  # read; unknown_id is a 404
    ]
    for encoding, body, status, message in cases:
        headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
        async with p.session.post(p.url + "/labels", data=body, headers=headers) as r:
            assert (r.status, r.content_type) == (status, "application/json"), encoding
            doc = await r.json()
            if message is not None:
                assert doc["error"].startswith(message), doc
    assert p.value("shadowproxy_labels_total", result="invalid") == 1  # the unreadable body
    assert p.value("shadowproxy_labels_total", result="unknown_id") == 1
    # aiohttp, draining the undecodable body after the answer, logs no traceback for it.
    assert [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"] == []

"""The production hot path, end to end over real sockets: passthrough, request ids, errors."""

from __future__ import annotations

import asyncio
import gzip
import re
import socket
from pathlib import Path

import orjson

from tests.conftest import Answer, FakeModelFactory, ProxyFactory, v1


def route_yaml(prod_url: str, *, timeout: str = "2s", shadows: str = "", extra: str = "") -> str:
    return f"""
max_body: 1KiB
{extra}
routes:
  - match: /v1/models/m:predict
    protocol: kserve-v1
    production: {{name: prod, url: "{prod_url}/v1/models/prod:predict", timeout: {timeout}}}
    shadows: [{shadows}]
"""


async def test_status_headers_and_body_pass_through_byte_for_byte(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    body = gzip.compress(b'{"predictions": [1, 2, 3]}', mtime=0)
    prod = await fake_model(
        lambda r: Answer(
            status=201,
            body=body,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Content-Encoding": "gzip",
                "X-Model-Version": "v7",
                "Set-Cookie": "a=1",
            },
        )
    )
    p = await proxy(route_yaml(prod.url))
    status, headers, got = await p.post(
        "/v1/models/m:predict?debug=1&x=%2F",
        {"instances": [[1.0]]},
        headers={"Accept-Encoding": "gzip", "X-Request-ID": "abc-123"},
    )
    assert status == 201
    assert got == body
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["X-Model-Version"] == "v7"
    assert headers.getall("Set-Cookie") == ["a=1"]
    assert headers["X-Request-ID"] == "abc-123"
    assert headers["Content-Length"] == str(len(body))

    [seen] = prod.received
    # The URL's path replaces the matched prefix; the query string is kept as sent.
    assert seen.path_qs == "/v1/models/prod:predict?debug=1&x=%2F"
    assert seen.method == "POST"
    assert seen.body == b'{"instances":[[1.0]]}'
    assert seen.headers["X-Request-ID"] == "abc-123"
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
    assert seen.headers["X-Forwarded-Proto"] == "http"
    assert seen.headers["Accept-Encoding"] == "gzip"
    assert "X-Shadow-Request" not in seen.headers


async def test_hop_by_hop_headers_are_dropped_and_forwarded_for_appended(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(route_yaml(prod.url))
    await p.post(
        "/v1/models/m:predict",
        {"instances": [1]},
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Proxy-Authorization": "Basic eDp5",
            "TE": "trailers",
            "X-Forwarded-For": "10.0.0.1",
            "X-Custom": "kept",
        },
    )
    [seen] = prod.received
    for name in ("X-Secret-Hop", "Proxy-Authorization", "TE"):
        assert name not in seen.headers
    assert seen.headers["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert seen.headers["X-Custom"] == "kept"


async def test_a_request_id_is_generated_when_the_client_sends_none(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(route_yaml(prod.url))
    _, headers, _ = await p.post("/v1/models/m:predict", {"instances": [1]})
    rid = headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", rid)
    assert prod.received[0].headers["X-Request-ID"] == rid


async def test_a_configured_request_id_header_is_used(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(route_yaml(prod.url, extra="request_id_header: X-Correlation-ID"))
    _, headers, _ = await p.post(
        "/v1/models/m:predict", {"instances": [1]}, headers={"X-Correlation-ID": "c-9"}
    )
    assert headers["X-Correlation-ID"] == "c-9"
    assert prod.received[0].headers["X-Correlation-ID"] == "c-9"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_production_down_gives_502(proxy: ProxyFactory) -> None:
    p = await proxy(route_yaml(f"http://127.0.0.1:{_closed_port()}"))
    status, headers, body = await p.post(
        "/v1/models/m:predict", {"instances": [1]}, headers={"X-Request-ID": "r1"}
    )
    assert status == 502
    assert headers["Content-Type"] == "application/json"
    assert orjson.loads(body) == {
        "error": "production target prod is unreachable",
        "request_id": "r1",
    }
    labels = {"route": "/v1/models/m:predict", "target": "prod", "role": "production"}
    assert p.value("shadowproxy_upstream_requests_total", **labels, outcome="connect_error") == 1
    assert p.value("shadowproxy_upstream_requests_total", **labels, outcome="ok") == 0


async def test_production_timeout_gives_504(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: Answer(hang=True))
    p = await proxy(route_yaml(prod.url, timeout="200ms"))
    status, _, body = await p.post(
        "/v1/models/m:predict", {"instances": [1]}, headers={"X-Request-ID": "r2"}
    )
    assert status == 504
    assert orjson.loads(body) == {"error": "production target prod timed out", "request_id": "r2"}
    labels = {"route": "/v1/models/m:predict", "target": "prod", "role": "production"}
    assert p.value("shadowproxy_upstream_requests_total", **labels, outcome="timeout") == 1


async def test_an_oversized_body_gives_413_without_reaching_production(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(route_yaml(prod.url))
    status, _, body = await p.post(
        "/v1/models/m:predict", b"x" * 1025, headers={"X-Request-ID": "r3"}
    )
    assert status == 413
    assert orjson.loads(body) == {
        "error": "request body is larger than max_body (1024 bytes)",
        "request_id": "r3",
    }
    assert prod.received == []
    assert p.value("shadowproxy_rejected_requests_total", reason="body_too_large") == 1


async def test_no_matching_route_gives_404(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(route_yaml(prod.url))
    status, _, body = await p.post("/v2/other", {}, headers={"X-Request-ID": "r4"})
    assert status == 404
    assert orjson.loads(body) == {"error": "no route matches POST /v2/other", "request_id": "r4"}
    assert p.value("shadowproxy_rejected_requests_total", reason="no_route") == 1


async def test_production_5xx_passes_through_and_counts_as_http_error(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: Answer(status=503, body=b'{"error":"overloaded"}'))
    p = await proxy(route_yaml(prod.url))
    status, _, body = await p.post("/v1/models/m:predict", {"instances": [1]})
    assert (status, body) == (503, b'{"error":"overloaded"}')
    labels = {"route": "/v1/models/m:predict", "target": "prod", "role": "production"}
    assert p.value("shadowproxy_upstream_requests_total", **labels, outcome="http_error") == 1
    assert p.value("shadowproxy_upstream_request_duration_seconds_count", **labels) == 1


async def test_a_request_id_that_is_not_utf8_is_passed_on_byte_for_byte(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    # Before the front process, this was a plain-text 500 after production had answered.
    prod = await fake_model(lambda r: v1([1]))
    shadow = await fake_model(lambda r: v1([1]))
    p = await proxy(route_yaml(prod.url, shadows=f'{{name: s, url: "{shadow.url}/p"}}'))
    host, port = p.url.removeprefix("http://").split(":")
    body = b'{"instances": [1]}'
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nX-Request-ID: r\xff\xfe1\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    answer = await reader.read()  # to the end: the proxy closes, as asked
    writer.close()
    await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nX-Request-ID: r\xff\xfe1" in head
    assert orjson.loads(payload) == {"predictions": [1]}
    await shadow.wait_for(1)
    await p.settled()
    assert p.value("shadowproxy_comparisons_total", route="/v1/models/m:predict", shadow="s",
                   result="agree") == 1  # fmt: skip


async def test_a_request_id_that_is_not_utf8_is_recorded_captured_and_labelled_as_escaped_text(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """Its bytes reach production and the client as they came; the stores know it as text with
    those bytes written \\xNN, and a label names it so. It used to fail the store's whole
    batch and the capture's, good records with it."""
    prod = await fake_model(lambda r: v1([1]))
    shadow = await fake_model(lambda r: v1([2]))
    p = await proxy(
        f"""
store: {{path: "{tmp_path / "p.db"}", flush_interval: 1ms}}
capture: {{path: "{tmp_path / "c.db"}"}}
routes:
  - match: /v1/models/m:predict
    protocol: kserve-v1
    record: 100%
    production: {{name: prod, url: "{prod.url}/p"}}
    shadows: [{{name: s, url: "{shadow.url}/p", sample: 50%}}]
"""
    )
    host, port = p.url.removeprefix("http://").split(":")
    body = b'{"instances": [1]}'
    for raw_id in (b"r\xff\xfe1", b"plain"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nX-Request-ID: %s\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (raw_id, len(body), body)
        )
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert b"\r\nX-Request-ID: " + raw_id + b"\r\n" in answer
    await p.settled()
    assert p.state.recorder is not None
    await p.state.recorder.flush()
    assert p.value("shadowproxy_recorded_total", route="/v1/models/m:predict", kind="record") == 2
    labels = [{"request_id": "r\\xff\\xfe1", "label": 1}, {"request_id": "plain", "label": 1}]
    status, _, answer = await p.post("/labels", labels)
    assert status == 200
    assert orjson.loads(answer)["counts"]["joined"] == 2


async def _raw(url: str, head: bytes) -> tuple[int, bytes]:
    """One request written as raw bytes (a client library would normalise the path)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", answer)[1])  # type: ignore[index]
        body = await reader.readexactly(length)
    writer.close()
    return int(answer.split(b" ")[1]), body


async def test_paths_that_could_escape_a_route_are_refused_and_never_forwarded(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(route_yaml(prod.url))
    refused = {
        "/v1/models/m:predict/../../admin": "has a dot segment (. or ..)",
        "/v1/models/m:predict/%2e%2e/%2E%2E/admin": "has a dot segment (. or ..)",
        "/v1/models/m:predict/./x": "has a dot segment (. or ..)",
        "/v1/models/m:predict/a%2Fb": "has an encoded slash (%2F or %5C)",
        "/v1/models/m:predict/a%5cb": "has an encoded slash (%2F or %5C)",
    }
    for path, why in refused.items():
        status, body = await _raw(
            p.url, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode()
        )
        assert (status, orjson.loads(body)) == (400, {"error": f"path {path!r} {why}"})
    assert prod.received == []
    assert p.value("shadowproxy_rejected_requests_total", reason="bad_path") == len(refused)
    # Dots inside a segment are a name, not a dot segment; an encoded slash in the query is data.
    status, _ = await _raw(
        p.url,
        b"POST /v1/models/m:predict/v1.0..x?q=%2F HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    )
    assert status == 200
    [seen] = prod.received
    assert seen.path_qs == "/v1/models/prod:predict/v1.0..x?q=%2F"


async def test_a_request_id_longer_than_a_label_may_be_is_refused(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    p = await proxy(route_yaml(prod.url))
    status, _, body = await p.post(
        "/v1/models/m:predict", {"instances": [1]}, headers={"X-Request-ID": "x" * 257}
    )
    assert (status, orjson.loads(body)) == (
        400,
        {
            "error": "X-Request-ID is 257 bytes long; at most 256 are accepted (a longer id"
            " could never be labelled)"
        },
    )
    assert prod.received == []
    assert p.value("shadowproxy_rejected_requests_total", reason="bad_request_id") == 1
    status, headers, _ = await p.post(
        "/v1/models/m:predict", {"instances": [1]}, headers={"X-Request-ID": "y" * 256}
    )
    assert (status, headers["X-Request-ID"]) == (200, "y" * 256)

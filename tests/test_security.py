"""Nothing in a request can choose an upstream: absolute-form targets, Host headers, `//host`,
`@host` and dot segments all reach the configured production URL, or no model at all."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import FakeModelFactory, ProxyFactory, v1

ROUTE = "/v1/models/m:predict"


async def raw(url: str, request: bytes) -> bytes:
    """Send `request` exactly as written over a new connection; the status line comes back."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_no_request_can_send_the_proxy_to_another_host(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    other = await fake_model(lambda r: v1([2]))  # a host the config never names
    route = {"match": ROUTE, "protocol": "kserve-v1"}
    routes = [{**route, "production": {"name": "prod", "url": prod.url + ROUTE}}]
    p = await proxy(json.dumps({"routes": routes}))
    victim = other.url.removeprefix("http://")
    body = b'{"instances": [1]}'
    targets = [
        f"{other.url}{ROUTE}",  # absolute-form request target
        f"{ROUTE}@{victim}/x",
        f"{ROUTE}//{victim}/x",
        f"{ROUTE}/../../{victim}",
        f"{ROUTE}?url={other.url}",
    ]
    answered = []
    for target in targets:
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {victim}\r\nX-Forwarded-Host: {victim}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        status = await raw(p.url, head.encode() + body)
        answered.append(status.split(b" ")[1])
    assert other.received == []
    # The absolute-form target matches no route (404); a dot segment is refused (400); the
    # others reach production, their path kept under the configured URL's, where `@host` and
    # `//host` are only path text.
    assert answered == [b"404", b"200", b"200", b"400", b"200"]
    forwarded = [targets[1], targets[2], targets[4]]
    assert [r.path_qs for r in prod.received] == [t.removeprefix(other.url) for t in forwarded]
    assert [r.headers["Host"] for r in prod.received] == [prod.url.removeprefix("http://")] * 3

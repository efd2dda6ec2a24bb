"""Latency is read from the monotonic clock, not from uvloop's loop.time(): libuv caches that
once per loop iteration, to the millisecond, so every production, shadow and client-facing
duration came out a whole number of milliseconds (0 for a fast model). On uvloop, as the front
runs (this file's name puts its tests there: conftest.pytest_asyncio_loop_factories)."""

from __future__ import annotations

import time

from tests.conftest import Answer, FakeModelFactory, ProxyFactory, Received, Script, v1

ROUTE = "/v1/models/m:predict"
BURN = 0.0004  # seconds each fake model spends before answering: under a millisecond
REQUESTS = 5


def slow(predictions: list[int]) -> Script:
    def script(request: Received) -> Answer:
        until = time.perf_counter() + BURN
        while time.perf_counter() < until:
            pass
        return v1(predictions)

    return script


def whole_milliseconds(seconds: float) -> bool:
    return abs(seconds * 1000 - round(seconds * 1000)) < 1e-6


async def test_durations_are_measured_below_the_millisecond(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(slow([1]))
    shadow = await fake_model(slow([1]))
    p = await proxy(
        f"""
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
    shadows: [{{name: cand, url: "{shadow.url}{ROUTE}"}}]
"""
    )
    for i in range(REQUESTS):
        status, _, _ = await p.post(ROUTE, {"instances": [i]})
        assert status == 200
    await p.settled()
    sums = {
        role: p.value(
            "shadowproxy_upstream_request_duration_seconds_sum",
            route=ROUTE,
            target=target,
            role=role,
        )
        for role, target in (("production", "prod"), ("shadow", "cand"))
    }
    sums["client"] = p.value("shadowproxy_http_request_duration_seconds_sum", route=ROUTE)
    for role, total in sums.items():
        assert total >= REQUESTS * BURN, (role, total)
        assert not whole_milliseconds(total), (role, total)

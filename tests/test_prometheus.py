"""A real Prometheus scraping the proxy: the disagreement rate through its query API, and the
fleet-wide report computed from it."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.report.cli import report_from_prometheus
from tests.conftest import FakeModelFactory, ProxyFactory, RunningProxy, free_port
from tests.test_report import NO_LATENCY_GUARDRAIL, ROUTE, labelled_traffic


class Prometheus:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.url}/api/v1/query", params={"query": promql}) as r:
            doc = await r.json()
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    async def first_scrape(self) -> None:
        """Wait until Prometheus has scraped the proxy once (its counters, all at 0 still)."""
        async with asyncio.timeout(30):
            while True:
                if await self.query("shadowproxy_route_info"):
                    return
                await asyncio.sleep(0.2)  # Prometheus scrapes on its own clock

    async def scraped(self, target: RunningProxy) -> None:
        """Wait until Prometheus has scraped everything the target counted so far."""
        want = target.value("shadowproxy_labels_received_total")
        async with asyncio.timeout(30):
            while True:
                result = await self.query("sum(shadowproxy_labels_received_total)")
                if result and float(result[0]["value"][1]) >= want:
                    return
                await asyncio.sleep(0.2)  # Prometheus scrapes on its own clock


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[Any]:
    binary = shutil.which("prometheus")
    assert binary is not None, "the test command installs Debian's prometheus"
    procs: list[asyncio.subprocess.Process] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(*targets: RunningProxy) -> Prometheus:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "shadow-proxy",
                            "static_configs": [
                                {"targets": [t.url.removeprefix("http://") for t in targets]}
                            ],
                        }
                    ],
                }
            )
        )
        args = [
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ]
        procs.append(
            await asyncio.create_subprocess_exec(
                binary, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
        )
        session = aiohttp.ClientSession()
        sessions.append(session)
        url = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(30):
            while True:  # process start-up
                try:
                    async with session.get(url + "/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        return Prometheus(url, session)

    yield start
    for session in sessions:
        await session.close()
    for proc in procs:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_prometheus_sees_the_disagreement_rate_and_the_fleet_verdict(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path, prometheus: Any
) -> None:
    started: list[Prometheus] = []

    async def scrape_from_the_start(replica: RunningProxy) -> None:
        # As in production, Prometheus scrapes the proxy from its start: the report counts
        # with increase(), which sees what a counter gained while scraped.
        started.append(await prometheus(replica))
        await started[0].first_scrape()

    replica = await labelled_traffic(fake_model, proxy, tmp_path, before=scrape_from_the_start)
    [prom] = started
    await prom.scraped(replica)
    [rate] = await prom.query(
        "sum by (route, shadow) (shadowproxy_disagreed_instances_total)"
        " / sum by (route, shadow) (shadowproxy_compared_instances_total)"
    )
    assert rate["metric"] == {"route": ROUTE, "shadow": "cand"}
    assert float(rate["value"][1]) == 0.1
    [verdict] = await prom.query("shadowproxy_verdict")
    assert verdict["metric"]["shadow"] == "cand"

    report = await asyncio.to_thread(report_from_prometheus, prom.url, NO_LATENCY_GUARDRAIL)
    [shadow] = report["routes"][0]["shadows"]
    assert shadow["paired"]["shadow_only"] == 30
    assert shadow["paired"]["n"] == 300
    assert (shadow["quality"]["requests"], shadow["quality"]["instances"]) == (300, 300)
    assert shadow["verdict"] == "better"

"""`run --workers 2`: two processes on one port, and /metrics counting both, from either one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FakeModelFactory, v1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"{name} {labels} not in /metrics")


async def test_two_workers_share_the_port_and_their_metrics(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    shadow = await fake_model(lambda r: v1([1]))
    port = _free_port()
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        json.dumps(
            {
                "listen": f"127.0.0.1:{port}",
                "routes": [
                    {
                        "match": "/predict",
                        "protocol": "kserve-v1",
                        "production": {"name": "prod", "url": prod.url + "/predict"},
                        "shadows": [{"name": "s", "url": shadow.url + "/predict"}],
                    }
                ],
            }
        )
    )
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg), "--workers", "2",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        pids = set()
        while len(pids) < 2:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, "supervisor ended early"
            doc = orjson.loads(line)
            if doc["msg"] == "listening":
                pids.add(doc["pid"])
        url = f"http://127.0.0.1:{port}"
        # A new connection per request, so the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(40):
                async with session.post(url + "/predict", data=b'{"instances": [1]}') as r:
                    assert r.status == 200
            await shadow.wait_for(40)
            for _ in range(6):
                async with session.get(url + "/metrics") as r:
                    text = await r.text()
                assert _sample(text, "shadowproxy_requests_total", route="/predict") == 40
                ok = _sample(
                    text, "shadowproxy_upstream_requests_total", role="production", outcome="ok"
                )
                assert ok == 40
                assert _sample(text, "shadowproxy_shadow_enqueued_total", shadow="s") == 40
        # Each worker writes its own files, named by its pid.
        assert {int(f.stem.rsplit("_", 1)[1]) for f in metrics_dir.glob("counter_*.db")} == pids
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        for pid in pids:  # reaped by the supervisor: no such process any more
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"worker {pid} still exists")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

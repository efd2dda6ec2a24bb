"""The demo: three model-server stand-ins, the proxy on configs/demo.yaml, steady traffic, and a
live table of what the proxy measures. Stops by itself after --duration, or on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
PROXY = "http://127.0.0.1:8080"
V2_ROUTE = "/v2/models/demo/infer"
V1_ROUTE = "/v1/models/demo:predict"

# (port, seed, disagree): seed 0 is the reference; the candidates disagree on known fractions.
MODELS = [(9001, 0, 0.0), (9002, 7, 0.20), (9003, 3, 0.05)]


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO, stdout=asyncio.subprocess.DEVNULL
    )


async def _wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not become ready in 30 s")


def _v2_body(rows: list[list[float]]) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "x",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP64",
                "data": [v for row in rows for v in row],
            }
        ]
    }


async def _traffic(session: aiohttp.ClientSession, rate: float, stop: asyncio.Event) -> None:
    rng = random.Random(42)
    interval = 1.0 / rate
    while not stop.is_set():
        rows = [[round(rng.uniform(0, 10), 1) for _ in range(4)] for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.7:
            path, body = V2_ROUTE, _v2_body(rows)
        else:
            path, body = V1_ROUTE, {"instances": rows}
        try:
            async with session.post(PROXY + path, json=body) as resp:
                await resp.read()
        except aiohttp.ClientError as exc:
            print(f"request failed: {exc}", file=sys.stderr)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def _summary(text: str) -> list[tuple[str, str, float, float, float]]:
    values: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in (
                "shadowproxy_compared_instances_total",
                "shadowproxy_disagreed_instances_total",
                "shadowproxy_shadow_enqueued_total",
            ):
                values[(s.name, s.labels["route"], s.labels["shadow"])] = s.value
    rows = []
    for (name, route, shadow), compared in sorted(values.items()):
        if name != "shadowproxy_compared_instances_total":
            continue
        disagreed = values.get(("shadowproxy_disagreed_instances_total", route, shadow), 0.0)
        sent = values.get(("shadowproxy_shadow_enqueued_total", route, shadow), 0.0)
        rows.append((route, shadow, sent, compared, disagreed))
    return rows


async def _report(session: aiohttp.ClientSession, every: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        async with session.get(PROXY + "/metrics") as resp:
            rows = _summary(await resp.text())
        print(f"\n{'route':<26}{'shadow':<18}{'teed':>8}{'compared':>10}{'disagree':>10}")
        for route, shadow, sent, compared, disagreed in rows:
            rate = f"{disagreed / compared:.1%}" if compared else "-"
            print(f"{route:<26}{shadow:<18}{sent:>8.0f}{compared:>10.0f}{rate:>10}")


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=300, help="seconds (default 300)")
    parser.add_argument("--rate", type=float, default=50, help="requests/s (default 50)")
    args = parser.parse_args(argv)

    procs = [
        await _spawn(
            "-m", "loadtest.model_server", "--port", str(port), "--seed", str(seed),
            "--disagree", str(disagree), "--name", f"demo-{port}",
        )
        for port, seed, disagree in MODELS
    ]  # fmt: skip
    procs.append(await _spawn("-m", "proxy", "run", "--config", "configs/demo.yaml"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with aiohttp.ClientSession() as session:
            for port, _, _ in MODELS:
                await _wait_ready(session, f"http://127.0.0.1:{port}/healthz")
            await _wait_ready(session, PROXY + "/readyz")
            print(
                "shadow-proxy demo is running.\n"
                f"  proxy:      {PROXY}  (production demo-prod on :9001)\n"
                "  shadows:    demo-candidate (:9002) disagrees on ~20% of instances,\n"
                "              demo-candidate-2 (:9003) on ~5%\n"
                f"  metrics:    curl -s {PROXY}/metrics | grep shadowproxy_disagreed\n"
                f"  try it:     curl -s {PROXY}{V1_ROUTE} -d '{{\"instances\": [[1, 2, 3, 4]]}}'\n"
                f"Sending {args.rate:g} requests/s for {args.duration:g} s; Ctrl-C stops.",
                flush=True,
            )
            loop.call_later(args.duration, stop.set)
            await asyncio.gather(_traffic(session, args.rate, stop), _report(session, 5, stop))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

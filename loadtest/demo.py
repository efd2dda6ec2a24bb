"""The demo: three model-server stand-ins, the proxy on configs/demo.yaml with its embedded
prediction store, steady traffic, ground-truth labels posted a little later, and a live table of
what the proxy measures. Stops by itself after --duration, or on Ctrl-C."""

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

from loadtest.model_server import disagrees, predict_class

REPO = Path(__file__).resolve().parents[1]
PROXY = "http://127.0.0.1:8080"
V2_ROUTE = "/v2/models/demo/infer"
V1_ROUTE = "/v1/models/demo:predict"

# (port, seed, disagree): seed 0 is the reference; the candidates disagree on known fractions.
MODELS = [(9001, 0, 0.0), (9002, 7, 0.20), (9003, 3, 0.05)]
# The ground truth: demo-candidate-2's answer on 92% of rows and another class on the rest, so
# candidate-2 is right on about 92%, production on about 87%, and demo-candidate on about 70%.
TRUTH_SEED, TRUTH_FLIP = 99, 0.08
LABEL_DELAY = 2.0  # seconds from prediction to label, as if the truth arrived later


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


def _truth(row: list[float]) -> int:
    _, seed, disagree = MODELS[2]
    candidate_2 = predict_class(row, seed, disagree, 3)
    return (candidate_2 + 1) % 3 if disagrees(row, TRUTH_SEED, TRUTH_FLIP) else candidate_2


async def _label_later(session: aiohttp.ClientSession, request_id: str, truth: list[int]) -> None:
    await asyncio.sleep(LABEL_DELAY)
    with contextlib.suppress(aiohttp.ClientError):
        label = {"request_id": request_id, "label": truth}
        async with session.post(PROXY + "/labels", json=label) as resp:
            await resp.read()


async def _traffic(session: aiohttp.ClientSession, rate: float, stop: asyncio.Event) -> None:
    rng = random.Random(42)
    interval = 1.0 / rate
    labelling: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        rows = [[round(rng.uniform(0, 10), 1) for _ in range(4)] for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.7:
            path, body = V2_ROUTE, _v2_body(rows)
        else:
            path, body = V1_ROUTE, {"instances": rows}
        try:
            async with session.post(PROXY + path, json=body) as resp:
                await resp.read()
                request_id = resp.headers["X-Request-ID"]
        except aiohttp.ClientError as exc:
            print(f"request failed: {exc}", file=sys.stderr)
        else:
            truth = [_truth(row) for row in rows]
            task = asyncio.create_task(_label_later(session, request_id, truth))
            labelling.add(task)
            task.add_done_callback(labelling.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    for task in labelling:
        task.cancel()
    await asyncio.gather(*labelling, return_exceptions=True)


_WANTED = (
    "shadowproxy_shadow_enqueued_total",
    "shadowproxy_compared_instances_total",
    "shadowproxy_disagreed_instances_total",
    "shadowproxy_labelled_instances_total",
    "shadowproxy_correct_instances_total",
)


def _summary(text: str) -> list[tuple[str, str, str, str, str]]:
    """Per route and model: teed, compared, disagreement, labelled, accuracy."""
    values: dict[tuple[str, str, str], float] = {}
    models: set[tuple[str, str, str]] = set()  # (route, role, model)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in _WANTED:
                continue
            model = s.labels.get("shadow") or s.labels["model"]
            values[(s.name, s.labels["route"], model)] = s.value
            role = s.labels.get("role", "shadow")
            models.add((s.labels["route"], "0" if role == "production" else "1", model))

    def get(name: str, route: str, model: str) -> float:
        return values.get((f"shadowproxy_{name}_total", route, model), 0.0)

    rows = []
    for route, order, model in sorted(models):
        compared = get("compared_instances", route, model)
        labelled = get("labelled_instances", route, model)
        is_shadow = order == "1"
        rows.append(
            (
                route,
                model + ("" if is_shadow else " (prod)"),
                f"{get('shadow_enqueued', route, model):.0f}" if is_shadow else "-",
                f"{get('disagreed_instances', route, model) / compared:.1%}" if compared else "-",
                f"{get('correct_instances', route, model) / labelled:.1%}" if labelled else "-",
            )
        )
    return rows


async def _report(session: aiohttp.ClientSession, every: float, stop: asyncio.Event) -> None:
    drawn = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        async with session.get(PROXY + "/metrics") as resp:
            rows = _summary(await resp.text())
        async with session.get(PROXY + "/report") as resp:
            report = await resp.json()
        verdicts = {
            (route["route"], shadow["shadow"]): shadow["verdict"]
            for route in report["routes"]
            for shadow in route["shadows"]
        }
        lines = [f"{'route':<26}{'model':<24}{'teed':>8}{'disagree':>10}{'accuracy':>10}  verdict"]
        for route, model, teed, disagree, accuracy in rows:
            verdict = verdicts.get((route, model), "")
            lines.append(f"{route:<26}{model:<24}{teed:>8}{disagree:>10}{accuracy:>10}  {verdict}")
        drawn = _draw(lines, drawn)


def _draw(lines: list[str], drawn: int) -> int:
    """Print the table; on a terminal, over the one drawn before (`drawn` lines high), so
    that it updates in place. Returns the height drawn."""
    if sys.stdout.isatty():
        # Up to the previous table's first line, erase to the end of the screen, draw again.
        print(f"\x1b[{drawn}F\x1b[J" if drawn else "", end="")
    else:
        print()
    print("\n".join(lines), flush=True)
    return len(lines)


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
                f"  labels:     the truth is posted to /labels {LABEL_DELAY:g} s after each"
                " prediction\n"
                f"  metrics:    curl -s {PROXY}/metrics | grep shadowproxy_disagreed\n"
                f"  try it:     curl -s {PROXY}{V1_ROUTE} -d '{{\"instances\": [[1, 2, 3, 4]]}}'\n"
                f"  verdicts:   {PROXY}/report.html  (or: .venv/bin/shadow-proxy report --url"
                f" {PROXY})\n"
                f"  drill-down: each shadow's card on {PROXY}/report.html ends with the requests"
                f" it disagrees on;\n              curl -s '{PROXY}/disagreements?limit=3'\n"
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

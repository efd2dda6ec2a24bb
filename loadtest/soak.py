"""The soak: the proxy (SQLite store, every request recorded, one shadow) under steady load for
a long while, its shadow flapping down and up, labels flowing for what it answered; sampled every
10 s for resident memory, open file descriptors, queue depths and the store's size, then checked:
no production error, the write-ahead log under its bound, memory flat over the last 10 minutes,
every label accounted for.

    bash loadtest/bench --soak 1800               # 30 minutes (the issue's soak)
    python -m loadtest.soak --duration 600 --png soak.png

Prints a table (a row a minute) and the checks; writes the samples as JSON, and a PNG chart when
matplotlib is installed (it is optional: `pip install matplotlib`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.bench import ROUTE, _free_port, _spawn, _stop, _wait_ready
from loadtest.procstat import process_tree

REPO = Path(__file__).resolve().parents[1]
BODY = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}
WAL_BOUND = 64 * 1024 * 1024
SAMPLE_EVERY = 10.0


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    requests: int
    errors: int
    shadow_queue: float
    recording_queue: float
    store_records: float
    database_mib: float
    wal_mib: float
    labels_posted: int
    shadow_up: bool


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    labels_posted: int = 0
    label_results: dict[str, int] = field(default_factory=dict)
    shadow_up: bool = True


def _rss_and_fds(root: int) -> tuple[float, int]:
    rss, fds = 0.0, 0
    for pid in process_tree([root]):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
            fds += len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


async def _load(soak: Soak, url: str, rate: float, stop: asyncio.Event) -> None:
    """Requests at `rate` per second, each with its id, 8 at a time."""
    async with aiohttp.ClientSession() as session:
        interval = 8 / rate
        started = time.monotonic()
        n = 0
        while not stop.is_set():
            batch = []
            for _ in range(8):
                batch.append(_one(session, url, f"s{n}", soak))
                n += 1
            await asyncio.gather(*batch)
            next_at = started + (n / 8) * interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _one(session: aiohttp.ClientSession, url: str, rid: str, soak: Soak) -> None:
    try:
        async with session.post(url, json=BODY, headers={"X-Request-ID": rid}) as resp:
            await resp.read()
            ok = resp.status == 200
    except aiohttp.ClientError:
        ok = False
    soak.requests += 1
    soak.errors += not ok


async def _labels(soak: Soak, base: str, stop: asyncio.Event) -> None:
    """Every 2 s, a label for each request answered by the round before (labels arrive a few
    seconds late, as real ones do, or days); at the end, for all of them."""
    posted = previous = 0
    async with aiohttp.ClientSession() as session:
        while True:
            done = stop.is_set()
            ready = soak.requests if done else previous
            ids = [f"s{i}" for i in range(posted, ready)]
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                body = [{"request_id": rid, "label": [0, 1]} for rid in chunk]
                async with session.post(base + "/labels", json=body) as resp:
                    doc = await resp.json()
                    if resp.status == 200:
                        for k, v in doc["counts"].items():
                            soak.label_results[k] = soak.label_results.get(k, 0) + v
                        soak.labels_posted += len(chunk)
            posted, previous = ready, soak.requests
            if done:
                return
            await asyncio.sleep(2.0)


async def _flap(soak: Soak, start_shadow: Any, every: float, stop: asyncio.Event) -> None:
    """The shadow goes down for `every` seconds, then up for as long, and again."""
    proc = start_shadow()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set():
                break
            if soak.shadow_up:
                proc.kill()
                proc.wait()
            else:
                proc = start_shadow()
            soak.shadow_up = not soak.shadow_up
    finally:
        _stop(proc)


async def _sample(soak: Soak, root: int, base: str, started: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        rss, fds = _rss_and_fds(root)
        try:
            raw = await asyncio.to_thread(_scrape_raw, base + "/metrics")
        except OSError:
            raw = {}
        soak.samples.append(
            Sample(
                t=round(time.monotonic() - started, 1),
                rss_mib=round(rss, 1),
                fds=fds,
                requests=soak.requests,
                errors=soak.errors,
                shadow_queue=raw.get("shadowproxy_shadow_queue_depth", 0.0),
                recording_queue=raw.get("shadowproxy_recording_queue_depth", 0.0),
                store_records=raw.get("shadowproxy_store_records", 0.0),
                database_mib=round(raw.get("database", 0.0) / 2**20, 1),
                wal_mib=round(raw.get("wal", 0.0) / 2**20, 1),
                labels_posted=soak.labels_posted,
                shadow_up=soak.shadow_up,
            )
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)


def _scrape_raw(url: str) -> dict[str, float]:
    """A few gauges by name (summed over labels), and the store's files by `file`."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "shadowproxy_store_file_bytes":
                found[s.labels["file"]] = s.value
            elif s.name in (
                "shadowproxy_shadow_queue_depth",
                "shadowproxy_recording_queue_depth",
                "shadowproxy_store_records",
            ):
                found[s.name] = found.get(s.name, 0.0) + s.value
    return found


def checks(soak: Soak) -> list[tuple[bool, str]]:
    """The soak's pass/fail lines."""
    out = [(soak.errors == 0, f"production errors: {soak.errors} of {soak.requests} (target 0)")]
    wal = max((s.wal_mib for s in soak.samples), default=0.0)
    out.append((wal * 2**20 <= WAL_BOUND, f"write-ahead log at most {wal:.1f} MiB (bound 64)"))
    end = soak.samples[-1].t if soak.samples else 0.0
    last = [s.rss_mib for s in soak.samples if s.t >= end - 600]
    if last and end >= 1200:
        mean = sum(last) / len(last)
        spread = max(abs(x - mean) / mean for x in last)
        line = (
            f"RSS over the last 10 minutes: {min(last):.0f}-{max(last):.0f} MiB, within"
            f" {spread:.1%} of its mean (target 5%)"
        )
        out.append((spread <= 0.05, line))
    else:
        out.append((False, "RSS flatness: needs at least 20 minutes of samples"))
    accounted = sum(soak.label_results.values())
    out.append(
        (
            accounted == soak.labels_posted,
            f"labels: {soak.labels_posted} posted, {accounted} accounted for "
            f"({', '.join(f'{k} {v}' for k, v in sorted(soak.label_results.items()) if v)})",
        )
    )
    return out


def table(soak: Soak) -> str:
    head = (
        f"{'t s':>6} {'RSS MiB':>8} {'fds':>5} {'requests':>9} {'errors':>6} {'shadow q':>8} "
        f"{'record q':>8} {'records':>8} {'db MiB':>7} {'wal MiB':>7} {'shadow':>7}"
    )
    rows = [head, "-" * len(head)]
    for s in soak.samples[:: max(1, int(60 / SAMPLE_EVERY))]:
        rows.append(
            f"{s.t:6.0f} {s.rss_mib:8.1f} {s.fds:5d} {s.requests:9d} {s.errors:6d} "
            f"{s.shadow_queue:8.0f} {s.recording_queue:8.0f} {s.store_records:8.0f} "
            f"{s.database_mib:7.1f} {s.wal_mib:7.1f} {'up' if s.shadow_up else 'down':>7}"
        )
    return "\n".join(rows)


def chart(soak: Soak, path: Path) -> bool:
    """A PNG of the samples over time; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [s.t / 60 for s in soak.samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(t, [s.rss_mib for s in soak.samples])
    axes[0].set_ylabel("RSS MiB (all processes)")
    axes[1].plot(t, [s.fds for s in soak.samples])
    axes[1].set_ylabel("open fds")
    axes[2].plot(t, [s.shadow_queue for s in soak.samples], label="shadow queue")
    axes[2].plot(t, [s.recording_queue for s in soak.samples], label="recording queue")
    axes[2].legend()
    axes[3].plot(t, [s.database_mib for s in soak.samples], label="database MiB")
    axes[3].plot(t, [s.wal_mib for s in soak.samples], label="WAL MiB")
    axes[3].legend()
    axes[3].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path)
    return True


async def run(duration: float, rate: float, flap: float, workdir: Path) -> Soak:
    soak = Soak()
    prod_port, shadow_port, port = _free_port(), _free_port(), _free_port()
    log = workdir / "soak.log"
    prod = _spawn(["-m", "loadtest.raw_backend", "--port", str(prod_port)], log)

    def start_shadow() -> subprocess.Popen[bytes]:
        return _spawn(
            ["-m", "loadtest.raw_backend", "--port", str(shadow_port), "--disagree", "0.1"], log
        )

    cfg = workdir / "soak.yaml"
    cfg.write_text(
        json.dumps(
            {
                "listen": f"127.0.0.1:{port}",
                "log_level": "warning",
                "store": {
                    "backend": "sqlite",
                    "path": str(workdir / "soak.db"),
                    "sweep_interval": "10s",
                },
                "routes": [
                    {
                        "match": ROUTE,
                        "protocol": "kserve-v1",
                        "record": "100%",
                        "production": {"name": "prod", "url": f"http://127.0.0.1:{prod_port}{ROUTE}"},
                        "shadows": [
                            {"name": "flapping", "url": f"http://127.0.0.1:{shadow_port}{ROUTE}",
                             "timeout": "1s"}
                        ],
                    }
                ],
            }
        )
    )  # fmt: skip
    proxy = _spawn(["-m", "proxy", "run", "--config", str(cfg)], log)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base + "/readyz", proxy, log)
        stop = asyncio.Event()
        started = time.monotonic()
        tasks = [
            asyncio.create_task(_load(soak, base + ROUTE, rate, stop)),
            asyncio.create_task(_flap(soak, start_shadow, flap, stop)),
            asyncio.create_task(_sample(soak, proxy.pid, base, started, stop)),
        ]
        labels = asyncio.create_task(_labels(soak, base, stop))
        while time.monotonic() - started < duration:
            await asyncio.sleep(1.0)
            print(f"\r  soak {time.monotonic() - started:6.0f}/{duration:.0f} s", end="",
                  file=sys.stderr)  # fmt: skip
        print(file=sys.stderr)
        stop.set()
        await asyncio.gather(*tasks)
        await labels
    finally:
        proxy.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proxy.wait(30)
        _stop(proxy)
        _stop(prod)
    return soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--flap", type=float, default=30.0, help="shadow down/up period, s")
    parser.add_argument("--json", type=Path, help="where to write the samples")
    parser.add_argument("--png", type=Path, help="where to draw the chart (needs matplotlib)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = asyncio.run(run(args.duration, args.rate, args.flap, Path(tmp)))
    print(table(soak))
    print()
    for ok, line in checks(soak):
        print(f"{'ok  ' if ok else 'MISS'} {line}")
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in soak.samples], indent=1))
    if args.png:
        drawn = chart(soak, args.png)
        print(f"chart: {args.png}" if drawn else "chart: matplotlib not installed, none drawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())

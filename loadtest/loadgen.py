"""A small closed-loop HTTP load generator, for machines without wrk: N connections each send
the next request as soon as the last one is answered, for a fixed time or request count.

    python -m loadtest.loadgen --url http://127.0.0.1:8080/v1/models/m:predict \
        --body '{"instances": [[1, 2, 3, 4]]}' --connections 32 --duration 10

Prints one JSON object to stdout: requests, errors (non-2xx and connection errors), seconds,
requests_per_second and latency percentiles in milliseconds. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import uvloop


def _mark(path: Path) -> None:
    """Tell the parent (bench.py) that the load starts now: start-up took its time."""
    path.touch()


async def _run(
    url: str,
    body: bytes,
    connections: int,
    duration: float,
    max_requests: int,
    progress: bool,
    started_file: Path | None = None,
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors, sent
        while time.perf_counter() < deadline and (max_requests == 0 or sent < max_requests):
            sent += 1
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if not 200 <= resp.status < 300:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            latencies.append(time.perf_counter() - started)

    async def report() -> None:
        start = time.perf_counter()
        while True:
            await asyncio.sleep(1)
            elapsed = time.perf_counter() - start
            print(f"\r  {elapsed:4.0f}s {len(latencies):>9} requests", end="", file=sys.stderr)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        reporter = asyncio.create_task(report()) if progress else None
        if started_file is not None:
            _mark(started_file)
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        seconds = time.perf_counter() - started
        if reporter is not None:
            reporter.cancel()
            print(file=sys.stderr)
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99]).tolist()
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": seconds,
        "requests_per_second": len(latencies) / seconds,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", default='{"instances": [[1.0, 2.0, 3.0, 4.0]]}')
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--requests", type=int, default=0, help="stop after this many (0: none)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--started-file", type=Path, help="created when the load starts (after start-up)"
    )
    args = parser.parse_args(argv)
    result = uvloop.run(
        _run(
            args.url,
            args.body.encode(),
            args.connections,
            args.duration,
            args.requests,
            not args.no_progress,
            args.started_file,
        )
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

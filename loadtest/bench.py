"""The benchmark: model-server stand-ins, then per scenario a fresh proxy driven at a fixed
concurrency from a separate process; prints a table and writes JSON. Stops by itself.

    bash loadtest/bench                        # every scenario, 15 s each, about 2 minutes
    bash loadtest/bench --duration 60 --scenarios fast_shadow,blackhole_shadow

Scenarios: direct (the model server alone: the physical limit), tee_baseline (a minimal aiohttp
tee with one shadow, no metrics and no comparison: the yardstick), no_shadow, fast_shadow,
slow_shadow (200 ms slower than production), blackhole_shadow (never answers), three_shadows.
Load comes from wrk when it is installed (Debian's package), else from loadtest.loadgen.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
ROUTE = "/v1/models/m:predict"
BODY = '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}'

# name -> model-server options. One process per behaviour; three_shadows shares "fast".
MODELS: dict[str, list[str]] = {
    "prod": ["--seed", "0"],
    "fast": ["--seed", "7", "--disagree", "0.1"],
    "slow": ["--seed", "7", "--disagree", "0.1", "--latency", "200ms"],
    "blackhole": ["--blackhole"],
}


@dataclass(frozen=True)
class Scenario:
    name: str
    shadows: tuple[str, ...] = ()  # model names from MODELS
    direct: bool = False
    baseline: bool = False  # loadtest.tee_baseline instead of the proxy
    store: bool = False  # record every request in the embedded prediction store


SCENARIOS = (
    Scenario("direct", direct=True),
    Scenario("tee_baseline", ("fast",), baseline=True),
    Scenario("no_shadow"),
    Scenario("fast_shadow", ("fast",)),
    Scenario("slow_shadow", ("slow",)),
    Scenario("blackhole_shadow", ("blackhole",)),
    Scenario("three_shadows", ("fast", "fast", "fast")),
    Scenario("fast_shadow_store", ("fast",), store=True),
)


@dataclass
class Result:
    scenario: str
    requests: int
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    proxy_cpu_seconds: float | None = None
    proxy_peak_rss_mib: float | None = None
    shadow_dropped: int | None = None
    shadow_compared: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"{url} did not become ready in {timeout:g} s")


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=out
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def model_servers(workdir: Path) -> Iterator[dict[str, int]]:
    ports = {name: _free_port() for name in MODELS}
    procs = [
        _spawn(
            ["-m", "loadtest.model_server", "--port", str(ports[name]), *opts],
            workdir / f"model-{name}.log",
        )
        for name, opts in MODELS.items()
    ]
    try:
        for port in ports.values():
            _wait_ready(f"http://127.0.0.1:{port}/healthz")
        yield ports
    finally:
        for proc in procs:
            _stop(proc)


def proxy_config(scenario: Scenario, port: int, models: dict[str, int], workdir: Path) -> str:
    """The proxy's config for a scenario, as JSON (which is YAML)."""

    def url(model: str) -> str:
        return f"http://127.0.0.1:{models[model]}{ROUTE}"

    route = {
        "match": ROUTE,
        "protocol": "kserve-v1",
        "production": {"name": "prod", "url": url("prod"), "timeout": "10s"},
        "shadows": [
            {"name": f"{m}-{i}", "url": url(m), "timeout": "5s"}
            for i, m in enumerate(scenario.shadows)
        ],
    }
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "log_level": "warning",
        "shadow_drain_timeout": "1s",
        "routes": [route],
    }
    if scenario.store:
        route["record"] = "100%"
        config["store"] = {"backend": "sqlite", "path": str(workdir / f"{scenario.name}.db")}
    return json.dumps(config, indent=2)


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


FIGURES = ("requests", "requests_per_second", "p50_ms", "p90_ms", "p99_ms", "errors")
"""What a load generator reports, whichever it is."""

_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * _WRK_UNITS[match[2]]


def parse_wrk(output: str) -> dict[str, Any]:
    """The figures bench reports, from `wrk --latency` output."""
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.M))
    requests = re.search(r"^\s+(\d+) requests in ([\d.]+)(\w+)", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not (requests and rps and len(percentiles) == 3):
        raise ValueError(f"cannot read wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx[1]) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return {
        "requests": int(requests[1]),
        "requests_per_second": float(rps[1]),
        "p50_ms": _wrk_ms(percentiles["50"]),
        "p90_ms": _wrk_ms(percentiles["90"]),
        "p99_ms": _wrk_ms(percentiles["99"]),
        "errors": errors,
    }


def _progress(label: str, started: float, duration: float) -> None:
    done = min(time.monotonic() - started, duration)
    bar = "#" * int(20 * done / duration)
    print(f"\r  {label:<18} [{bar:<20}] {done:4.0f}/{duration:g} s", end="", file=sys.stderr)


def drive(
    url: str, *, connections: int, duration: float, generator: str, label: str
) -> dict[str, Any]:
    """Run the load generator in its own process for `duration` seconds."""
    if generator == "wrk":
        lua = Path(tempfile.mkstemp(suffix=".lua")[1])
        body = BODY.replace("'", "\\'")
        lua.write_text(
            f"wrk.method = 'POST'\nwrk.body = '{body}'\n"
            "wrk.headers['Content-Type'] = 'application/json'\n"
        )
        seconds: float = max(1, round(duration))
        cmd = [
            "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
            "-s", str(lua), url,
        ]  # fmt: skip
    else:
        seconds = duration
        cmd = [
            sys.executable, "-m", "loadtest.loadgen", "--url", url, "--body", BODY,
            "--connections", str(connections), "--duration", str(duration), "--no-progress",
        ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while proc.poll() is None:
        _progress(label, started, seconds)
        time.sleep(0.5)
    _progress(label, started, seconds)
    print(file=sys.stderr)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{err}")
    if generator == "wrk":
        lua.unlink()
        return parse_wrk(out)
    figures = json.loads(out)
    return {key: figures[key] for key in FIGURES}


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "shadowproxy_shadow_skipped_total" and s.labels["reason"] != "sampled_out":
                totals["dropped"] = totals.get("dropped", 0) + s.value
            elif s.name == "shadowproxy_compared_instances_total":
                totals["compared"] = totals.get("compared", 0) + s.value
            elif s.name in ("shadowproxy_recorded_total", "shadowproxy_recording_dropped_total"):
                key = "records_" + ("written" if "dropped" not in s.name else "dropped")
                totals[key] = totals.get(key, 0) + s.value
            elif (
                s.name == "shadowproxy_upstream_requests_total"
                and s.labels["role"] == "production"
                and s.labels["outcome"] != "ok"
            ):
                totals["production_errors"] = totals.get("production_errors", 0) + s.value
    return totals


def run_scenario(
    scenario: Scenario,
    models: dict[str, int],
    workdir: Path,
    *,
    connections: int,
    duration: float,
    warmup: float,
    generator: str,
    workers: int,
) -> Result:
    def measure(url: str) -> dict[str, Any]:
        load: dict[str, Any] = {"connections": connections, "generator": generator}
        if warmup:
            drive(url, duration=warmup, label=f"{scenario.name} warmup", **load)
        return drive(url, duration=duration, label=scenario.name, **load)

    if scenario.direct:
        return Result(scenario.name, **measure(f"http://127.0.0.1:{models['prod']}{ROUTE}"))

    port = _free_port()
    cfg = workdir / f"{scenario.name}.yaml"
    cfg.write_text(proxy_config(scenario, port, models, workdir))
    args = ["-m", "proxy", "run", "--config", str(cfg), "--workers", str(workers)]
    if scenario.baseline:
        args = [
            "-m", "loadtest.tee_baseline", "--port", str(port),
            "--production", f"http://127.0.0.1:{models['prod']}{ROUTE}",
            "--shadow", f"http://127.0.0.1:{models['fast']}{ROUTE}",
        ]  # fmt: skip
    proxy = _spawn(args, workdir / f"proxy-{scenario.name}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base + "/readyz")
        pids = _process_tree(proxy.pid)
        cpu_before = sum(_proc_cpu_seconds(p) for p in pids)
        figures = measure(base + ROUTE)
        cpu = sum(_proc_cpu_seconds(p) for p in pids) - cpu_before
        rss = sum(_proc_peak_rss_mib(p) for p in pids)
        metrics = {} if scenario.baseline else _scrape(base + "/metrics")
    finally:
        _stop(proxy)
    return Result(
        scenario.name,
        **figures,
        proxy_cpu_seconds=round(cpu, 2),
        proxy_peak_rss_mib=round(rss, 1),
        shadow_dropped=None if scenario.baseline else int(metrics.get("dropped", 0)),
        shadow_compared=None if scenario.baseline else int(metrics.get("compared", 0)),
        extra={
            "production_errors_in_metrics": int(metrics.get("production_errors", 0)),
            **(
                {k: int(metrics.get(k, 0)) for k in ("records_written", "records_dropped")}
                if scenario.store
                else {}
            ),
        },
    )


def _process_tree(pid: int) -> list[int]:
    """The proxy and its worker processes (with --workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return [pid, *(int(k) for k in kids)]


def table(results: Sequence[Result]) -> str:
    by_name = {r.scenario: r for r in results}
    direct, no_shadow, fast = (by_name.get(n) for n in ("direct", "no_shadow", "fast_shadow"))
    head = (
        f"{'scenario':<18}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'/direct':>9}{'/no_shadow':>11}{'p99/fast':>9}{'cpu s':>8}{'rss MiB':>9}"
        f"{'errors':>8}{'dropped':>9}"
    )
    lines = [head, "-" * len(head)]

    def ratio(a: float, b: Result | None, attr: str) -> str:
        return f"{a / getattr(b, attr):.2f}" if b is not None else "-"

    for r in results:
        lines.append(
            f"{r.scenario:<18}{r.requests_per_second:>9.0f}{r.p50_ms:>9.2f}{r.p90_ms:>9.2f}"
            f"{r.p99_ms:>9.2f}{ratio(r.requests_per_second, direct, 'requests_per_second'):>9}"
            f"{ratio(r.requests_per_second, no_shadow, 'requests_per_second'):>11}"
            f"{ratio(r.p99_ms, fast, 'p99_ms'):>9}"
            f"{'-' if r.proxy_cpu_seconds is None else f'{r.proxy_cpu_seconds:.1f}':>8}"
            f"{'-' if r.proxy_peak_rss_mib is None else f'{r.proxy_peak_rss_mib:.0f}':>9}"
            f"{r.errors:>8}{'-' if r.shadow_dropped is None else r.shadow_dropped:>9}"
        )
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def checks(results: Sequence[Result]) -> list[str]:
    """The issue's targets, as pass/fail lines."""
    by_name = {r.scenario: r for r in results}
    out = []
    fast = by_name.get("fast_shadow")
    for name in ("slow_shadow", "blackhole_shadow"):
        r = by_name.get(name)
        if fast and r:
            x = r.p99_ms / fast.p99_ms
            out.append(
                f"{_mark(x <= 1.2)} isolation: {name} p99 = {x:.2f} x fast_shadow p99"
                " (target <= 1.2)"
            )
    bh = by_name.get("blackhole_shadow")
    if fast and bh and fast.proxy_peak_rss_mib is not None and bh.proxy_peak_rss_mib is not None:
        d = bh.proxy_peak_rss_mib - fast.proxy_peak_rss_mib
        out.append(
            f"{_mark(d <= 64)} memory: blackhole_shadow peak RSS {d:+.0f} MiB vs fast_shadow"
            " (target <= 64)"
        )
    errors = sum(r.errors for r in results)
    out.append(f"{_mark(errors == 0)} production errors: {errors} (target 0)")
    baseline = by_name.get("tee_baseline")
    if fast and baseline:
        x = fast.requests_per_second / baseline.requests_per_second
        out.append(
            f"{_mark(x >= 6000 / 5700)} throughput vs a minimal aiohttp tee: fast_shadow {x:.2f} x"
            " tee_baseline (the absolute target, 6000/s where such a tee does 5700/s: >= 1.05)"
        )
    store = by_name.get("fast_shadow_store")
    if fast and store:
        x = store.requests_per_second / fast.requests_per_second
        out.append(
            f"{_mark(x >= 0.9)} store cost: fast_shadow_store {x:.2f} x fast_shadow throughput,"
            f" p99 {store.p99_ms / fast.p99_ms:.2f} x (target >= 0.90)"
        )
    if fast:
        out.append(
            f"{_mark(fast.requests_per_second >= 6000)} throughput: fast_shadow "
            f"{fast.requests_per_second:.0f} req/s (target >= 6000 on the reference machine)"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated subset (default: all)",
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="proxy worker processes")
    parser.add_argument("--generator", choices=("auto", "wrk", "loadgen"), default="auto")
    parser.add_argument(
        "--json", type=Path, help="where to write results (default: loadtest/results/)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="seconds, not minutes: the machinery, not the speed"
    )
    args = parser.parse_args(argv)

    if args.smoke:
        args.duration, args.warmup, args.connections = 1.0, 0.0, 4
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "loadgen"
    known = {s.name: s for s in SCENARIOS}
    wanted = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")

    print(
        f"shadow-proxy bench: {len(wanted)} scenarios x {args.duration:g} s, "
        f"{args.connections} connections, load from {generator}, {os.cpu_count()} CPUs",
        file=sys.stderr,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        workdir = Path(tmp)
        with model_servers(workdir) as models:
            for name in wanted:
                results.append(
                    run_scenario(
                        known[name],
                        models,
                        workdir,
                        connections=args.connections,
                        duration=args.duration,
                        warmup=args.warmup,
                        generator=generator,
                        workers=args.workers,
                    )
                )
    print()
    print(table(results))
    print()
    for line in checks(results):
        print(line)
    out = args.json
    if out is None:
        out = REPO / "loadtest" / "results" / time.strftime("bench-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "settings": {
            "duration": args.duration, "warmup": args.warmup, "connections": args.connections,
            "generator": generator, "workers": args.workers, "cpus": os.cpu_count(),
        },
        "results": [asdict(r) for r in results],
        "checks": checks(results),
    }  # fmt: skip
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

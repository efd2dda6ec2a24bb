"""The benchmark: lean model-server stand-ins, then per scenario a fresh proxy (or nginx) driven
at a fixed concurrency from a separate process; prints a table and the targets, writes JSON.

    bash loadtest/bench                        # every scenario, 15 s each, about 5 minutes
    bash loadtest/bench --duration 60 --scenarios fast_shadow,nginx_mirror

Scenarios. Yardsticks: direct (the production stand-in alone: the physical limit), nginx_mirror
(nginx's `mirror` to the fast shadow), tee_baseline (a minimal aiohttp tee). The proxy:
no_shadow, fast_shadow, three_shadows, fast_shadow_store (every request recorded), all_disagree
and all_disagree_capture (a shadow that disagrees on every request, without and with every
exchange captured). Isolation,
each judged against fast_shadow: slow_shadow (200 ms slower), blackhole_shadow (never answers),
huge_shadow (answers 50 MB JSON bodies), analysis_killed (kill -9 of the proxy's analysis
process mid-window; skipped while there is none), reload_yaml_bomb and reload_10mb_config (the
config file overwritten mid-window, then SIGHUP; restored after the window).

Every stand-in is loadtest.raw_backend. Load comes from wrk when it is installed (Debian's
package), else from loadtest.loadgen. CPU per request is read from /proc over the measured
window (after warm-up), per process of the thing under test (loadtest.procstat).
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadtest import nginx_mirror
from loadtest.hostile_configs import padded_config, yaml_bomb
from loadtest.procstat import CpuMeter, ProcessCpu, process_tree, with_role

REPO = Path(__file__).resolve().parents[1]
ROUTE = "/v1/models/m:predict"
BODY = '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}'
TICK = 0.2  # seconds between readings of /proc (and checks for a mid-window event)

HUGE_BYTES = 50 * 1024 * 1024
BOMB_DEPTH = 9
BIG_CONFIG_BYTES = 10 * 1024 * 1024
# --smoke: the machinery, not the speed; hostile inputs small enough for a test run.
SMOKE_HUGE_BYTES = 1024 * 1024
SMOKE_BOMB_DEPTH = 5
SMOKE_BIG_CONFIG_BYTES = 512 * 1024


def backend_options(huge_bytes: int) -> dict[str, list[str]]:
    """name -> loadtest.raw_backend options. One process per behaviour; shadows share them."""
    return {
        "prod": [],
        "fast": ["--disagree", "0.1"],
        "contrary": ["--disagree", "1.0"],
        "slow": ["--disagree", "0.1", "--latency", "200ms"],
        "blackhole": ["--blackhole"],
        "huge": ["--disagree", "0.1", "--answer-bytes", str(huge_bytes)],
    }


class Event(StrEnum):
    """What a scenario does to the proxy in the middle of its measured window."""

    KILL_ANALYSIS = "kill -9 the analysis process"
    RELOAD_YAML_BOMB = "write a YAML alias bomb over the config, then SIGHUP"
    RELOAD_BIG_CONFIG = "write a big valid config over the config, then SIGHUP"


@dataclass(frozen=True)
class Scenario:
    name: str
    shadows: tuple[str, ...] = ()  # backend names from backend_options
    direct: bool = False
    baseline: bool = False  # loadtest.tee_baseline instead of the proxy
    nginx: bool = False  # nginx's mirror instead of the proxy
    store: bool = False  # record every request in the embedded prediction store
    capture: bool = False  # capture every exchange (the drill-down's, with no rate cap)
    event: Event | None = None


SCENARIOS = (
    Scenario("direct", direct=True),
    Scenario("nginx_mirror", ("fast",), nginx=True),
    Scenario("tee_baseline", ("fast",), baseline=True),
    Scenario("no_shadow"),
    Scenario("fast_shadow", ("fast",)),
    Scenario("slow_shadow", ("slow",)),
    Scenario("blackhole_shadow", ("blackhole",)),
    Scenario("huge_shadow", ("huge",)),
    Scenario("analysis_killed", ("fast",), event=Event.KILL_ANALYSIS),
    Scenario("reload_yaml_bomb", ("fast",), event=Event.RELOAD_YAML_BOMB),
    Scenario("reload_10mb_config", ("fast",), event=Event.RELOAD_BIG_CONFIG),
    Scenario("three_shadows", ("fast", "fast", "fast")),
    Scenario("fast_shadow_store", ("fast",), store=True),
    Scenario("all_disagree", ("contrary",)),
    Scenario("all_disagree_capture", ("contrary",), capture=True),
)

ISOLATION = (
    "slow_shadow",
    "blackhole_shadow",
    "huge_shadow",
    "analysis_killed",
    "reload_yaml_bomb",
    "reload_10mb_config",
)
"""Scenarios where production's p99 must stay within 1.2x of fast_shadow's, with 0 errors."""

FRONT_ROLES = frozenset({"run", "worker", "tee_baseline"})
"""The processes that serve clients, while no process has the role "front": the proxy's `run`
(not the supervisor), nginx's workers, the baseline tee."""


@dataclass(frozen=True)
class Settings:
    connections: int
    duration: float
    warmup: float
    generator: str
    workers: int
    nginx: str | None  # the binary; None: not installed
    nginx_workers: str
    huge_bytes: int
    bomb_depth: int
    big_config_bytes: int


@dataclass
class Result:
    scenario: str
    requests: int = 0
    requests_per_second: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0  # seen by the load generator: non-2xx answers and socket errors
    skipped: str | None = None  # why the scenario did not run
    # The thing under test (the proxy, nginx, the tee) over the measured window:
    proxy_cpu_seconds: float | None = None
    proxy_peak_rss_mib: float | None = None
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)  # by process key
    cpu_us_per_request_total: float | None = None
    front_cpu_us_per_request: float | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)  # key, role, pid, front, cpu
    backend_cpu_us_per_request: float | None = None  # every stand-in together
    shadow_dropped: int | None = None
    shadow_compared: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Backends:
    ports: dict[str, int]
    pids: list[int]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise SystemExit(f"{url}: the server exited ({proc.returncode}) before ready\n{tail}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"{url} did not become ready in 30 s")


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
def backends(workdir: Path, huge_bytes: int) -> Iterator[Backends]:
    options = backend_options(huge_bytes)
    ports = {name: _free_port() for name in options}
    procs = {
        name: _spawn(
            ["-m", "loadtest.raw_backend", "--port", str(ports[name]), *opts],
            workdir / f"backend-{name}.log",
        )
        for name, opts in options.items()
    }
    try:
        for name, port in ports.items():
            _wait_ready(f"http://127.0.0.1:{port}/healthz", procs[name])
        yield Backends(ports, [proc.pid for proc in procs.values()])
    finally:
        for proc in procs.values():
            _stop(proc)


def proxy_config(
    scenario: Scenario, port: int, ports: dict[str, int], workdir: Path
) -> dict[str, Any]:
    """The proxy's config for a scenario (written as JSON, which is YAML)."""

    def url(model: str) -> str:
        return f"http://127.0.0.1:{ports[model]}{ROUTE}"

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
    if scenario.capture:
        # Every exchange disagrees, and every one is kept: the capture's worst case.
        config["capture"] = {
            "path": str(workdir / f"{scenario.name}-capture.db"),
            "max_per_second": 1_000_000,
            "queue": 100_000,
        }
    return config


def _proc_peak_rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


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


def _progress(label: str, elapsed: float, duration: float) -> None:
    done = min(elapsed, duration)
    bar = "#" * int(20 * done / duration)
    print(f"\r  {label:<24} [{bar:<20}] {done:4.0f}/{duration:g} s", end="", file=sys.stderr)


def drive(
    url: str,
    *,
    connections: int,
    duration: float,
    generator: str,
    label: str,
    on_tick: Callable[[float | None], None] | None = None,
) -> dict[str, Any]:
    """Run the load generator in its own process for `duration` seconds. `on_tick` is called
    every TICK seconds with the time since the load started (None while it starts up)."""
    marker: Path | None = None
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
        marker = Path(tempfile.mkdtemp(prefix="loadgen-")) / "started"
        cmd = [
            sys.executable, "-m", "loadtest.loadgen", "--url", url, "--body", BODY,
            "--connections", str(connections), "--duration", str(duration), "--no-progress",
            "--started-file", str(marker),
        ]  # fmt: skip
    spawned = time.monotonic()
    started: float | None = spawned if marker is None else None
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while proc.poll() is None:
        if started is None and marker is not None and marker.exists():
            started = time.monotonic()
        elapsed = None if started is None else time.monotonic() - started
        _progress(label, elapsed or 0.0, seconds)
        if on_tick is not None:
            on_tick(elapsed)
        time.sleep(TICK)
    _progress(label, seconds, seconds)
    print(file=sys.stderr)
    out, err = proc.communicate()
    if marker is not None:
        shutil.rmtree(marker.parent, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{err}")
    if generator == "wrk":
        lua.unlink()
        return parse_wrk(out)
    figures = json.loads(out)
    return {key: figures[key] for key in FIGURES}


def scrape(url: str) -> dict[str, float]:
    """The proxy's figures that the report shows, from its /metrics."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        totals[key] = totals.get(key, 0) + value

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "shadowproxy_shadow_skipped_total" and s.labels["reason"] != "sampled_out":
                add("dropped", s.value)
            elif s.name == "shadowproxy_handoff_total" and s.labels["result"] != "sent":
                add("dropped", s.value)  # never reached the analysis process
            elif s.name == "shadowproxy_compared_instances_total":
                add("compared", s.value)
            elif s.name in ("shadowproxy_recorded_total", "shadowproxy_recording_dropped_total"):
                add("records_" + ("written" if "dropped" not in s.name else "dropped"), s.value)
            elif (
                s.name == "shadowproxy_upstream_requests_total"
                and s.labels["role"] == "production"
                and s.labels["outcome"] != "ok"
            ):
                add("production_errors", s.value)
            elif s.name == "shadowproxy_capture_total":
                add(f"capture_{s.labels['result']}", s.value)
            elif s.name == "shadowproxy_config_reloads_total":
                add(f"config_reloads_{s.labels['result']}", s.value)
    return totals


def is_front(process: ProcessCpu, processes: Sequence[ProcessCpu]) -> bool:
    """Whether `process` serves clients: role "front" once there is one, else FRONT_ROLES."""
    if any(p.role == "front" for p in processes):
        return process.role == "front"
    return process.role in FRONT_ROLES


def cpu_figures(
    processes: Sequence[ProcessCpu], stand_ins: Sequence[ProcessCpu], requests: int
) -> dict[str, Any]:
    """Result fields: CPU µs per request completed in the window, per process and summed."""

    def per_request(seconds: float) -> float | None:
        return round(seconds * 1e6 / requests, 1) if requests else None

    total = sum(p.cpu_seconds for p in processes)
    front = [p for p in processes if is_front(p, processes)]
    return {
        "proxy_cpu_seconds": round(total, 3) if processes else None,
        "cpu_us_per_request": {
            p.key: us for p in processes if (us := per_request(p.cpu_seconds)) is not None
        },
        "cpu_us_per_request_total": per_request(total) if processes else None,
        "front_cpu_us_per_request": (
            per_request(sum(p.cpu_seconds for p in front)) if front else None
        ),
        "processes": [
            {**asdict(p), "front": is_front(p, processes), "cpu_seconds": round(p.cpu_seconds, 3)}
            for p in processes
        ],
        "backend_cpu_us_per_request": per_request(sum(p.cpu_seconds for p in stand_ins)),
    }


@dataclass
class Window:
    """What one measured window gave: the load's figures, the CPU, what its event did."""

    figures: dict[str, Any]
    processes: list[ProcessCpu]
    stand_ins: list[ProcessCpu]
    event: dict[str, Any]


class _Run:
    """One scenario's run: its warm-up, its measured window, its Result."""

    def __init__(
        self, scenario: Scenario, stand_ins: Backends, workdir: Path, settings: Settings
    ) -> None:
        self.scenario = scenario
        self.stand_ins = stand_ins
        self.workdir = workdir
        self.settings = settings
        self.load: dict[str, Any] = {
            "connections": settings.connections,
            "generator": settings.generator,
        }

    def warm(self, url: str) -> None:
        if self.settings.warmup:
            label = f"{self.scenario.name} warmup"
            drive(url, duration=self.settings.warmup, label=label, **self.load)

    def window(
        self,
        url: str,
        roots: Callable[[], list[int]],
        event: Callable[[float], dict[str, Any]] | None = None,
    ) -> Window:
        """The measured window: the load, CPU read over it, `event` fired at its middle."""
        # Read /proc every 10 ms from threads of their own: the load generator's ticks come
        # late on a busy machine, and a reload's validator lives a fraction of a second.
        tested = CpuMeter(roots, every=0.01)
        stand_ins = CpuMeter(lambda: self.stand_ins.pids, every=0.01)
        middle = self.settings.duration / 2
        fired: dict[str, Any] = {}

        def tick(elapsed: float | None) -> None:
            if event and not fired and elapsed is not None and elapsed >= middle:
                fired.update(event(elapsed))

        tested.start()
        stand_ins.start()
        figures = drive(
            url,
            duration=self.settings.duration,
            label=self.scenario.name,
            on_tick=tick,
            **self.load,
        )
        return Window(figures, tested.stop(), stand_ins.stop(), fired)

    def result(self, measured: Window, **fields: Any) -> Result:
        requests = int(measured.figures["requests"])
        cpu = cpu_figures(measured.processes, measured.stand_ins, requests)
        return Result(self.scenario.name, **measured.figures, **cpu, **fields)

    def direct(self) -> Result:
        url = f"http://127.0.0.1:{self.stand_ins.ports['prod']}{ROUTE}"
        self.warm(url)
        return self.result(self.window(url, lambda: []))

    def nginx(self) -> Result:
        if self.settings.nginx is None:
            return Result(self.scenario.name, skipped="nginx not installed")
        shadow = self.stand_ins.ports[self.scenario.shadows[0]]
        prefix = self.workdir / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        port = _free_port()
        (prefix / "nginx.conf").write_text(
            nginx_mirror.nginx_config(
                port=port,
                production_port=self.stand_ins.ports["prod"],
                shadow_port=shadow,
                workers=self.settings.nginx_workers,
                user=nginx_mirror.current_user(),
            )
        )
        with (prefix / "nginx-stderr.log").open("ab") as err:
            nginx = subprocess.Popen(
                nginx_mirror.command(self.settings.nginx, prefix),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base + "/readyz", nginx, prefix / "nginx-error.log")
            self.warm(base + ROUTE)
            before = _received(shadow)
            measured = self.window(base + ROUTE, lambda: [nginx.pid])
            received = _received(shadow) - before
            rss = sum(_proc_peak_rss_mib(p) for p in process_tree([nginx.pid]))
        finally:
            _stop(nginx)
        return self.result(
            measured,
            proxy_peak_rss_mib=round(rss, 1),
            extra={"shadow_requests_received": received},
        )

    def proxy(self) -> Result:
        scenario, settings, ports = self.scenario, self.settings, self.stand_ins.ports
        port = _free_port()
        cfg = self.workdir / f"{scenario.name}.yaml"
        config = proxy_config(scenario, port, ports, self.workdir)
        original = json.dumps(config, indent=2) + "\n"
        cfg.write_text(original)
        args = ["-m", "proxy", "run", "--config", str(cfg), "--workers", str(settings.workers)]
        if scenario.baseline:
            args = [
                "-m", "loadtest.tee_baseline", "--port", str(port),
                "--production", f"http://127.0.0.1:{ports['prod']}{ROUTE}",
                "--shadow", f"http://127.0.0.1:{ports['fast']}{ROUTE}",
            ]  # fmt: skip
        log = self.workdir / f"proxy-{scenario.name}.log"
        proxy = _spawn(args, log)
        base = f"http://127.0.0.1:{port}"
        top = proxy.pid
        event: Callable[[float], dict[str, Any]] | None = None
        after: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        try:
            _wait_ready(base + "/readyz", proxy, log)
            if scenario.event is Event.KILL_ANALYSIS:
                if not with_role([top], "analysis"):
                    return Result(scenario.name, skipped="no analysis process")
                event = _kill_analysis(top)
            elif scenario.event is Event.RELOAD_YAML_BOMB:
                event = _reload(top, cfg, yaml_bomb(config, depth=settings.bomb_depth))
            elif scenario.event is Event.RELOAD_BIG_CONFIG:
                event = _reload(top, cfg, padded_config(original, settings.big_config_bytes))
            self.warm(base + ROUTE)
            measured = self.window(base + ROUTE, lambda: [top], event)
            cfg.write_text(original)
            if scenario.event is Event.KILL_ANALYSIS:
                now = set(with_role([top], "analysis"))
                after["analysis_restarted"] = bool(now - {measured.event.get("killed_pid")})
            rss = sum(_proc_peak_rss_mib(p) for p in process_tree([top]))
            if not scenario.baseline:
                try:
                    metrics = scrape(base + "/metrics")
                    # A reload is validated in a child process, which may outlast a short
                    # window: its result is read once it is counted.
                    deadline = time.monotonic() + 30
                    while (
                        scenario.event in (Event.RELOAD_YAML_BOMB, Event.RELOAD_BIG_CONFIG)
                        and not any(
                            k.startswith("config_reloads_") and v for k, v in metrics.items()
                        )
                        and time.monotonic() < deadline
                    ):
                        time.sleep(0.1)
                        metrics = scrape(base + "/metrics")
                except (OSError, ValueError) as exc:
                    after["metrics_error"] = str(exc)
        finally:
            cfg.write_text(original)
            _stop(proxy)
        extra: dict[str, Any] = {
            "production_errors_in_metrics": int(metrics.get("production_errors", 0))
        }
        if scenario.store:
            extra.update(
                {k: int(metrics.get(k, 0)) for k in ("records_written", "records_dropped")}
            )
        if scenario.capture:
            extra.update({k: int(v) for k, v in metrics.items() if k.startswith("capture_")})
        if scenario.event is not None:
            extra["event"] = {"what": scenario.event.value, **measured.event, **after}
            reloads = {k: int(v) for k, v in metrics.items() if k.startswith("config_reloads_")}
            extra.update(reloads)
        else:
            extra.update(after)
        return self.result(
            measured,
            proxy_peak_rss_mib=round(rss, 1),
            shadow_dropped=None if scenario.baseline else int(metrics.get("dropped", 0)),
            shadow_compared=None if scenario.baseline else int(metrics.get("compared", 0)),
            extra=extra,
        )


def run_scenario(
    scenario: Scenario, stand_ins: Backends, workdir: Path, settings: Settings
) -> Result:
    run = _Run(scenario, stand_ins, workdir, settings)
    if scenario.direct:
        return run.direct()
    if scenario.nginx:
        return run.nginx()
    return run.proxy()


def _kill_analysis(top: int) -> Callable[[float], dict[str, Any]]:
    def event(elapsed: float) -> dict[str, Any]:
        pids = with_role([top], "analysis")
        if not pids:
            return {"at_s": round(elapsed, 2), "error": "no analysis process to kill"}
        os.kill(pids[0], signal.SIGKILL)
        return {"at_s": round(elapsed, 2), "killed_pid": pids[0]}

    return event


def _reload(top: int, cfg: Path, text: str) -> Callable[[float], dict[str, Any]]:
    def event(elapsed: float) -> dict[str, Any]:
        cfg.write_text(text)
        os.kill(top, signal.SIGHUP)
        return {"at_s": round(elapsed, 2), "config_bytes": len(text.encode())}

    return event


def _received(port: int) -> int:
    """Prediction requests the stand-in on `port` has received so far."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
        return int(json.loads(resp.read())["requests"])


def _ratio(value: float, other: Result | None, attr: str) -> str:
    if other is None or other.skipped is not None or not getattr(other, attr):
        return "-"
    return f"{value / getattr(other, attr):.2f}"


def _figure(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: Sequence[Result]) -> str:
    by_name = {r.scenario: r for r in results}
    direct, nginx, fast = (by_name.get(n) for n in ("direct", "nginx_mirror", "fast_shadow"))
    head = (
        f"{'scenario':<20}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'/direct':>8}{'/nginx':>8}"
        f"{'p99/fast':>9}{'errors':>7}{'us/req':>8}{'front us':>9}{'backend us':>11}"
        f"{'rss MiB':>8}{'dropped':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if r.skipped is not None:
            lines.append(f"{r.scenario:<20}skipped: {r.skipped}")
            continue
        lines.append(
            f"{r.scenario:<20}{r.requests_per_second:>9.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}"
            f"{_ratio(r.requests_per_second, direct, 'requests_per_second'):>8}"
            f"{_ratio(r.requests_per_second, nginx, 'requests_per_second'):>8}"
            f"{_ratio(r.p99_ms, fast, 'p99_ms'):>9}{r.errors:>7}"
            f"{_figure(r.cpu_us_per_request_total):>8}{_figure(r.front_cpu_us_per_request):>9}"
            f"{_figure(r.backend_cpu_us_per_request):>11}{_figure(r.proxy_peak_rss_mib):>8}"
            f"{_figure(r.shadow_dropped, 'd'):>8}"
        )
        if r.cpu_us_per_request:
            shares = ", ".join(f"{key} {us:.1f}" for key, us in r.cpu_us_per_request.items())
            lines.append(f"    us/req by process: {shares}")
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def checks(results: Sequence[Result]) -> list[str]:
    """The issue's targets, as pass/fail lines ("skip" where a scenario could not run)."""
    by_name = {r.scenario: r for r in results}
    ran = [r for r in results if r.skipped is None]
    out = []
    fast = by_name.get("fast_shadow")
    if fast is not None and fast.skipped is not None:
        fast = None
    for name in ISOLATION:
        r = by_name.get(name)
        if r is None:
            continue
        if r.skipped is not None:
            out.append(f"skip isolation: {name}: {r.skipped}")
            continue
        if fast is None or not fast.p99_ms:
            out.append(f"skip isolation: {name}: run fast_shadow too, to compare with")
            continue
        x = r.p99_ms / fast.p99_ms
        out.append(
            f"{_mark(x <= 1.2 and r.errors == 0)} isolation: {name} p99 = {x:.2f} x fast_shadow"
            f" p99 (target <= 1.2), production errors {r.errors} (target 0)"
        )
    bh = by_name.get("blackhole_shadow")
    if fast and bh and fast.proxy_peak_rss_mib is not None and bh.proxy_peak_rss_mib is not None:
        d = bh.proxy_peak_rss_mib - fast.proxy_peak_rss_mib
        out.append(
            f"{_mark(d <= 64)} memory: blackhole_shadow peak RSS {d:+.0f} MiB vs fast_shadow"
            " (target <= 64)"
        )
    errors = sum(r.errors for r in ran)
    out.append(f"{_mark(errors == 0)} production errors: {errors} (target 0)")
    nginx = by_name.get("nginx_mirror")
    if fast and nginx:
        if nginx.skipped is not None:
            out.append(f"skip throughput vs nginx: nginx_mirror {nginx.skipped}")
        elif nginx.requests_per_second:
            x = fast.requests_per_second / nginx.requests_per_second
            out.append(
                f"{_mark(x >= 1.0)} throughput vs nginx: fast_shadow {x:.2f} x nginx_mirror"
                " req/s (target >= 1.0)"
            )
    if fast and fast.front_cpu_us_per_request is not None:
        us = fast.front_cpu_us_per_request
        out.append(
            f"{_mark(us <= 50)} CPU: fast_shadow's front process {us:.0f} us per request"
            " (target <= 50)"
        )
    if fast and fast.cpu_us_per_request_total is not None:
        us = fast.cpu_us_per_request_total
        out.append(
            f"{_mark(us <= 150)} CPU: fast_shadow's processes together {us:.0f} us per request"
            " (target <= 150)"
        )
    baseline = by_name.get("tee_baseline")
    if fast and baseline and baseline.skipped is None and baseline.requests_per_second:
        x = fast.requests_per_second / baseline.requests_per_second
        out.append(
            f"{_mark(x >= 6000 / 5700)} throughput vs a minimal aiohttp tee: fast_shadow {x:.2f} x"
            " tee_baseline (the absolute target, 6000/s where such a tee does 5700/s: >= 1.05)"
        )
    store = by_name.get("fast_shadow_store")
    if fast and store and store.skipped is None and fast.requests_per_second and fast.p99_ms:
        x = store.requests_per_second / fast.requests_per_second
        out.append(
            f"{_mark(x >= 0.9)} store cost: fast_shadow_store {x:.2f} x fast_shadow throughput,"
            f" p99 {store.p99_ms / fast.p99_ms:.2f} x (target >= 0.90)"
        )
    plain, captured = by_name.get("all_disagree"), by_name.get("all_disagree_capture")
    if plain and captured and captured.skipped is None and plain.requests_per_second:
        x = captured.requests_per_second / plain.requests_per_second
        out.append(
            f"{_mark(x >= 0.9)} capture cost: all_disagree_capture {x:.2f} x all_disagree"
            " throughput, every request disagreeing and captured (target >= 0.90)"
        )
    if fast:
        out.append(
            f"{_mark(fast.requests_per_second >= 6000)} throughput: fast_shadow "
            f"{fast.requests_per_second:.0f} req/s (target >= 6000 on the reference machine)"
        )
    return out


def _nginx_workers(text: str) -> str:
    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"a number of workers or 'auto', not {text!r}")


def _nginx_version(nginx: str | None) -> str | None:
    if nginx is None:
        return None
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return done.stderr.strip().removeprefix("nginx version: ") or None


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
    parser.add_argument(
        "--nginx-workers",
        type=_nginx_workers,
        help="nginx worker processes, a number or 'auto' (default: as --workers)",
    )
    parser.add_argument("--nginx", help="the nginx binary (default: nginx on PATH or in sbin)")
    parser.add_argument("--generator", choices=("auto", "wrk", "loadgen"), default="auto")
    parser.add_argument(
        "--huge-bytes", type=int, help=f"huge_shadow's answer size (default {HUGE_BYTES})"
    )
    parser.add_argument(
        "--bomb-depth",
        type=int,
        help=f"reload_yaml_bomb's nesting, 9**depth (default {BOMB_DEPTH})",
    )
    parser.add_argument(
        "--big-config-bytes",
        type=int,
        help=f"reload_10mb_config's size (default {BIG_CONFIG_BYTES})",
    )
    parser.add_argument(
        "--json", type=Path, help="where to write results (default: loadtest/results/)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds, not minutes, and small hostile inputs: the machinery, not the speed",
    )
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="instead of the scenarios, the soak (loadtest/soak.py) for this long, e.g. 1800",
    )
    args = parser.parse_args(argv)
    if args.soak:
        from loadtest import soak

        out = REPO / "loadtest" / "results"
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return soak.main(
            ["--duration", str(args.soak), "--json", str(out / f"soak-{stamp}.json"),
             "--png", str(out / f"soak-{stamp}.png")]
        )  # fmt: skip

    if args.smoke:
        args.duration, args.warmup, args.connections = 1.0, 0.0, 4
    smoke = args.smoke

    def pick(value: int | None, real: int, small: int) -> int:
        return value if value is not None else (small if smoke else real)

    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "loadgen"
    known = {s.name: s for s in SCENARIOS}
    wanted = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    nginx = nginx_mirror.find_nginx(args.nginx)
    settings = Settings(
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        generator=generator,
        workers=args.workers,
        nginx=nginx,
        nginx_workers=args.nginx_workers or str(args.workers),
        huge_bytes=pick(args.huge_bytes, HUGE_BYTES, SMOKE_HUGE_BYTES),
        bomb_depth=pick(args.bomb_depth, BOMB_DEPTH, SMOKE_BOMB_DEPTH),
        big_config_bytes=pick(args.big_config_bytes, BIG_CONFIG_BYTES, SMOKE_BIG_CONFIG_BYTES),
    )
    nginx_version = _nginx_version(nginx)

    print(
        f"shadow-proxy bench: {len(wanted)} scenarios x {args.duration:g} s, "
        f"{args.connections} connections, load from {generator}, {os.cpu_count()} CPUs, "
        f"nginx {nginx_version or 'not installed'}",
        file=sys.stderr,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        workdir = Path(tmp)
        with backends(workdir, settings.huge_bytes) as stand_ins:
            for name in wanted:
                results.append(run_scenario(known[name], stand_ins, workdir, settings))
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
            **asdict(settings), "cpus": os.cpu_count(), "nginx_version": nginx_version,
            "smoke": smoke,
        },
        "results": [asdict(r) for r in results],
        "checks": checks(results),
    }  # fmt: skip
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark machinery: its parsers and generators exactly, then a smoke run (seconds) of
the scenarios; it runs and reports completely; speed is not judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadtest import nginx_mirror
from loadtest.bench import (
    SCENARIOS,
    Backends,
    Result,
    Settings,
    checks,
    cpu_figures,
    parse_wrk,
    proxy_config,
    run_scenario,
    table,
)
from loadtest.hostile_configs import bomb_classes, padded_config, yaml_bomb
from loadtest.procstat import CpuMeter, ProcessCpu, keyed, parse_stat, role
from proxy.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[1]

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:9001/v1/models/m:predict
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   449.10us  163.60us   3.42ms   81.39%
    Req/Sec     8.98k     1.74k   10.36k    72.73%
  Latency Distribution
     50%  440.00us
     75%  506.00us
     90%  617.00us
     99%    0.91ms
  9807 requests in 1.10s, 1.52MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   8919.05
Transfer/sec:      1.39MB
"""


def test_wrk_output_is_read_exactly() -> None:
    assert parse_wrk(WRK_OUTPUT) == {
        "requests": 9807,
        "requests_per_second": 8919.05,
        "p50_ms": 0.44,
        "p90_ms": 0.617,
        "p99_ms": 0.91,
        "errors": 6,
    }


# --- /proc: CPU time and roles ----------------------------------------------------------------


def test_proc_stat_is_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    text = (
        "4242 (py (x) y) S 1 4242 4242 0 -1 4194560 1500 0 0 0 "
        "317 42 0 0 20 0 3 0 478700 2998272 393 18446744073709551615\n"
    )
    assert parse_stat(text) == (317, 42)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/python3", "-m", "proxy", "run", "--config", "c.yaml"], "run"),
        (["python", "-m", "proxy", "run", "--config", "c.yaml", "--workers", "1"], "run"),
        (["python", "-m", "proxy", "run", "--config", "c.yaml", "--workers", "2"], "supervisor"),
        (["python", "-m", "proxy", "run", "--workers=3"], "supervisor"),
        (["python", "-m", "proxy", "run", "--config", "c.yaml", "--reuse-port"], "run"),
        (["python", "-m", "proxy", "analysis", "--config", "c.yaml"], "analysis"),
        (["python", "-m", "proxy", "run", "--role", "front", "--config", "c.yaml"], "front"),
        (["python", "-m", "proxy", "run", "--role=analysis"], "analysis"),
        (["/venv/bin/shadow-proxy", "run", "--workers", "4"], "supervisor"),
        (["python", "-m", "loadtest.tee_baseline", "--port", "1"], "tee_baseline"),
        (["python", "-m", "loadtest.raw_backend", "--port", "1"], "raw_backend"),
        (["nginx: master process /usr/sbin/nginx -p /tmp/x/ -c /tmp/x/nginx.conf"], "master"),
        (["nginx: worker process" + " " * 40], "worker"),
        (["nginx: cache manager process"], "cache_manager"),
        (["/usr/bin/redis-server", "*:6379"], "redis-server"),
        ([], "?"),
    ],
)
def test_role_is_read_from_the_command_line(argv: list[str], expected: str) -> None:
    cmdline = b"".join(arg.encode() + b"\0" for arg in argv)
    assert role(cmdline) == expected


def test_cpu_meter_names_a_process_by_its_command_line_after_exec() -> None:
    # Seen between fork and exec, a child still carries its parent's command line: the role
    # it ends up with is the one after exec, read by the meter's own sampling thread.
    script = (
        "import os, sys\nsys.stdin.readline()\n"
        "os.execv(sys.executable, [sys.executable, '-c', "
        "'import sys; print(1, flush=True); sys.stdin.readline()', '--role', 'renamed'])\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None
    assert child.stdout is not None
    meter = CpuMeter(lambda: [child.pid], every=0.01)
    try:
        meter.start()
        child.stdin.write("exec\n")
        child.stdin.flush()
        assert child.stdout.readline() == "1\n"
        (seen,) = meter.stop()
        assert (seen.key, seen.role, seen.pid) == ("renamed", "renamed", child.pid)
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()


def test_keys_number_the_roles_that_several_processes_share() -> None:
    assert keyed([(30, "worker"), (10, "master"), (20, "worker")]) == {
        10: "master",
        20: "worker.1",
        30: "worker.2",
    }


def test_cpu_meter_counts_a_process_born_in_the_window_from_zero() -> None:
    children: list[int] = []
    meter = CpuMeter(lambda: children)
    meter.start()
    burn = (
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
        "print('burnt', flush=True)\ntime.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        children.append(child.pid)
        meter.poll()
        assert child.stdout is not None
        assert child.stdout.readline() == "burnt\n"
        (seen,) = meter.stop()
        name = Path(sys.executable).name
        assert (seen.key, seen.role, seen.pid) == (name, name, child.pid)
        assert 0.3 <= seen.cpu_seconds < 5
        # Present at the start of a window: only what it spends in it counts (it sleeps).
        meter.start()
        (idle,) = meter.stop()
        assert idle.cpu_seconds < 0.05
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_cpu_per_request_is_per_process_and_summed_with_the_front_apart() -> None:
    processes = [
        ProcessCpu("supervisor", "supervisor", 10, 0.01),
        ProcessCpu("front", "front", 11, 0.40),
        ProcessCpu("analysis", "analysis", 12, 0.60),
    ]
    stand_ins = [ProcessCpu("raw_backend.1", "raw_backend", 20, 0.05)]
    figures = cpu_figures(processes, stand_ins, requests=10_000)
    assert figures["cpu_us_per_request"] == {"supervisor": 1.0, "front": 40.0, "analysis": 60.0}
    assert figures["cpu_us_per_request_total"] == 101.0
    assert figures["front_cpu_us_per_request"] == 40.0
    assert figures["backend_cpu_us_per_request"] == 5.0
    assert figures["proxy_cpu_seconds"] == 1.01
    assert [p["front"] for p in figures["processes"]] == [False, True, False]
    # Today's single process, nginx's workers: front without a "front" role.
    nginx = [ProcessCpu("master", "master", 1, 0.0), ProcessCpu("worker", "worker", 2, 0.2)]
    assert cpu_figures(nginx, [], requests=1000)["front_cpu_us_per_request"] == 200.0
    assert cpu_figures([], stand_ins, requests=0)["cpu_us_per_request_total"] is None


# --- nginx -------------------------------------------------------------------------------------

NGINX_CONF = """\
user bench staff;
worker_processes 1;
pid nginx.pid;
error_log nginx-error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream production {
        server 127.0.0.1:9001;
        keepalive 64;
        keepalive_requests 1000000;
    }

    upstream shadow {
        server 127.0.0.1:9002;
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:8080;

        location = /readyz {
            return 200 "ok\\n";
        }

        location / {
            mirror /mirror;
            mirror_request_body on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://production;
        }

        location = /mirror {
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://shadow$request_uri;
        }
    }
}
"""


def test_nginx_config_is_exact() -> None:
    text = nginx_mirror.nginx_config(
        port=8080, production_port=9001, shadow_port=9002, workers=1, user=("bench", "staff")
    )
    assert text == NGINX_CONF
    auto = nginx_mirror.nginx_config(port=1, production_port=2, shadow_port=3, workers="auto")
    assert auto.splitlines()[0] == "worker_processes auto;"


def test_nginx_command_runs_in_the_foreground_under_its_prefix() -> None:
    assert nginx_mirror.command("/usr/sbin/nginx", Path("/tmp/b/nginx")) == [
        "/usr/sbin/nginx",
        "-p",
        "/tmp/b/nginx/",
        "-c",
        "/tmp/b/nginx/nginx.conf",
        "-e",
        "/tmp/b/nginx/nginx-error.log",
        "-g",
        "daemon off;",
    ]
    assert nginx_mirror.find_nginx("/nonexistent/nginx") is None


def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    nginx = nginx_mirror.find_nginx()
    assert nginx is not None, "nginx is installed by .ci/test (need nginx nginx-light)"
    (tmp_path / "tmp").mkdir()
    (tmp_path / "nginx.conf").write_text(
        nginx_mirror.nginx_config(
            port=8080,
            production_port=9001,
            shadow_port=9002,
            user=nginx_mirror.current_user(),
        )
    )
    done = subprocess.run(
        [*nginx_mirror.command(nginx, tmp_path), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_without_nginx_the_scenario_says_it_is_skipped(tmp_path: Path) -> None:
    settings = Settings(
        connections=4,
        duration=1.0,
        warmup=0.0,
        generator="loadgen",
        workers=1,
        nginx=None,
        nginx_workers="1",
        huge_bytes=1024,
        bomb_depth=3,
        big_config_bytes=4096,
    )
    (scenario,) = (s for s in SCENARIOS if s.name == "nginx_mirror")
    result = run_scenario(scenario, Backends({}, []), tmp_path, settings)
    assert result == Result("nginx_mirror", skipped="nginx not installed")
    assert table([result]).splitlines()[2] == "nginx_mirror        skipped: nginx not installed"
    fast = Result("fast_shadow", requests=10, requests_per_second=10.0, p99_ms=1.0)
    assert "skip throughput vs nginx: nginx_mirror nginx not installed" in checks([fast, result])


# --- hostile configs ---------------------------------------------------------------------------

BASE = proxy_config(SCENARIOS[4], 8080, {"prod": 9001, "fast": 9002}, Path("/tmp"))


def test_yaml_bomb_is_small_text_with_an_exponential_expansion() -> None:
    assert bomb_classes(3, 2) == "[&a [x, x], &b [*a, *a], &c [*b, *b]]"
    text = yaml_bomb(BASE, depth=9)
    assert len(text) < 2000
    node = yaml.compose(text)
    route = dict((k.value, v) for k, v in node.value)["routes"].value[0]
    compare = dict((k.value, v) for k, v in route.value)["compare"]
    classes = dict((k.value, v) for k, v in compare.value)["classes"]
    memo: dict[int, int] = {}

    def leaves(n: yaml.Node) -> int:
        if not isinstance(n, yaml.SequenceNode):
            return 1
        if id(n) not in memo:
            memo[id(n)] = sum(leaves(child) for child in n.value)
        return memo[id(n)]

    assert leaves(classes.value[-1]) == 9**9


def test_the_proxy_refuses_a_small_yaml_bomb_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml_bomb(BASE, depth=3), "bomb.yaml")
    assert "compare.classes[0]" in "\n".join(caught.value.errors)


def test_padded_config_is_the_same_config_at_exactly_the_size() -> None:
    text = json.dumps(BASE, indent=2) + "\n"
    for size in (20_000, 20_001, 20_002, 20_003, 65_536):
        padded = padded_config(text, size)
        assert len(padded.encode()) == size
        assert parse_config(padded, "c.yaml") == parse_config(text, "c.yaml")
    with pytest.raises(ValueError, match="already"):
        padded_config(text, 10)


# --- table and checks --------------------------------------------------------------------------


def result(name: str, rps: float, p99: float, **fields: Any) -> Result:
    return Result(
        name, requests=1000, requests_per_second=rps, p50_ms=p99 / 2, p99_ms=p99, **fields
    )


def test_checks_judge_isolation_nginx_and_cpu_targets() -> None:
    results = [
        result("nginx_mirror", 2000.0, 2.0),
        result(
            "fast_shadow",
            1000.0,
            4.0,
            front_cpu_us_per_request=400.0,
            cpu_us_per_request_total=420.0,
        ),
        result("slow_shadow", 1000.0, 4.4),
        result("huge_shadow", 500.0, 40.0, errors=3),
        Result("analysis_killed", skipped="no analysis process"),
    ]
    assert checks(results) == [
        "ok   isolation: slow_shadow p99 = 1.10 x fast_shadow p99 (target <= 1.2),"
        " production errors 0 (target 0)",
        "MISS isolation: huge_shadow p99 = 10.00 x fast_shadow p99 (target <= 1.2),"
        " production errors 3 (target 0)",
        "skip isolation: analysis_killed: no analysis process",
        "MISS production errors: 3 (target 0)",
        "MISS throughput vs nginx: fast_shadow 0.50 x nginx_mirror req/s (target >= 1.0)",
        "MISS CPU: fast_shadow's front process 400 us per request (target <= 50)",
        "MISS CPU: fast_shadow's processes together 420 us per request (target <= 150)",
        "MISS throughput: fast_shadow 1000 req/s (target >= 6000 on the reference machine)",
    ]


def test_table_rows_have_a_per_process_line() -> None:
    fast = result(
        "fast_shadow",
        1000.0,
        4.0,
        cpu_us_per_request={"run": 420.0},
        cpu_us_per_request_total=420.0,
        front_cpu_us_per_request=420.0,
        backend_cpu_us_per_request=30.5,
        proxy_peak_rss_mib=80.0,
        shadow_dropped=0,
    )
    nginx = result(
        "nginx_mirror",
        2000.0,
        2.0,
        cpu_us_per_request={"master": 0.0, "worker": 60.0},
        cpu_us_per_request_total=60.0,
        front_cpu_us_per_request=60.0,
        backend_cpu_us_per_request=30.0,
        proxy_peak_rss_mib=12.0,
    )
    lines = table([nginx, fast]).splitlines()
    assert lines[0].split() == [
        "scenario", "req/s", "p50", "ms", "p99", "ms", "/direct", "/nginx", "p99/fast",
        "errors", "us/req", "front", "us", "backend", "us", "rss", "MiB", "dropped",
    ]  # fmt: skip
    assert lines[2].split() == [
        "nginx_mirror", "2000", "1.00", "2.00", "-", "1.00", "0.50", "0", "60", "60", "30", "12",
        "-",
    ]  # fmt: skip
    assert lines[3] == "    us/req by process: master 0.0, worker 60.0"
    assert lines[4].split() == [
        "fast_shadow", "1000", "2.00", "4.00", "-", "0.50", "1.00", "0", "420", "420", "30", "80",
        "0",
    ]  # fmt: skip
    assert lines[5] == "    us/req by process: run 420.0"


# --- the smoke run -----------------------------------------------------------------------------


def test_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    scenarios = [
        "direct",
        "nginx_mirror",
        "no_shadow",
        "fast_shadow",
        "blackhole_shadow",
        "huge_shadow",
        "analysis_killed",
        "reload_yaml_bomb",
        "reload_10mb_config",
    ]
    args = ["--smoke", "--generator", "loadgen", "--scenarios", ",".join(scenarios)]
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    settings = doc["settings"]
    assert settings["generator"] == "loadgen"
    assert settings["smoke"] is True
    assert (settings["huge_bytes"], settings["bomb_depth"], settings["big_config_bytes"]) == (
        1024 * 1024,
        5,
        512 * 1024,
    )
    assert settings["nginx_workers"] == "1"
    assert [r["scenario"] for r in doc["results"]] == scenarios
    by_name = {r["scenario"]: r for r in doc["results"]}

    killed = by_name.pop("analysis_killed")
    if killed["skipped"] is not None:  # until the analysis process exists
        assert killed["skipped"] == "no analysis process"
        assert killed["requests"] == 0
    else:
        assert killed["extra"]["event"]["killed_pid"] > 0
        assert killed["extra"]["event"]["analysis_restarted"] is True

    for r in by_name.values():
        assert r["skipped"] is None
        assert r["requests"] > 0
        assert r["errors"] == 0
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["backend_cpu_us_per_request"] >= 0
        if r["scenario"] == "direct":
            assert r["processes"] == []
            assert r["cpu_us_per_request"] == {}
            assert r["cpu_us_per_request_total"] is None
            continue
        assert r["proxy_cpu_seconds"] > 0
        assert r["proxy_peak_rss_mib"] > 0
        keys = [p["key"] for p in r["processes"]]
        assert list(r["cpu_us_per_request"]) == keys
        assert r["cpu_us_per_request_total"] == pytest.approx(
            sum(r["cpu_us_per_request"].values()), abs=0.2
        )
        front = [p["key"] for p in r["processes"] if p["front"]]
        assert r["front_cpu_us_per_request"] == pytest.approx(
            sum(r["cpu_us_per_request"][k] for k in front), abs=0.2
        )
        if r["scenario"] == "nginx_mirror":
            assert keys == ["master", "worker"]
            assert front == ["worker"]
            assert r["extra"]["shadow_requests_received"] > 0
            assert r["shadow_compared"] is None
            continue
        # run: the supervisor; validation: the child that checks a reloaded config.
        expected = ["analysis", "front", "run"]
        if r["scenario"].startswith("reload_"):
            expected = ["analysis", "front", "run", "validation"]
        assert sorted(keys) == expected
        assert front == ["front"]
        assert r["extra"]["production_errors_in_metrics"] == 0
    assert by_name["no_shadow"]["shadow_compared"] == 0
    assert by_name["fast_shadow"]["shadow_compared"] > 0
    assert by_name["huge_shadow"]["shadow_compared"] > 0

    bomb = by_name["reload_yaml_bomb"]["extra"]
    assert bomb["event"]["what"] == "write a YAML alias bomb over the config, then SIGHUP"
    assert bomb["event"]["at_s"] >= 0.5
    assert bomb["config_reloads_failure"] == 1
    big = by_name["reload_10mb_config"]["extra"]
    assert big["event"]["config_bytes"] == 512 * 1024
    assert big["event"]["at_s"] >= 0.5
    assert big["config_reloads_success"] == 1

    # The table, a per-process line under each row, and the target checks are printed.
    for name in scenarios:
        assert f"\n{name} " in done.stdout
    assert "    us/req by process: master " in done.stdout
    assert "    us/req by process: run " in done.stdout
    for check in (
        "isolation: blackhole_shadow p99",
        "isolation: huge_shadow p99",
        "isolation: reload_yaml_bomb p99",
        "isolation: reload_10mb_config p99",
        "production errors: 0 (target 0)",
        "throughput vs nginx: fast_shadow",
        "CPU: fast_shadow's front process",
        "CPU: fast_shadow's processes together",
    ):
        assert check in done.stdout
    assert (
        "skip isolation: analysis_killed: no analysis process" in done.stdout
        or "isolation: analysis_killed p99" in done.stdout
    )

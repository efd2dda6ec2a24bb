"""The benchmark machinery in smoke mode (seconds): it runs and reports; speed is not judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest.bench import parse_wrk

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


def test_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    scenarios = ["direct", "no_shadow", "fast_shadow", "blackhole_shadow"]
    args = ["--smoke", "--generator", "loadgen", "--scenarios", ",".join(scenarios)]
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["settings"]["generator"] == "loadgen"
    assert [r["scenario"] for r in doc["results"]] == scenarios
    for r in doc["results"]:
        assert r["requests"] > 0
        assert r["errors"] == 0
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        if r["scenario"] != "direct":
            assert r["proxy_cpu_seconds"] > 0
            assert r["proxy_peak_rss_mib"] > 0
            assert r["extra"] == {"production_errors_in_metrics": 0}
    by_name = {r["scenario"]: r for r in doc["results"]}
    assert by_name["no_shadow"]["shadow_compared"] == 0
    assert by_name["fast_shadow"]["shadow_compared"] > 0
    # The table and the target checks are printed.
    for name in scenarios:
        assert f"\n{name} " in done.stdout
    assert "isolation: blackhole_shadow p99" in done.stdout
    assert "production errors: 0 (target 0)" in done.stdout

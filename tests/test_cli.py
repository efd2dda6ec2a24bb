"""The command line as ops use it: a real `python -m proxy` process, its JSON logs, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import Answer, FakeModelFactory, Received, v1

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_check_config_accepts_every_example(example: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(example)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"# {example}: valid, hash ")
    assert "routes:" in done.stdout


def test_check_config_names_file_key_and_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "routes:\n"
        "  - match: /predict\n"
        "    protocol: kserve-v1\n"
        "    production: {name: p, url: 'http://p:8080'}\n"
        "    shadows:\n"
        "      - {name: s, url: 'http://s:8080', sample: 150%}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"{bad}:6: routes[0].shadows[0].sample:" in done.stderr
    assert "'150%'" in done.stderr


def test_run_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: 127.0.0.1:8080\nroutes: []\nmax_bodyy: 1MiB\n")
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "max_bodyy" in done.stderr
    assert "did you mean 'max_body'" in done.stderr


async def _read_json_line(stream: asyncio.StreamReader, msg: str) -> dict[str, object]:
    while True:
        line = await asyncio.wait_for(stream.readline(), 20)
        assert line, f"process ended before logging {msg!r}"
        doc = orjson.loads(line)
        if doc["msg"] == msg:
            return dict(doc)


async def test_sigterm_finishes_in_flight_requests_and_drains_shadows(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    entered = asyncio.Event()

    def slow_production(r: Received) -> Answer:
        entered.set()
        return Answer(body=v1([1]).body, delay=0.5)

    prod = await fake_model(slow_production)
    shadow = await fake_model(lambda r: v1([1]))
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        json.dumps(
            {
                "listen": "127.0.0.1:0",
                "shutdown_timeout": "5s",
                "shadow_drain_timeout": "5s",
                "routes": [
                    {
                        "match": "/predict",
                        "protocol": "kserve-v1",
                        "production": {"name": "prod", "url": prod.url + "/predict"},
                        "shadows": [{"name": "shadow", "url": shadow.url + "/predict"}],
                    }
                ],
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        listening = await _read_json_line(proc.stderr, "listening")
        [address] = listening["addresses"]  # type: ignore[misc]
        url = f"http://{address}/predict"
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(session.post(url, data=b'{"instances": [1]}'))
            await asyncio.wait_for(entered.wait(), 10)
            proc.send_signal(signal.SIGTERM)
            await _read_json_line(proc.stderr, "shutting down")
            response = await request
            assert response.status == 200
            assert await response.read() == b'{"predictions":[1]}'
            response.release()
        await _read_json_line(proc.stderr, "stopped")
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len(shadow.received) == 1
    assert shadow.received[0].headers["X-Shadow-Request"] == "shadow"


def test_check_config_warns_about_labels_without_a_token_and_redacts_it(tmp_path: Path) -> None:
    route = (
        "routes:\n  - match: /p\n    protocol: kserve-v1\n    record: 100%\n"
        "    production: {name: p, url: 'http://p:8080'}\n"
    )
    open_cfg, closed_cfg = tmp_path / "open.yaml", tmp_path / "closed.yaml"
    open_cfg.write_text(route)
    closed_cfg.write_text(route + "labels: {token: s3cret}\n")
    opened = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(open_cfg)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert opened.returncode == 0
    assert opened.stderr == (
        f"warning: {open_cfg}: labels.token: POST /labels is exposed on 0.0.0.0:8080 without a"
        " token; anyone who can reach the proxy can post labels (set labels.token, e.g. to"
        " ${LABEL_TOKEN})\n"
    )
    closed = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(closed_cfg)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert closed.returncode == 0
    assert closed.stderr == ""
    assert "token: <redacted>" in closed.stdout
    assert "s3cret" not in closed.stdout


def check_config(path: Path, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(path)],
        stdout=stdout, stderr=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip


def test_check_config_locates_a_yaml_mistake_by_line_and_column_with_a_hint(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "routes:\n"
        "  - match: /predict\n"
        "    protocol: kserve-v1\n"
        "    production:\n"
        "      name: p\n"
        "      url:http://p:8080\n"
    )
    done = check_config(bad)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"invalid config {bad}:\n"
        f"  {bad}:6:7: invalid YAML: while scanning a simple key, could not find expected ':';"
        " hint: put a space after the colon: 'url: http://p:8080', not 'url:http://p:8080'\n"
    )


def test_check_config_points_a_misplaced_key_to_its_section(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "alpha: 0.01\n"
        "routes:\n"
        "  - match: /predict\n"
        "    protocol: kserve-v1\n"
        "    timeout: 2s\n"
        "    production: {name: p, url: 'http://p:8080'}\n"
    )
    done = check_config(bad)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines()[1:] == [
        f"  {bad}:1: alpha: unknown key 'alpha' (did you mean verdict.alpha?); allowed: listen,"
        " request_id_header, max_body, shadow_max_body, shadow_max_response,"
        " shadow_strip_headers, shutdown_timeout, shadow_drain_timeout, access_log, log_level,"
        " routes, store, labels, verdict, admin, metrics, capture",
        f"  {bad}:5: routes[0].timeout: unknown key 'timeout' (did you mean"
        " routes[0].production.timeout or routes[0].shadows[].timeout?); allowed: name, match,"
        " methods, protocol, output, prediction_path, production, shadows, compare, record,"
        " segment",
    ]


def test_check_config_takes_a_relative_tolerance_in_percent(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "listen: 127.0.0.1:8080\n"
        "routes:\n"
        "  - match: /predict\n"
        "    protocol: kserve-v1\n"
        "    production: {name: p, url: 'http://p:8080'}\n"
        "    compare: {kind: regression, tolerance: 0.5, relative_tolerance: 1%}\n"
    )
    done = check_config(good)
    assert (done.returncode, done.stderr) == (0, "")
    assert "    tolerance: 0.5\n    relative_tolerance: 0.01\n" in done.stdout


def test_check_config_into_a_closed_pipe_ends_quietly_with_its_status(tmp_path: Path) -> None:
    # `check-config FILE | head -1`: the reader is gone before most of the output is written.
    # The status still says whether the file is valid, so that `set -o pipefail` scripts work.
    read, write = os.pipe()
    os.close(read)
    try:
        done = check_config(EXAMPLES[0], stdout=write)
        bad = tmp_path / "bad.yaml"
        bad.write_text("routes: []\n")
        invalid = check_config(bad, stdout=write)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")
    assert invalid.returncode == 1
    assert (
        invalid.stderr
        == f"invalid config {bad}:\n  {bad}:1: routes: must be a non-empty list (got [])\n"
    )


def test_check_config_piped_into_head_prints_its_first_line(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$0" -m proxy check-config "$1" | head -1', sys.executable,
         str(EXAMPLES[0])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"# {EXAMPLES[0]}: valid, hash ")
    assert done.stdout.count("\n") == 1

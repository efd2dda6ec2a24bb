"""The command line as ops use it: a real `python -m proxy` process, its JSON logs, SIGTERM."""

from __future__ import annotations

import asyncio
import json
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

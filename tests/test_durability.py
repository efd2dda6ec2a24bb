"""What the proxy promises about recorded predictions when it is stopped: on SIGTERM, every
prediction it answered is written to the store before it exits (README, "What each store
guarantees"). A real `python -m proxy run` process, its SQLite file read back afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FakeModelFactory, free_port, v1

ROUTE = "/v1/models/m:predict"


async def front_listening(proc: asyncio.subprocess.Process) -> None:
    """Read the proxy's JSON log until its front process says it is listening."""
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert line, "the proxy ended early"
        doc = orjson.loads(line)
        if doc["msg"] == "listening" and doc.get("role") == "front":
            return


async def records_written(session: aiohttp.ClientSession, base: str, count: int) -> None:
    """Scrape /metrics until `count` production records have reached the store."""
    total = 0.0
    for _ in range(400):
        async with session.get(base + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        total = sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "shadowproxy_recorded_total" and s.labels.get("kind") == "record"
        )
        if total >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{total} records written, not {count}")


async def test_sigterm_writes_every_queued_prediction_before_exiting(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    port = free_port()
    db = tmp_path / "p.db"
    cfg = tmp_path / "proxy.yaml"
    # A flush interval of a minute and batches of 10,000: nothing is written before SIGTERM.
    cfg.write_text(
        f"""
listen: 127.0.0.1:{port}
store: {{path: '{db}', flush_interval: 60s, batch_size: 10000}}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
"""
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg), stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        await front_listening(proc)
        async with aiohttp.ClientSession() as session:
            for i in range(50):
                async with session.post(
                    f"http://127.0.0.1:{port}{ROUTE}",
                    json={"instances": [i]},
                    headers={"X-Request-ID": f"r{i}"},
                ) as resp:
                    assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT request_id FROM records")}
    assert stored == {f"r{i}" for i in range(50)}


async def test_labels_answered_joined_survive_kill_9(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    """What `POST /labels` answered as joined is committed before the answer: `kill -9` of the
    whole process group right after it loses none of them."""
    prod = await fake_model(lambda r: v1([1]))
    port = free_port()
    db = tmp_path / "p.db"
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        f"""
listen: 127.0.0.1:{port}
store: {{path: '{db}', flush_interval: 1ms}}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
"""
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    joined: list[str] = []
    try:
        await front_listening(proc)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for i in range(40):
                async with session.post(
                    base + ROUTE, json={"instances": [i]}, headers={"X-Request-ID": f"r{i}"}
                ) as resp:
                    assert resp.status == 200
            await records_written(session, base, 40)
            for i in range(40):  # one at a time, as they were recorded
                label = [{"request_id": f"r{i}", "label": 1}]
                async with session.post(base + "/labels", json=label) as resp:
                    assert resp.status == 200
                    if (await resp.json())["counts"]["joined"] == 1:
                        joined.append(f"r{i}")
            # One more request, recorded and not labelled, for after the restart.
            async with session.post(
                base + ROUTE, json={"instances": [9]}, headers={"X-Request-ID": "later"}
            ) as resp:
                assert resp.status == 200
            await records_written(session, base, 41)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert joined == [f"r{i}" for i in range(40)]  # all recorded before their labels: all join
    with sqlite3.connect(db) as conn:
        labelled = {
            r[0] for r in conn.execute("SELECT request_id FROM records WHERE label IS NOT NULL")
        }
    assert set(joined) <= labelled
    # Restarted on the same file: the old labels are still there (a second one is a
    # duplicate), and what was recorded before the kill joins its label now.
    again = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert again.stderr is not None
    try:
        await front_listening(again)
        async with aiohttp.ClientSession() as session:
            labels = [{"request_id": "r0", "label": 1}, {"request_id": "later", "label": 1}]
            async with session.post(base + "/labels", json=labels) as resp:
                assert resp.status == 200
                counts = {k: v for k, v in (await resp.json())["counts"].items() if v}
    finally:
        again.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(again.wait(), 30) == 0
    # "later" was answered, and its record written, before the kill.
    assert counts == {"duplicate": 1, "joined": 1}

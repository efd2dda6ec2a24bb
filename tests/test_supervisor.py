"""`run --workers 2`: the supervisor's processes (one analysis process, two fronts on one port),
/metrics counting them all, reloads that the fronts follow, and nothing left when it dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FakeModelFactory, v1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"{name} {labels} not in /metrics")


async def test_two_workers_share_the_port_and_their_metrics(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    shadow = await fake_model(lambda r: v1([1]))
    port = _free_port()
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        json.dumps(
            {
                "listen": f"127.0.0.1:{port}",
                "routes": [
                    {
                        "match": "/predict",
                        "protocol": "kserve-v1",
                        "production": {"name": "prod", "url": prod.url + "/predict"},
                        "shadows": [{"name": "s", "url": shadow.url + "/predict"}],
                    }
                ],
            }
        )
    )
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg), "--workers", "2",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        pids = set()
        while len(pids) < 2:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)
            assert line, "supervisor ended early"
            doc = orjson.loads(line)
            if doc["msg"] == "listening":
                pids.add(doc["pid"])
        url = f"http://127.0.0.1:{port}"
        # A new connection per request, so the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(40):
                async with session.post(url + "/predict", data=b'{"instances": [1]}') as r:
                    assert r.status == 200
            await shadow.wait_for(40)
            for _ in range(6):
                async with session.get(url + "/metrics") as r:
                    text = await r.text()
                assert _sample(text, "shadowproxy_requests_total", route="/predict") == 40
                ok = _sample(
                    text, "shadowproxy_upstream_requests_total", role="production", outcome="ok"
                )
                assert ok == 40
                assert _sample(text, "shadowproxy_shadow_enqueued_total", shadow="s") == 40
        # Each process writes its own files, named by its pid: the fronts and the analysis one.
        written = {int(f.stem.rsplit("_", 1)[1]) for f in metrics_dir.glob("counter_*.db")}
        assert pids < written
        assert len(written) == 3
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        for pid in pids:  # reaped by the supervisor: no such process any more
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"worker {pid} still exists")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until(stream: asyncio.StreamReader, msg: str, count: int) -> list[dict[str, object]]:
    """Read the JSON log until `count` lines say `msg`; returns them."""
    found = []
    while len(found) < count:
        line = await asyncio.wait_for(stream.readline(), 20)
        assert line, f"the supervisor ended before {count} x {msg!r}"
        doc = orjson.loads(line)
        if doc["msg"] == msg:
            found.append(doc)
    return found


async def test_admin_actions_and_reload_reach_every_worker(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    shadow = await fake_model(lambda r: v1([1]))
    port, admin_port = _free_port(), _free_port()
    cfg = tmp_path / "proxy.yaml"
    doc = {
        "listen": f"127.0.0.1:{port}",
        "admin": {"token": "t0k", "listen": f"127.0.0.1:{admin_port}"},
        "routes": [
            {
                "name": "r",
                "match": "/predict",
                "protocol": "kserve-v1",
                "production": {"name": "prod", "url": prod.url + "/predict"},
                "shadows": [{"name": "s", "url": shadow.url + "/predict"}],
            }
        ],
    }
    cfg.write_text(json.dumps(doc))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg), "--workers", "2",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    auth = {"Authorization": "Bearer t0k"}
    try:
        await _until(proc.stderr, "listening", 2)
        connector = aiohttp.TCPConnector(force_close=True)  # spread over both workers
        async with aiohttp.ClientSession(connector=connector) as session:

            async def traffic(count: int) -> float:
                for _ in range(count):
                    async with session.post(url + "/predict", data=b'{"instances": [1]}') as r:
                        assert r.status == 200
                async with session.get(url + "/metrics") as r:
                    text = await r.text()
                return _sample(text, "shadowproxy_shadow_skipped_total", reason="paused")

            async with session.post(admin_url + "/admin/shadows/r/s/pause", headers=auth) as r:
                assert (r.status, (await r.json())["paused"]) == (200, True)
            assert await traffic(20) == 20

            # A reload through the admin API: the analysis process applies it, then every
            # front follows; the pause holds.
            doc["routes"][0]["shadows"][0]["timeout"] = "3s"  # type: ignore[index]
            cfg.write_text(json.dumps(doc))
            async with session.post(admin_url + "/admin/reload", headers=auth) as r:
                assert r.status == 200
            await _until(proc.stderr, "front reloaded", 2)
            assert await traffic(10) == 30
            assert shadow.received == []

            # Removed by a reload, its override is forgotten in the shared file too: added back,
            # the shadow runs.
            shadows = doc["routes"][0]["shadows"]  # type: ignore[index]
            for listed in ([], shadows):
                doc["routes"][0]["shadows"] = listed  # type: ignore[index]
                cfg.write_text(json.dumps(doc))
                async with session.post(admin_url + "/admin/reload", headers=auth) as r:
                    assert r.status == 200
                await _until(proc.stderr, "front reloaded", 2)
            assert await traffic(10) == 30
            await shadow.wait_for(10)
            async with session.get(admin_url + "/admin/config", headers=auth) as r:
                assert (await r.json())["overrides"] == []
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_every_process_stops_when_the_supervisor_is_killed(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    cfg = tmp_path / "proxy.yaml"
    route = {"match": "/p", "protocol": "kserve-v1", "production": {"name": "a", "url": prod.url}}
    cfg.write_text(json.dumps({"listen": f"127.0.0.1:{_free_port()}", "routes": [route]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg), "--workers", "2",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        pids = [int(str(line["pid"])) for line in await _until(proc.stderr, "process started", 3)]
        await _until(proc.stderr, "listening", 2)
        # A pidfd becomes readable when its process ends: an event to wait on, not a poll.
        pidfds = [os.pidfd_open(pid) for pid in pids]
        proc.kill()  # SIGKILL: the supervisor cannot pass anything on
        await proc.wait()
        loop = asyncio.get_running_loop()
        for fd in pidfds:
            ended = loop.create_future()
            loop.add_reader(fd, ended.set_result, None)
            try:
                await asyncio.wait_for(ended, 20)
            finally:
                loop.remove_reader(fd)
                os.close(fd)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_production_is_answered_while_the_analysis_process_is_killed_and_restarted(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    prod = await fake_model(lambda r: v1([1]))
    shadow = await fake_model(lambda r: v1([1]))
    port = _free_port()
    cfg = tmp_path / "proxy.yaml"
    route = {
        "match": "/predict",
        "protocol": "kserve-v1",
        "production": {"name": "prod", "url": prod.url + "/predict"},
        "shadows": [{"name": "s", "url": shadow.url + "/predict"}],
    }
    cfg.write_text(json.dumps({"listen": f"127.0.0.1:{port}", "routes": [route]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    url = f"http://127.0.0.1:{port}"
    statuses: list[int] = []
    stop = asyncio.Event()

    async def load(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.post(url + "/predict", data=b'{"instances": [1]}') as r:
                statuses.append(r.status)

    try:
        started = await _until(proc.stderr, "process started", 2)
        analysis = next(int(str(s["pid"])) for s in started if s["role"] == "analysis")
        await _until(proc.stderr, "listening", 1)
        async with aiohttp.ClientSession() as session:
            loader = asyncio.create_task(load(session))
            await shadow.wait_for(5)  # the copies flow
            os.kill(analysis, signal.SIGKILL)
            died = await _until(proc.stderr, "process died", 1)
            assert (died[0]["role"], died[0]["pid"]) == ("analysis", analysis)
            again = await _until(proc.stderr, "analysis started", 1)
            assert again[0]["pid"] != analysis
            # The front reconnects by itself: copies flow to the new analysis process.
            seen = len(shadow.received)
            await shadow.wait_for(seen + 5)
            stop.set()
            await loader
            async with session.get(url + "/metrics") as r:
                text = await r.text()
        assert len(statuses) > 10
        assert set(statuses) == {200}  # not one production request failed
        assert _sample(text, "shadowproxy_process_restarts_total", role="analysis") == 1
        dropped = _sample(text, "shadowproxy_handoff_total", result="analysis_down")
        sent = _sample(text, "shadowproxy_handoff_total", result="sent")
        assert dropped + sent == len(statuses)  # every copy is sent or counted as dropped
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        stop.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_deep_metrics_directory_still_serves(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    # The sockets between the processes go beside the metrics files, unless that path is too
    # long for a Unix socket (107 bytes): then into the system's temporary directory.
    prod = await fake_model(lambda r: v1([1]))
    port = _free_port()
    cfg = tmp_path / "proxy.yaml"
    route = {"match": "/p", "protocol": "kserve-v1", "production": {"name": "a", "url": prod.url}}
    cfg.write_text(json.dumps({"listen": f"127.0.0.1:{port}", "routes": [route]}))
    metrics_dir = tmp_path / ("m" * 100)
    metrics_dir.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        await _until(proc.stderr, "analysis started", 1)
        await _until(proc.stderr, "listening", 1)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/p", data=b"{}") as r:
                assert r.status == 200
            async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 200  # the control plane, over its socket
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _busy_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        json.dumps(
            {
                "listen": f"127.0.0.1:{port}",
                "store": {"backend": "sqlite", "path": str(tmp_path / "predictions.db")},
                "routes": [
                    {
                        "match": "/predict",
                        "protocol": "kserve-v1",
                        "record": 1.0,
                        "production": {"name": "prod", "url": "http://127.0.0.1:9/predict"},
                    }
                ],
            }
        )
    )
    return cfg


async def test_a_port_in_use_is_one_line_and_exit_1_with_nothing_created(tmp_path: Path) -> None:
    """Another program on the port: no process starts, so no store file, no traceback, no
    restarts; one line names the file, the key and the address."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = _busy_config(tmp_path, port)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run", "--config", str(cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert out == b""
    assert err.decode() == (
        f"shadow-proxy cannot start: {cfg}: listen: cannot listen on 127.0.0.1:{port}:"
        " Address already in use\n"
    )
    assert not (tmp_path / "predictions.db").exists()


async def test_an_empty_metrics_dir_variable_counts_as_unset(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR= (set, but empty) once made prometheus-client write its files
    into the working directory, and the supervisor delete every *.db there at start."""
    keep = tmp_path / "keep.db"
    keep.write_bytes(b"not a metrics file")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = _busy_config(tmp_path, port)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run", "--config", str(cfg),
            stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": ""},
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err
    assert await asyncio.to_thread(keep.read_bytes) == b"not a metrics file"
    left = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert left == ["keep.db", "proxy.yaml"]

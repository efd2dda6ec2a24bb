"""Hot reload: a valid config swaps while requests flow, with none failing and every request
counted once; an invalid one changes nothing; SIGHUP reloads a running process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from loadtest.hostile_configs import padded_config, yaml_bomb
from proxy.analysis.reload import config_pickle, reload_config
from proxy.config import config_hash, load_config
from proxy.supervisor import RUNTIME_DIR_ENV
from proxy.validation import load_pickled
from tests.conftest import FakeModelFactory, ProxyFactory, Received, RunningProxy, free_port, v1

ROUTE = "/v1/models/m:predict"


def echo(r: Received) -> Any:
    return v1(r.json()["instances"])


def config(prod: str, shadows: list[dict[str, Any]], **top: Any) -> str:
    route = {
        "match": ROUTE,
        "protocol": "kserve-v1",
        "production": {"name": "prod", "url": prod + ROUTE, "timeout": top.pop("timeout", "5s")},
        "shadows": shadows,
    }
    return json.dumps({"shadow_drain_timeout": "2s", **top, "routes": [route]})


class Traffic:
    """Clients that keep sending requests until stopped, counting every answer."""

    def __init__(self, p: RunningProxy, clients: int) -> None:
        self.p = p
        self.statuses: list[int] = []
        self._answered = asyncio.Condition()
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            status, _, _ = await self.p.post(ROUTE, {"instances": [n]})
            n += 1
            self.statuses.append(status)
            async with self._answered:
                self._answered.notify_all()

    async def more(self, count: int) -> None:
        """Wait until `count` more requests have been answered."""
        target = len(self.statuses) + count
        async with asyncio.timeout(30), self._answered:
            await self._answered.wait_for(lambda: len(self.statuses) >= target)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_ten_reloads_under_load_fail_no_request_and_count_each_once(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, s1, s2 = [await fake_model(echo) for _ in range(3)]
    path = tmp_path / "proxy.json"
    a = config(prod.url, [{"name": "s1", "url": s1.url + ROUTE}])
    b = config(
        prod.url,
        [
            {"name": "s1", "url": s1.url + ROUTE, "sample": "50%", "timeout": "2s"},
            {"name": "s2", "url": s2.url + ROUTE},
        ],
        timeout="3s",
    )
    p = await proxy(a, path)
    traffic = Traffic(p, clients=4)
    await traffic.more(20)
    for i in range(10):
        await asyncio.to_thread(path.write_text, b if i % 2 == 0 else a)
        assert await reload_config(p.state)
        await traffic.more(20)
    await traffic.stop()
    await asyncio.gather(*p.state.retiring)
    await p.settled()

    total = len(traffic.statuses)
    assert set(traffic.statuses) == {200}
    assert len(prod.received) == total
    assert p.value("shadowproxy_requests_total", route=ROUTE) == total
    assert p.value("shadowproxy_config_reloads_total", result="success") == 10
    # s1 is in every config: each request was offered to it exactly once, by one generation.
    s1_labels = {"route": ROUTE, "shadow": "s1"}
    offered = p.value("shadowproxy_shadow_enqueued_total", **s1_labels) + sum(
        p.value("shadowproxy_shadow_skipped_total", **s1_labels, reason=reason)
        for reason in ("sampled_out", "queue_full", "body_too_large", "shutting_down")
    )
    assert offered == total
    assert len(s1.received) == p.value("shadowproxy_shadow_enqueued_total", **s1_labels)
    # s2 started with config b, and stopped getting copies when a came back.
    assert len(s2.received) == p.value(
        "shadowproxy_shadow_enqueued_total", route=ROUTE, shadow="s2"
    )
    assert len(s2.received) > 0
    # The config info names the running config, and only it.
    running = {
        s.labels["hash"]
        for family in p.registry.collect()
        if family.name == "shadowproxy_config_info"
        for s in family.samples
        if s.value == 1
    }
    assert running == {config_hash(load_config(path, env={}))}


async def test_an_invalid_reload_keeps_the_running_config(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, s1 = [await fake_model(echo) for _ in range(2)]
    path = tmp_path / "proxy.json"
    p = await proxy(config(prod.url, [{"name": "s1", "url": s1.url + ROUTE}]), path)
    before = p.state.config
    await asyncio.to_thread(
        path.write_text, '{"routes": [{"match": "/x", "protocl": "kserve-v1"}]}'
    )
    assert not await reload_config(p.state)
    moved = config(prod.url, [], listen="127.0.0.1:1")
    await asyncio.to_thread(path.write_text, moved)
    assert not await reload_config(p.state)  # listen needs a restart: refused as a whole
    assert p.value("shadowproxy_config_reloads_total", result="failure") == 2
    assert p.state.config is before
    status, _, _ = await p.post(ROUTE, {"instances": [1]})
    assert status == 200
    await p.settled()
    assert len(s1.received) == 1


HOSTILE = {
    "alias-bomb": lambda doc: yaml_bomb(doc),
    "10MB": lambda doc: padded_config(json.dumps(doc), 10 * 2**20),
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
async def test_a_hostile_reload_is_one_failure_while_production_is_answered(
    fake_model: FakeModelFactory,
    proxy: ProxyFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hostile: str,
) -> None:
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path / "run"))
    prod, s1 = [await fake_model(echo) for _ in range(2)]
    path = tmp_path / "proxy.json"
    text = config(prod.url, [{"name": "s1", "url": s1.url + ROUTE}])
    p = await proxy(text, path)
    before = p.state.config
    traffic = Traffic(p, clients=2)
    await traffic.more(10)
    await asyncio.to_thread(path.write_text, HOSTILE[hostile](json.loads(text)))
    reload = asyncio.create_task(reload_config(p.state))
    await traffic.more(10)
    # Validated in a child process: the loop answered these while the reload ran.
    assert not reload.done()
    result = await reload
    await traffic.stop()

    expected = {
        "alias-bomb": f"{path}:20: the config has more than 100000 YAML nodes once its aliases "
        "are expanded; at most 100000 are accepted",
        "10MB": f"{path}: the config is 10485760 bytes; at most 1048576 are accepted",
    }[hostile]
    assert (result.ok, result.errors, result.pickle) == (False, (expected,), None)
    assert set(traffic.statuses) == {200}
    assert p.value("shadowproxy_config_reloads_total", result="failure") == 1
    assert p.value("shadowproxy_config_reloads_total", result="success") == 0
    assert p.state.config is before
    assert p.state.config_pickle is None
    assert os.listdir(tmp_path / "run") == []  # nothing left of the refused validation
    await p.settled()
    assert len(s1.received) == len(traffic.statuses)


async def test_a_reload_keeps_the_running_config_pickled_for_other_processes(
    fake_model: FakeModelFactory,
    proxy: ProxyFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = tmp_path / "run"
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(run))
    prod, s1 = [await fake_model(echo) for _ in range(2)]
    path = tmp_path / "proxy.json"
    p = await proxy(config(prod.url, []), path)
    await asyncio.to_thread(path.write_text, config(prod.url, [{"name": "s1", "url": s1.url}]))
    result = await reload_config(p.state)
    kept = str(run / f"config-{os.getpid()}.pickle")
    assert (result.ok, result.pickle, p.state.config_pickle, config_pickle()) == (
        True,
        kept,
        kept,
        kept,
    )
    assert load_pickled(kept) == p.state.config == load_config(path)
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    assert os.listdir(run) == [os.path.basename(kept)]
    # A refused reload leaves the running config's pickle as it was.
    await asyncio.to_thread(path.write_text, '{"routes": []}')
    assert not await reload_config(p.state)
    assert load_pickled(kept) == p.state.config
    assert (p.state.config_pickle, os.listdir(run)) == (kept, [os.path.basename(kept)])


def test_without_a_runtime_directory_the_pickle_is_kept_in_one_of_the_process_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RUNTIME_DIR_ENV, raising=False)
    kept = config_pickle()
    assert kept == config_pickle()
    assert os.path.basename(kept) == f"config-{os.getpid()}.pickle"
    assert stat.S_IMODE(os.stat(os.path.dirname(kept)).st_mode) == 0o700


async def test_sighup_reloads_a_running_proxy(fake_model: FakeModelFactory, tmp_path: Path) -> None:
    prod, s1, s2 = [await fake_model(echo) for _ in range(3)]
    port = free_port()
    path = tmp_path / "proxy.json"
    listen = {"listen": f"127.0.0.1:{port}"}
    path.write_text(config(prod.url, [{"name": "s1", "url": s1.url + ROUTE}], **listen))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(path),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None

    async def logged_all(messages: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        while set(found) != messages:
            line = await asyncio.wait_for(proc.stderr.readline(), 20)  # type: ignore[union-attr]
            assert line, f"the proxy ended before logging {messages - set(found)}"
            doc: dict[str, Any] = orjson.loads(line)
            if doc["msg"] in messages:
                found[doc["msg"]] = doc
        return found

    async def logged(msg: str) -> dict[str, Any]:
        return (await logged_all({msg}))[msg]

    try:
        await logged("listening")
        await asyncio.to_thread(
            path.write_text,
            config(prod.url, [{"name": "s2", "url": s2.url + ROUTE}], **listen, access_log=True),
        )
        proc.send_signal(signal.SIGHUP)
        # The analysis process and the front each log their reload, in either order.
        seen = await logged_all({"config reloaded", "front reloaded"})
        assert seen["config reloaded"]["config"] == str(path)
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}{ROUTE}"
            async with session.post(url, data=b'{"instances": [1]}') as resp:
                assert resp.status == 200
        await s2.wait_for(1)
        assert s1.received == []
        # access_log turned on by the reload: the front logs the request.
        access = await logged(f"POST {ROUTE} 200")
        assert (access["logger"], access["status"]) == ("proxy.access", 200)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_a_reload_applies_the_log_level(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    path = tmp_path / "proxy.json"
    p = await proxy(config(prod.url, []), path)
    root = logging.getLogger()
    level = root.level
    try:
        await asyncio.to_thread(path.write_text, config(prod.url, [], log_level="error"))
        assert await reload_config(p.state)
        assert root.level == logging.ERROR
        # Unchanged by a reload that keeps it.
        root.setLevel(logging.DEBUG)
        await asyncio.to_thread(
            path.write_text, config(prod.url, [], log_level="error", access_log=True)
        )
        assert await reload_config(p.state)
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(level)


async def test_a_reload_switches_the_access_log_of_the_listeners_of_their_own(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path, caplog: Any
) -> None:
    prod = await fake_model(echo)
    path = tmp_path / "proxy.json"
    listener = {"metrics": {"listen": "127.0.0.1:0"}}
    p = await proxy(config(prod.url, [], **listener), path)
    caplog.set_level(logging.INFO, logger="proxy.access")

    async def scraped() -> int:
        async with p.session.get(p.metrics_url + "/metrics") as r:
            assert r.status == 200
        return len([r for r in caplog.records if r.name == "proxy.access.listeners"])

    assert await scraped() == 0
    await asyncio.to_thread(path.write_text, config(prod.url, [], access_log=True, **listener))
    assert await reload_config(p.state)
    assert await scraped() == 1
    # The control plane's requests come through the front, which logs them: once.
    async with p.session.get(p.url + "/report") as r:
        assert r.status == 200
    assert [r.getMessage() for r in caplog.records if r.name == "proxy.access"] == [
        "GET /report 200"
    ]
    await asyncio.to_thread(path.write_text, config(prod.url, [], **listener))
    assert await reload_config(p.state)
    assert await scraped() == 1  # off again: no new line


INVALID = {
    "empty": b"",
    "binary": bytes(range(256)),
    "control character": b"\x1froutes: []\n",
    "not a mapping": b"- a\n- b\n",
    "deep nesting": b"routes: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "unknown key": b'{"routes": [], "rootes": []}',
    "wrong type": b'{"routes": "none"}',
    "invalid UTF-8": b"routes: [\xff\xfe]\n",
}


@pytest.mark.parametrize("kind", sorted(INVALID))
async def test_every_kind_of_invalid_file_is_one_counted_failure_and_changes_nothing(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path, kind: str
) -> None:
    prod, s1 = [await fake_model(echo) for _ in range(2)]
    path = tmp_path / "proxy.json"
    p = await proxy(config(prod.url, [{"name": "s1", "url": s1.url + ROUTE}]), path)
    before = p.state.config
    await asyncio.to_thread(path.write_bytes, INVALID[kind])
    result = await reload_config(p.state)
    assert not result.ok
    assert result.errors
    assert all(str(path) in error for error in result.errors), result.errors
    assert p.value("shadowproxy_config_reloads_total", result="failure") == 1
    assert p.state.config is before
    status, _, _ = await p.post(ROUTE, {"instances": [1]})
    assert status == 200


async def test_a_missing_file_is_one_counted_failure_and_changes_nothing(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    path = tmp_path / "proxy.json"
    p = await proxy(config(prod.url, []), path)
    path.unlink()
    result = await reload_config(p.state)
    assert not result.ok
    assert str(path) in result.errors[0]
    assert p.value("shadowproxy_config_reloads_total", result="failure") == 1
    status, _, _ = await p.post(ROUTE, {"instances": [1]})
    assert status == 200

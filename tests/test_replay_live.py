"""Offline replay, end to end: live traffic through the proxy with a shadow, captured, exported,
then replayed against a candidate that never saw live traffic (the same model as the shadow):
the replay reproduces the live disagreement rate exactly, and the accuracy on the labelled
requests."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import Answer, FakeModelFactory, ProxyFactory, Received

ROUTE = "/v1/models/m:predict"


def production(request: Received) -> Answer:
    return Answer(body=orjson.dumps({"predictions": [x % 3 for x in request.json()["instances"]]}))


def candidate(request: Received) -> Answer:
    """Disagrees with production where x is a multiple of 7 (1 instance in 7)."""
    out = [(x + 1) % 3 if x % 7 == 0 else x % 3 for x in request.json()["instances"]]
    return Answer(body=orjson.dumps({"predictions": out}))


async def _run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_replay_reproduces_the_live_disagreement_rate(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow, offline = (
        await fake_model(production),
        await fake_model(candidate),
        await fake_model(candidate),
    )
    config = (
        f"store: {{path: '{tmp_path / 'p.db'}'}}\n"
        f"capture: {{path: '{tmp_path / 'c.db'}', agreements: 100%, max_per_second: 100000}}\n"
        "routes:\n"
        f"  - {{name: m, match: '{ROUTE}', protocol: kserve-v1, record: 100%,"
        f" production: {{name: prod, url: '{prod.url}{ROUTE}'}},"
        f" shadows: [{{name: live, url: '{shadow.url}{ROUTE}'}}]}}\n"
    )
    cfg = tmp_path / "proxy.yaml"
    await asyncio.to_thread(cfg.write_text, config)
    p = await proxy(config)
    labels = []
    for i in range(60):
        rows = [i, i + 60, i + 120][: 1 + i % 3]
        status, _, _ = await p.post(ROUTE, {"instances": rows}, headers={"X-Request-ID": f"r{i}"})
        assert status == 200
        if i % 2 == 0:  # half labelled: the truth is the candidate's answer
            truth = [(x + 1) % 3 if x % 7 == 0 else x % 3 for x in rows]
            labels.append({"request_id": f"r{i}", "label": truth})
    await p.settled()
    status, _, _ = await p.post("/labels", labels)
    assert status == 200
    assert p.state.capture is not None
    await p.state.capture.flush()
    async with p.session.get(p.url + "/report") as resp:
        live: Any = orjson.loads(await resp.read())
    live_shadow = live["routes"][0]["shadows"][0]

    export = tmp_path / "capture.jsonl"
    code, _, err = await _run("capture", "export", "--config", str(cfg), "--out", str(export))
    assert code == 0, err
    report = tmp_path / "replay.json"
    code, _, err = await _run(
        "replay", "--config", str(cfg), "--from", str(export),
        "--target", f"{offline.url}{ROUTE}", "--json", str(report),
    )  # fmt: skip
    assert code == 0, err
    assert len(offline.received) == 60  # every captured request, once
    replayed: Any = orjson.loads(await asyncio.to_thread(report.read_bytes))
    [shadow_report] = replayed["routes"][0]["shadows"]
    # The same traffic, the same model: the same disagreement, instance for instance.
    live_disagreement = live_shadow["disagreement"]
    assert (live_disagreement["compared"], live_disagreement["disagreed"]) == (120, 17)
    assert shadow_report["disagreement"]["compared"] == live_disagreement["compared"]
    assert shadow_report["disagreement"]["disagreed"] == live_disagreement["disagreed"]
    # And the same accuracy on the labelled half.
    assert shadow_report["accuracy"]["labelled"] == live_shadow["accuracy"]["labelled"]
    assert shadow_report["accuracy"]["correct"] == live_shadow["accuracy"]["correct"]

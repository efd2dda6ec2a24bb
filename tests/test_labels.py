"""Labels end to end: requests through the proxy to scripted models, labels posted later, and the
exact accuracy, paired and label-result counts in /metrics, with the embedded store and Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from proxy.analysis.reload import reload_config
from tests.conftest import (
    Answer,
    FakeModelFactory,
    ProxyFactory,
    Received,
    RedisServer,
    RunningProxy,
    free_port,
    v1,
)

ROUTE = "/v1/models/m:predict"
RESULTS = ("joined", "unknown_id", "expired", "duplicate", "invalid")


def echo(r: Received) -> Answer:
    return v1(r.json()["instances"])


def flip_multiples_of_five(r: Received) -> Answer:
    return v1([x + 1 if x % 5 == 0 else x for x in r.json()["instances"]])


def config(prod: str, shadow: str | None, store: str, extra: str = "") -> str:
    shadows = f'[{{name: s, url: "{shadow}{ROUTE}"}}]' if shadow else "[]"
    return f"""
listen: 127.0.0.1:0
shadow_drain_timeout: 2s
store: {store}
{extra}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    production: {{name: prod, url: "{prod}{ROUTE}"}}
    shadows: {shadows}
"""


def sqlite(tmp_path: Path, extra: str = "") -> str:
    return f"{{backend: sqlite, path: '{tmp_path / 'predictions.db'}', flush_interval: 1ms{extra}}}"


async def predict(p: RunningProxy, rid: str, instances: list[Any]) -> None:
    status, _, _ = await p.post(ROUTE, {"instances": instances}, headers={"X-Request-ID": rid})
    assert status == 200


async def post_labels(
    p: RunningProxy, doc: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, _, body = await p.post("/labels", doc, headers=headers)
    return status, orjson.loads(body)


def model(p: RunningProxy, name: str, model_name: str, role: str) -> float:
    return p.value(name, route=ROUTE, model=model_name, role=role)


def results(p: RunningProxy) -> dict[str, float]:
    return {r: p.value("shadowproxy_labels_total", result=r) for r in RESULTS}


def assert_every_label_accounted_for(p: RunningProxy) -> None:
    assert p.value("shadowproxy_labels_received_total") == sum(results(p).values())


async def test_labels_give_exact_accuracy_and_paired_counts(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    shadow = await fake_model(flip_multiples_of_five)
    p = await proxy(config(prod.url, shadow.url, sqlite(tmp_path)))
    for i in range(10):
        await predict(p, f"r{i}", [i])
    await p.settled()
    # Production is wrong on multiples of 3; the shadow flips multiples of 5.
    labels = [{"request_id": f"r{i}", "label": i + 1 if i % 3 == 0 else i} for i in range(10)]
    status, doc = await post_labels(p, labels)
    assert status == 200
    assert doc["counts"] == {
        "joined": 10, "unknown_id": 0, "expired": 0, "duplicate": 0, "invalid": 0,
    }  # fmt: skip
    assert doc["results"][0] == {"request_id": "r0", "result": "joined"}

    assert model(p, "shadowproxy_labelled_instances_total", "prod", "production") == 10
    assert model(p, "shadowproxy_correct_instances_total", "prod", "production") == 6
    assert model(p, "shadowproxy_labelled_instances_total", "s", "shadow") == 10
    assert model(p, "shadowproxy_correct_instances_total", "s", "shadow") == 6
    paired = {
        o: p.value("shadowproxy_paired_outcomes_total", route=ROUTE, shadow="s", outcome=o)
        for o in ("both_right", "production_only", "shadow_only", "both_wrong")
    }
    assert paired == {"both_right": 5, "production_only": 1, "shadow_only": 1, "both_wrong": 3}
    assert p.value("shadowproxy_label_delay_seconds_count", route=ROUTE) == 10
    assert p.value("shadowproxy_recorded_total", route=ROUTE, kind="record") == 10
    assert p.value("shadowproxy_recorded_total", route=ROUTE, kind="shadow") == 10
    assert_every_label_accounted_for(p)

    async with p.session.get(p.url + "/metrics") as resp:
        text = await resp.text()
    assert (
        'shadowproxy_correct_instances_total{model="prod",role="production",'
        f'route="{ROUTE}"}} 6.0' in text.splitlines()
    )


async def test_a_batch_request_takes_one_label_per_instance(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    p = await proxy(config(prod.url, None, sqlite(tmp_path)))
    await predict(p, "batch", [1, 2, 3])
    await predict(p, "short", [1, 2, 3])
    await p.settled()
    status, doc = await post_labels(p, {"request_id": "batch", "label": [1, 0, 3]})
    assert (status, doc) == (200, {"request_id": "batch", "result": "joined"})
    assert model(p, "shadowproxy_labelled_instances_total", "prod", "production") == 3
    assert model(p, "shadowproxy_correct_instances_total", "prod", "production") == 2
    # A label that does not fit the request is invalid, and the record stays unlabelled.
    status, doc = await post_labels(p, {"request_id": "short", "label": [1, 2]})
    assert status == 400
    assert doc == {
        "request_id": "short",
        "result": "invalid",
        "error": "label has 2 values but the request had 3 instances",
    }
    status, doc = await post_labels(p, {"request_id": "short", "label": [1, 2, 3]})
    assert (status, doc["result"]) == (200, "joined")
    assert_every_label_accounted_for(p)


async def test_duplicate_unknown_expired_and_malformed_labels(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    p = await proxy(config(prod.url, None, sqlite(tmp_path)))
    await predict(p, "a", [1])
    await p.settled()
    assert await post_labels(p, {"request_id": "a", "label": 1}) == (
        200,
        {"request_id": "a", "result": "joined"},
    )
    assert await post_labels(p, {"request_id": "a", "label": 1}) == (
        409,
        {
            "request_id": "a",
            "result": "duplicate",
            "error": "this request_id already has a label",
        },
    )
    assert await post_labels(p, {"request_id": "nope", "label": 1}) == (
        404,
        {
            "request_id": "nope",
            "result": "unknown_id",
            "error": "no prediction was recorded for this request_id",
        },
    )
    status, _, body = await p.post("/labels", b"{not json")
    assert status == 400
    assert orjson.loads(body)["error"].startswith("body is not JSON: ")
    status, doc = await post_labels(p, "just a string")
    assert (status, doc) == (
        400,
        {"error": "body must be a label object or a list of label objects"},
    )
    status, doc = await post_labels(
        p, [{"request_id": "x"}, {"request_id": "y", "label": None}, 7, {"rid": "z", "label": 1}]
    )
    assert status == 200
    assert [r["error"] for r in doc["results"]] == [
        "label is missing",
        "label is null",
        "a label must be an object with request_id and label",
        "unknown key 'rid'; allowed: request_id, label",
    ]
    assert results(p) == {"joined": 1, "unknown_id": 1, "expired": 0, "duplicate": 1, "invalid": 6}
    assert_every_label_accounted_for(p)

    # A store whose records expire at once: the record exists, but too old.
    expiring = await proxy(config(prod.url, None, sqlite(tmp_path / "2", ", ttl: 1us")))
    await predict(expiring, "old", [1])
    await expiring.settled()
    status, doc = await post_labels(expiring, {"request_id": "old", "label": 1})
    assert (status, doc["result"]) == (410, "expired")
    assert results(expiring)["expired"] == 1
    assert_every_label_accounted_for(expiring)


async def test_a_label_before_the_shadows_answer_is_joined_when_it_comes(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    release = asyncio.Event()
    prod = await fake_model(echo)
    shadow = await fake_model(lambda r: Answer(body=v1([7]).body, wait=release))
    p = await proxy(config(prod.url, shadow.url, sqlite(tmp_path)))
    await predict(p, "early", [5])
    await shadow.wait_for(1)
    assert p.state.recorder is not None
    await p.state.recorder.flush()  # production's record is stored; the shadow is held
    assert (await post_labels(p, {"request_id": "early", "label": 5}))[0] == 200
    assert model(p, "shadowproxy_labelled_instances_total", "prod", "production") == 1
    assert model(p, "shadowproxy_labelled_instances_total", "s", "shadow") == 0
    release.set()
    await p.settled()
    assert model(p, "shadowproxy_labelled_instances_total", "s", "shadow") == 1
    assert model(p, "shadowproxy_correct_instances_total", "s", "shadow") == 0
    outcome = p.value(
        "shadowproxy_paired_outcomes_total", route=ROUTE, shadow="s", outcome="production_only"
    )
    assert outcome == 1


async def test_a_restart_between_prediction_and_label_still_joins(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    text = config(prod.url, None, sqlite(tmp_path))
    first = await proxy(text)
    await predict(first, "before-restart", [2])
    # A graceful stop flushes the recorder: nothing recorded is lost.
    await first.stop()
    second = await proxy(text)
    status, doc = await post_labels(second, {"request_id": "before-restart", "label": 2})
    assert (status, doc["result"]) == (200, "joined")
    assert model(second, "shadowproxy_correct_instances_total", "prod", "production") == 1


async def test_label_auth_size_and_disabled(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    p = await proxy(
        config(prod.url, None, sqlite(tmp_path), "labels: {token: s3cret, max_body: 100B}")
    )
    status, doc = await post_labels(p, {"request_id": "a", "label": 1})
    assert (status, doc) == (401, {"error": "a bearer token is required"})
    status, doc = await post_labels(
        p, {"request_id": "a", "label": 1}, {"Authorization": "Bearer wrong"}
    )
    assert (status, doc) == (403, {"error": "the bearer token is wrong"})
    status, doc = await post_labels(
        p, [{"request_id": "a", "label": 1}] * 10, {"Authorization": "Bearer s3cret"}
    )
    assert (status, doc) == (413, {"error": "body is larger than labels.max_body (100 bytes)"})
    status, doc = await post_labels(
        p, {"request_id": "a", "label": 1}, {"Authorization": "Bearer s3cret"}
    )
    assert (status, doc["result"]) == (404, "unknown_id")
    rejected = {
        r: p.value("shadowproxy_label_requests_rejected_total", reason=r)
        for r in ("unauthorized", "forbidden", "too_large")
    }
    assert rejected == {"unauthorized": 1, "forbidden": 1, "too_large": 1}
    assert p.value("shadowproxy_labels_received_total") == 1

    plain = await proxy(
        f"routes: [{{match: /, protocol: kserve-v1, production: {{name: p, url: '{prod.url}'}}}}]"
    )
    status, doc = await post_labels(plain, {"request_id": "a", "label": 1})
    assert (status, doc) == (404, {"error": "labels are off: no route sets 'record'"})


async def test_two_proxy_processes_sharing_redis_join_across_replicas(
    fake_model: FakeModelFactory, proxy: ProxyFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    shadow = await fake_model(echo)
    store = (
        f"{{backend: redis, url: '{redis_server.url}', prefix: 'replicas:', flush_interval: 1ms}}"
    )
    # Replica A serves predictions in this process.
    a = await proxy(config(prod.url, shadow.url, store))
    for i in range(4):
        await predict(a, f"x{i}", [i])
    await a.settled()
    # Replica B is another process; labels are posted to it.
    port = free_port()
    cfg = tmp_path / "b.yaml"
    cfg.write_text(config(prod.url, shadow.url, store).replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    b = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg), stderr=asyncio.subprocess.PIPE
    )
    assert b.stderr is not None
    try:
        while b"listening" not in await asyncio.wait_for(b.stderr.readline(), 20):
            pass
        async with aiohttp.ClientSession() as session:
            labels = [{"request_id": f"x{i}", "label": i} for i in range(4)]
            async with session.post(f"http://127.0.0.1:{port}/labels", json=labels) as resp:
                assert resp.status == 200
                assert (await resp.json())["counts"]["joined"] == 4
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
    finally:
        b.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(b.wait(), 20) == 0
    values = {
        (s.name, s.labels.get("role", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("shadowproxy_correct_instances_total", "shadowproxy_labels_total")
        and s.labels.get("result", "joined") == "joined"
    }
    assert values[("shadowproxy_correct_instances_total", "production")] == 4
    assert values[("shadowproxy_correct_instances_total", "shadow")] == 4
    assert values[("shadowproxy_labels_total", "")] == 4


async def test_a_redis_outage_keeps_production_answering_and_counts_the_losses(
    fake_model: FakeModelFactory, proxy: ProxyFactory, own_redis_server: RedisServer
) -> None:
    server = own_redis_server
    prod = await fake_model(echo)
    store = f"{{backend: redis, url: '{server.url}', timeout: 200ms, flush_interval: 1ms}}"
    p = await proxy(config(prod.url, None, store))
    for i in range(3):
        await predict(p, f"up{i}", [i])
    await p.settled()
    server.stop()
    for i in range(5):
        await predict(p, f"down{i}", [i])
    await p.settled()
    assert p.value("shadowproxy_recorded_total", route=ROUTE, kind="record") == 3
    dropped = p.value(
        "shadowproxy_recording_dropped_total",
        route=ROUTE,
        kind="record",
        reason="store_unavailable",
    )
    assert dropped == 5
    status, doc = await post_labels(p, {"request_id": "up0", "label": 0})
    assert status == 503
    assert doc["error"].startswith("the prediction store is unavailable: ")
    assert p.value("shadowproxy_label_requests_rejected_total", reason="store_unavailable") == 1
    assert p.value("shadowproxy_labels_received_total") == 0


def test_label_body_examples_in_the_readme_are_valid_json() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in readme.split("```") if b.startswith("sh\ncurl") and "/labels" in b]
    assert blocks, "the README shows a curl example for /labels"
    for block in blocks:
        body = block.split("-d '", 1)[1].split("'", 1)[0]
        json.loads(body)


async def test_each_recording_route_joins_its_own_shadows(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod = await fake_model(echo)
    shadow = await fake_model(flip_multiples_of_five)
    routes = "".join(
        f"""
  - match: /{name}
    protocol: kserve-v1
    record: 100%
    production: {{name: prod-{name}, url: "{prod.url}/{name}"}}
    shadows: [{{name: s-{name}, url: "{shadow.url}/{name}"}}]
"""
        for name in ("a", "b")
    )
    p = await proxy(f"store: {sqlite(tmp_path)}\nroutes:{routes}")
    for name, value in (("a", 5), ("b", 1)):
        status, _, _ = await p.post(
            f"/{name}", {"instances": [value]}, headers={"X-Request-ID": name}
        )
        assert status == 200
    await p.settled()
    status, doc = await post_labels(
        p, [{"request_id": n, "label": v} for n, v in (("a", 5), ("b", 1))]
    )
    assert doc["counts"]["joined"] == 2
    for name, shadow_correct in (("a", 0), ("b", 1)):
        labels = {"route": f"/{name}", "model": f"s-{name}", "role": "shadow"}
        assert p.value("shadowproxy_labelled_instances_total", **labels) == 1
        assert p.value("shadowproxy_correct_instances_total", **labels) == shadow_correct
        written = {"route": f"/{name}", "kind": "shadow"}
        assert p.value("shadowproxy_recorded_total", **written) == 1


async def test_a_reload_raising_labels_max_body_reaches_the_front(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """The front's own body limit follows labels.max_body: a reload used to leave it as it was
    at start, and the front refused what /labels now accepts."""
    prod = await fake_model(echo)
    path = tmp_path / "proxy.yaml"

    def text(cap: str) -> str:
        return config(
            prod.url, None, sqlite(tmp_path), f"max_body: 1KiB\nlabels: {{max_body: {cap}}}"
        )

    p = await proxy(text("100KiB"), path)
    big = [{"request_id": f"r{i:06d}" + "x" * 150, "label": 1} for i in range(1000)]  # 184 KB
    assert 100 * 1024 < len(orjson.dumps(big)) < 300 * 1024
    status, _ = await post_labels(p, big)
    assert status == 413
    await asyncio.to_thread(path.write_text, text("300KiB"))
    assert await reload_config(p.state)
    status, doc = await post_labels(p, big)
    assert (status, doc["counts"]["unknown_id"]) == (200, 1000)

"""Shadows end to end over real sockets: fan-out, isolation from bad shadows, exact comparison
counts, bounded queues, and deterministic sampling."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from proxy.analysis.shadow import Tee
from proxy.core.comparison import CompareKind
from proxy.core.extraction import Extractor, Protocol
from proxy.core.outcomes import ComparisonResult, Outcome
from proxy.core.sampling import Sampler, bucket
from proxy.front.client import UpstreamResponse
from proxy.metrics import Metrics
from tests.conftest import (
    Answer,
    BodyHeld,
    FakeModelFactory,
    ProxyFactory,
    Received,
    RunningProxy,
    v1,
)

ROUTE = "/v1/models/m:predict"
SAMPLES = Path(__file__).resolve().parent / "protocol-samples"  # captured from MLServer 1.7.1


def shadow(name: str, url: str, **opts: Any) -> str:
    extra = "".join(f", {k}: {v}" for k, v in opts.items())
    return f'{{name: {name}, url: "{url}/v1/models/{name}:predict"{extra}}}'


def config(prod_url: str, *shadows: str, extra: str = "", compare: str = "") -> str:
    return f"""
shadow_drain_timeout: 200ms
{extra}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    production: {{name: prod, url: "{prod_url}/v1/models/prod:predict"}}
    shadows: [{", ".join(shadows)}]
    {compare}
"""


def echo(r: Received) -> Answer:
    """Predicts each instance's own value: a model that is always 'right'."""
    return v1(r.json()["instances"])


def flip_multiples_of_five(r: Received) -> Answer:
    return v1([x + 1 if x % 5 == 0 else x for x in r.json()["instances"]])


async def test_every_shadow_gets_the_request_marked_and_without_secrets(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod, a, b = [await fake_model(echo) for _ in range(3)]
    p = await proxy(config(prod.url, shadow("a", a.url), shadow("b", b.url)))
    status, _, _ = await p.post(
        f"{ROUTE}?v=2",
        {"instances": [1, 2]},
        headers={"X-Request-ID": "rid-7", "Authorization": "Bearer s3cret", "Cookie": "c=1"},
    )
    assert status == 200
    await p.settled()
    assert prod.received[0].headers["Authorization"] == "Bearer s3cret"
    for name, model in (("a", a), ("b", b)):
        [seen] = model.received
        assert seen.path_qs == f"/v1/models/{name}:predict?v=2"
        assert seen.body == b'{"instances":[1,2]}'
        assert seen.headers["X-Shadow-Request"] == name
        assert seen.headers["X-Request-ID"] == "rid-7"
        assert "Authorization" not in seen.headers
        assert "Cookie" not in seen.headers
        assert (
            p.value("shadowproxy_comparisons_total", route=ROUTE, shadow=name, result="agree") == 1
        )
        assert p.value("shadowproxy_compared_instances_total", route=ROUTE, shadow=name) == 2


async def test_bad_shadows_never_change_or_slow_production(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(echo)
    slow = await fake_model(lambda r: Answer(body=echo(r).body, delay=2.0))
    dead = await fake_model(lambda r: Answer(hang=True))
    failing = await fake_model(lambda r: Answer(status=500, body=b'{"error":"boom"}'))
    garbage = await fake_model(lambda r: Answer(body=b"<html>not json"))
    p = await proxy(
        config(
            prod.url,
            shadow("slow", slow.url, timeout="5s"),
            shadow("dead", dead.url, timeout="300ms"),
            shadow("failing", failing.url),
            shadow("garbage", garbage.url),
        )
    )
    for i in range(5):
        status, headers, body = await p.post(ROUTE, {"instances": [i]})
        assert (status, body) == (200, orjson.dumps({"predictions": [i]}))
        assert headers["Content-Type"] == "application/json"
    # Every production answer came back while the slow shadow still held its first request.
    assert slow.answered == 0
    await p.settled()
    assert slow.answered == 5

    def outcome(target: str, outcome: str) -> float:
        return p.value(
            "shadowproxy_upstream_requests_total",
            route=ROUTE, target=target, role="shadow", outcome=outcome,
        )  # fmt: skip

    def result(shadow_name: str, result: str) -> float:
        return p.value(
            "shadowproxy_comparisons_total", route=ROUTE, shadow=shadow_name, result=result
        )

    assert outcome("slow", "ok") == 5
    assert outcome("dead", "timeout") == 5
    assert outcome("failing", "http_error") == 5
    assert outcome("garbage", "ok") == 5
    assert result("slow", "agree") == 5
    assert result("dead", "shadow_failed") == 5
    assert result("failing", "status_mismatch") == 5
    assert result("garbage", "shadow_unparseable") == 5
    up = "shadowproxy_upstream_requests_total"
    assert p.value(up, route=ROUTE, target="prod", role="production", outcome="ok") == 5


async def test_shadow_headers_lose_the_strip_list_and_accept_encoding_and_gain_the_marker(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod, s = await fake_model(echo), await fake_model(echo)
    extra = "shadow_strip_headers: [X-Api-Key, authorization]"
    p = await proxy(config(prod.url, shadow("s", s.url), extra=extra))
    sent = {
        "x-api-key": "k1",
        "AUTHORIZATION": "Bearer s3cret",
        "Cookie": "c=1",  # the strip list replaces the default one
        "Accept-Encoding": "gzip, br",
        "X-Shadow-Request": "spoofed",
        "X-Keep": "é",  # not ASCII: passed on byte for byte
        "X-Request-ID": "rid-1",
    }
    status, _, _ = await p.post(ROUTE, {"instances": [1]}, headers=sent)
    assert status == 200
    await p.settled()
    [to_prod], [to_shadow] = prod.received, s.received
    for name, value in sent.items():
        assert to_prod.headers.getall(name) == [value]
    assert "X-Api-Key" not in to_shadow.headers
    assert "Authorization" not in to_shadow.headers
    assert "Accept-Encoding" not in to_shadow.headers  # and the client adds none of its own
    assert to_shadow.headers.getall("X-Shadow-Request") == ["s"]
    assert to_shadow.headers["Cookie"] == "c=1"
    assert to_shadow.headers["X-Keep"] == "é"
    assert to_shadow.headers["X-Request-ID"] == "rid-1"
    assert to_shadow.headers["X-Forwarded-For"] == "127.0.0.1"
    assert to_shadow.body == b'{"instances":[1]}'


async def test_compressed_shadow_answers_are_decoded_within_the_cap(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(echo)

    def zipped(r: Received) -> Answer:
        # Named in another case than usual: found whatever its case.
        headers = {"content-type": "application/json", "content-ENCODING": "GZIP"}
        return Answer(body=gzip.compress(echo(r).body), headers=headers)

    def bomb(r: Received) -> Answer:
        body = gzip.compress(b" " * 1_000_000 + echo(r).body)  # 1 MB from about 1 KB
        return Answer(body=body, headers={"Content-Encoding": "gzip"})

    zipped_model, bomb_model = await fake_model(zipped), await fake_model(bomb)
    p = await proxy(
        config(
            prod.url,
            shadow("zipped", zipped_model.url),
            shadow("bomb", bomb_model.url),
            extra="shadow_max_response: 64KiB",
        )
    )
    await p.post(ROUTE, {"instances": [1, 2]})
    await p.settled()
    labels = {"route": ROUTE}
    assert p.value("shadowproxy_comparisons_total", **labels, shadow="zipped", result="agree") == 1
    assert (
        p.value(
            "shadowproxy_comparisons_total", **labels, shadow="bomb", result="shadow_unparseable"
        )
        == 1
    )


FIFTY_MB = b'{"predictions": [' + b"1," * 25_000_000 + b"1]}"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_50_mb_shadow_answer_is_cut_at_the_cap_and_counted_too_large(
    fake_model: FakeModelFactory, proxy: ProxyFactory, body_held: BodyHeld, chunked: bool
) -> None:
    prod = await fake_model(echo)
    huge = await fake_model(lambda r: Answer(body=FIFTY_MB, stream=True, chunked=chunked))
    p = await proxy(config(prod.url, shadow("huge", huge.url, max_in_flight=1)))
    cap = 4 * 1024 * 1024  # shadow_max_response's default
    for i in range(3):
        status, _, body = await p.post(ROUTE, {"instances": [i]})
        assert (status, body) == (200, orjson.dumps({"predictions": [i]}))
    await p.settled()
    await huge.until(lambda: huge.cut == 3)  # the proxy left every answer before its end,
    assert huge.answered == 0
    assert huge.streamed < 3 * len(FIFTY_MB) // 2  # far before (the rest: socket buffers)

    def outcome(target: str, role: str, outcome: str) -> float:
        return p.value(
            "shadowproxy_upstream_requests_total",
            route=ROUTE, target=target, role=role, outcome=outcome,
        )  # fmt: skip

    assert {o: outcome("huge", "shadow", o) for o in Outcome} == {
        "ok": 0, "http_error": 0, "timeout": 0, "connect_error": 0, "too_large": 3,
    }  # fmt: skip
    assert outcome("prod", "production", "ok") == 3
    results = {
        r: p.value("shadowproxy_comparisons_total", route=ROUTE, shadow="huge", result=r)
        for r in ComparisonResult
    }
    assert results == {r: 3 if r is ComparisonResult.SHADOW_FAILED else 0 for r in ComparisonResult}
    # Memory: never more of an answer than the cap. A declared length over it is refused at
    # the head; a chunked answer is read up to the cap, then dropped.
    if chunked:
        assert cap - 256 * 1024 < body_held.most <= cap
    else:
        assert body_held.most == 19  # production's answers only (the front's client too)


async def test_answers_over_the_instance_cap_are_counted_not_compared(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod, s = await fake_model(echo), await fake_model(echo)
    p = await proxy(config(prod.url, shadow("s", s.url), compare="compare: {max_instances: 3}"))
    for instances in ([1, 2, 3], [1, 2, 3, 4]):
        status, _, _ = await p.post(ROUTE, {"instances": instances})
        assert status == 200
    await p.settled()
    labels = {"route": ROUTE, "shadow": "s"}
    results = {
        r: p.value("shadowproxy_comparisons_total", **labels, result=r)
        for r in ("agree", "too_many_instances", "shape_mismatch")
    }
    assert results == {"agree": 1, "too_many_instances": 1, "shape_mismatch": 0}
    assert p.value("shadowproxy_compared_instances_total", **labels) == 3
    # The shadow's classes are counted only for the answer it compared; production's mix is
    # counted whatever the shadow's answer came to.
    assert class_mix(p, "s") == {"1": 1, "2": 1, "3": 1}
    assert class_mix(p, "prod") == {"1": 2, "2": 2, "3": 2, "4": 1}


async def test_known_sequence_gives_exact_disagreement_counts_in_metrics_text(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(echo)
    same = await fake_model(echo)
    flips = await fake_model(flip_multiples_of_five)
    p = await proxy(config(prod.url, shadow("same", same.url), shadow("flips", flips.url)))
    for i in range(10):  # instances 0..29, in batches of 3: multiples of 5 are 0,5,...,25
        await p.post(ROUTE, {"instances": [3 * i, 3 * i + 1, 3 * i + 2]})
    await p.settled()
    async with p.session.get(p.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    lines = set(text.splitlines())
    for expected in (
        f'shadowproxy_compared_instances_total{{route="{ROUTE}",shadow="same"}} 30.0',
        f'shadowproxy_disagreed_instances_total{{route="{ROUTE}",shadow="same"}} 0.0',
        f'shadowproxy_compared_instances_total{{route="{ROUTE}",shadow="flips"}} 30.0',
        f'shadowproxy_disagreed_instances_total{{route="{ROUTE}",shadow="flips"}} 6.0',
        # Batches holding a multiple of five: 0-2, 3-5, 9-11, 15-17, 18-20, 24-26.
        f'shadowproxy_comparisons_total{{result="disagree",route="{ROUTE}",shadow="flips"}} 6.0',
        f'shadowproxy_comparisons_total{{result="agree",route="{ROUTE}",shadow="flips"}} 4.0',
        f'shadowproxy_shadow_enqueued_total{{route="{ROUTE}",shadow="flips"}} 10.0',
        f'shadowproxy_requests_total{{route="{ROUTE}"}} 10.0',
        f'shadowproxy_shadow_queue_depth{{route="{ROUTE}",shadow="flips"}} 0.0',
        f'shadowproxy_shadow_in_flight{{route="{ROUTE}",shadow="flips"}} 0.0',
    ):
        assert expected in lines, expected
    assert any(line.startswith("shadowproxy_config_info{") for line in lines)


async def test_comparison_results_for_errors_and_shapes(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    def prod_script(r: Received) -> Answer:
        x = r.json()["instances"]
        if x == ["bad-input"]:
            return Answer(status=400, body=b'{"error":"bad"}')
        if x == ["prod-garbage"]:
            return Answer(body=b'{"nope": 1}')
        return v1(x)

    def shadow_script(r: Received) -> Answer:
        x = r.json()["instances"]
        if x == ["bad-input"]:
            return Answer(status=400, body=b'{"error":"also bad"}')
        if x == ["short"]:
            return v1([])
        return v1(x)

    prod = await fake_model(prod_script)
    s = await fake_model(shadow_script)
    p = await proxy(config(prod.url, shadow("s", s.url)))
    for instances in (["bad-input"], ["prod-garbage"], ["short"], ["fine"]):
        await p.post(ROUTE, {"instances": instances})
    await p.settled()
    results = {
        r: p.value("shadowproxy_comparisons_total", route=ROUTE, shadow="s", result=r)
        for r in ("same_error", "production_unparseable", "shape_mismatch", "agree")
    }
    assert results == {
        "same_error": 1,
        "production_unparseable": 1,
        "shape_mismatch": 1,
        "agree": 1,
    }


async def test_a_full_queue_drops_and_counts(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(echo)
    stuck = await fake_model(lambda r: Answer(hang=True))
    p = await proxy(config(prod.url, shadow("stuck", stuck.url, max_in_flight=1, max_queue=1)))
    await p.post(ROUTE, {"instances": [1]})
    await stuck.wait_for(1)  # the only worker now holds request 1
    for i in (2, 3, 4):
        status, _, _ = await p.post(ROUTE, {"instances": [i]})
        assert status == 200
    labels = {"route": ROUTE, "shadow": "stuck"}
    assert p.value("shadowproxy_shadow_enqueued_total", **labels) == 2
    assert p.value("shadowproxy_shadow_skipped_total", **labels, reason="queue_full") == 2
    assert p.value("shadowproxy_shadow_queue_depth", **labels) == 1
    assert p.value("shadowproxy_shadow_in_flight", **labels) == 1


async def test_bodies_too_large_for_shadows_are_skipped_and_counted(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(echo)
    s = await fake_model(echo)
    p = await proxy(config(prod.url, shadow("s", s.url), extra="shadow_max_body: 64B"))
    status, _, _ = await p.post(ROUTE, {"instances": list(range(40))})
    assert status == 200
    await p.post(ROUTE, {"instances": [1]})
    await p.settled()
    assert len(s.received) == 1
    labels = {"route": ROUTE, "shadow": "s"}
    assert p.value("shadowproxy_shadow_skipped_total", **labels, reason="body_too_large") == 1
    assert p.value("shadowproxy_shadow_enqueued_total", **labels) == 1


async def test_sampling_sends_the_same_deterministic_subset_to_every_shadow(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod, a, b = [await fake_model(echo) for _ in range(3)]
    p = await proxy(
        config(prod.url, shadow("a", a.url, sample='"30%"'), shadow("b", b.url, sample=0.3))
    )
    ids = [f"req-{i}" for i in range(200)]
    for rid in ids:
        await p.post(ROUTE, {"instances": [1]}, headers={"X-Request-ID": rid})
    await p.settled()
    expected = {rid for rid in ids if Sampler(0.3).admits(bucket(rid))}
    assert len(expected) == 60
    for name, model in (("a", a), ("b", b)):
        assert {r.headers["X-Request-ID"] for r in model.received} == expected
        labels = {"route": ROUTE, "shadow": name}
        assert p.value("shadowproxy_shadow_skipped_total", **labels, reason="sampled_out") == 140
        assert p.value("shadowproxy_shadow_enqueued_total", **labels) == 60
    assert len(prod.received) == 200


async def test_a_failed_production_request_is_still_teed_and_counted(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(lambda r: Answer(hang=True))
    s = await fake_model(echo)
    text = config(prod.url, shadow("s", s.url)).replace(':predict"}', ':predict", timeout: 100ms}')
    p = await proxy(text)
    status, _, _ = await p.post(ROUTE, {"instances": [1]})
    assert status == 504
    await p.settled()
    assert len(s.received) == 1
    assert (
        p.value(
            "shadowproxy_comparisons_total", route=ROUTE, shadow="s", result="production_failed"
        )
        == 1
    )


async def test_open_inference_probabilities_record_distances(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    sample = json.loads((SAMPLES / "open-inference-v2-proba.json").read_text())
    prod_answer = sample["response"]
    shadow_answer = {
        **prod_answer,
        "id": "another-id",
        "model_name": "cancer-rf",
        "outputs": [{**prod_answer["outputs"][0], "data": [0.5, 0.5, 0.9, 0.1, 0.6, 0.4]}],
    }
    prod = await fake_model(lambda r: Answer(body=orjson.dumps(prod_answer)))
    s = await fake_model(lambda r: Answer(body=orjson.dumps(shadow_answer)))
    p = await proxy(
        f"""
routes:
  - match: /v2/models/cancer/infer
    protocol: open-inference-v2
    output: predict_proba
    production: {{name: cancer-lr, url: "{prod.url}/v2/models/cancer-lr/infer"}}
    shadows: [{{name: cancer-rf, url: "{s.url}/v2/models/cancer-rf/infer"}}]
    compare: {{kind: probabilities, distance: total_variation}}
"""
    )
    status, _, body = await p.post("/v2/models/cancer/infer", sample["request"])
    assert status == 200
    assert orjson.loads(body) == prod_answer
    await p.settled()
    labels = {"route": "/v2/models/cancer/infer", "shadow": "cancer-rf"}
    assert p.value("shadowproxy_compared_instances_total", **labels) == 3
    # Rows 1 and 3 flip their argmax (1 -> 0; a tie takes the first class); row 2 keeps class 0.
    assert p.value("shadowproxy_disagreed_instances_total", **labels) == 2
    assert p.value("shadowproxy_probability_distance_count", **labels) == 3
    tv = [0.4891310180578101, 0.0960110508055856, 0.5272855420703331]
    assert abs(p.value("shadowproxy_probability_distance_sum", **labels) - sum(tv)) < 1e-12


# -- the predicted-class mix ---------------------------------------------------------------------

MIX = "shadowproxy_predicted_instances"


def class_mix(p: RunningProxy, model: str, route: str = ROUTE) -> dict[str, float]:
    """Every class series of one model: {class: count}."""
    return {
        sample.labels["class"]: sample.value
        for family in p.registry.collect()
        if family.name == MIX
        for sample in family.samples
        if sample.name == f"{MIX}_total"
        and (sample.labels["route"], sample.labels["model"]) == (route, model)
    }


def roles(p: RunningProxy) -> dict[str, str]:
    """{model: role} of every class series."""
    return {
        sample.labels["model"]: sample.labels["role"]
        for family in p.registry.collect()
        if family.name == MIX
        for sample in family.samples
    }


async def test_class_mix_counts_configured_classes_and_other_once_per_request(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod, same = await fake_model(echo), await fake_model(echo)
    dogs = await fake_model(lambda r: v1(["dog" for _ in r.json()["instances"]]))
    failing = await fake_model(lambda r: Answer(status=500, body=b'{"error":"boom"}'))
    p = await proxy(
        config(
            prod.url,
            shadow("same", same.url),
            shadow("dogs", dogs.url),
            shadow("failing", failing.url),
            compare="compare: {classes: [cat, dog]}",
        )
    )
    for instances in (["cat", "dog"], ["cat", "fish"], [["bird"]], [{"not": "a class"}]):
        await p.post(ROUTE, {"instances": instances})
    await p.settled()
    # Production's answer is counted once per request, not once per shadow.
    assert class_mix(p, "prod") == {"cat": 2, "dog": 1, "other": 3}
    assert class_mix(p, "same") == {"cat": 2, "dog": 1, "other": 3}
    assert class_mix(p, "dogs") == {"cat": 0, "dog": 6, "other": 0}
    # A shadow that never answers with predictions counts nothing; its series exist at 0.
    assert class_mix(p, "failing") == {"cat": 0, "dog": 0, "other": 0}
    assert roles(p) == {
        "prod": "production",
        "same": "shadow",
        "dogs": "shadow",
        "failing": "shadow",
    }


async def test_class_mix_names_the_first_20_classes_seen_then_other(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(echo)
    # Production's mix does not depend on the shadow answering.
    dead = await fake_model(lambda r: Answer(hang=True))
    p = await proxy(config(prod.url, shadow("dead", dead.url, timeout="100ms")))
    await p.post(ROUTE, {"instances": [*range(25), 3, 24]})
    # A whole number is one class whatever its JSON type; a 21st class is still other.
    await p.post(ROUTE, {"instances": ["1", 1.0, True, "new"]})
    await p.settled()
    expected = {str(i): 1.0 for i in range(20)} | {"3": 2.0, "1": 3.0, "other": 8.0}
    assert class_mix(p, "prod") == expected
    assert class_mix(p, "dead") == {}
    assert (
        p.value("shadowproxy_comparisons_total", route=ROUTE, shadow="dead", result="shadow_failed")
        == 2
    )


async def test_class_mix_of_probabilities_is_the_argmax(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    rows = [[0.9, 0.1], [0.2, 0.8], 0.7, [0.1, 0.1, 0.8], [0.5, 0.5], "bad"]
    prod = await fake_model(lambda r: v1(rows))
    s = await fake_model(lambda r: v1([[0.3, 0.7]] * len(rows)))
    p = await proxy(
        f"""
routes:
  - name: named
    match: /named
    protocol: kserve-v1
    production: {{name: prod, url: "{prod.url}"}}
    shadows: [{{name: s, url: "{s.url}"}}]
    compare: {{kind: probabilities, classes: [neg, pos]}}
  - name: indexes
    match: /indexes
    protocol: kserve-v1
    production: {{name: prod, url: "{prod.url}"}}
    shadows: [{{name: s, url: "{s.url}"}}]
    compare: {{kind: probabilities}}
"""
    )
    for path in ("/named", "/indexes"):
        await p.post(path, {"instances": [0] * len(rows)})
    await p.settled()
    # A tie takes the first class; index 2 is beyond the classes, "bad" names none.
    assert class_mix(p, "prod", "named") == {"neg": 2, "pos": 2, "other": 2}
    assert class_mix(p, "prod", "indexes") == {"0": 2, "1": 2, "2": 1, "other": 1}
    assert class_mix(p, "s", "named") == {"neg": 0, "pos": 6, "other": 0}
    assert class_mix(p, "s", "indexes") == {"1": 6}


async def test_regression_routes_have_no_class_mix(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod, s = await fake_model(echo), await fake_model(echo)
    p = await proxy(config(prod.url, shadow("s", s.url), compare="compare: {kind: regression}"))
    await p.post(ROUTE, {"instances": [1.5, 2.5]})
    await p.settled()
    assert p.value("shadowproxy_compared_instances_total", route=ROUTE, shadow="s") == 2
    assert roles(p) == {}


def test_production_classes_are_counted_once_whoever_parses_first() -> None:
    registry = CollectorRegistry()
    counter = Metrics(registry).bind_classes(
        "r", "prod", "production", CompareKind.CLASSIFICATION, None
    )
    assert counter is not None
    answer = UpstreamResponse(200, "OK", [], b'{"predictions": ["a", "b"]}')
    tee = Tee("POST", "", [], b"{}", "rid", answer)
    extractor = Extractor(Protocol.KSERVE_V1)
    assert tee.production_predictions(extractor) == ["a", "b"]  # the recorder: no counting
    for _ in range(3):  # every shadow worker
        assert tee.production_predictions(extractor, counter) == ["a", "b"]
    labels = {"route": "r", "model": "prod", "role": "production"}
    assert registry.get_sample_value(f"{MIX}_total", {**labels, "class": "a"}) == 1
    assert registry.get_sample_value(f"{MIX}_total", {**labels, "class": "b"}) == 1


async def test_a_shadow_that_keeps_failing_is_ejected_probed_and_taken_back(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(echo)
    broken = [True]

    def answer(r: Received) -> Answer:
        # Broken: an answer over shadow_max_response, so no usable answer (too_large).
        return v1([0] * 1000) if broken[0] else echo(r)

    flaky = await fake_model(answer)
    p = await proxy(
        config(
            prod.url,
            shadow("flaky", flaky.url, eject_after=3, eject_for="10s"),
            extra="shadow_max_response: 1KiB",
        )
    )
    dispatcher = p.state.dispatcher((ROUTE, "flaky"))
    assert dispatcher is not None
    now = [1000.0]
    dispatcher.clock = lambda: now[0]
    labels = {"route": ROUTE, "shadow": "flaky"}

    async def send(count: int) -> None:
        for i in range(count):
            status, _, _ = await p.post(ROUTE, {"instances": [i]})
            assert status == 200  # production, whatever the shadow does
        await p.settled()

    def skipped() -> float:
        return p.value("shadowproxy_shadow_skipped_total", **labels, reason="ejected")

    await send(3)  # three failures in a row: ejected for 10 s
    assert p.value("shadowproxy_shadow_ejected", **labels) == 1
    await send(2)
    assert (skipped(), len(flaky.received)) == (2, 3)

    now[0] += 10  # the ejection is over: one probe goes, fails, and it is ejected for 20 s
    await send(2)
    assert (skipped(), len(flaky.received)) == (3, 4)
    now[0] += 19
    await send(1)
    assert (skipped(), len(flaky.received)) == (4, 4)

    broken[0] = False
    now[0] += 1  # the probe gets an answer: taken back at once (copies sent while a probe
    await send(1)  # is out are skipped, so the next ones wait for its answer)
    await send(2)
    assert (skipped(), len(flaky.received)) == (4, 7)
    assert p.value("shadowproxy_shadow_ejected", **labels) == 0
    results = {
        r: p.value("shadowproxy_comparisons_total", **labels, result=r)
        for r in ("shadow_failed", "agree")
    }
    assert results == {"shadow_failed": 4, "agree": 3}

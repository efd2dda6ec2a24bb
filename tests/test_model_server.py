"""Tests for loadtest.model_server: the pure prediction rule, and real servers on port 0."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loadtest.model_server import (
    Latency,
    ModelServer,
    ServerOptions,
    disagrees,
    predict_class,
    predict_proba,
    predict_value,
    start_server,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

Serve = Callable[..., Awaitable[ModelServer]]

ROWS = [
    [11.66, 17.07, 73.7, 421.0],
    [15.53, 33.56, 103.7, 744.9],
    [11.93, 21.53, 76.53, 438.6],
]


def make_instances(count: int, seed: int = 42) -> list[list[float]]:
    rng = random.Random(seed)
    return [[round(rng.uniform(0, 100), 3) for _ in range(4)] for _ in range(count)]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start servers on port 0; every one is stopped at teardown."""
    started: list[ModelServer] = []

    async def start(**options: Any) -> ModelServer:
        server, port = await start_server(ServerOptions(**options))
        assert port == server.port > 0
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post_json(
    session: aiohttp.ClientSession, url: str, body: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


# --------------------------------------------------------------------------- pure rule


def test_seed_zero_is_the_reference() -> None:
    instances = make_instances(300)
    # Seed 0 never departs, whatever the rate; a nonzero seed at rate 1 always does.
    assert not any(disagrees(x, 0, 1.0) for x in instances)
    for x in instances:
        truth = predict_class(x, 0, 1.0, 3)
        assert predict_class(x, 0, 0.0, 3) == truth
        assert predict_class(x, 5, 1.0, 3) == (truth + 1) % 3
        assert predict_class(x, 5, 0.0, 3) == truth


def test_disagreeing_set_grows_with_the_rate() -> None:
    instances = make_instances(1000)
    low = {i for i, x in enumerate(instances) if disagrees(x, 7, 0.1)}
    high = {i for i, x in enumerate(instances) if disagrees(x, 7, 0.3)}
    assert low < high


def test_key_order_does_not_matter_but_number_type_does() -> None:
    assert predict_class({"a": 1, "b": 2}, 3, 0.5, 5) == predict_class({"b": 2, "a": 1}, 3, 0.5, 5)
    values = {predict_value([float(i)], 0, 0.0) for i in range(50)}
    assert values != {predict_value([i], 0, 0.0) for i in range(50)}


@pytest.mark.parametrize("classes", [2, 3, 5, 10])
def test_predict_proba_argmax_is_predict_class(classes: int) -> None:
    for x in make_instances(500):
        for seed in (0, 7):
            proba = predict_proba(x, seed, 0.3, classes)
            assert len(proba) == classes
            assert sum(proba) == pytest.approx(1.0)
            assert all(0.0 < p < 1.0 for p in proba)
            best = max(proba)
            assert proba.count(best) == 1
            assert proba.index(best) == predict_class(x, seed, 0.3, classes)


def test_regression_value_shifts_by_one_where_it_disagrees() -> None:
    for x in make_instances(300):
        truth = predict_value(x, 0, 0.2)
        assert truth * 10 == int(truth * 10)
        assert 0.0 <= truth < 100.0
        assert predict_value(x, 9, 0.2) == truth + (1.0 if disagrees(x, 9, 0.2) else 0.0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("200ms", Latency("fixed", 0.2)),
        ("0.2", Latency("fixed", 0.2)),
        ("1.5s", Latency("fixed", 1.5)),
        ("500us", Latency("fixed", 0.0005)),
        ("uniform:10ms:50ms", Latency("uniform", 0.01, 0.05)),
        ("exp:20ms", Latency("exp", 0.02)),
        ("normal:50ms:10ms", Latency("normal", 0.05, 0.01)),
    ],
)
def test_latency_parse(spec: str, expected: Latency) -> None:
    assert Latency.parse(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "fast", "-1ms", "uniform:50ms:10ms", "exp", "exp:1:2", "gamma:1", "nan"]
)
def test_latency_parse_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match=r"latency|duration"):
        Latency.parse(spec)


def test_latency_samples() -> None:
    rng = random.Random(0)
    assert Latency.parse("0").is_zero
    assert Latency.parse("uniform:0:0").is_zero
    assert not Latency.parse("normal:0:1ms").is_zero
    assert Latency.parse("200ms").sample(rng) == 0.2
    uniform = [Latency.parse("uniform:10ms:50ms").sample(rng) for _ in range(1000)]
    assert min(uniform) >= 0.01
    assert max(uniform) <= 0.05
    normal = [Latency.parse("normal:1ms:10ms").sample(rng) for _ in range(1000)]
    assert min(normal) == 0.0
    exp = [Latency.parse("exp:20ms").sample(rng) for _ in range(5000)]
    assert sum(exp) / len(exp) == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize(
    "options",
    [
        {"seed": -1},
        {"disagree": 1.5},
        {"classes": 1},
        {"kind": "ranking"},
        {"name": ""},
        {"error_rate": -0.1},
    ],
)
def test_options_reject_bad_values(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        ServerOptions(**options)


# --------------------------------------------------------------------------- over sockets


async def test_v2_answer_for_three_rows(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve(seed=7, disagree=0.5, name="cancer-lr")
    request = {
        "inputs": [
            {
                "name": "x",
                "shape": [3, 4],
                "datatype": "FP64",
                "data": [v for row in ROWS for v in row],
            }
        ]
    }
    status, body = await post_json(session, f"{server.url}/v2/models/cancer-lr/infer", request)
    assert status == 200
    assert set(body) == {"model_name", "model_version", "id", "parameters", "outputs"}
    assert body["model_name"] == "cancer-lr"
    assert body["model_version"] == "v1"
    assert uuid.UUID(body["id"]).version == 4
    assert body["parameters"] == {}
    assert body["outputs"] == [
        {
            "name": "predict",
            "shape": [3, 1],
            "datatype": "INT64",
            "parameters": {"content_type": "np"},
            "data": [predict_class(row, 7, 0.5, 3) for row in ROWS],
        }
    ]

    status, again = await post_json(
        session, f"{server.url}/v2/models/cancer-lr/versions/3/infer", request
    )
    assert status == 200
    assert again["model_version"] == "3"
    assert again["id"] != body["id"]
    assert again["outputs"] == body["outputs"]


async def test_v2_predict_proba(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve(seed=7, disagree=0.5, classes=4)
    request = {
        "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": ROWS}],
        "outputs": [{"name": "predict_proba"}, {"name": "predict"}],
    }
    status, body = await post_json(session, f"{server.url}/v2/models/m/infer", request)
    assert status == 200
    proba, labels = body["outputs"]
    assert proba["name"] == "predict_proba"
    assert proba["shape"] == [3, 4]
    assert proba["datatype"] == "FP64"
    assert proba["data"] == [p for row in ROWS for p in predict_proba(row, 7, 0.5, 4)]
    assert labels["data"] == [predict_class(row, 7, 0.5, 4) for row in ROWS]
    for i, label in enumerate(labels["data"]):
        row = proba["data"][i * 4 : (i + 1) * 4]
        assert row.index(max(row)) == label


async def test_v2_several_inputs_are_records(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve(seed=3, disagree=0.5)
    request = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "b", "shape": [2, 2], "datatype": "FP64", "data": [0.5, 1.5, 2.5, 3.5]},
        ]
    }
    status, body = await post_json(session, f"{server.url}/v2/models/m/infer", request)
    assert status == 200
    expected = [{"a": 1, "b": [0.5, 1.5]}, {"a": 2, "b": [2.5, 3.5]}]
    assert body["outputs"][0]["data"] == [predict_class(x, 3, 0.5, 3) for x in expected]


async def test_kserve_v1(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve(seed=2, disagree=0.4, classes=5)
    instances = [*make_instances(50), {"text": "hello"}, "plain", 3]
    status, body = await post_json(
        session, f"{server.url}/v1/models/m:predict", {"instances": instances}
    )
    assert status == 200
    assert body == {"predictions": [predict_class(x, 2, 0.4, 5) for x in instances]}


async def test_mlflow_input_forms(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve(seed=4, disagree=0.3)
    url = f"{server.url}/invocations"
    rows = make_instances(40)
    expected_rows = [predict_class(x, 4, 0.3, 3) for x in rows]
    records = [dict(zip(["a", "b", "c", "d"], row, strict=True)) for row in rows]
    expected_records = [predict_class(x, 4, 0.3, 3) for x in records]

    assert await post_json(session, url, {"instances": rows}) == (
        200,
        {"predictions": expected_rows},
    )
    assert await post_json(session, url, {"inputs": rows}) == (200, {"predictions": expected_rows})
    split = {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": rows}}
    assert await post_json(session, url, split) == (200, {"predictions": expected_records})
    # The same frame predicts alike however it is sent.
    assert await post_json(session, url, {"dataframe_records": records}) == (
        200,
        {"predictions": expected_records},
    )
    columns = {name: [r[name] for r in records] for name in "abcd"}
    assert await post_json(session, url, {"inputs": columns}) == (
        200,
        {"predictions": expected_records},
    )


async def test_regression_kind(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve(seed=6, disagree=0.5, kind="regression")
    status, body = await post_json(
        session, f"{server.url}/v1/models/m:predict", {"instances": ROWS}
    )
    assert status == 200
    assert body == {"predictions": [predict_value(row, 6, 0.5) for row in ROWS]}
    request: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": ROWS}]
    }
    status, body = await post_json(session, f"{server.url}/v2/models/m/infer", request)
    assert status == 200
    assert body["outputs"][0]["datatype"] == "FP64"
    assert body["outputs"][0]["data"] == [predict_value(row, 6, 0.5) for row in ROWS]
    request["outputs"] = [{"name": "predict_proba"}]
    status, body = await post_json(session, f"{server.url}/v2/models/m/infer", request)
    assert status == 400
    assert "predict_proba" in body["error"]


async def test_shadow_disagrees_on_the_scripted_fraction(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    production = await serve(seed=0, disagree=0.25)
    shadow = await serve(seed=7, disagree=0.25)
    instances = make_instances(2000)
    answers: dict[int, list[int]] = {}
    for server in (production, shadow):
        answers[server.port] = []
        for start in range(0, len(instances), 500):
            batch = {"instances": instances[start : start + 500]}
            status, body = await post_json(session, f"{server.url}/v1/models/m:predict", batch)
            assert status == 200
            answers[server.port].extend(body["predictions"])
    truth, shadowed = answers[production.port], answers[shadow.port]

    differ = [i for i, (a, b) in enumerate(zip(truth, shadowed, strict=True)) if a != b]
    expected = [i for i, x in enumerate(instances) if disagrees(x, 7, 0.25)]
    assert differ == expected
    assert len(differ) == sum(
        predict_class(x, 0, 0.25, 3) != predict_class(x, 7, 0.25, 3) for x in instances
    )
    assert 0.21 <= len(differ) / len(instances) <= 0.29
    assert production.predict_requests == shadow.predict_requests == 4


async def test_error_rate_one_fails_every_request(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    server = await serve(error_rate=1.0)
    for _ in range(20):
        status, body = await post_json(
            session, f"{server.url}/v1/models/m:predict", {"instances": ROWS}
        )
        assert status == 500
        assert "error" in body
    assert server.scripted_errors == server.predict_requests == 20


async def test_error_rate_is_seeded(serve: Serve, session: aiohttp.ClientSession) -> None:
    runs = []
    for _ in range(2):
        server = await serve(seed=1, error_rate=0.5)
        statuses = []
        for _ in range(40):
            status, _body = await post_json(
                session, f"{server.url}/invocations", {"instances": ROWS}
            )
            statuses.append(status)
        runs.append(statuses)
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


async def test_fixed_latency(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve(latency=Latency.parse("50ms"))
    loop = asyncio.get_running_loop()
    began = loop.time()
    status, _body = await post_json(session, f"{server.url}/invocations", {"instances": ROWS})
    assert status == 200
    assert loop.time() - began >= 0.05


async def test_blackhole_never_answers_and_stops_cleanly(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    server = await serve(blackhole=True)
    url = f"{server.url}/v1/models/m:predict"

    async def post_forever() -> int:
        async with session.post(url, json={"instances": ROWS}) as response:
            return response.status

    pending = asyncio.create_task(post_forever(), name="blackholed-request")
    async with asyncio.timeout(5):
        await server.wait_hanging(1)

    short = aiohttp.ClientTimeout(total=0.2)
    with pytest.raises(TimeoutError):
        async with session.post(url, json={"instances": ROWS}, timeout=short):
            pass
    async with session.get(f"{server.url}/v2/health/ready") as health:
        assert health.status == 200

    async with asyncio.timeout(2):
        await server.stop()
    assert server.hanging == 0
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await pending


async def test_bad_json_is_400(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve()
    for path in ("/v1/models/m:predict", "/v2/models/m/infer", "/invocations"):
        async with session.post(f"{server.url}{path}", data=b"{not json") as response:
            assert response.status == 400
            assert response.content_type == "application/json"
            assert "not JSON" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/models/m:predict", {"inputs": [1]}, "instances"),
        ("/v1/models/m:predict", [1, 2], "JSON object"),
        ("/invocations", {"rows": []}, "dataframe_split"),
        ("/invocations", {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, "row 0"),
        ("/v2/models/m/infer", {"inputs": []}, "inputs"),
        (
            "/v2/models/m/infer",
            {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1.0]}]},
            "needs 6 values",
        ),
        (
            "/v2/models/m/infer",
            {
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}],
                "outputs": [{"name": "logits"}],
            },
            "unknown output",
        ),
    ],
)
async def test_wrong_shape_is_400(
    serve: Serve, session: aiohttp.ClientSession, path: str, body: Any, message: str
) -> None:
    server = await serve()
    status, answer = await post_json(session, f"{server.url}{path}", body)
    assert status == 400
    assert message in answer["error"]


async def test_routes(serve: Serve, session: aiohttp.ClientSession) -> None:
    server = await serve(blackhole=True, error_rate=1.0)
    for path in ("/v2/health/ready", "/v2/health/live", "/healthz"):
        async with session.get(f"{server.url}{path}") as response:
            assert response.status == 200
    for method, path in [
        ("GET", "/"),
        ("POST", "/v2/models/m/predict"),
        ("POST", "/v1/models/:predict"),
        ("POST", "/v2/models/m/versions/infer"),
        ("POST", "/healthz"),
    ]:
        async with session.request(method, f"{server.url}{path}", json={}) as response:
            assert response.status == 404
            assert path in (await response.json())["error"]
    async with session.get(f"{server.url}/invocations") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    assert server.predict_requests == 0


async def test_command_line_prints_port_and_stops_on_sigterm(
    session: aiohttp.ClientSession,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.model_server",
        "--port",
        "0",
        "--seed",
        "7",
        "--disagree",
        "0.25",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        status, body = await post_json(session, f"{url}/v1/models/m:predict", {"instances": ROWS})
        assert status == 200
        assert body == {"predictions": [predict_class(row, 7, 0.25, 3) for row in ROWS]}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _out, err = await process.communicate()
    assert process.returncode == 0, err.decode()


async def test_command_line_rejects_bad_options() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.model_server",
        "--latency",
        "soon",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(10):
        _out, err = await process.communicate()
    assert process.returncode == 2
    assert "bad duration 'soon'" in err.decode()

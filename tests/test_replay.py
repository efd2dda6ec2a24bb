"""Offline replay (issue 15): export files written here from synthetic rows that follow
proxy/capture/schema.py, a scripted candidate on port 0, and `python -m proxy replay` run to its
end: the exact counts it prints and reports, the report the live proxy gives on the same traffic,
pacing and concurrency held, the progress it shows, and every failure as one line."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.capture.schema import COLUMNS
from tests.conftest import (
    Answer,
    FakeModelFactory,
    ProxyFactory,
    Received,
    free_port,
    read_terminal,
)

ROUTE = "/v1/models/iris:predict"
T0 = 1_750_000_000.0  # when the first request was captured
N = 40  # requests captured on the route
LABELLED = 20  # the first ones have a label
DISAGREE = frozenset({0, 10, 20, 30})  # where the candidate answers another class
FAILING = 39  # the candidate answers 500 to this one


# -- the models: production's answer (captured), the candidate's, and the truth ----------------


def production(kind: str, i: int) -> Any:
    if kind == "regression":
        return float(i)
    if kind == "probabilities":
        return [0.75, 0.25] if i % 2 else [0.25, 0.75]
    return i % 3


def candidate(kind: str, i: int) -> Any:
    if kind == "regression":
        return i + (2.0 if i in DISAGREE else 0.25)
    if kind == "probabilities":
        p = production(kind, i)
        return p[::-1] if i in DISAGREE else [p[0] + 0.05, p[1] - 0.05]
    return (i + 1) % 3 if i in DISAGREE else i % 3


def truth(kind: str, i: int) -> Any:
    """Production is wrong on 0, 5 and 10; the candidate, right where it disagrees, on 5."""
    if kind == "regression":
        return i + 1.0
    if kind == "probabilities":
        best = production(kind, i).index(0.75)
        return 1 - best if i in (0, 5, 10) else best
    if i in (0, 10):
        return candidate(kind, i)
    return 0 if i == 5 else i % 3


def index_of(request: Received) -> int:
    index: int = request.json()["instances"][0][0]
    return index


def candidate_script(kind: str = "classification") -> Callable[[Received], Answer]:
    def answer(request: Received) -> Answer:
        i = index_of(request)
        if i == FAILING:
            return Answer(status=500, body=b'{"error": "boom"}')
        return Answer(body=orjson.dumps({"predictions": [candidate(kind, i)]}))

    return answer


# -- the export ---------------------------------------------------------------------------------


def row(i: int, kind: str = "classification", **changes: Any) -> dict[str, Any]:
    """One export row, exactly the columns of proxy/capture/schema.py, in their order."""
    rid = f"r{i}"
    prediction = production(kind, i)
    labelled = i < LABELLED
    found: dict[str, Any] = {
        "request_id": rid,
        "route": "iris",
        "shadow": "cand-a",
        "role": "candidate",
        "kind": kind,
        "captured_at": T0 + i,
        "result": "agree",
        "method": "POST",
        "path": ROUTE,
        "request_headers": json.dumps({"content-type": "application/json", "x-request-id": rid}),
        "request_body": json.dumps({"instances": [[i]]}),
        "request_truncated": False,
        "production_status": 200,
        "production_body": json.dumps({"predictions": [prediction], "model_name": "iris-lr"}),
        "production_ms": 5.0,
        "shadow_status": 200,
        "shadow_body": json.dumps({"predictions": [prediction]}),
        "shadow_ms": 4.0,
        "production_predictions": json.dumps([prediction]),
        "shadow_predictions": json.dumps([prediction]),
        "instances": 1,
        "disagreed": 0,
        "differing": "[]",
        "max_difference": 0.0 if kind == "regression" else None,
        "label": json.dumps(truth(kind, i)) if labelled else None,
        "labelled_at": T0 + 3600 + i if labelled else None,
    }
    assert set(changes) <= set(found)
    found.update(changes)
    assert list(found) == [name for name, _, _ in COLUMNS]
    return found


def rows(kind: str = "classification") -> list[dict[str, Any]]:
    """N requests of route iris captured for shadow cand-a; the first ten also for cand-b (the
    same request: replayed once); production's predictions left out of the last ten's rows
    (read again from its answer); three rows of a route the config does not have; and one
    request whose body the capture cut."""
    found = []
    for i in range(N):
        null = {"production_predictions": None} if i >= N - 10 else {}
        found.append(row(i, kind, **null))
        if i < 10:
            found.append(row(i, kind, shadow="cand-b", result="disagree"))
    found += [row(100 + i, kind, route="legacy") for i in range(3)]
    found.append(row(200, kind, request_truncated=True, request_body='{"instances": [[2'))
    return found


def write_jsonl(path: Path, found: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in found))
    return path


def write_parquet(path: Path, found: list[dict[str, Any]]) -> Path:
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    types = {
        "string": pa.string(),
        "bool": pa.bool_(),
        "int64": pa.int64(),
        "float64": pa.float64(),
    }
    schema = pa.schema([pa.field(name, types[t], nullable=n) for name, t, n in COLUMNS])
    parquet.write_table(pa.Table.from_pylist(found, schema=schema), path)
    return path


def write_config(tmp_path: Path, kind: str = "classification", extra: str = "") -> Path:
    compare = "{kind: regression, tolerance: 0.5}" if kind == "regression" else f"{{kind: {kind}}}"
    path = tmp_path / "proxy.yaml"
    path.write_text(f"""
verdict: {{min_labels: 10}}
store: {{backend: sqlite, path: "{tmp_path / "predictions.db"}"}}
labels: {{token: s3cret}}
{extra}
routes:
  - name: iris
    match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    compare: {compare}
    production: {{name: iris-lr, url: "http://127.0.0.1:9{ROUTE}"}}
""")
    return path


# -- the command --------------------------------------------------------------------------------


@dataclass
class Done:
    code: int
    out: str
    err: str


async def run(*args: str, prelude: str = "") -> Done:
    """`python -m proxy replay ARGS` to its end; with `prelude`, that code runs first."""
    command = ["-m", "proxy", "replay", *args]
    if prelude:
        main = "from proxy.__main__ import main; sys.exit(main(sys.argv[1:]))"
        command = ["-c", f"import sys; {prelude}; {main}", "replay", *args]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def common(config: Path, export: Path, target: str, tmp_path: Path) -> list[str]:
    return [
        "--config", str(config), "--from", str(export), "--target", target,
        "--json", str(tmp_path / "replay.json"), "--report", str(tmp_path / "replay.html"),
    ]  # fmt: skip


def report_of(tmp_path: Path) -> Any:
    return json.loads((tmp_path / "replay.json").read_text())


# -- what a replay counts, prints and writes ----------------------------------------------------


async def test_a_replay_counts_prints_and_reports_exact_figures(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    model = await fake_model(candidate_script())
    export = write_jsonl(tmp_path / "export.jsonl", rows())
    target = f"{model.url}/predict"
    done = await run(*common(write_config(tmp_path), export, target, tmp_path))
    assert done.code == 0, done.err

    # Each request once: the rows of cand-b, the unknown route and the cut body are not sent.
    assert sorted(index_of(r) for r in model.received) == list(range(N))
    out = done.out.splitlines()
    assert re.fullmatch(
        rf"replayed 40 requests of {re.escape(str(export))} to {re.escape(target)} in"
        r" \d+\.\d s, \d+\.\d requests/s",
        out[0],
    )
    assert out[1] == (
        "skipped: 3 rows of routes not in the config (legacy 3); 1 request whose body the"
        " capture cut (capture.max_body)"
    )
    assert out[3] == "iris  (classification: 40 requests replayed)"
    assert out[4].split() == [
        "model", "requests", "errors", "disagreement", "(instances)", "accuracy", "labelled",
        "instances", "p50", "ms", "p99", "ms",
    ]  # fmt: skip
    # Production wrong on 0, 5 and 10 of the 20 labelled; the candidate on 5 only; it
    # disagrees on 0, 10, 20 and 30 of the 39 answers compared (39 answered 500).
    assert re.fullmatch(r"  production iris-lr +40 +0 +- +85\.0% +20 +5\.0 +5\.0", out[5])
    assert re.fullmatch(
        r"  candidate replay +40 +1 \(2\.5%\) +10\.3% \(4 of 39\) +95\.0% +20 +\d+\.\d +\d+\.\d",
        out[6],
    )
    assert out[7] == "  answers: 35 agree, 4 disagree, 1 status mismatch"
    assert out[8] == "  labels: 20 joined"
    assert out[9] == (
        "  latency: the candidate's measured from here, production's as captured live; not judged"
    )
    assert out[10].startswith(
        "  verdict: inconclusive: not decided yet: accuracy advantage +10.0 points"
    )
    assert out[11:] == [
        "",
        f"wrote the report page to {tmp_path / 'replay.html'}, its JSON to"
        f" {tmp_path / 'replay.json'}",
    ]

    report = report_of(tmp_path)
    (route,) = report["routes"]
    assert (route["route"], route["kind"], route["production"]) == (
        "iris", "classification", "iris-lr",
    )  # fmt: skip
    assert route["production_accuracy"]["labelled"] == 20
    assert route["production_accuracy"]["correct"] == 17
    assert route["production_latency"]["count"] == 40
    diagnostics = route["diagnostics"]
    assert (diagnostics["recorded_requests"], diagnostics["labelled_requests"]) == (40, 20)
    assert route["problems"] == []
    (shadow,) = route["shadows"]
    assert shadow["shadow"] == "replay"
    assert (shadow["requests"], shadow["errors"]) == (40, 1)
    assert (shadow["disagreement"]["compared"], shadow["disagreement"]["disagreed"]) == (39, 4)
    assert (shadow["accuracy"]["labelled"], shadow["accuracy"]["correct"]) == (20, 19)
    paired = {k: shadow["paired"][k] for k in ("both_right", "production_only", "shadow_only")}
    assert paired | {"both_wrong": shadow["paired"]["both_wrong"]} == {
        "both_right": 17, "production_only": 0, "shadow_only": 2, "both_wrong": 1,
    }  # fmt: skip
    assert shadow["quality"]["requests"] == 20
    assert shadow["quality"]["advantage"] == pytest.approx(0.1)
    assert shadow["latency"]["count"] == 40 - 1 + 1  # every answer, the 500 too
    assert shadow["verdict"] == "inconclusive"
    # Latency measured from two places is shown, never judged: no limit, never tripped.
    slow = {g["name"]: g for g in shadow["guardrails"]}["slow_requests"]
    assert (slow["limit"], slow["tripped"]) == (None, False)

    page = (tmp_path / "replay.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "replay" in page
    assert "iris-lr" in page

    # Not a terminal: one line at every tenth.
    lines = done.err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        f"replay: {4 * k}/40 ({10 * k}%)" for k in range(1, 11)
    ]
    assert re.fullmatch(r"replay: 40/40 \(100%\), \d+\.\d requests/s, ETA 0s", lines[-1])


async def test_a_parquet_export_gives_the_same_figures(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    model = await fake_model(candidate_script())
    export = write_parquet(tmp_path / "export.parquet", rows())
    done = await run(*common(write_config(tmp_path), export, f"{model.url}/p", tmp_path))
    assert done.code == 0, done.err
    assert len(model.received) == N
    (shadow,) = report_of(tmp_path)["routes"][0]["shadows"]
    assert (shadow["requests"], shadow["errors"]) == (40, 1)
    assert (shadow["disagreement"]["compared"], shadow["disagreement"]["disagreed"]) == (39, 4)
    assert (shadow["accuracy"]["labelled"], shadow["accuracy"]["correct"]) == (20, 19)
    assert "  answers: 35 agree, 4 disagree, 1 status mismatch" in done.out.splitlines()


async def test_without_pyarrow_a_parquet_export_says_what_to_install(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    model = await fake_model(candidate_script())
    export = write_parquet(tmp_path / "export.parquet", rows())
    blocked = "sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None"
    done = await run(*common(write_config(tmp_path), export, model.url, tmp_path), prelude=blocked)
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy replay: {export} is Parquet, which needs pyarrow: pip install"
        " shadow-proxy[export] (or export JSON lines: shadow-proxy capture export --format"
        " jsonl)\n"
    )
    assert model.received == []


async def test_requests_go_as_the_proxy_sends_a_shadow_its_copy(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    model = await fake_model(candidate_script())
    headers = {
        "content-type": "application/json",
        "x-request-id": "r1",
        "x-tenant": "acme",
        "x-api-key": "<redacted>",  # redacted by the capture: sent as it wrote it
        "authorization": "<redacted>",  # in shadow_strip_headers: never sent to a shadow
        "connection": "keep-alive, x-hop",
        "x-hop": "1",  # named by Connection: hop-by-hop
        "host": "production:8080",
        "content-length": "999",
        "accept-encoding": "gzip",
        "x-shadow-request": "spoofed",
    }
    found = [
        row(1, path=f"{ROUTE}?explain=1&v=2", request_headers=json.dumps(headers)),
        row(2, method="PUT"),
    ]
    export = write_jsonl(tmp_path / "export.jsonl", found)
    target = f"{model.url}/v1/models/candidate:predict"
    done = await run(*common(write_config(tmp_path), export, target, tmp_path), "--name", "c2")
    assert done.code == 0, done.err
    first, second = sorted(model.received, key=index_of)
    assert (first.method, first.path_qs) == ("POST", "/v1/models/candidate:predict?explain=1&v=2")
    assert (second.method, second.path_qs) == ("PUT", "/v1/models/candidate:predict")
    assert first.body == b'{"instances": [[1]]}'
    sent = {name.lower(): value for name, value in first.headers.items()}
    port = model.url.rsplit(":", 1)[1]
    assert sent == {
        "host": f"127.0.0.1:{port}",
        "content-type": "application/json",
        "x-request-id": "r1",
        "x-tenant": "acme",
        "x-api-key": "<redacted>",
        "x-shadow-request": "c2",
        "content-length": str(len(first.body)),
        "accept": "*/*",
        "user-agent": sent["user-agent"],  # aiohttp's own: the capture had none
    }
    assert [s["shadow"] for s in report_of(tmp_path)["routes"][0]["shadows"]] == ["c2"]


async def test_failures_and_labels_are_counted_as_the_proxy_counts_them(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    def answer(request: Received) -> Answer:
        i = index_of(request)
        if i == 1:
            return Answer(hang=True)  # a timeout
        if i == 2:
            return Answer(body=b'{"outputs": []}')  # no predictions where kserve-v1 has them
        return Answer(body=orjson.dumps({"predictions": [production("classification", i)]}))

    model = await fake_model(answer)
    found = [
        row(0),
        row(1),
        row(2),
        row(3, production_status=None, production_body=None, production_predictions=None),
        row(4, production_status=503, production_predictions=None, label=None),
        row(5, label=json.dumps([1, 2])),  # two labels for one instance: invalid
        row(6, production_body="{", production_predictions=None),  # unreadable: not recorded
    ]
    export = write_jsonl(tmp_path / "export.jsonl", found)
    args = common(write_config(tmp_path), export, model.url, tmp_path)
    done = await run(*args, "--timeout", "300ms")
    assert done.code == 0, done.err
    out = done.out.splitlines()
    assert out[2] == "iris  (classification: 7 requests replayed)"
    assert out[4].split()[:5] == ["production", "iris-lr", "7", "2", "(28.6%)"]
    assert out[5].split()[:8] == ["candidate", "replay", "7", "1", "(14.3%)", "0.0%", "(0", "of"]
    assert out[6] == (
        "  answers: 2 agree, 1 status mismatch, 1 shadow unparseable, 1 production unparseable,"
        " 1 shadow failed, 1 production failed"
    )
    # 3 and 6: production gave no predictions, so nothing was recorded for the label to find
    assert out[7] == "  labels: 3 joined, 2 unknown_id, 1 invalid"
    route = report_of(tmp_path)["routes"][0]
    assert route["diagnostics"]["recorded_requests"] == 4  # 0, 1, 2 and 5
    assert route["diagnostics"]["labelled_requests"] == 3  # 0, 1 and 2
    assert (route["production_accuracy"]["labelled"], route["production_accuracy"]["correct"]) == (
        3, 2,
    )  # fmt: skip
    (shadow,) = route["shadows"]
    assert (shadow["accuracy"]["labelled"], shadow["accuracy"]["correct"]) == (1, 0)
    assert shadow["diagnostics"]["lost_pairs"] == 2  # 1 timed out, 2 held no predictions
    assert route["problems"][:3] == [
        "production's answers held no predictions the route could read: 1 of 7 compared answers"
        " (14%); nothing is compared for them",
        "replay's answers held no predictions the route could read: 1 of 7 compared answers"
        " (14%); nothing is compared for them",
        "production's answers were not recorded: 1 of 5 answers to record (20%); they held no"
        " predictions the route could read, so their labels will be unknown_id",
    ]
    assert sorted(route["problems"][3:]) == [
        "latest: iris-lr: body is not JSON: unexpected end of data: line 1 column 2 (char 1)"
        " (production_unparseable, 1 in the replay)",
        "latest: iris-lr: body is not JSON: unexpected end of data: line 1 column 2 (char 1)"
        " (unreadable, 1 in the replay)",
        "latest: replay: no 'predictions' key (shadow_unparseable, 1 in the replay)",
    ]


# -- pacing and concurrency ---------------------------------------------------------------------


async def test_the_rate_is_held(fake_model: FakeModelFactory, tmp_path: Path) -> None:
    arrived: list[float] = []

    def answer(request: Received) -> Answer:
        arrived.append(time.monotonic())
        return candidate_script()(request)

    model = await fake_model(answer)
    export = write_jsonl(tmp_path / "export.jsonl", [row(i) for i in range(9)])
    args = common(write_config(tmp_path), export, model.url, tmp_path)
    done = await run(*args, "--rate", "20", "--concurrency", "8")
    assert done.code == 0, done.err
    assert len(arrived) == 9
    # Evenly spaced starts, 50 ms apart: 8 gaps, however many may be in flight.
    assert arrived[-1] - arrived[0] >= 8 * 0.05 * 0.9


async def test_no_more_than_concurrency_requests_are_in_flight(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    most = 0
    three = asyncio.Event()
    script = candidate_script()

    def answer(request: Received) -> Answer:
        nonlocal most
        in_flight = len(model.received) - model.answered  # this one included
        most = max(most, in_flight)
        if in_flight >= 3:
            three.set()
        found = script(request)
        if len(model.received) > 1:  # the first goes alone: whether the target is there
            # Held until three are in flight at once: a fourth would show, were it sent.
            found.wait = three
        return found

    model = await fake_model(answer)
    export = write_jsonl(tmp_path / "export.jsonl", [row(i) for i in range(12)])
    args = common(write_config(tmp_path), export, model.url, tmp_path)
    done = await run(*args, "--concurrency", "3")
    assert done.code == 0, done.err
    assert len(model.received) == 12
    assert most == 3


# -- what cannot be read: one line ----------------------------------------------------------------


async def test_a_target_that_is_down_is_one_line(tmp_path: Path) -> None:
    export = write_jsonl(tmp_path / "export.jsonl", rows())
    target = f"http://127.0.0.1:{free_port()}/predict"
    done = await run(*common(write_config(tmp_path), export, target, tmp_path))
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy replay: cannot reach {target}: connection refused (is it running, and on"
        " that port?)\n"
    )
    assert not (tmp_path / "replay.json").exists()


async def test_an_export_of_routes_the_config_does_not_have_is_nothing_to_replay(
    tmp_path: Path,
) -> None:
    export = write_jsonl(
        tmp_path / "export.jsonl",
        [row(1, route="legacy"), row(2, route="legacy"), row(3, route="old")],
    )
    config = write_config(tmp_path)
    done = await run(*common(config, export, "http://127.0.0.1:9/p", tmp_path))
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy replay: nothing to replay in {export}: 3 rows, 3 of routes not in"
        f" {config} (legacy, old)\n"
    )


async def test_a_shadow_the_export_does_not_have_is_named_with_those_it_has(
    tmp_path: Path,
) -> None:
    export = write_jsonl(tmp_path / "export.jsonl", rows())
    done = await run(
        *common(write_config(tmp_path), export, "http://127.0.0.1:9/p", tmp_path),
        "--shadow", "cand-c",
    )  # fmt: skip
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy replay: nothing to replay in {export}: 54 rows, 3 of routes not in"
        f" {tmp_path / 'proxy.yaml'} (legacy); no rows of shadow 'cand-c' (its shadows: cand-a,"
        " cand-b)\n"
    )


async def test_the_rows_of_one_shadow_only(fake_model: FakeModelFactory, tmp_path: Path) -> None:
    model = await fake_model(candidate_script())
    export = write_jsonl(tmp_path / "export.jsonl", rows())
    args = common(write_config(tmp_path), export, model.url, tmp_path)
    done = await run(*args, "--shadow", "cand-b", "--route", "iris")
    assert done.code == 0, done.err
    assert sorted(index_of(r) for r in model.received) == list(range(10))
    assert done.out.splitlines()[1] == (
        "skipped: 3 rows of routes not in the config (legacy 3); 41 rows of other routes or"
        " shadows than asked for"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read {export}: No such file or directory"),
        ('{"request_id": "r1"}\nnot json\n', "{export}: line 1: no column 'route' (is it a capture"
         " export?)"),
        ("\n\n[1, 2]\n", "{export}: line 3: not a JSON object"),
        ("{row}\n{\n", "{export}: line 2: not JSON (Expecting property name enclosed in double"
         " quotes, at column 2); an export is JSON lines or Parquet"),
        ("{bad_status}\n", "{export}: line 1: column 'production_status' is not a int64: '200'"),
        ("{bad_headers}\n", "{export}: line 1: request_headers is not a JSON object of strings"),
    ],
)  # fmt: skip
async def test_an_export_that_cannot_be_read_is_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    export = tmp_path / "export.jsonl"
    if content is not None:
        for name, value in (
            ("{row}", row(1)),
            ("{bad_status}", row(1, production_status="200")),
            ("{bad_headers}", row(1, request_headers='["x"]')),
        ):
            content = content.replace(name, json.dumps(value))
        export.write_text(content)
    target = f"http://127.0.0.1:{free_port()}/p"
    done = await run(*common(write_config(tmp_path), export, target, tmp_path))
    assert (done.code, done.out) == (1, "")
    assert done.err == f"shadow-proxy replay: {message.format(export=export)}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--route", "nope"], "--route: no route 'nope' in {config} (its routes: iris)"),
        (["--concurrency", "0"], "argument --concurrency: must be a whole number of at least 1"
         " (got '0')"),
        (["--rate", "0"], "argument --rate: must be a number of requests a second above 0"
         " (got '0')"),
        (["--timeout=-1s"], "argument --timeout: must not be negative (got '-1s')"),
        (["--timeout", "0s"], "argument --timeout: must be above 0 (got '0s')"),
        (["--name", "a b"], "argument --name: a name is letters, digits, '_', '.' or '-', at"
         " most 64 (got 'a b')"),
        (["--json", "/nonexistent/r.json"], "--json: no directory '/nonexistent' to write"
         " '/nonexistent/r.json' in"),
    ],
)  # fmt: skip
async def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    config = write_config(tmp_path)
    export = write_jsonl(tmp_path / "export.jsonl", rows())
    done = await run(
        "--config", str(config), "--from", str(export), "--target", "http://127.0.0.1:9/p", *args
    )
    assert (done.code, done.out) == (2, "")
    assert done.err.splitlines()[-1] == (
        f"shadow-proxy replay: error: {message.format(config=config)}"
    )


async def test_a_target_that_is_not_a_url_is_a_usage_error(tmp_path: Path) -> None:
    export = write_jsonl(tmp_path / "export.jsonl", rows())
    done = await run("--config", str(write_config(tmp_path)), "--from", str(export),
                     "--target", "candidate:8080/predict")  # fmt: skip
    assert done.code == 2
    assert done.err.splitlines()[-1] == (
        "shadow-proxy replay: error: argument --target: expected the candidate's full http:// or"
        " https:// URL, e.g. http://candidate:8080/v1/models/iris:predict (got"
        " 'candidate:8080/predict')"
    )


# -- progress on a terminal ---------------------------------------------------------------------


def run_on_a_terminal(*args: str) -> tuple[int, str]:
    """`python -m proxy replay ARGS` with its stderr on a pseudo-terminal."""
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "proxy", "replay", *args],
        stdout=subprocess.DEVNULL,
        stderr=secondary,
    ) as proc:
        os.close(secondary)
        err = read_terminal(primary)
        code = proc.wait(timeout=30)
    return code, err.decode()


async def test_on_a_terminal_progress_is_a_bar_redrawn_in_place(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    model = await fake_model(candidate_script())
    export = write_jsonl(tmp_path / "export.jsonl", rows())
    args = common(write_config(tmp_path), export, model.url, tmp_path)
    code, err = await asyncio.to_thread(run_on_a_terminal, *args)
    assert code == 0, err
    assert err.startswith("\r[")
    assert "\n" not in err.rstrip("\r\n")  # one line, redrawn
    last = err.rstrip("\r\n").rsplit("\r", 1)[-1]
    assert re.fullmatch(r"\[#{30}\] 40/40 \(100%\), \d+\.\d requests/s, ETA 0s\x1b\[K", last), repr(
        last
    )


# -- the same report as the live proxy's --------------------------------------------------------


@pytest.mark.parametrize("kind", ["classification", "regression", "probabilities"])
async def test_the_report_is_the_one_the_live_proxy_gives(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path, kind: str
) -> None:
    """The same traffic through the proxy, with the candidate as its shadow and the labels
    posted, and replayed from an export of it: every figure of the report but latencies and
    label delays is the same."""

    def prod(request: Received) -> Answer:
        i = index_of(request)
        return Answer(body=orjson.dumps({"predictions": [production(kind, i)]}))

    production_model = await fake_model(prod)
    model = await fake_model(candidate_script(kind))
    config = write_config(tmp_path, kind)
    text = config.read_text().replace("http://127.0.0.1:9", production_model.url)
    text += f'    shadows: [{{name: replay, url: "{model.url}"}}]\n'
    live = await proxy(text, tmp_path / "live.yaml")
    for i in range(N):
        body = {"instances": [[i]]}
        status, _, _ = await live.post(ROUTE, body, headers={"X-Request-ID": f"r{i}"})
        assert status == 200
    await live.settled()
    labels = [{"request_id": f"r{i}", "label": truth(kind, i)} for i in range(LABELLED)]
    status, _, _ = await live.post("/labels", labels, headers={"Authorization": "Bearer s3cret"})
    assert status == 200
    async with live.session.get(live.url + "/report") as resp:
        expected = await resp.json()

    export = write_jsonl(tmp_path / "export.jsonl", [row(i, kind) for i in range(N)])
    done = await run(*common(config, export, f"{model.url}{ROUTE}", tmp_path))
    assert done.code == 0, done.err
    got = report_of(tmp_path)
    assert len(model.received) == 2 * N  # once from the proxy, once from the replay
    header = done.out.splitlines()[3].split()
    assert header[5] == ("MAE" if kind == "regression" else "accuracy")  # by the route's kind

    def figures(report: Any) -> Any:
        (route,) = report["routes"]
        (shadow,) = route["shadows"]
        for gone in ("latency", "latency_counts", "guardrails", "history"):
            shadow.pop(gone)
        for gone in ("production_latency", "production_latency_counts", "latency_buckets"):
            route.pop(gone)
        for gone in ("label_delay_p50", "label_delay_p95"):
            route["diagnostics"].pop(gone)
        return route

    replayed = figures(got)
    assert replayed == figures(expected)
    assert replayed["shadows"][0]["disagreement"]["disagreed"] == len(DISAGREE)
    assert replayed["shadows"][0]["quality"]["requests"] == LABELLED

"""The capture (issue 15): which exchanges are kept, redaction proven on the bytes written, the
bounds held under many disagreeing requests, a restart keeping what was captured, and the
read-only drill-down endpoints GET /disagreements and GET /exchanges/{request_id}."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson

from proxy.analysis.reload import reload_config
from proxy.capture.database import CaptureDatabase
from proxy.capture.schema import COLUMNS
from tests.conftest import (
    Answer,
    FakeModelFactory,
    ProxyFactory,
    Received,
    RunningProxy,
    free_port,
)
from tests.test_durability import front_listening

ROUTE = "/v1/models/m:predict"


def _v1(predictions: list[Any]) -> Answer:
    return Answer(body=orjson.dumps({"predictions": predictions}))


def _echo(request: Received) -> Answer:
    """Production: the instances back, as classes."""
    return _v1(request.json()["instances"])


def _odd_flipped(request: Received) -> Answer:
    """A shadow that disagrees on the odd instances."""
    return _v1([v + 1 if v % 2 else v for v in request.json()["instances"]])


def _config(prod: str, shadow: str, tmp_path: Path, capture: str) -> str:
    return f"""
store: {{backend: sqlite, path: "{tmp_path / "predictions.db"}"}}
capture:
  path: "{tmp_path / "capture.db"}"
{capture}
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    record: 100%
    production: {{name: prod, url: "{prod}{ROUTE}"}}
    shadows:
      - {{name: cand, url: "{shadow}{ROUTE}"}}
"""


async def _get(p: RunningProxy, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with p.session.get(p.url + path, headers=headers) as resp:
        return resp.status, orjson.loads(await resp.read())


async def _send(p: RunningProxy, values: list[int], request_id: str) -> None:
    status, _, _ = await p.post(ROUTE, {"instances": values}, headers={"X-Request-ID": request_id})
    assert status == 200


async def test_disagreements_are_kept_agreements_sampled_and_labels_joined(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    p = await proxy(_config(prod.url, shadow.url, tmp_path, "  agreements: 0%"))
    for i in range(10):
        await _send(p, [2 * i, 2 * i + 1] if i % 2 else [2 * i], f"r{i}")
    await p.settled()
    assert p.state.capture is not None
    await p.state.capture.flush()

    status, page = await _get(p, "/disagreements?route=" + ROUTE + "&shadow=cand")
    assert status == 200
    # Requests r1, r3, ... hold an odd instance: those disagree; newest first.
    assert [e["request_id"] for e in page["exchanges"]] == ["r9", "r7", "r5", "r3", "r1"]
    first = page["exchanges"][0]
    assert first["production_predictions"] == [18, 19]
    assert first["shadow_predictions"] == [18, 20]
    assert first["differing"] == [1]
    assert (first["instances"], first["disagreed"], first["result"]) == (2, 1, "disagree")
    assert first["label"] is None
    assert page["next"] is None
    assert p.value("shadowproxy_capture_total", result="kept") == 5
    assert p.value("shadowproxy_capture_total", result="sampled_out") == 5

    # Paged: two at a time.
    status, one = await _get(p, "/disagreements?limit=2")
    status, two = await _get(p, f"/disagreements?limit=2&after={one['next']}")
    assert [e["request_id"] for e in one["exchanges"] + two["exchanges"]] == [
        "r9", "r7", "r5", "r3",
    ]  # fmt: skip

    # A label joined later is shown beside the captured exchange.
    async with p.session.post(p.url + "/labels", json={"request_id": "r3", "label": [6, 8]}) as r:
        assert r.status == 200
    await p.state.capture.flush()
    status, whole = await _get(p, "/exchanges/r3")
    assert status == 200
    [row] = whole["exchanges"]
    assert row["label"] == [6, 8]
    assert row["request_body"] == '{"instances":[6,7]}'
    assert row["production_body"] == '{"predictions":[6,7]}'
    assert row["shadow_body"] == '{"predictions":[6,8]}'
    assert row["production_status"] == row["shadow_status"] == 200
    assert row["production_ms"] > 0
    assert row["shadow_ms"] > 0
    assert row["path"] == ROUTE
    assert row["request_headers"]["x-request-id"] == "r3"

    status, missing = await _get(p, "/exchanges/never")
    assert (status, missing) == (404, {"error": "no exchange captured for request_id 'never'"})
    status, bad = await _get(p, "/disagreements?limit=0")
    assert (status, bad) == (400, {"error": "limit must be from 1 to 200 (got 0)"})
    status, bad = await _get(p, "/disagreements?after=x")
    assert (status, bad) == (400, {"error": "limit and after must be whole numbers"})
    # Past SQLite's integers: was a 500.
    status, bad = await _get(p, "/disagreements?after=" + "9" * 30)
    assert (status, bad) == (
        400, {"error": f"after must be a `next` this endpoint gave (got {'9' * 30})"},
    )  # fmt: skip
    status, bad = await _get(p, "/disagreements?limit=" + "9" * 100)
    assert (status, bad) == (400, {"error": f"limit must be from 1 to 200 (got {'9' * 40})"})
    status, bad = await _get(p, "/exchanges/")
    assert (status, bad) == (404, {"error": "no such endpoint: GET /exchanges/"})


SECRETS = ("s3cret-bearer", "cookie-s3cret", "api-k3y", "123-45-6789", "hunter2", "tok-99")


async def test_redacted_secrets_never_reach_the_disk_nor_the_api(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """Headers (Authorization and Cookie always, X-Api-Key by config), a JSON field of the
    request and of both answers, and a pattern in free text: the database's files read raw,
    every endpoint's answer and both exports hold none of them."""

    def leaky(token_field: str) -> Any:
        def answer(request: Received) -> Answer:
            doc = {"predictions": [1], "debug": {token_field: "tok-99"}}
            return Answer(body=orjson.dumps(doc))

        return answer

    prod, shadow = await fake_model(leaky("token")), await fake_model(leaky("token"))
    p = await proxy(
        _config(
            prod.url,
            shadow.url,
            tmp_path,
            "  agreements: 100%\n"
            "  redact:\n"
            "    headers: [X-Api-Key]\n"
            "    fields: [customer.password, '**.token']\n"
            "    patterns: ['\\d{3}-\\d{2}-\\d{4}']\n",
        )
    )
    body = {
        "instances": [1],
        "customer": {"password": "hunter2", "note": "ssn 123-45-6789"},
    }
    status, _, _ = await p.post(
        ROUTE,
        body,
        headers={
            "X-Request-ID": "secret-1",
            "Authorization": "Bearer s3cret-bearer",
            "Cookie": "session=cookie-s3cret",
            "X-Api-Key": "api-k3y",
        },
    )
    assert status == 200
    await p.settled()
    assert p.state.capture is not None
    await p.state.capture.flush()
    status, whole = await _get(p, "/exchanges/secret-1")
    assert status == 200
    [row] = whole["exchanges"]
    assert row["request_headers"]["authorization"] == "<redacted>"
    assert row["request_headers"]["cookie"] == "<redacted>"
    assert row["request_headers"]["x-api-key"] == "<redacted>"
    assert orjson.loads(row["request_body"]) == {
        "instances": [1],
        "customer": {"password": "<redacted>", "note": "ssn <redacted>"},
    }
    assert orjson.loads(row["production_body"])["debug"] == {"token": "<redacted>"}
    assert orjson.loads(row["shadow_body"])["debug"] == {"token": "<redacted>"}
    answers = [orjson.dumps(whole)]
    for path in ("/disagreements", "/report", "/report.html"):
        async with p.session.get(p.url + path) as resp:
            answers.append(await resp.read())
    db = str(tmp_path / "capture.db")
    for form in ("jsonl", "parquet"):
        out = tmp_path / f"export.{form}"
        code, _, err = await _export("--db", db, "--out", str(out))
        assert code == 0, err
        answers.append(await asyncio.to_thread(out.read_bytes))
    # Parquet compresses: its values, decoded, are searched too.
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{tmp_path / 'export.parquet'}')").fetchall()
    assert len(rows) == 1
    answers.append(repr(rows).encode())
    await p.stop()  # the database closed: every byte is in its files
    files = await asyncio.to_thread(lambda: sorted(tmp_path.glob("capture.db*")))
    raw = b"".join([await asyncio.to_thread(f.read_bytes) for f in files])
    assert b"secret-1" in raw  # the capture is there ...
    for secret in SECRETS:  # ... without a secret
        assert secret.encode() not in raw, secret
        assert all(secret.encode() not in answer for answer in answers), secret


async def test_the_bounds_hold_under_many_disagreeing_requests(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """Every request disagrees: at most max_per_second a second are kept (the rest counted),
    and a sweep keeps the database under max_disk, the oldest removed first, counted."""
    big = "x" * 20_000

    def wide(request: Received) -> Answer:
        return Answer(body=orjson.dumps({"predictions": [1], "pad": big}))

    prod, shadow = await fake_model(wide), await fake_model(_odd_flipped)
    p = await proxy(
        _config(
            prod.url,
            shadow.url,
            tmp_path,
            "  max_per_second: 1000000\n  max_disk: 1MiB\n  max_body: 20KiB",
        )
    )
    requests = 200
    await asyncio.gather(*(_send(p, [1], f"r{i}") for i in range(requests)))
    await p.settled()
    capture = p.state.capture
    assert capture is not None
    await capture.flush()
    kept = p.value("shadowproxy_capture_total", result="kept")
    assert kept + p.value("shadowproxy_capture_total", result="queue_full") == requests
    capture.sweep()
    db = CaptureDatabase(tmp_path / "capture.db", max_disk=1 << 20, max_age=86400)
    try:
        assert db.bytes_in_use() <= 1 << 20
        left = db.count()
    finally:
        db.close()
    assert p.value("shadowproxy_capture_removed_total", reason="over_disk") == kept - left
    assert left < kept
    # The oldest went first: what is left is the newest of what was kept.
    status, page = await _get(p, "/disagreements?limit=200")
    assert status == 200
    seqs = [e["seq"] for e in page["exchanges"]]
    assert len(seqs) == left
    assert seqs == sorted(seqs, reverse=True)
    # max_age: a sweep a week on removes the rest.
    capture.sweep(now=10**10)
    assert p.value("shadowproxy_capture_removed_total", reason="aged") == left


async def test_the_rate_cap_counts_what_it_does_not_keep(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    p = await proxy(_config(prod.url, shadow.url, tmp_path, "  max_per_second: 3"))
    capture = p.state.capture
    assert capture is not None
    now = [1000.0]
    capture.clock = lambda: now[0]
    await asyncio.gather(*(_send(p, [1], f"r{i}") for i in range(50)))
    await p.settled()
    await capture.flush()
    # Within one instant: a burst of 3, the rest counted.
    assert p.value("shadowproxy_capture_total", result="kept") == 3
    assert p.value("shadowproxy_capture_total", result="rate_limited") == 47
    now[0] += 1.0  # a second later: 3 more
    await asyncio.gather(*(_send(p, [1], f"s{i}") for i in range(5)))
    await p.settled()
    await capture.flush()
    assert p.value("shadowproxy_capture_total", result="kept") == 6
    assert p.value("shadowproxy_capture_total", result="rate_limited") == 49


async def test_a_restart_keeps_the_capture(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    config = _config(prod.url, shadow.url, tmp_path, "")
    p = await proxy(config)
    await _send(p, [3], "before")
    await p.settled()
    await p.stop()
    again = await proxy(config)
    status, whole = await _get(again, "/exchanges/before")
    assert status == 200
    assert whole["exchanges"][0]["shadow_predictions"] == [4]
    # Which classes flip to which is kept too, and counted on from there.
    assert again.state.capture is not None
    flips = again.state.capture.drilldown(ROUTE, "cand", "classification")["flips"]
    assert flips == [{"production": "3", "shadow": "4", "instances": 1}]
    await _send(again, [3, 5], "after")
    await again.settled()
    flips = again.state.capture.drilldown(ROUTE, "cand", "classification")["flips"]
    assert sorted((f["production"], f["shadow"], f["instances"]) for f in flips) == [
        ("3", "4", 2), ("5", "6", 1),
    ]  # fmt: skip
    await again.stop()
    third = await proxy(config)
    assert third.state.capture is not None
    flips = third.state.capture.drilldown(ROUTE, "cand", "classification")["flips"]
    assert sorted((f["production"], f["shadow"], f["instances"]) for f in flips) == [
        ("3", "4", 2), ("5", "6", 1),
    ]  # fmt: skip


async def test_one_request_id_sent_many_times_answers_its_newest_rows(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    p = await proxy(_config(prod.url, shadow.url, tmp_path, "  max_per_second: 1000"))
    for i in range(103):
        await _send(p, [2 * i + 1], "same")
    await p.settled()
    assert p.state.capture is not None
    await p.state.capture.flush()
    assert p.value("shadowproxy_capture_total", result="kept") == 103
    status, whole = await _get(p, "/exchanges/same")
    assert (status, whole["truncated"], len(whole["exchanges"])) == (200, True, 100)
    # The newest 100, oldest first: the requests of instances 7, 9, ... 205.
    assert [e["request_body"] for e in whole["exchanges"]] == [
        f'{{"instances":[{2 * i + 1}]}}' for i in range(3, 103)
    ]
    await _send(p, [1], "once")
    await p.settled()
    status, one = await _get(p, "/exchanges/once")
    assert (status, one["truncated"], len(one["exchanges"])) == (200, False, 1)


async def test_a_body_too_deep_to_redact_is_not_written_and_the_writer_goes_on(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    # 700 levels overflowed the redaction's recursion and killed the writer task, silently.
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    fields = "  redact: {fields: ['**.password']}"
    p = await proxy(_config(prod.url, shadow.url, tmp_path, fields))
    assert p.state.capture is not None
    for depth, request_id in ((700, "deep"), (300, "deeper-than-orjson-writes"), (0, "flat")):
        nested = "[" * depth + "]" * depth
        body = f'{{"instances": [1], "x": {nested or 0}, "password": "hunter2"}}'.encode()
        status, _, _ = await p.post(ROUTE, body, headers={"X-Request-ID": request_id})
        assert status == 200
    await p.settled()
    await p.state.capture.flush()
    assert p.value("shadowproxy_capture_total", result="kept") == 3
    bodies = {}
    for request_id in ("deep", "deeper-than-orjson-writes", "flat"):
        status, whole = await _get(p, f"/exchanges/{request_id}")
        assert status == 200
        bodies[request_id] = whole["exchanges"][0]["request_body"]
    too_deep = "<redacted: nested too deeply for redact_fields to be applied>"
    assert bodies == {
        "deep": too_deep,
        "deeper-than-orjson-writes": too_deep,
        "flat": '{"instances":[1],"x":0,"password":"<redacted>"}',
    }


async def test_a_capture_that_cannot_be_opened_counts_and_is_tried_again(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path, caplog: Any
) -> None:
    """A capture.path under a regular file: production and the report go on, every exchange
    offered is counted failed, the endpoints say why (503), and the next sweep opens it once
    the path can be made."""
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    path = blocker / "capture.db"
    config = _config(prod.url, shadow.url, tmp_path, "").replace(
        f'path: "{tmp_path / "capture.db"}"', f'path: "{path}"'
    )
    p = await proxy(config)
    [error] = [r for r in caplog.records if r.getMessage().startswith("capture unavailable")]
    assert error.levelname == "ERROR"
    assert error.getMessage() == "capture unavailable at start; retried every 10 s"
    assert error.path == str(path)  # type: ignore[attr-defined]
    for i in range(3):
        await _send(p, [1], f"r{i}")
    await p.settled()
    assert p.state.capture is not None
    await p.state.capture.flush()
    assert p.value("shadowproxy_capture_total", result="failed") == 3
    assert p.value("shadowproxy_capture_total", result="kept") == 0
    status, body = await _get(p, "/disagreements")
    assert status == 503
    assert body["error"].startswith(f"the capture database is unavailable: {path}: ")
    assert (await _get(p, "/exchanges/r0"))[0] == 503
    async with p.session.get(p.url + "/report.html") as resp:
        assert resp.status == 200

    blocker.unlink()  # the path can be made now: the next sweep opens it
    p.state.capture.sweep()
    await _send(p, [1], "after")
    await p.settled()
    await p.state.capture.flush()
    assert p.value("shadowproxy_capture_total", result="kept") == 1
    status, page = await _get(p, "/disagreements")
    assert (status, [e["request_id"] for e in page["exchanges"]]) == (200, ["after"])


async def test_a_reload_applies_new_redaction_and_refuses_moving_the_file(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    path = tmp_path / "proxy.yaml"
    plain = _config(prod.url, shadow.url, tmp_path, "")
    p = await proxy(plain, path)
    assert p.state.capture is not None

    async def send(request_id: str) -> None:
        body = {"instances": [1], "ssn": "123-45-6789"}
        status, _, _ = await p.post(ROUTE, body, headers={"X-Request-ID": request_id})
        assert status == 200

    await send("before")
    await p.settled()
    await p.state.capture.flush()
    redacting = _config(prod.url, shadow.url, tmp_path, "  redact: {fields: [ssn]}")
    await asyncio.to_thread(path.write_text, redacting)
    assert await reload_config(p.state)
    await send("after")
    await p.settled()
    await p.state.capture.flush()
    bodies = {}
    for request_id in ("before", "after"):
        status, whole = await _get(p, f"/exchanges/{request_id}")
        assert status == 200
        bodies[request_id] = orjson.loads(whole["exchanges"][0]["request_body"])
    assert bodies == {
        "before": {"instances": [1], "ssn": "123-45-6789"},
        "after": {"instances": [1], "ssn": "<redacted>"},
    }

    # The file itself needs a restart: refused as a whole, naming the key and value.
    moved = redacting.replace(str(tmp_path / "capture.db"), str(tmp_path / "elsewhere.db"))
    await asyncio.to_thread(path.write_text, moved)
    refused = await reload_config(p.state)
    assert refused.errors == (
        f"{path}: capture.path: moving the capture's file needs a restart"
        f" (got '{tmp_path / 'elsewhere.db'}')",
    )
    off = redacting.replace("capture:\n", "capture:\n  enabled: false\n")
    await asyncio.to_thread(path.write_text, off)
    refused = await reload_config(p.state)
    assert refused.errors == (
        f"{path}: capture: turning the capture off needs a restart (got 'off')",
    )
    assert p.value("shadowproxy_config_reloads_total", result="failure") == 2


async def test_the_endpoints_take_the_capture_token_or_the_labels_one(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    p = await proxy(
        _config(prod.url, shadow.url, tmp_path, "  token: cap-t0k") + "labels: {token: lab-t0k}\n"
    )
    assert (await _get(p, "/disagreements"))[0] == 401
    assert (await _get(p, "/disagreements", "lab-t0k"))[0] == 403
    assert (await _get(p, "/exchanges/x", "wrong"))[0] == 403
    assert (await _get(p, "/disagreements", "cap-t0k"))[0] == 200


async def test_with_the_capture_off_the_endpoints_say_how_to_turn_it_on(
    fake_model: FakeModelFactory, proxy: ProxyFactory
) -> None:
    prod = await fake_model(_echo)
    p = await proxy(
        f"routes: [{{match: {ROUTE}, protocol: kserve-v1, production: "
        f"{{name: prod, url: '{prod.url}{ROUTE}'}}}}]"
    )
    message = "the capture is off: add a capture: section to the config (see the README)"
    assert await _get(p, "/disagreements") == (404, {"error": message})
    assert await _get(p, "/exchanges/r1") == (404, {"error": message})


async def _export(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "capture", "export", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_the_export_reads_back_in_duckdb_with_the_right_counts(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """20 requests, 10 disagreeing, 8 labelled: exported while the proxy runs, as Parquet and
    as JSON lines, and read back by DuckDB as a data scientist would."""
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    p = await proxy(_config(prod.url, shadow.url, tmp_path, "  agreements: 100%"))
    for i in range(20):
        await _send(p, [i], f"r{i}")
    await p.settled()
    for i in range(8):
        async with p.session.post(p.url + "/labels", json={"request_id": f"r{i}", "label": i}):
            pass
    assert p.state.capture is not None
    await p.state.capture.flush()
    db = str(tmp_path / "capture.db")
    parquet = tmp_path / "capture.parquet"

    code, out, err = await _export("--db", db, "--out", str(parquet))
    assert (code, out, err) == (0, b"", f"wrote 20 exchanges to {parquet} (parquet)\n".encode())
    [found] = duckdb.sql(
        "SELECT count(*), sum(disagreed), count(label), count(DISTINCT request_id),"
        " sum(CASE WHEN result = 'disagree' THEN 1 ELSE 0 END)"
        f" FROM read_parquet('{parquet}')"
    ).fetchall()
    assert found == (20, 10, 8, 20, 10)
    # Predictions and labels are JSON text: DuckDB's json functions read them.
    [row] = duckdb.sql(
        "SELECT json_extract(shadow_predictions, '$[0]')::INT, label::INT, differing"
        f" FROM read_parquet('{parquet}') WHERE request_id = 'r3'"
    ).fetchall()
    assert row == (4, 3, "[0]")
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{parquet}')").fetchall()
    types = {name: kind for name, kind, *_ in described}
    assert list(types) == [name for name, _, _ in COLUMNS]
    assert (types["captured_at"], types["instances"], types["request_truncated"]) == (
        "DOUBLE", "BIGINT", "BOOLEAN",
    )  # fmt: skip

    code, out, err = await _export("--db", db, "--shadow", "cand", "--since", "1h")
    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == 20
    assert list(lines[0]) == [name for name, _, _ in COLUMNS]
    assert [r["label"] for r in lines[:3]] == ["0", "1", "2"]
    code, out, _ = await _export("--db", db, "--route", "elsewhere")
    assert (code, out) == (0, b"")

    code, out, err = await _export("--db", str(tmp_path / "none.db"))
    assert (code, out) == (1, b"")
    assert (
        err
        == f"shadow-proxy capture export: no capture database at {tmp_path / 'none.db'}\n".encode()
    )


async def test_a_baseline_shadow_is_the_noise_floor_of_the_others(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """production again as role: baseline (A/A: it never disagrees), and a candidate that
    disagrees on half: the candidate's disagreement is above the noise floor, and said so."""
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    p = await proxy(
        _config(prod.url, shadow.url, tmp_path, "")
        + f"      - {{name: again, url: '{prod.url}{ROUTE}', role: baseline}}\n"
    )
    for i in range(40):
        await _send(p, [i], f"r{i}")
    await p.settled()
    status, report = await _get(p, "/report")
    assert status == 200
    shadows = {s["shadow"]: s for s in report["routes"][0]["shadows"]}
    assert (shadows["again"]["role"], shadows["cand"]["role"]) == ("baseline", "candidate")
    floor = shadows["cand"]["noise_floor"]
    assert floor["baseline"] == "again"
    assert floor["disagreement"] == 0.0
    assert floor["within"] is False
    assert (
        "its disagreement (50.0%) is above the noise floor (baseline again: 0.0%"
        in (shadows["cand"]["reason"])
    )
    assert shadows["again"]["noise_floor"] is None
    assert p.value("shadowproxy_shadow_info", route=ROUTE, shadow="again", role="baseline") == 1


async def test_sigterm_writes_what_the_capture_holds_and_a_restart_serves_it(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    """`shadow-proxy run`, 30 disagreeing requests, SIGTERM at once: the shadows' answers are
    drained, what the capture queued is written, and the proxy started again on the same file
    serves every one of them."""
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    port = free_port()
    cfg = tmp_path / "proxy.yaml"
    config = _config(prod.url, shadow.url, tmp_path, "  max_per_second: 100000")
    await asyncio.to_thread(cfg.write_text, f"listen: 127.0.0.1:{port}\n" + config)
    base = f"http://127.0.0.1:{port}"

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run", "--config", str(cfg),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await front_listening(proc)
        return proc

    proc = await start()
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(30):
                async with session.post(
                    base + ROUTE, json={"instances": [1]}, headers={"X-Request-ID": f"r{i}"}
                ) as resp:
                    assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    await shadow.wait_for(30)
    again = await start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/disagreements?limit=100") as resp,
        ):
            page = await resp.json()
    finally:
        again.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(again.wait(), 30) == 0
    assert sorted(e["request_id"] for e in page["exchanges"]) == sorted(f"r{i}" for i in range(30))


async def test_disagreement_is_broken_down_by_the_requests_segment(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    """routes[].segment names a field of the request: each shadow's disagreement by its value,
    bounded to the first 20 values (then "other"), "none" for requests without it; in the
    metrics, the report and the page. No capture needed."""
    prod, shadow = await fake_model(_echo), await fake_model(_odd_flipped)
    p = await proxy(
        f"""
routes:
  - match: {ROUTE}
    protocol: kserve-v1
    segment: parameters.country
    production: {{name: prod, url: "{prod.url}{ROUTE}"}}
    shadows:
      - {{name: cand, url: "{shadow.url}{ROUTE}"}}
"""
    )

    async def send(values: list[int], country: Any) -> None:
        body: dict[str, Any] = {"instances": values}
        if country is not None:
            body["parameters"] = {"country": country}
        assert (await p.post(ROUTE, body))[0] == 200

    for _ in range(3):
        await send([1, 2], "FR")  # one of two instances disagrees
        await send([2, 4], "DE")  # none does
    await send([3], None)
    for i in range(25):  # 25 more countries: the first 18 keep their names, 7 are "other"
        await send([1], f"C{i:02d}")
    await p.settled()
    segments = {"FR": (6, 3), "DE": (6, 0), "none": (1, 1), "other": (7, 7)}
    for segment, (compared, disagreed) in segments.items():
        labels = {"route": ROUTE, "shadow": "cand", "segment": segment}
        assert p.value("shadowproxy_segment_compared_instances_total", **labels) == compared
        assert p.value("shadowproxy_segment_disagreed_instances_total", **labels) == disagreed
    status, report = await _get(p, "/report")
    assert status == 200
    rows = report["routes"][0]["shadows"][0]["segments"]
    assert len(rows) == 22  # FR, DE, 18 named countries, other, none
    assert [(r["segment"], r["compared"], r["disagreed"]) for r in rows[:3]] == [
        ("other", 7, 7), ("DE", 6, 0), ("FR", 6, 3),
    ]  # fmt: skip
    assert rows[2]["value"] == 0.5
    async with p.session.get(p.url + "/report.html") as resp:
        page = await resp.text()
    assert "Disagreement by segment" in page
    assert "<code>FR</code>" in page

"""Bad arguments, variables and files given to the command line: a real `python -m proxy`
process each time, and the one line it must say on stderr (no traceback) with its exit status,
1 for a file that cannot be read or used, 2 for a usage error."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from proxy.capture.database import CaptureDatabase
from tests.conftest import FakeModelFactory, free_port
from tests.test_replay import candidate_script, index_of, row, write_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Done:
    code: int
    out: str
    err: str


async def run(*args: str, env: dict[str, str] | None = None) -> Done:
    """`python -m proxy ARGS` to its end: exit status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    assert "Traceback" not in err.decode()
    return Done(proc.returncode, out.decode(), err.decode())


def run_sync(*args: str) -> Done:
    """`run`, for a test that has no server to serve meanwhile."""
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert "Traceback" not in proc.stderr
    return Done(proc.returncode, proc.stdout, proc.stderr)


# -- $SHADOW_PROXY_WORKERS -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["x", "0", ""])
async def test_a_bad_workers_variable_is_a_usage_error_of_run_alone(value: str) -> None:
    env = {**os.environ, "SHADOW_PROXY_WORKERS": value}
    done = await run("run", "--config", "configs/demo.yaml", env=env)
    assert (done.code, done.out) == (2, "")
    assert done.err.splitlines()[-1] == (
        f"shadow-proxy run: error: $SHADOW_PROXY_WORKERS must be a whole number of at least 1"
        f" (got {value!r})"
    )
    # The other subcommands do not read it.
    checked = await run("check-config", "configs/demo.yaml", env=env)
    assert (checked.code, checked.err) == (0, "")


# -- capture export: a file that is not a capture -------------------------------------------------


def _journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    return mode


def test_exporting_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    done = run_sync("capture", "export", "--db", str(text))
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy capture export: cannot export {text}: file is not a database\n"
    )
    assert text.read_text() == "root:x:0:0:root:/root:/bin/bash\n"


def test_exporting_a_database_that_is_not_a_capture_leaves_it_as_it_was(
    tmp_path: Path,
) -> None:
    store = tmp_path / "predictions.db"
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE records (request_id TEXT, body TEXT)")
    conn.close()
    before = store.read_bytes()
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (store, empty):
        done = run_sync("capture", "export", "--db", str(path))
        assert (done.code, done.out) == (1, "")
        assert done.err == (
            f"shadow-proxy capture export: cannot export {path}: not a capture database"
            " (no exchanges table)\n"
        )
    # Not switched to WAL, given no tables: read, never written.
    assert store.read_bytes() == before
    assert _journal_mode(store) == "delete"
    assert empty.stat().st_size == 0
    for path in (store, empty):
        assert not Path(f"{path}-wal").exists()
        assert not Path(f"{path}-journal").exists()


def test_a_capture_the_proxy_closed_is_still_exported_read_only(tmp_path: Path) -> None:
    path = tmp_path / "capture.db"
    capture = CaptureDatabase(path, max_disk=1 << 30, max_age=86400)
    stored = {k: v for k, v in row(1).items() if k not in ("label", "labelled_at")}
    capture.write([{**stored, "bytes": 100}])
    capture.close()
    done = run_sync("capture", "export", "--db", str(path))
    assert done.code == 0, done.err
    assert done.err == "wrote 1 exchanges to stdout (jsonl)\n"
    assert orjson.loads(done.out)["request_id"] == "r1"


# -- replay: a row that cannot be sent again ------------------------------------------------------


def _bad_rows() -> list[tuple[str, str]]:
    """(the export's second line, what the replay says of it)."""
    good = json.dumps(row(2))
    big = json.dumps(row(2, captured_at=0.5))  # the number replaced by what JSON dumps cannot
    return [
        (json.dumps(row(2, method="GE T")), "column 'method' is not an HTTP method: 'GE T'"),
        (
            json.dumps(row(2, request_headers=json.dumps({"x-a": "b\r\nx-b: c"}))),
            "request_headers: the value of 'x-a' holds a control character (CR, LF, ...)",
        ),
        (
            json.dumps(row(2, request_headers=json.dumps({"x a": "b"}))),
            "request_headers: 'x a' is not an HTTP header name",
        ),
        (
            json.dumps(row(2, path="/p?a b")),
            "column 'path' is not a request path (it holds a space or a control character):"
            " '/p?a b'",
        ),
        (big.replace('"captured_at": 0.5', '"captured_at": 1e400'),
         "column 'captured_at' is not a finite float64: inf"),
        (big.replace('"captured_at": 0.5', '"captured_at": 1' + "0" * 400),
         f"column 'captured_at' is not a finite float64: 1{'0' * 59}"),
        (big.replace('"captured_at": 0.5', '"captured_at": NaN'),
         "column 'captured_at' is not a finite float64: nan"),
        (
            json.dumps(row(2, production_predictions="[" * 5000 + "]" * 5000)),
            "column 'production_predictions' is JSON nested deeper than 100 levels",
        ),
        (
            json.dumps(row(2, label="[" * 200 + "1" + "]" * 200)),
            "column 'label' is JSON nested deeper than 100 levels",
        ),
        (
            json.dumps(row(2, request_body="\ud800")),
            "column 'request_body' is not text: surrogates not allowed at character 0",
        ),
        (json.dumps(row(2, production_status=2**63)),
         f"column 'production_status' is not a int64: {2**63}"),
        (good[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}",
         "JSON nested too deeply to read"),
    ]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), _bad_rows())
async def test_a_row_that_cannot_be_sent_again_is_one_line_naming_it(
    tmp_path: Path, line: str, message: str
) -> None:
    export = tmp_path / "export.jsonl"
    export.write_text(f"{json.dumps(row(1))}\n{line}\n")
    target = f"http://127.0.0.1:{free_port()}/p"
    done = await run(
        "replay", "--config", str(write_config(tmp_path)), "--from", str(export),
        "--target", target,
    )  # fmt: skip
    assert (done.code, done.out) == (1, "")
    assert done.err == f"shadow-proxy replay: {export}: line 2: {message}\n"


async def test_a_path_urlsplit_cannot_read_is_replayed_with_its_query(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    """'//[x' is no URL, but a path as a client may send it: its query is what follows '?'."""
    model = await fake_model(candidate_script())
    export = write_jsonl(tmp_path / "export.jsonl", [row(1, path="//[x?a=1"), row(2, path="//[y")])
    done = await run(
        "replay", "--config", str(write_config(tmp_path)), "--from", str(export),
        "--target", f"{model.url}/predict",
    )  # fmt: skip
    assert done.code == 0, done.err
    sent = sorted((index_of(r), r.path_qs) for r in model.received)
    assert sent == [(1, "/predict?a=1"), (2, "/predict")]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_a_report_that_cannot_be_written_names_the_file(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    model = await fake_model(candidate_script())
    export = write_jsonl(tmp_path / "export.jsonl", [row(1)])
    for option in ("--report", "--json"):
        done = await run(
            "replay", "--config", str(write_config(tmp_path)), "--from", str(export),
            "--target", f"{model.url}/predict", option, "/dev/full",
        )  # fmt: skip
        assert done.code == 1
        assert done.err.splitlines()[-1] == (
            "shadow-proxy replay: cannot write /dev/full: No space left on device"
        )


# -- report --url: an answer of another shape -----------------------------------------------------


async def _serve(aiohttp_server: AiohttpServer, body: bytes) -> str:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/report", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


SHADOW: Any = {"shadow": "s", "verdict": "better"}


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"routes": [1]}, "routes[0] is not an object"),
        ({"routes": [{"route": "r", "shadows": [{"shadow": "s"}]}]},
         "routes[0].shadows[0] has no 'verdict'"),
        ({"routes": [{"route": "r", "shadows": [{**SHADOW, "verdict": ["x"]}]}]},
         "routes[0].shadows[0].verdict is not a string"),
        ({"routes": [{"route": "r", "shadows": {}}]}, "routes[0].shadows is not a list"),
        ({"routes": [{"route": "r", "shadows": [SHADOW]}]}, "no 'kind'"),
    ],
)  # fmt: skip
async def test_a_report_of_another_shape_is_one_line(
    aiohttp_server: AiohttpServer, doc: Any, problem: str
) -> None:
    url = await _serve(aiohttp_server, json.dumps(doc).encode())
    for extra in ([], ["--fail-on", "worse"]):
        done = await run("report", "--url", url, *extra)
        assert (done.code, done.out) == (1, "")
        assert done.err == (
            f"shadow-proxy report: cannot read the report from {url}/report: not a shadow-proxy"
            f" report ({problem})\n"
        )


async def test_a_report_nested_too_deeply_is_one_line(aiohttp_server: AiohttpServer) -> None:
    url = await _serve(aiohttp_server, b'{"routes": [' + b"[" * 5000 + b"]" * 5000 + b"]}")
    done = await run("report", "--url", url)
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"shadow-proxy report: cannot read the report from {url}/report: its JSON is nested too"
        " deeply to read\n"
    )


# -- check-config: the bracket left open ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "at", "bracket"),
    [
        ("routes: [\n", "1:9", "'[' opened here is never closed with ']'"),
        ("routes: {\n", "1:9", "'{' opened here is never closed with '}'"),
        ("a: '[x'  # [\nroutes: [{a: 1}, {\n", "2:18", "'{' opened here is never closed with '}'"),
    ],
)
async def test_an_unclosed_bracket_is_named_where_it_opens(
    tmp_path: Path, text: str, at: str, bracket: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    done = await run("check-config", str(config))
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"invalid config {config}:\n  {config}:{at}: invalid YAML: while parsing a flow node,"
        f" expected the node content, but found '<stream end>'; hint: the {bracket}\n"
    )

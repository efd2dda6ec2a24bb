"""`shadow-proxy capture export`: the capture database, the labels joined, written as JSON lines
or Parquet (pyarrow) for pandas, DuckDB or Spark, in the columns of proxy/capture/schema.py.
Reads the database while the proxy runs (SQLite's WAL lets a reader in beside the writer)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from proxy.capture.database import CaptureDatabase
from proxy.capture.schema import COLUMNS, ExportRow
from proxy.config import ConfigError, load_config, parse_duration
from proxy.console import quiet_stdout

BATCH = 10_000  # rows per Parquet row group


class ExportError(Exception):
    """What stops an export, in one line."""


def open_database(config: str | None, database: str | None) -> CaptureDatabase:
    """The capture database named by --db, or by the config's capture.path."""
    if database is None:
        if config is None:
            raise ExportError("name the capture: --config PROXY.yaml, or --db CAPTURE.db")
        try:
            loaded = load_config(config)
        except ConfigError as exc:
            raise ExportError(f"invalid config {config}: {exc.errors[0]}") from None
        database = loaded.capture.path
        if not loaded.capture.enabled:
            raise ExportError(f"{config} has no capture: section, so nothing was captured")
    path = Path(database)
    if not path.is_file():
        raise ExportError(f"no capture database at {path}")
    # Read-only: a file that is not a capture (the prediction store's, a typo) is named and
    # left as it was, never given the capture's tables or switched to WAL.
    try:
        return CaptureDatabase.read_only(path)
    except sqlite3.Error as exc:
        raise ExportError(f"cannot export {path}: {exc}") from None


def write_jsonl(rows: Iterable[ExportRow], out: IO[bytes]) -> int:
    count = 0
    for row in rows:
        out.write(orjson.dumps(row) + b"\n")
        count += 1
    return count


def write_parquet(rows: Iterable[ExportRow], path: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError(
            "Parquet needs pyarrow: pip install 'shadow-proxy[export]' (or --format jsonl)"
        ) from None
    types = {
        "string": pa.string(),
        "bool": pa.bool_(),
        "int64": pa.int64(),
        "float64": pa.float64(),
    }
    schema = pa.schema(
        [pa.field(name, types[kind], nullable=nullable) for name, kind, nullable in COLUMNS]
    )
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batches(rows, BATCH):
            columns = {name: [_get(row, name) for row in batch] for name, _, _ in COLUMNS}
            writer.write_table(pa.table(columns, schema=schema))
            count += len(batch)
        if count == 0:
            writer.write_table(pa.table({name: [] for name, _, _ in COLUMNS}, schema=schema))
    return count


def _get(row: ExportRow, name: str) -> Any:
    return row[name]  # type: ignore[literal-required]  # every name is one of ExportRow's


def _batches(rows: Iterable[ExportRow], size: int) -> Iterator[list[ExportRow]]:
    batch: list[ExportRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def add_capture_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `capture export` to the subcommands `commands` (argparse's add_subparsers())."""
    capture: argparse.ArgumentParser = commands.add_parser(
        "capture", help="the captured exchanges: export them for pandas, DuckDB or Spark"
    )
    actions = capture.add_subparsers(dest="capture_command", required=True)
    export = actions.add_parser(
        "export",
        help="write the capture, labels joined, as JSON lines or Parquet",
        description="Write every captured exchange (one row per request and shadow, the label"
        " joined) as JSON lines or Parquet. The columns are the README's; predictions and"
        " labels are JSON text.",
    )
    source = export.add_mutually_exclusive_group()
    source.add_argument("--config", help="the proxy's config: its capture.path is read")
    source.add_argument("--db", help="the capture database itself")
    export.add_argument(
        "--format", choices=("parquet", "jsonl"), help="default: by --out's extension, else jsonl"
    )
    export.add_argument("--out", help="the file to write (default: JSON lines on stdout)")
    export.add_argument("--since", help="only the last DURATION, e.g. 1h or 7d")
    export.add_argument("--route", help="only this route (its name)")
    export.add_argument("--shadow", help="only this shadow")
    return capture


def run_capture(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `shadow-proxy capture export`; its exit status."""
    since = None
    if args.since is not None:
        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as exc:
            parser.error(f"--since: {exc} (got {args.since!r})")
    form = args.format or ("parquet" if (args.out or "").endswith(".parquet") else "jsonl")
    if form == "parquet" and args.out is None:
        parser.error("--format parquet needs --out FILE")
    try:
        db = open_database(args.config, args.db)
        try:
            rows = db.export(since=since, route=args.route, shadow=args.shadow)
            if form == "parquet":
                count = write_parquet(rows, Path(args.out))
            elif args.out is None:
                count = write_jsonl(rows, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                with open(args.out, "wb") as out:
                    count = write_jsonl(rows, out)
        except sqlite3.Error as exc:  # a capture of other columns, a file damaged while read
            raise ExportError(f"cannot export {db.path}: {exc}") from None
        finally:
            db.close()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        quiet_stdout()
        return 0
    except (ExportError, OSError) as exc:
        print(f"shadow-proxy capture export: {exc}", file=sys.stderr)
        return 1
    where = args.out or "stdout"
    print(f"wrote {count} exchanges to {where} ({form})", file=sys.stderr)
    return 0

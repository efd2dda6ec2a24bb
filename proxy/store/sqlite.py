"""The embedded prediction store: SQLite in WAL mode on local disk, so a restart loses no
recorded prediction. Owns the database file and its schema; no joining and no metrics here (see
base.py for the semantics).

Writes run on the event loop itself, as short multi-row transactions (a batch of a few hundred
requests costs a few milliseconds). A thread was tried and cost far more: Python's sqlite3 gives
up the GIL at every statement step, and the two threads then fight over it. What can block for
long stays off the loop: a background thread with a connection of its own runs the WAL
checkpoints (which fsync) and the full count; lock waits are retried asynchronously rather than
with SQLite's sleeping busy handler; sweeps delete in small chunks. Every read-modify-write runs
inside `BEGIN IMMEDIATE`, so several proxy processes may share one file and still label each
record exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from proxy.store.base import (
    LabelResult,
    LabelStatus,
    PredictionStore,
    Record,
    Removed,
    ShadowPredictions,
    ShadowsPut,
    StoreUnavailable,
)

_T = TypeVar("_T")

_CHECKPOINT_INTERVAL = 1.0  # seconds between background WAL checkpoints
WAL_LIMIT = 64 * 1024 * 1024
"""The write-ahead log's bound in bytes: past half of it, a checkpoint also truncates the file
(a passive one never shrinks it; a soak grew it to 4.86 GB), and journal_size_limit keeps it
from staying larger after a checkpoint resets it."""
_SWEEP_CHUNK = 1000  # rows deleted per transaction by remove_old

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    request_id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    created REAL NOT NULL,
    production TEXT NOT NULL,
    predictions BLOB NOT NULL,
    label BLOB,
    labelled_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_created ON records (created, request_id);
CREATE TABLE IF NOT EXISTS shadows (
    request_id TEXT NOT NULL,
    shadow TEXT NOT NULL,
    predictions BLOB NOT NULL,
    PRIMARY KEY (request_id, shadow)
) WITHOUT ROWID;
"""
# Shadows have a table of their own: adding one is an insert, never a read-modify-write of
# the record, which keeps the writer's work (and its hold on the GIL) small per request.

_SELECT_RECORD = (
    "SELECT route, created, production, predictions, label, labelled_at"
    " FROM records WHERE request_id = ?"
)
_SELECT_SHADOWS = "SELECT shadow, predictions FROM shadows WHERE request_id = ?"
# Python's sqlite3 releases the GIL around every step of a statement, and while the event loop
# keeps its core busy each re-acquire can wait a whole switch interval (5 ms). So a batch is
# written with a few multi-row statements, not a statement per row.
_ROWS_PER_STATEMENT = 1000  # 7 parameters a record: well within SQLite's 32766


def _multi_row(head: str, columns: int, rows: int) -> str:
    return head + ",".join([f"({','.join('?' * columns)})"] * rows)


class SqliteStore(PredictionStore):
    """Predictions in a local SQLite file, shared safely by the processes of one host.

    >>> store = SqliteStore("/var/lib/shadow-proxy/predictions.db", ttl=7 * 86400)
    >>> await store.start()
    >>> await store.put_records([record])
    >>> [result] = await store.set_labels([("req-1", 1)], now=time.time())
    >>> await store.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ttl: float,
        tombstone_ttl: float = 86400.0,
        max_records: int = 1_000_000,
        timeout: float = 5.0,
        wal_limit: int = WAL_LIMIT,
        max_disk: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.wal_limit = wal_limit
        self.max_disk = max_disk  # bytes of the database in use; the oldest beyond are removed
        self.ttl = ttl
        self.tombstone_ttl = tombstone_ttl
        self.max_records = max_records
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None  # checkpoints and counts
        self._conn: sqlite3.Connection | None = None  # the event loop's: every write
        self._background: sqlite3.Connection | None = None  # the executor thread's own
        self._checkpoints: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"prediction store {self.path} is closed")
        if self._conn is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            self._conn = self._connect()
            await asyncio.get_running_loop().run_in_executor(executor, self._open_background)
        except (sqlite3.Error, OSError) as exc:
            self._close_connections()
            # Leave no thread behind: a caller whose start() failed need not call close().
            executor.shutdown(wait=True)
            raise StoreUnavailable(f"prediction store {self.path}: {exc}") from exc
        self._executor = executor
        self._checkpoints = asyncio.create_task(self._checkpoint_loop(), name="sqlite-checkpoints")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
        executor, self._executor = self._executor, None
        if executor is not None:
            try:
                # A last checkpoint: the database file holds everything, the WAL is empty.
                await asyncio.get_running_loop().run_in_executor(executor, self._checkpoint)
            except (sqlite3.Error, OSError):
                pass
            finally:
                await asyncio.get_running_loop().run_in_executor(executor, self._close_background)
                executor.shutdown(wait=True)
        self._close_connections()

    # -- operations --------------------------------------------------------------------------

    async def put_records(self, records: Sequence[Record]) -> None:
        rows = [
            (
                (
                    r.request_id,
                    r.route,
                    float(r.created),
                    r.production,
                    orjson.dumps(r.predictions),
                    None if r.label is None else orjson.dumps(r.label),
                    r.labelled_at,
                ),
                [(r.request_id, name, orjson.dumps(p)) for name, p in r.shadows.items()],
            )
            for r in records
        ]
        if rows:
            await self._run(self._put_records, rows)

    async def put_shadows(self, items: Sequence[ShadowPredictions]) -> ShadowsPut:
        if not items:
            return ShadowsPut()
        encoded = [orjson.dumps(item.predictions) for item in items]
        return await self._run(self._put_shadows, list(items), encoded)

    async def set_labels(self, items: Sequence[tuple[str, Any]], now: float) -> list[LabelResult]:
        encoded = []
        for request_id, label in items:
            if label is None:
                raise ValueError(f"label for {request_id!r} is None")
            encoded.append((request_id, orjson.dumps(label)))
        if not encoded:
            return []
        return await self._run(self._set_labels, encoded, now)

    async def get_records(self, request_ids: Sequence[str]) -> dict[str, Record]:
        if not request_ids:
            return {}
        return await self._run(self._get_records, list(request_ids))

    async def remove_old(self, now: float) -> Removed:
        cutoff = now - self.ttl - self.tombstone_ttl
        expired = evicted = over_disk = 0
        while True:  # small transactions, so the loop (and other processes) get their turn
            removed = await self._run(self._remove_chunk, cutoff)
            if not (removed.expired or removed.evicted or removed.over_disk):
                return Removed(expired=expired, evicted=evicted, over_disk=over_disk)
            expired += removed.expired
            evicted += removed.evicted
            over_disk += removed.over_disk
            await asyncio.sleep(0)

    async def count(self) -> int:
        if self._closed or self._executor is None:
            raise StoreUnavailable(f"prediction store {self.path} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._count)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"prediction store {self.path}: {exc}") from exc

    # -- plumbing --------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run fn on the loop; while another process holds the write lock, retry (without
        blocking the loop) until the store's timeout."""
        if self._closed or self._conn is None:
            raise StoreUnavailable(f"prediction store {self.path} is not open")
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", None) in (
                    sqlite3.SQLITE_BUSY,
                    sqlite3.SQLITE_LOCKED,
                )
                if not busy or time.monotonic() + pause > deadline:
                    raise StoreUnavailable(f"prediction store {self.path}: {exc}") from exc
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"prediction store {self.path}: {exc}") from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # No busy handler: it would sleep on the event loop. _run retries instead.
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints fsync: the background thread runs them, never a commit on the loop.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute(f"PRAGMA journal_size_limit = {int(self.wal_limit)}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_background(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute(f"PRAGMA journal_size_limit = {int(self.wal_limit)}")
        self._background = conn

    def _close_background(self) -> None:
        conn, self._background = self._background, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _close_connections(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):  # close() must not raise
                conn.close()

    def _checkpoint(self) -> None:
        """A passive checkpoint, or, once the WAL has passed half its bound, a truncating one
        (which waits up to `timeout` for readers to move on)."""
        if self._background is None:
            return
        big = self.file_sizes()["wal"] > self.wal_limit // 2
        mode = "TRUNCATE" if big else "PASSIVE"
        self._background.execute(f"PRAGMA wal_checkpoint({mode})")

    def file_sizes(self) -> dict[str, int]:
        """The database's files on disk, in bytes: the database and its write-ahead log."""
        sizes = {}
        for name, path in (("database", self.path), ("wal", Path(f"{self.path}-wal"))):
            try:
                sizes[name] = path.stat().st_size
            except OSError:
                sizes[name] = 0
        return sizes

    async def checkpoint(self) -> None:
        """One checkpoint, on the background thread (what the loop runs every second)."""
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._checkpoint)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(_CHECKPOINT_INTERVAL)
            if self._executor is None:
                return
            # A failed checkpoint is not an error: the next one catches up; writes go on.
            with contextlib.suppress(sqlite3.Error, OSError):
                await self.checkpoint()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError("the database is not open (start() failed?)")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Runs fn in one IMMEDIATE transaction: it holds the write lock from its first read,
        so another process cannot change a row between our read and our write."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()  # a no-op if COMMIT ended the transaction before failing
            raise
        return result

    def _put_records(
        self, rows: list[tuple[tuple[Any, ...], list[tuple[str, str, bytes]]]]
    ) -> None:
        def put(conn: sqlite3.Connection) -> None:
            # Shadows first, and only for records not stored yet: the first record wins, and
            # so do its shadows.
            shadows = [s for _, record_shadows in rows for s in record_shadows]
            _insert_shadows(conn, shadows, record_exists=False)
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = [record for record, _ in rows[start : start + _ROWS_PER_STATEMENT]]
                conn.execute(
                    _multi_row("INSERT OR IGNORE INTO records VALUES ", 7, len(chunk)),
                    [value for record in chunk for value in record],
                )

        self._write(put)

    def _put_shadows(self, items: list[ShadowPredictions], encoded: list[bytes]) -> ShadowsPut:
        def put(conn: sqlite3.Connection) -> ShadowsPut:
            ids = {item.request_id for item in items}
            known = _existing(conn, ids)
            orphans = [item for item in items if item.request_id not in known]
            # Only labelled records need to know which shadows are new: few rows, if any.
            labelled = _labelled(conn, ids)
            present = _shadows_of(conn, labelled)
            rows = [(i.request_id, i.shadow, p) for i, p in zip(items, encoded, strict=True)]
            _insert_shadows(conn, rows, record_exists=True)
            joined = []
            added: dict[str, list[str]] = {}
            for item in items:
                key = (item.request_id, item.shadow)
                if item.request_id not in labelled or key in present:
                    continue
                present.add(key)
                added.setdefault(item.request_id, []).append(item.shadow)
                joined.append(item)
            if not joined:
                return ShadowsPut(orphans=orphans)
            # Each item with its record as it stands after its own insert, not later ones.
            records = {rid: _read(conn, rid) for rid in added}
            result = []
            for item in joined:
                record = records[item.request_id]
                assert record is not None
                later = added[item.request_id]
                hidden = set(later[later.index(item.shadow) + 1 :])
                shadows = {k: v for k, v in record.shadows.items() if k not in hidden}
                result.append((item, _replace_shadows(record, shadows)))
            return ShadowsPut(result, orphans)

        return self._write(put)

    def _set_labels(self, items: list[tuple[str, bytes]], now: float) -> list[LabelResult]:
        def label(conn: sqlite3.Connection) -> list[LabelResult]:
            seen: dict[str, tuple[float, bool] | None] = {}  # request_id -> (created, labelled)
            updates: list[tuple[bytes, float, str]] = []
            results: list[LabelResult] = []
            for request_id, encoded in items:
                if request_id not in seen:
                    row = conn.execute(
                        "SELECT created, label IS NOT NULL FROM records WHERE request_id = ?",
                        (request_id,),
                    ).fetchone()
                    seen[request_id] = None if row is None else (row[0], bool(row[1]))
                state = seen[request_id]
                if state is None:
                    results.append(LabelResult(LabelStatus.UNKNOWN_ID))
                elif now > state[0] + self.ttl:
                    results.append(LabelResult(LabelStatus.EXPIRED))
                elif state[1]:
                    results.append(LabelResult(LabelStatus.DUPLICATE))
                else:
                    seen[request_id] = (state[0], True)
                    updates.append((encoded, now, request_id))
                    results.append(LabelResult(LabelStatus.JOINED))
            conn.executemany(
                "UPDATE records SET label = ?, labelled_at = ? WHERE request_id = ?", updates
            )
            return [
                LabelResult(r.status, _read(conn, rid)) if r.status is LabelStatus.JOINED else r
                for (rid, _), r in zip(items, results, strict=True)
            ]

        return self._write(label)

    def _get_records(self, request_ids: list[str]) -> dict[str, Record]:
        conn = self._db()
        found = {rid: _read(conn, rid) for rid in dict.fromkeys(request_ids)}
        return {rid: record for rid, record in found.items() if record is not None}

    def _remove_chunk(self, cutoff: float) -> Removed:
        """Remove up to _SWEEP_CHUNK expired records, else up to _SWEEP_CHUNK surplus ones."""

        def remove(conn: sqlite3.Connection) -> Removed:
            expired = _delete(
                conn,
                "SELECT request_id FROM records WHERE created < ? ORDER BY created LIMIT ?",
                (cutoff, _SWEEP_CHUNK),
            )
            if expired:
                return Removed(expired=expired)
            (stored,) = conn.execute("SELECT count(*) FROM records").fetchone()
            surplus = min(stored - self.max_records, _SWEEP_CHUNK)
            oldest = "SELECT request_id FROM records ORDER BY created, request_id LIMIT ?"
            if surplus > 0:
                return Removed(evicted=_delete(conn, oldest, (surplus,)))
            if self.max_disk is not None and stored and _used_bytes(conn) > self.max_disk:
                # Freed pages are reused, not returned: the file stops growing at the bound.
                chunk = max(1, min(_SWEEP_CHUNK, stored // 20))
                return Removed(over_disk=_delete(conn, oldest, (chunk,)))
            return Removed()

        return self._write(remove)

    def _count(self) -> int:
        """On the background thread: a full count can take a while on a big table."""
        if self._background is None:
            raise sqlite3.OperationalError("the database is not open")
        (stored,) = self._background.execute("SELECT count(*) FROM records").fetchone()
        return int(stored)


def _used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (free pages, reused by later writes, excluded)."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)


def _delete(conn: sqlite3.Connection, select_ids: str, params: tuple[Any, ...]) -> int:
    """Delete the records (and their shadows) whose ids select_ids returns; their number."""
    conn.execute(f"DELETE FROM shadows WHERE request_id IN ({select_ids})", params)
    return conn.execute(f"DELETE FROM records WHERE request_id IN ({select_ids})", params).rowcount


def _insert_shadows(
    conn: sqlite3.Connection, rows: list[tuple[str, str, bytes]], *, record_exists: bool
) -> None:
    """Insert (request_id, shadow, predictions) rows, each only if its record exists (or,
    with record_exists=False, only if it does not exist yet), in multi-row statements."""
    condition = "EXISTS" if record_exists else "NOT EXISTS"
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        conn.execute(
            "INSERT OR IGNORE INTO shadows (request_id, shadow, predictions)"
            f" SELECT v.column1, v.column2, v.column3 FROM ({_multi_row('VALUES ', 3, len(chunk))})"
            f" AS v WHERE {condition} (SELECT 1 FROM records r WHERE r.request_id = v.column1)",
            [value for row in chunk for value in row],
        )


def _read(conn: sqlite3.Connection, request_id: str) -> Record | None:
    """The record with every shadow stored for it, or None."""
    row = conn.execute(_SELECT_RECORD, (request_id,)).fetchone()
    if row is None:
        return None
    route, created, production, predictions, label, labelled_at = row
    return Record(
        request_id=request_id,
        route=route,
        created=created,
        production=production,
        predictions=orjson.loads(predictions),
        shadows={
            name: orjson.loads(value)
            for name, value in conn.execute(_SELECT_SHADOWS, (request_id,))
        },
        label=None if label is None else orjson.loads(label),
        labelled_at=labelled_at,
    )


def _existing(conn: sqlite3.Connection, request_ids: set[str]) -> set[str]:
    """Those of request_ids that have a record."""
    return _records_among(conn, request_ids, "")


def _labelled(conn: sqlite3.Connection, request_ids: set[str]) -> set[str]:
    """Those of request_ids whose record has a label."""
    return _records_among(conn, request_ids, "label IS NOT NULL AND ")


def _records_among(conn: sqlite3.Connection, request_ids: set[str], condition: str) -> set[str]:
    """Those of request_ids with a record meeting `condition` (SQL ending in AND, or "")."""
    ids = list(request_ids)
    found: set[str] = set()
    for start in range(0, len(ids), 500):  # within SQLite's limit on bound parameters
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        query = f"SELECT request_id FROM records WHERE {condition}request_id IN ({marks})"
        found.update(rid for (rid,) in conn.execute(query, chunk))
    return found


def _shadows_of(conn: sqlite3.Connection, request_ids: set[str]) -> set[tuple[str, str]]:
    """The (request_id, shadow) pairs stored for these request ids."""
    ids = list(request_ids)
    found: set[tuple[str, str]] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            conn.execute(
                f"SELECT request_id, shadow FROM shadows WHERE request_id IN ({marks})", chunk
            )
        )
    return found


def _replace_shadows(record: Record, shadows: dict[str, Any]) -> Record:
    return Record(
        record.request_id,
        record.route,
        record.created,
        record.production,
        record.predictions,
        shadows,
        record.label,
        record.labelled_at,
    )

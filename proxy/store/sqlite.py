"""The embedded prediction store: SQLite in WAL mode on local disk, written through one thread,
so a restart loses no recorded prediction. Owns the database file and its schema; no joining
and no metrics here (see base.py for the semantics).

Every call runs on one dedicated thread that alone owns the connection, so the event loop never
blocks on disk. Every read-modify-write runs inside `BEGIN IMMEDIATE`, so several proxy
processes may share one file and still label each record exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
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
    StoreUnavailable,
)

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    request_id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    created REAL NOT NULL,
    production TEXT NOT NULL,
    predictions BLOB NOT NULL,
    shadows BLOB NOT NULL,
    label BLOB,
    labelled_at REAL
);
CREATE INDEX IF NOT EXISTS records_created ON records (created, request_id);
"""

_SELECT = (
    "SELECT request_id, route, created, production, predictions, shadows, label, labelled_at"
    " FROM records WHERE request_id = ?"
)

# One row as read: every column, with shadows decoded so that several items of one batch for
# the same request id see each other's changes before the batch is written back.
_Row = tuple[str, str, float, str, bytes, dict[str, Any], bytes | None, float | None]


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
    ) -> None:
        self.path = Path(path)
        self.ttl = ttl
        self.tombstone_ttl = tombstone_ttl
        self.max_records = max_records
        self.timeout = timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the executor's thread
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"prediction store {self.path} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await self._run(self._open)
        except StoreUnavailable:
            # Leave no thread behind: a caller whose start() failed need not call close().
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True)
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # Queued behind any pending work, so that work finishes first.
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_connection)
        finally:
            executor.shutdown(wait=True)  # the thread has nothing left to do: a quick join

    # -- operations --------------------------------------------------------------------------

    async def put_records(self, records: Sequence[Record]) -> None:
        rows = [
            (
                r.request_id,
                r.route,
                float(r.created),
                r.production,
                orjson.dumps(r.predictions),
                orjson.dumps(r.shadows),
                None if r.label is None else orjson.dumps(r.label),
                r.labelled_at,
            )
            for r in records
        ]
        if rows:
            await self._run(self._put_records, rows)

    async def put_shadows(
        self, items: Sequence[ShadowPredictions]
    ) -> list[tuple[ShadowPredictions, Record]]:
        if not items:
            return []
        return await self._run(self._put_shadows, list(items))

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
        return await self._run(self._remove_old, now - self.ttl - self.tombstone_ttl)

    async def count(self) -> int:
        return await self._run(self._count)

    # -- the store thread --------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed or self._executor is None:
            raise StoreUnavailable(f"prediction store {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"prediction store {self.path}: {exc}") from exc

    def _open(self) -> None:
        if self._conn is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):  # close() must not raise
                conn.close()

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

    def _put_records(self, rows: list[tuple[Any, ...]]) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

        self._write(put)

    def _put_shadows(
        self, items: list[ShadowPredictions]
    ) -> list[tuple[ShadowPredictions, Record]]:
        def put(conn: sqlite3.Connection) -> list[tuple[ShadowPredictions, Record]]:
            rows: dict[str, _Row | None] = {}
            changed: dict[str, dict[str, Any]] = {}
            joined: list[tuple[ShadowPredictions, Record]] = []
            for item in items:
                row = _read(conn, rows, item.request_id)
                if row is None or item.shadow in row[5]:
                    continue
                # Through JSON and back, so that the record returned is what a later read gives.
                row[5][item.shadow] = orjson.loads(orjson.dumps(item.predictions))
                changed[item.request_id] = row[5]
                if row[6] is not None:
                    joined.append((item, _record(row)))
            conn.executemany(
                "UPDATE records SET shadows = ? WHERE request_id = ?",
                [(orjson.dumps(shadows), rid) for rid, shadows in changed.items()],
            )
            return joined

        return self._write(put)

    def _set_labels(self, items: list[tuple[str, bytes]], now: float) -> list[LabelResult]:
        def label(conn: sqlite3.Connection) -> list[LabelResult]:
            rows: dict[str, _Row | None] = {}
            updates: list[tuple[bytes, float, str]] = []
            results: list[LabelResult] = []
            for request_id, encoded in items:
                row = _read(conn, rows, request_id)
                if row is None:
                    results.append(LabelResult(LabelStatus.UNKNOWN_ID))
                elif now > row[2] + self.ttl:
                    results.append(LabelResult(LabelStatus.EXPIRED))
                elif row[6] is not None:
                    results.append(LabelResult(LabelStatus.DUPLICATE))
                else:
                    row = rows[request_id] = (*row[:6], encoded, now)
                    updates.append((encoded, now, request_id))
                    results.append(LabelResult(LabelStatus.JOINED, _record(row)))
            conn.executemany(
                "UPDATE records SET label = ?, labelled_at = ? WHERE request_id = ?", updates
            )
            return results

        return self._write(label)

    def _remove_old(self, cutoff: float) -> Removed:
        def remove(conn: sqlite3.Connection) -> Removed:
            expired = conn.execute("DELETE FROM records WHERE created < ?", (cutoff,)).rowcount
            (stored,) = conn.execute("SELECT count(*) FROM records").fetchone()
            evicted = 0
            if stored > self.max_records:
                evicted = conn.execute(
                    "DELETE FROM records WHERE request_id IN"
                    " (SELECT request_id FROM records ORDER BY created, request_id LIMIT ?)",
                    (stored - self.max_records,),
                ).rowcount
            return Removed(expired=expired, evicted=evicted)

        return self._write(remove)

    def _get_records(self, request_ids: list[str]) -> dict[str, Record]:
        conn = self._db()
        rows: dict[str, _Row | None] = {}
        found = {rid: _read(conn, rows, rid) for rid in dict.fromkeys(request_ids)}
        return {rid: _record(row) for rid, row in found.items() if row is not None}

    def _count(self) -> int:
        (stored,) = self._db().execute("SELECT count(*) FROM records").fetchone()
        return int(stored)


def _record(row: _Row) -> Record:
    request_id, route, created, production, predictions, shadows, label, labelled_at = row
    return Record(
        request_id=request_id,
        route=route,
        created=created,
        production=production,
        predictions=orjson.loads(predictions),
        shadows=dict(shadows),
        label=None if label is None else orjson.loads(label),
        labelled_at=labelled_at,
    )


def _read(conn: sqlite3.Connection, rows: dict[str, _Row | None], request_id: str) -> _Row | None:
    """The row of request_id as this transaction last left it: read once, then from rows."""
    if request_id not in rows:
        found = conn.execute(_SELECT, (request_id,)).fetchone()
        if found is None:
            rows[request_id] = None
        else:
            rid, route, created, production, predictions, shadows, label, labelled_at = found
            shadow_dict: dict[str, Any] = orjson.loads(shadows)
            rows[request_id] = (
                rid,
                route,
                created,
                production,
                predictions,
                shadow_dict,
                label,
                labelled_at,
            )
    return rows[request_id]

"""The capture database: captured exchanges in a local SQLite file in WAL mode (a restart keeps
them), bounded by age and by the pages in use, the oldest removed first; the labels posted for
them; and the queries of the drill-down and the export. Owns the file and its schema; no
metrics, no redaction (rows arrive redacted), no event loop.

Writes are short multi-row transactions, called from the analysis process's loop as the
prediction store's are: the capture is rate-capped, so a batch is a few rows.
"""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from proxy.capture.schema import COLUMNS, ExportRow

WAL_LIMIT: Final = 16 * 1024 * 1024  # a checkpoint truncates the write-ahead log past this
_SWEEP_CHUNK: Final = 500
_DISAGREEING: Final = ("disagree", "status_mismatch")
_STORED: Final = tuple(name for name, _, _ in COLUMNS if name not in ("label", "labelled_at"))
"""The exchange's own columns; the label is joined from the labels table."""

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS exchanges (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(_STORED)},
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS exchanges_pair ON exchanges (route, shadow, seq);
CREATE INDEX IF NOT EXISTS exchanges_request ON exchanges (request_id);
CREATE INDEX IF NOT EXISTS exchanges_captured ON exchanges (captured_at);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    labelled_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flips (
    route TEXT NOT NULL,
    shadow TEXT NOT NULL,
    production TEXT NOT NULL,
    shadow_class TEXT NOT NULL,
    instances INTEGER NOT NULL,
    PRIMARY KEY (route, shadow, production, shadow_class)
) WITHOUT ROWID;
"""
_SELECT: Final = (
    f"SELECT e.seq, {', '.join('e.' + c for c in _STORED)}, l.label, l.labelled_at"
    " FROM exchanges e LEFT JOIN labels l ON l.request_id = e.request_id"
)
_COLUMNS_OF: Final = operator.itemgetter(*_STORED, "bytes")
_INSERT: Final = (
    f"INSERT INTO exchanges ({', '.join(_STORED)}, bytes)"
    f" VALUES ({', '.join('?' * (len(_STORED) + 1))})"
)


@dataclass(frozen=True, slots=True)
class Removed:
    """Exchanges a sweep removed, by reason."""

    aged: int = 0  # older than max_age
    over_disk: int = 0  # the oldest, beyond max_disk


class CaptureDatabase:
    """The capture's SQLite file.

    >>> db = CaptureDatabase("capture.db", max_disk=1 << 30, max_age=7 * 86400)
    >>> db.write([row])          # ExportRow-shaped dicts, label and labelled_at left out
    >>> db.disagreements("iris", "iris-rf", limit=20)
    """

    def __init__(self, path: str | Path, *, max_disk: int, max_age: float) -> None:
        self.path = Path(path)
        self.max_disk = max_disk
        self.max_age = max_age
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        self._conn.execute("PRAGMA busy_timeout=1000")
        self._conn.executescript(_SCHEMA)

    @classmethod
    def read_only(cls, path: str | Path) -> CaptureDatabase:
        """The capture at `path` opened read-only, for the export beside the running proxy:
        nothing is created or changed (a missing file is not made, the journal mode and the
        schema are left as they are). sqlite3.Error naming what is wrong when the file is not an
        SQLite database, or not a capture (no exchanges or labels table)."""
        db = cls.__new__(cls)  # not __init__: that creates the file, its schema and the WAL
        db.path = Path(path)
        db.max_disk, db.max_age = 1 << 62, float("inf")  # never swept: nothing is written
        uri = f"{db.path.resolve().as_uri()}?mode=ro"
        db._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            db._conn.execute("PRAGMA busy_timeout=1000")
            found = db._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = {name for (name,) in found}
            for table in ("exchanges", "labels"):
                if table not in tables:
                    raise sqlite3.DatabaseError(f"not a capture database (no {table} table)")
        except sqlite3.Error:
            db._conn.close()
            raise
        return db

    def close(self) -> None:
        self._conn.close()

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add exchanges (the columns of ExportRow but the label's, and their size in bytes as
        `bytes`), in one transaction."""
        if not rows:
            return
        values = [_COLUMNS_OF(row) for row in rows]
        with self._transaction():
            self._conn.executemany(_INSERT, values)

    def add_flips(self, counts: dict[tuple[str, str, str, str], int]) -> None:
        """Add instances to the class flips of (route, shadow, production's class, the
        shadow's), in one transaction: the report's matrix survives a restart."""
        if not counts:
            return
        with self._transaction():
            self._conn.executemany(
                "INSERT INTO flips (route, shadow, production, shadow_class, instances)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
                " SET instances = instances + excluded.instances",
                [(*key, n) for key, n in counts.items()],
            )

    def flips(self) -> list[tuple[str, str, str, str, int]]:
        """Every (route, shadow, production's class, the shadow's, instances) counted so far."""
        rows = self._conn.execute(
            "SELECT route, shadow, production, shadow_class, instances FROM flips"
        )
        return [(r, s, p, c, int(n)) for r, s, p, c, n in rows]

    def label(self, labels: Sequence[tuple[str, str, float]]) -> int:
        """Keep (request_id, label as JSON text, when) for the requests that were captured;
        returns how many were."""
        if not labels:
            return 0
        kept = 0
        with self._transaction():
            for request_id, label, at in labels:
                cursor = self._conn.execute(
                    "INSERT OR REPLACE INTO labels (request_id, label, labelled_at)"
                    " SELECT ?, ?, ? WHERE EXISTS"
                    " (SELECT 1 FROM exchanges WHERE request_id = ?)",
                    (request_id, label, at, request_id),
                )
                kept += cursor.rowcount
        return kept

    def sweep(self, now: float) -> Removed:
        """Remove what is older than max_age, then the oldest until the pages in use fit
        max_disk, a chunk per transaction; labels left without an exchange go too; the
        write-ahead log is checkpointed (and truncated)."""
        aged = self._delete_while("captured_at < ?", (now - self.max_age,))
        over_disk = 0
        while self.bytes_in_use() > self.max_disk:
            removed = self._delete_oldest()
            if not removed:
                break
            over_disk += removed
        with self._transaction():
            self._conn.execute(
                "DELETE FROM labels WHERE request_id NOT IN (SELECT request_id FROM exchanges)"
            )
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return Removed(aged, over_disk)

    def bytes_in_use(self) -> int:
        """Pages in use (the file's pages less the free ones) times the page size."""
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM exchanges").fetchone()[0])

    def disagreements(
        self,
        route: str | None = None,
        shadow: str | None = None,
        *,
        limit: int = 20,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """Disagreeing exchanges (disagree, status_mismatch), newest first, with their `seq`;
        `before` pages on: only those older than that seq."""
        where = [f"e.result IN ({', '.join('?' * len(_DISAGREEING))})"]
        params: list[Any] = list(_DISAGREEING)
        for column, value in (("route", route), ("shadow", shadow)):
            if value is not None:
                where.append(f"e.{column} = ?")
                params.append(value)
        if before is not None:
            where.append("e.seq < ?")
            params.append(before)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY e.seq DESC LIMIT ?"
        return self._rows(sql, (*params, limit))

    def exchange(self, request_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The captured rows of one request (one per shadow), the newest `limit` of them
        oldest first: clients may send one id many times."""
        sql = (
            f"SELECT * FROM ({_SELECT} WHERE e.request_id = ? ORDER BY e.seq DESC LIMIT ?)"
            " ORDER BY seq"
        )
        return self._rows(sql, (request_id, limit))

    def largest_differences(self, route: str, shadow: str, limit: int) -> list[dict[str, Any]]:
        """A regression pair's captured exchanges with the largest max_difference."""
        sql = (
            f"{_SELECT} WHERE e.route = ? AND e.shadow = ? AND e.max_difference IS NOT NULL"
            " ORDER BY e.max_difference DESC LIMIT ?"
        )
        return self._rows(sql, (route, shadow, limit))

    def export(
        self, *, since: float | None = None, route: str | None = None, shadow: str | None = None
    ) -> Iterator[ExportRow]:
        """Every captured exchange (oldest first) as export rows, the label joined."""
        where, params = ["1"], []
        for condition, value in (
            ("e.captured_at >= ?", since),
            ("e.route = ?", route),
            ("e.shadow = ?", shadow),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        cursor = self._conn.execute(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY e.seq", params)
        names = [d[0] for d in cursor.description][1:]
        for found in cursor:
            row = dict(zip(names, found[1:], strict=True))
            row["request_truncated"] = bool(row["request_truncated"])
            yield row  # type: ignore[misc]  # the columns of ExportRow, by construction

    def _rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cursor = self._conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        rows = []
        for found in cursor:
            row = dict(zip(names, found, strict=True))
            row["request_truncated"] = bool(row["request_truncated"])
            rows.append(row)
        return rows

    def _delete_while(self, condition: str, params: tuple[Any, ...]) -> int:
        removed = 0
        while True:
            with self._transaction():
                cursor = self._conn.execute(
                    f"DELETE FROM exchanges WHERE seq IN (SELECT seq FROM exchanges WHERE"
                    f" {condition} ORDER BY seq LIMIT {_SWEEP_CHUNK})",
                    params,
                )
            removed += cursor.rowcount
            if cursor.rowcount < _SWEEP_CHUNK:
                return removed

    def _delete_oldest(self) -> int:
        with self._transaction():
            cursor = self._conn.execute(
                "DELETE FROM exchanges WHERE seq IN"
                f" (SELECT seq FROM exchanges ORDER BY seq LIMIT {_SWEEP_CHUNK // 5})"
            )
        return cursor.rowcount

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._conn.execute("COMMIT" if kind is None else "ROLLBACK")

"""The prediction-store interface and its value types. Implementations: sqlite.py (embedded,
the default) and redis.py (shared by replicas). No metrics and no joining here.

A record is written when production answers; shadow predictions are added as they arrive; a
label is set once. The store's operations are atomic per request id, across processes too, so
that every (record, model) pair is joined exactly once: either when the label arrives (for the
models present then), or when a shadow's predictions arrive after the label.

Expiry: a record expires `ttl` seconds after it was created. It is still kept for another
`tombstone_ttl` seconds, so that a late label is told `expired` rather than `unknown_id`; then it
is removed and counted as expired. Beyond `max_records`, the oldest records are removed and
counted as evicted.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class StoreUnavailable(Exception):
    """The store cannot be reached, or did not answer in time."""


class StoreTimedOut(StoreUnavailable):
    """The write was sent, and no answer came in time: it may have been applied, or may be
    later (a frozen Redis runs the commands it holds once it resumes). Counted apart from the
    writes known to be lost."""


class LabelStatus(enum.Enum):
    JOINED = "joined"
    UNKNOWN_ID = "unknown_id"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Record:
    """What every model predicted for one request, and its label once it has one."""

    request_id: str
    route: str
    created: float  # unix seconds, when production answered
    production: str  # production's target name
    predictions: list[Any]  # production's, one item per instance
    shadows: dict[str, list[Any]] = field(default_factory=dict)  # shadow name -> predictions
    label: Any = None  # as posted; None until labelled
    labelled_at: float | None = None  # unix seconds


@dataclass(frozen=True, slots=True)
class ShadowPredictions:
    """A shadow's predictions for a recorded request."""

    request_id: str
    shadow: str
    predictions: list[Any]


class ShadowsPut(list[tuple[ShadowPredictions, Record]]):
    """What put_shadows did: the late joins, as a list of (item, record) in input order, and
    `orphans`, the items whose record is not in the store (nothing was written for them)."""

    def __init__(
        self,
        joined: Sequence[tuple[ShadowPredictions, Record]] = (),
        orphans: Sequence[ShadowPredictions] = (),
    ) -> None:
        super().__init__(joined)
        self.orphans = list(orphans)


@dataclass(frozen=True, slots=True)
class LabelResult:
    status: LabelStatus
    record: Record | None = None  # JOINED: the record with its new label, and the shadows present


@dataclass(frozen=True, slots=True)
class Removed:
    expired: int = 0
    evicted: int = 0  # beyond max_records
    over_disk: int = 0  # beyond max_disk (the embedded store)


class PredictionStore(abc.ABC):
    """Async, atomic per request id. Every method raises StoreUnavailable, and nothing else,
    when the backend cannot be reached or does not answer within the store's timeout.

    >>> store = SqliteStore(path, ttl=7 * 86400)
    >>> await store.start()
    >>> await store.put_records([record])
    >>> [result] = await store.set_labels([("req-1", 1)], now=time.time())
    >>> await store.close()
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect or open; create the schema. Raises StoreUnavailable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release everything; idempotent; never raises StoreUnavailable."""

    @abc.abstractmethod
    async def put_records(self, records: Sequence[Record]) -> None:
        """Write new records (their label is None). A request id already stored keeps its
        first record: a client that reuses a request id does not erase a prediction."""

    @abc.abstractmethod
    async def put_shadows(self, items: Sequence[ShadowPredictions]) -> ShadowsPut:
        """Add shadows' predictions to their records. Returns, in input order, each item whose
        record already had a label, with that record (including the new predictions): the
        caller joins those shadows now. Items whose record is unknown change nothing and are
        the result's `orphans`; items whose record already has that shadow's predictions
        change nothing and are not returned."""

    @abc.abstractmethod
    async def get_records(self, request_ids: Sequence[str]) -> dict[str, Record]:
        """The stored records (tombstones included) of these request ids; unknown ids are
        absent. Used to check a label against its record before setting it."""

    @abc.abstractmethod
    async def set_labels(self, items: Sequence[tuple[str, Any]], now: float) -> list[LabelResult]:
        """Set each (request_id, label), in order, atomically per request id:
        UNKNOWN_ID when no record (nor tombstone) exists; EXPIRED when now > created + ttl;
        DUPLICATE when the record already has a label; else JOINED, with the updated record.
        A label must not be None (callers validate labels first)."""

    @abc.abstractmethod
    async def remove_old(self, now: float) -> Removed:
        """Remove records older than ttl + tombstone_ttl (expired) and the oldest records beyond
        max_records (evicted), counting each removed record once even when several replicas
        sweep the same store."""

    def file_sizes(self) -> dict[str, int]:
        """The store's files on local disk, in bytes, by name (none for a remote store)."""
        return {}

    @abc.abstractmethod
    async def count(self) -> int:
        """Records currently stored (tombstones included)."""

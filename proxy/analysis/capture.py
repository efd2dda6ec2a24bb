"""The capture, as the analysis process runs it: which compared exchanges are kept (every
disagreement, status mismatch or unreadable answer up to capture.max_per_second per shadow, a
share of the agreements), redacted and written to the capture database by a writer task, labels
added as they arrive, swept by age and size; which classes flip to which; and the read-only
endpoints GET /disagreements and GET /exchanges/{request_id}. Everything dropped is counted.
Nothing here runs on the front, nor waits: `offer` only queues."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.analysis.auth import CHALLENGE, BearerToken
from proxy.analysis.responses import json_response
from proxy.capture.database import CaptureDatabase
from proxy.capture.redaction import Redactor
from proxy.config import CaptureConfig, Config
from proxy.core.comparison import (
    Classified,
    ClassLabels,
    Comparator,
    CompareKind,
    Comparison,
    ShapeMismatch,
)
from proxy.core.extraction import ExtractionError, decoded_answer
from proxy.core.outcomes import ComparisonResult
from proxy.core.sampling import Sampler, bucket
from proxy.front.client import UpstreamResponse
from proxy.logs import Throttled
from proxy.metrics import Metrics
from proxy.report.model import (
    CapturedExchange,
    CapturedInstance,
    ClassFlip,
    DrillDown,
    LargestDifference,
)

log = logging.getLogger(__name__)
throttled = Throttled(log, 60.0)

BATCH = 200  # exchanges written per transaction at most
FLUSH_INTERVAL = 0.05  # seconds a batch gathers
SWEEP_INTERVAL = 10.0
EXCHANGE_ROWS = 100  # GET /exchanges/{request_id} answers at most this many rows, the newest
MAX_FLIPS = 1000  # (production class, shadow class) pairs kept per shadow; the rest: "other"
SHOWN_INSTANCES = 50  # instances of an exchange shown in the report
REPORT_EXCHANGES = 10  # latest disagreeing exchanges per shadow in the report
_AGREEING = frozenset({ComparisonResult.AGREE, ComparisonResult.SAME_ERROR})
_NOT_CAPTURED = frozenset({ComparisonResult.PRODUCTION_FAILED})  # nothing of production's


@dataclass(slots=True)
class _Bucket:
    """A token bucket: `rate` a second, up to `rate` (at least 1) at once."""

    rate: float
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# Built per kept exchange: not frozen (a frozen dataclass sets each field through
# object.__setattr__, several microseconds for these 17).
@dataclass(slots=True)
class _Pending:
    """A kept exchange, before redaction (done by the writer, in batches)."""

    route: str
    path: str
    request_id: str
    shadow: str
    role: str
    kind: CompareKind
    comparator: Comparator
    method: str
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes
    production: UpstreamResponse | None
    production_ms: float | None
    answer: UpstreamResponse | None
    shadow_ms: float | None
    found: Classified
    production_predictions: list[Any] | None
    captured_at: float


class Capture:
    """The capture of one analysis process; None of it exists with the capture off.

    >>> capture = Capture(config.capture, metrics)
    >>> await capture.start()
    >>> capture.offer(...)        # from a shadow dispatcher, after classify
    >>> capture.label("req-1", 1)  # from /labels, once joined
    """

    def __init__(self, config: CaptureConfig, metrics: Metrics) -> None:
        self.config = config
        self._metrics = metrics
        self._redactor = Redactor(
            config.redact_headers, config.redact_fields, config.redact_patterns
        )
        self._agreements = Sampler(config.agreements)
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._queue: collections.deque[_Pending] = collections.deque()
        self._labels: list[tuple[str, str, float]] = []
        self._wake = asyncio.Event()
        self._flips: dict[tuple[str, str], dict[tuple[str, str], int]] = {}
        self._flips_unwritten: dict[tuple[str, str, str, str], int] = {}
        self._class_labels: dict[tuple[str, str], tuple[ClassLabels, ClassLabels]] = {}
        self._db: CaptureDatabase | None = None
        self._unavailable: str | None = None  # why the database could not be opened
        self._tasks: list[asyncio.Task[None]] = []
        self._auth = BearerToken(None)
        self.clock = time.monotonic  # the rate cap's clock (a test may set its own)

    def update(self, config: Config) -> None:
        """A reload: everything applies at once (redaction to every exchange written from now
        on, those already queued included), but the file itself (enabled and path are refused
        before: they need a restart)."""
        new = config.capture
        self._auth = BearerToken(new.token or config.labels.token)
        if new == self.config:
            return
        self.config = new
        self._redactor = Redactor(new.redact_headers, new.redact_fields, new.redact_patterns)
        self._agreements = Sampler(new.agreements)
        self._buckets.clear()  # refilled at the new rate
        if self._db is not None:
            self._db.max_disk, self._db.max_age = new.max_disk, new.max_age

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._open(at_start=True)
        self._tasks = [
            asyncio.create_task(self._writer(), name="capture:writer"),
            asyncio.create_task(self._sweeper(), name="capture:sweeper"),
        ]

    def _open(self, *, at_start: bool = False) -> None:
        """Open the database. One that cannot be opened (a path under a file, no permission, a
        full disk) is logged, its exchanges counted as failed, and tried again every sweep:
        production, and the rest of the analysis, go on without it, as without the store."""
        path = self.config.path
        try:
            self._db = CaptureDatabase(
                path, max_disk=self.config.max_disk, max_age=self.config.max_age
            )
        except (OSError, sqlite3.Error) as exc:
            self._unavailable = f"{path}: {exc}"
            if at_start:
                log.error(
                    "capture unavailable at start; retried every %g s",
                    SWEEP_INTERVAL,
                    extra={"path": str(path), "error": str(exc)},
                )
            return
        if self._unavailable is not None:
            log.info("capture available again", extra={"path": str(path)})
        self._unavailable = None
        self._load_flips()

    def _load_flips(self) -> None:
        """Add the flips the file kept (a restart) to those counted in memory."""
        assert self._db is not None
        try:
            kept = self._db.flips()
        except sqlite3.Error as exc:
            throttled.warning("flips", "capture: class flips not read: %s", exc, extra={})
            return
        for route, shadow, production, shadow_class, instances in kept:
            flips = self._flips.setdefault((route, shadow), {})
            pair = (production, shadow_class)
            if pair not in flips and len(flips) >= MAX_FLIPS:
                pair = ("other", "other")
            flips[pair] = flips.get(pair, 0) + instances

    async def stop(self) -> None:
        """Write what is queued, then close the database."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._write_queued()
        if self._db is not None:
            self._db.close()
            self._db = None

    async def flush(self) -> None:
        """Write what is queued now (tests, and a scrape of the report)."""
        self._write_queued()

    # -- what is kept --------------------------------------------------------------------------

    def offer(
        self,
        *,
        route: str,
        path: str,
        shadow: str,
        role: str,
        comparator: Comparator,
        method: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        request_id: str,
        production: UpstreamResponse | None,
        production_ms: float | None,
        answer: UpstreamResponse | None,
        shadow_ms: float | None,
        found: Classified,
        production_predictions: list[Any] | None,
    ) -> None:
        """Keep this compared exchange if the rules say so; never waits."""
        result = found.result
        if result is ComparisonResult.DISAGREE and found.comparison is not None:
            self._count_flips(route, shadow, comparator, production_predictions, found)
        if result in _NOT_CAPTURED:
            return
        counts = self._metrics.capture
        now = time.time()
        if result in _AGREEING:
            if not self._agreements.admits(bucket(request_id)):
                counts["sampled_out"].inc()
                return
        else:
            key = (route, shadow)
            rate = self.config.max_per_second
            limiter = self._buckets.get(key)
            clock = self.clock()
            if limiter is None:
                limiter = self._buckets[key] = _Bucket(rate, max(rate, 1.0), clock)
            if not limiter.take(clock):
                counts["rate_limited"].inc()
                return
        if len(self._queue) >= self.config.queue:
            counts["queue_full"].inc()
            return
        pending = _Pending(
            route, path, request_id, shadow, role, comparator.kind, comparator, method,
            headers, body, production, production_ms, answer, shadow_ms, found,
            production_predictions, now,
        )  # fmt: skip
        self._queue.append(pending)
        if len(self._queue) >= BATCH:
            self._wake.set()

    def label(self, request_id: str, label: Any, at: float | None = None) -> None:
        """A label joined for `request_id`: kept beside its captured exchanges, if any."""
        try:
            text = orjson.dumps(label).decode()
        except TypeError:
            return
        self._labels.append((request_id, text, time.time() if at is None else at))

    def _count_flips(
        self,
        route: str,
        shadow: str,
        comparator: Comparator,
        production: list[Any] | None,
        found: Classified,
    ) -> None:
        """Which class production predicted and which the shadow did, on the instances where
        they differ (classification; probabilities: the argmax)."""
        if comparator.kind is CompareKind.REGRESSION or production is None:
            return
        got = found.shadow_predictions
        if got is None or len(got) != len(production):
            return
        key = (route, shadow)
        labels = self._class_labels.get(key)
        if labels is None:
            labels = (ClassLabels(comparator.kind), ClassLabels(comparator.kind))
            self._class_labels[key] = labels
        flips = self._flips.setdefault(key, {})
        classification = comparator.kind is CompareKind.CLASSIFICATION
        for p, s in zip(production, got, strict=True):
            if classification and p == s and type(p) is type(s):
                continue  # the same class: no flip (only differing instances are labelled)
            pair = (labels[0].label(p), labels[1].label(s))
            if pair[0] == pair[1]:
                continue
            if pair not in flips and len(flips) >= MAX_FLIPS:
                pair = ("other", "other")
            flips[pair] = flips.get(pair, 0) + 1
            unwritten = (route, shadow, *pair)
            self._flips_unwritten[unwritten] = self._flips_unwritten.get(unwritten, 0) + 1

    # -- writing -------------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            try:
                self._write_queued()
            except Exception:  # a bug of ours: logged, and the writer goes on
                log.exception("capture: writing the queue failed")

    def _write_queued(self) -> None:
        db = self._db
        counts = self._metrics.capture
        if db is None:
            if self._queue:
                counts["failed"].inc(len(self._queue))
                self._queue.clear()
                throttled.warning(
                    "write", "capture: not written, the database is unavailable: %s",
                    self._unavailable, extra={"path": str(self.config.path)},
                )  # fmt: skip
            self._labels.clear()
            return
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            rows = []
            for item in batch:
                try:
                    rows.append(self._row(item))
                except Exception as exc:  # one odd exchange must not stop the writer
                    counts["failed"].inc()
                    log.exception("capture: an exchange could not be written: %s", exc)
            if not rows:
                continue
            try:
                db.write(rows)
            except Exception as exc:
                counts["failed"].inc(len(rows))
                throttled.warning(
                    "write", "capture: writing failed: %s", exc, extra={"path": str(db.path)}
                )
                continue
            counts["kept"].inc(len(rows))
        labels, self._labels = self._labels, []
        if labels:
            try:
                db.label(labels)
            except Exception as exc:
                throttled.warning(
                    "label", "capture: labels not kept: %s", exc, extra={"path": str(db.path)}
                )
        if self._flips_unwritten:
            try:
                db.add_flips(self._flips_unwritten)
            except Exception as exc:  # kept for the next write: bounded by MAX_FLIPS a pair
                throttled.warning(
                    "flips", "capture: class flips not kept: %s", exc, extra={"path": str(db.path)}
                )
            else:
                self._flips_unwritten = {}

    def _row(self, item: _Pending) -> dict[str, Any]:
        """The exchange as the database keeps it: redacted, bodies decoded and capped."""
        cap, redact = self.config.max_body, self._redactor
        request_body, truncated = redact.body(item.body, cap)
        production_body = shadow_body = None
        if item.production is not None:
            production_body, _ = redact.body(_decoded(item.production, cap), cap)
        if item.answer is not None:
            shadow_body, _ = redact.body(_decoded(item.answer, cap), cap)
        found = item.found
        produced, got = item.production_predictions, found.shadow_predictions
        comparison = found.comparison
        differing = _differing(item.comparator, produced, got, comparison)
        row: dict[str, Any] = {
            "request_id": item.request_id,
            "route": item.route,
            "shadow": item.shadow,
            "role": item.role,
            "kind": item.kind.value,
            "captured_at": item.captured_at,
            "result": found.result.value,
            "method": item.method,
            "path": item.path,
            "request_headers": orjson.dumps(redact.headers(item.headers)).decode(),
            "request_body": request_body,
            "request_truncated": truncated,
            "production_status": None if item.production is None else item.production.status,
            "production_body": production_body,
            "production_ms": item.production_ms,
            "shadow_status": None if item.answer is None else item.answer.status,
            "shadow_body": shadow_body,
            "shadow_ms": item.shadow_ms,
            "production_predictions": _json(produced),
            "shadow_predictions": _json(got),
            "instances": None if comparison is None else comparison.instances,
            "disagreed": None if comparison is None else comparison.disagreements,
            "differing": None if differing is None else _json(differing),
            "max_difference": _max_difference(item.kind, produced, got),
        }
        row["bytes"] = sum(
            len(row[k] or "")
            for k in ("request_body", "production_body", "shadow_body", "request_headers")
        )
        return row

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Apply the bounds; a database that could not be opened is tried again first."""
        if self._db is None:
            self._open()
        db = self._db
        if db is None:
            return
        try:
            removed = db.sweep(time.time() if now is None else now)
            size = db.path.stat().st_size
        except Exception as exc:
            throttled.warning("sweep", "capture: sweep failed: %s", exc, extra={})
            return
        removals = self._metrics.capture_removed
        if removed.aged:
            removals["aged"].inc(removed.aged)
        if removed.over_disk:
            removals["over_disk"].inc(removed.over_disk)
        self._metrics.store_file_bytes.labels("capture").set(size)

    # -- reading -------------------------------------------------------------------------------

    def drilldown(self, route: str, shadow: str, kind: str) -> DrillDown:
        """What the report shows of this shadow's disagreements."""
        self._write_queued()
        db = self._db
        flips: list[ClassFlip] = [
            {"production": p, "shadow": s, "instances": n}
            for (p, s), n in sorted(
                self._flips.get((route, shadow), {}).items(), key=lambda item: -item[1]
            )
        ]
        exchanges: list[CapturedExchange] = []
        largest: list[LargestDifference] = []
        try:
            if db is not None:
                rows = db.disagreements(route, shadow, limit=REPORT_EXCHANGES)
                exchanges = [_captured(row) for row in rows]
                if kind == "regression":
                    for row in db.largest_differences(route, shadow, REPORT_EXCHANGES):
                        largest.extend(_largest(row))
        except sqlite3.Error as exc:  # the report goes on without them
            throttled.warning("read", "capture: cannot be read: %s", exc, extra={})
        largest.sort(key=lambda d: -abs(d["difference"]))
        largest = largest[:REPORT_EXCHANGES]
        return {
            "capture": True,
            "exchanges": exchanges,
            "flips": flips,
            "largest_differences": largest,
        }

    async def handle_disagreements(self, request: web.Request) -> web.Response:
        """GET /disagreements?route=&shadow=&limit=&after=: disagreeing exchanges, newest
        first; `next` is the `after` of the next page (null on the last)."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        query = request.query
        try:
            limit = int(query.get("limit", "20"))
            after = int(query["after"]) if "after" in query else None
        except ValueError:
            return json_response(400, {"error": "limit and after must be whole numbers"})
        if not 1 <= limit <= 200:
            message = f"limit must be from 1 to 200 (got {query['limit'][:40]})"
            return json_response(400, {"error": message})
        if after is not None and not 0 <= after < 2**63:  # a page's `next`: a row's seq
            message = f"after must be a `next` this endpoint gave (got {query['after'][:40]})"
            return json_response(400, {"error": message})
        self._write_queued()
        rows = self._read(
            lambda db: db.disagreements(
                query.get("route"), query.get("shadow"), limit=limit, before=after
            )
        )
        if isinstance(rows, web.Response):
            return rows
        body = {
            "exchanges": [_summary(row) for row in rows],
            "next": rows[-1]["seq"] if len(rows) == limit else None,
        }
        return json_response(200, body)

    async def handle_exchange(self, request: web.Request) -> web.Response:
        """GET /exchanges/{request_id}: every captured row of one request, whole."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        request_id = request.match_info["request_id"]
        self._write_queued()
        rows = self._read(lambda db: db.exchange(request_id, limit=EXCHANGE_ROWS + 1))
        if isinstance(rows, web.Response):
            return rows
        if not rows:
            message = f"no exchange captured for request_id {request_id[:256]!r}"
            return json_response(404, {"error": message})
        # A client may send one id many times: the newest rows only, and a flag saying so.
        truncated = len(rows) > EXCHANGE_ROWS
        body = {
            "request_id": request_id,
            "exchanges": [_whole(row) for row in rows[-EXCHANGE_ROWS:]],
            "truncated": truncated,
        }
        return json_response(200, body)

    def _read(
        self, read: Callable[[CaptureDatabase], list[dict[str, Any]]]
    ) -> list[dict[str, Any]] | web.Response:
        """The rows `read` finds, or a 503 saying why the database cannot be read."""
        db = self._db
        if db is None:
            message = f"the capture database is unavailable: {self._unavailable}"
            return json_response(503, {"error": message})
        try:
            return read(db)
        except sqlite3.Error as exc:
            return json_response(503, {"error": f"the capture database cannot be read: {exc}"})

    def _refused(self, request: web.Request) -> web.Response | None:
        refusal = self._auth.refusal(request)
        if refusal is None:
            return None
        headers = CHALLENGE if refusal.status == 401 else None
        return json_response(refusal.status, {"error": refusal.message}, headers)


async def capture_off(request: web.Request) -> web.Response:
    """/disagreements and /exchanges/ with the capture off."""
    message = "the capture is off: add a capture: section to the config (see the README)"
    return json_response(404, {"error": message})


def _decoded(response: UpstreamResponse, cap: int) -> bytes:
    """The answer's body decoded, or as it came when it cannot be (kept all the same)."""
    try:
        return decoded_answer(response.headers, response.body, cap * 4)
    except ExtractionError:
        return response.body


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return None


def _differing(
    comparator: Comparator, production: Any, shadow: Any, comparison: Comparison | None
) -> list[int] | None:
    """The indexes of the instances that differ, by the route's own comparator (none, or all,
    read off the comparison's counts)."""
    if not isinstance(production, list) or not isinstance(shadow, list):
        return None
    if len(production) != len(shadow):
        return None
    if comparison is not None and comparison.instances == len(production):
        if comparison.disagreements == 0:
            return []
        if comparison.disagreements == comparison.instances:
            return list(range(comparison.instances))
    found = []
    for index, (p, s) in enumerate(zip(production, shadow, strict=True)):
        try:
            if comparator.compare([p], [s]).disagreements:
                found.append(index)
        except ShapeMismatch:
            found.append(index)
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _max_difference(kind: CompareKind, production: Any, shadow: Any) -> float | None:
    if kind is not CompareKind.REGRESSION or not isinstance(production, list):
        return None
    if not isinstance(shadow, list) or len(production) != len(shadow):
        return None
    differences = [
        abs(s - p)
        for p, s in ((_number(a), _number(b)) for a, b in zip(production, shadow, strict=True))
        if p is not None and s is not None
    ]
    return max(differences) if differences else None


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _captured(row: dict[str, Any]) -> CapturedExchange:
    production = _loads(row["production_predictions"]) or []
    shadow = _loads(row["shadow_predictions"]) or []
    differing = set(_loads(row["differing"]) or [])
    label = _loads(row["label"])
    labels = label if isinstance(label, list) and len(label) == len(production) else None
    count = max(len(production), len(shadow))
    instances: list[CapturedInstance] = [
        {
            "index": i,
            "production": production[i] if i < len(production) else None,
            "shadow": shadow[i] if i < len(shadow) else None,
            "differs": i in differing,
            "label": (labels[i] if labels is not None else label)
            if row["label"] is not None
            else None,
        }
        for i in range(min(count, SHOWN_INSTANCES))
    ]
    return {
        "request_id": row["request_id"],
        "captured_at": row["captured_at"],
        "result": row["result"],
        "production_status": row["production_status"],
        "shadow_status": row["shadow_status"],
        "instances": instances,
        "instance_count": count,
        "truncated": count > SHOWN_INSTANCES,
        "labelled": row["label"] is not None,
    }


def _largest(row: dict[str, Any]) -> list[LargestDifference]:
    production = _loads(row["production_predictions"]) or []
    shadow = _loads(row["shadow_predictions"]) or []
    label = _loads(row["label"])
    found: list[LargestDifference] = []
    for index, (a, b) in enumerate(zip(production, shadow, strict=False)):
        p, s = _number(a), _number(b)
        if p is None or s is None:
            continue
        truth = label[index] if isinstance(label, list) and index < len(label) else label
        found.append(
            {
                "request_id": row["request_id"],
                "index": index,
                "production": p,
                "shadow": s,
                "difference": s - p,
                "label": _number(truth),
            }
        )
    return found


_SUMMARY = (
    "seq", "request_id", "route", "shadow", "role", "kind", "captured_at", "result",
    "production_status", "shadow_status", "production_ms", "shadow_ms", "instances", "disagreed",
)  # fmt: skip
_PARSED = ("production_predictions", "shadow_predictions", "differing", "label")


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    out = {key: row[key] for key in _SUMMARY}
    for key in _PARSED:
        out[key] = _loads(row[key])
    return out


def _whole(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in (*_PARSED, "request_headers"):
        out[key] = _loads(row[key])
    return out

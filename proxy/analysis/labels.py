"""The label endpoint (POST /labels) and the join: ground truth arriving minutes or weeks later
is matched to what production and every shadow predicted, scored, and counted. Every label
received ends as exactly one of joined, unknown_id, expired, duplicate or invalid."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.analysis.auth import CHALLENGE, BearerToken
from proxy.analysis.responses import json_response
from proxy.analysis.scoring import RouteScorer
from proxy.config import LabelsConfig
from proxy.core.joining import InvalidLabel, Score
from proxy.core.outcomes import MAX_REQUEST_ID, LabelRejection, LabelResult
from proxy.metrics import LabelMetrics
from proxy.store.base import LabelStatus, PredictionStore, StoreUnavailable

log = logging.getLogger(__name__)

_INVALID = LabelResult.INVALID
_ITEM_KEYS = ("request_id", "label")


@dataclass(slots=True)
class _Item:
    """One label of a request, on its way to a result."""

    request_id: str
    label: Any
    result: LabelResult | None = None  # None until the store has answered
    error: str = ""
    scored: tuple[list[Any], Score] | None = None  # per-instance labels, production's score

    @property
    def outcome(self) -> LabelResult:
        assert self.result is not None, "every label has its result once applied"
        return self.result

    def answer(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"request_id": self.request_id, "result": self.outcome.value}
        if self.error:
            doc["error"] = self.error
        return doc


def _parse_item(raw: Any) -> _Item:
    if not isinstance(raw, dict):
        return _Item("", None, _INVALID, "a label must be an object with request_id and label")
    request_id = raw.get("request_id")
    rid = request_id if isinstance(request_id, str) else ""
    unknown = sorted(set(raw) - set(_ITEM_KEYS))
    if unknown:
        return _Item(rid, None, _INVALID, f"unknown key {unknown[0]!r}; allowed: request_id, label")
    if not isinstance(request_id, str) or not request_id:
        return _Item(rid, None, _INVALID, "request_id must be a non-empty string")
    if len(request_id) > MAX_REQUEST_ID:
        return _Item(rid, None, _INVALID, f"request_id is longer than {MAX_REQUEST_ID} characters")
    if "label" not in raw:
        return _Item(rid, None, _INVALID, "label is missing")
    if raw["label"] is None:
        return _Item(rid, None, _INVALID, "label is null")
    return _Item(rid, raw["label"])


# A single label's result as an HTTP status; a batch always answers 200 with one result each.
_STATUS = {
    LabelResult.JOINED: 200,
    LabelResult.UNKNOWN_ID: 404,
    LabelResult.EXPIRED: 410,
    LabelResult.DUPLICATE: 409,
    LabelResult.INVALID: 400,
}
_MESSAGES = {
    LabelResult.UNKNOWN_ID: "no prediction was recorded for this request_id",
    LabelResult.EXPIRED: "the prediction for this request_id is older than the store's ttl",
    LabelResult.DUPLICATE: "this request_id already has a label",
}


class LabelEndpoint:
    """POST /labels: one label `{"request_id": ..., "label": ...}` or a list of them.

    >>> endpoint = LabelEndpoint(store, labels_config, scorers, metrics.bind_labels())
    >>> app.router.add_post("/labels", endpoint.handle)
    """

    def __init__(
        self,
        store: PredictionStore | None,
        config: LabelsConfig,
        scorers: dict[str, RouteScorer],
        metrics: LabelMetrics,
        joined: Callable[[str, Any], None] | None = None,
    ) -> None:
        self._store = store
        self._joined = joined  # told of every label joined (the capture keeps it beside)
        self._config = config
        self._auth = BearerToken(config.token)
        self._scorers = scorers
        self._m = metrics

    def update(self, config: LabelsConfig, scorers: dict[str, RouteScorer]) -> None:
        """After a reload: a new token (rotation) and the new routes' scorers."""
        self._config = config
        self._auth = BearerToken(config.token)
        self._scorers = {**self._scorers, **scorers}

    def _refuse(self, status: int, reason: LabelRejection, message: str) -> web.Response:
        self._m.rejected[reason].inc()
        headers = CHALLENGE if status == 401 else None
        return json_response(status, {"error": message}, headers)

    async def handle(self, request: web.Request) -> web.Response:
        if self._store is None:
            return self._refuse(
                404, LabelRejection.DISABLED, "labels are off: no route sets 'record'"
            )
        refusal = self._auth.refusal(request)
        if refusal is not None:
            return self._refuse(refusal.status, LabelRejection(refusal.reason), refusal.message)
        try:
            body = await self._read(request)
        except web.RequestPayloadError as exc:  # a Content-Encoding its bytes are not in
            encoding = request.headers.get("Content-Encoding", "")[:40]
            return self._malformed(f"body cannot be decoded ({encoding}): {exc.__cause__ or exc}")
        if body is None:
            limit = self._config.max_body
            return self._refuse(
                413,
                LabelRejection.TOO_LARGE,
                f"body is larger than labels.max_body ({limit} bytes)",
            )

        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._malformed(f"body is not JSON: {exc}")
        if isinstance(doc, dict):
            items, single = [_parse_item(doc)], True
        elif isinstance(doc, list):
            if not doc:
                return json_response(400, {"error": "the batch is empty"})
            if len(doc) > self._config.max_batch:
                return self._malformed(
                    f"the batch has {len(doc)} labels; labels.max_batch is "
                    f"{self._config.max_batch}",
                    count=len(doc),
                )
            items, single = [_parse_item(raw) for raw in doc], False
        else:
            return self._malformed("body must be a label object or a list of label objects")

        try:
            await self._apply(items)
        except StoreUnavailable as exc:
            log.warning("label request failed: store unavailable", extra={"error": str(exc)})
            message = f"the prediction store is unavailable: {exc}"
            return self._refuse(503, LabelRejection.STORE_UNAVAILABLE, message)

        self._m.received.inc(len(items))
        for item in items:
            self._m.results[item.outcome].inc()
        if single:
            return json_response(_STATUS[items[0].outcome], items[0].answer())
        counts = {result.value: 0 for result in LabelResult}
        for item in items:
            counts[item.outcome.value] += 1
        return json_response(200, {"results": [item.answer() for item in items], "counts": counts})

    async def _read(self, request: web.Request) -> bytes | None:
        """The body, or None when it is over labels.max_body (read no further than that)."""
        limit = self._config.max_body
        if request.content_length is not None and request.content_length > limit:
            return None
        chunks, size = [], 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _malformed(self, message: str, count: int = 1) -> web.Response:
        # A body we cannot read is still labels received: counted, as invalid.
        self._m.received.inc(count)
        self._m.results[_INVALID].inc(count)
        return json_response(400, {"error": message})

    async def _apply(self, items: Sequence[_Item]) -> None:
        """Validate the labels against their records, set them, and join what was joined."""
        assert self._store is not None
        pending = [item for item in items if item.result is None]
        if not pending:
            return
        records = await self._store.get_records([item.request_id for item in pending])
        to_set = []
        for item in pending:
            record = records.get(item.request_id)
            scorer = None if record is None else self._scorers.get(record.route)
            if record is not None and scorer is not None:
                try:
                    item.scored = scorer.labels_for(record, item.label)
                except InvalidLabel as exc:
                    item.result, item.error = _INVALID, str(exc)
                    continue
            to_set.append(item)
        if not to_set:
            return
        now = time.time()
        results = await self._store.set_labels([(i.request_id, i.label) for i in to_set], now)
        for item, result in zip(to_set, results, strict=True):
            item.result = LabelResult(result.status.value)
            item.error = _MESSAGES.get(item.outcome, "")
            if result.status is LabelStatus.JOINED and result.record is not None:
                scorer = self._scorers.get(result.record.route)
                if scorer is not None:
                    scorer.join(result.record, now, item.scored)
                if self._joined is not None:
                    self._joined(item.request_id, item.label)

"""The shared prediction store: Redis, so that replicas join labels to predictions any of them
served; Redis's own TTLs expire records. Owns the key layout and the Lua scripts; no joining and
no metrics here (see base.py for the semantics).

Keys: the hash `{prefix}rec:{request_id}` holds one record (route, created, production,
predictions, `s:<shadow>` per shadow, label, labelled_at; JSON values as orjson bytes); the sorted
set `{prefix}index` holds every request id scored by its creation time, for sweeping and the cap.
Every read-modify-write is one Lua script, so it is atomic across replicas; a batch is one
pipeline of script calls, so one round trip.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.config import redact_url
from proxy.store.base import (
    LabelResult,
    LabelStatus,
    PredictionStore,
    Record,
    Removed,
    ShadowPredictions,
    ShadowsPut,
    StoreTimedOut,
    StoreUnavailable,
)

# KEYS: record, index. ARGV: expire seconds, request id, created, then field/value pairs.
_PUT_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""

# KEYS: record. ARGV: shadow field, predictions.
# Returns -1 when there is no record (an orphan), 0 when nothing changed or the record has no
# label yet, else the record's fields.
_PUT_SHADOW = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'label') == 0 then return 0 end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: record. ARGV: ttl, now, label, labelled_at.
# Returns the status, followed by the record's fields when joined.
_SET_LABEL = """
local created = redis.call('HGET', KEYS[1], 'created')
if not created then return {'unknown_id'} end
if tonumber(created) + tonumber(ARGV[1]) < tonumber(ARGV[2]) then return {'expired'} end
if redis.call('HEXISTS', KEYS[1], 'label') == 1 then return {'duplicate'} end
redis.call('HSET', KEYS[1], 'label', ARGV[3], 'labelled_at', ARGV[4])
local fields = redis.call('HGETALL', KEYS[1])
table.insert(fields, 1, 'joined')
return fields
"""

# KEYS: index. ARGV: exclusive cutoff score, max records, batch limit, record key prefix.
# Removes at most `limit` members per call, so that a large sweep does not block Redis; returns
# {expired, evicted, more}. A member whose key Redis already expired counts as expired.
_REMOVE_OLD = """
local limit = tonumber(ARGV[3])
local expired, evicted = 0, 0
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit)
for _, id in ipairs(old) do
  expired = expired + redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[4] .. id)
end
local budget = limit - #old
local surplus = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
local more = 0
if #old == limit then more = 1 end
if budget > 0 and surplus > 0 then
  if surplus > budget then
    surplus = budget
    more = 1
  end
  local popped = redis.call('ZPOPMIN', KEYS[1], surplus)
  for i = 1, #popped, 2 do
    if redis.call('DEL', ARGV[4] .. popped[i]) == 1 then
      evicted = evicted + 1
    else
      expired = expired + 1
    end
  end
end
return {expired, evicted, more}
"""

_SWEEP_LIMIT = 1000


class RedisStore(PredictionStore):
    """Predictions in one Redis, shared by every replica of the proxy.

    >>> store = RedisStore("redis://redis:6379/0", ttl=7 * 86400)
    >>> await store.start()
    >>> await store.put_records([record])
    >>> [result] = await store.set_labels([("req-1", 1)], now=time.time())
    >>> await store.close()
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float,
        tombstone_ttl: float = 86400.0,
        max_records: int = 1_000_000,
        timeout: float = 1.0,
        prefix: str = "shadowproxy:",
    ) -> None:
        self.ttl = ttl
        self.tombstone_ttl = tombstone_ttl
        self.max_records = max_records
        self.timeout = timeout
        self.prefix = prefix
        self._record_prefix = f"{prefix}rec:"
        self._index = f"{prefix}index"
        self._expire = math.ceil(ttl + tombstone_ttl)
        self._closed = False
        # No retries: a dead Redis must fail each call within `timeout`, not after backoffs.
        # (retry_on_timeout is left out: redis-py deprecates it, and False is its default.)
        self._client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
        self._put_record = self._client.register_script(_PUT_RECORD)
        self._put_shadow = self._client.register_script(_PUT_SHADOW)
        self._set_label = self._client.register_script(_SET_LABEL)
        self._remove_old = self._client.register_script(_REMOVE_OLD)
        self._url = redact_url(url)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._check_open()
        try:
            await self._client.ping()
            await self._load_scripts()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._client.aclose()

    # -- operations --------------------------------------------------------------------------

    async def put_records(self, records: Sequence[Record]) -> None:
        calls = []
        for r in records:
            fields: list[bytes | str] = [
                b"route",
                r.route,
                b"created",
                repr(float(r.created)),
                b"production",
                r.production,
                b"predictions",
                orjson.dumps(r.predictions),
            ]
            for shadow, predictions in r.shadows.items():
                fields += [f"s:{shadow}", orjson.dumps(predictions)]
            if r.label is not None:
                fields += [b"label", orjson.dumps(r.label)]
            if r.labelled_at is not None:
                fields += [b"labelled_at", repr(float(r.labelled_at))]
            keys = (self._key(r.request_id), self._index)
            calls.append((keys, (self._expire, r.request_id, repr(float(r.created)), *fields)))
        await self._pipeline(self._put_record.sha, calls)

    async def put_shadows(self, items: Sequence[ShadowPredictions]) -> ShadowsPut:
        calls = [
            ((self._key(i.request_id),), (f"s:{i.shadow}", orjson.dumps(i.predictions)))
            for i in items
        ]
        replies = await self._pipeline(self._put_shadow.sha, calls)
        return ShadowsPut(
            [
                (item, _record(item.request_id, reply))
                for item, reply in zip(items, replies, strict=True)
                if isinstance(reply, list)
            ],
            [item for item, reply in zip(items, replies, strict=True) if reply == -1],
        )

    async def get_records(self, request_ids: Sequence[str]) -> dict[str, Record]:
        self._check_open()
        unique = list(dict.fromkeys(request_ids))
        if not unique:
            return {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for request_id in unique:
                    pipe.hgetall(self._key(request_id))
                replies = await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return {
            rid: _record(rid, [v for pair in reply.items() for v in pair])
            for rid, reply in zip(unique, replies, strict=True)
            if reply
        }

    async def set_labels(self, items: Sequence[tuple[str, Any]], now: float) -> list[LabelResult]:
        calls = []
        for request_id, label in items:
            if label is None:
                raise ValueError(f"label for {request_id!r} is None")
            args = (repr(float(self.ttl)), repr(float(now)), orjson.dumps(label), repr(float(now)))
            calls.append(((self._key(request_id),), args))
        replies = await self._pipeline(self._set_label.sha, calls)
        results = []
        for (request_id, _), reply in zip(items, replies, strict=True):
            status = LabelStatus(reply[0].decode())
            if status is LabelStatus.JOINED:
                results.append(LabelResult(status, _record(request_id, reply[1:])))
            else:
                results.append(LabelResult(status))
        return results

    async def remove_old(self, now: float) -> Removed:
        cutoff = f"({now - self.ttl - self.tombstone_ttl!r}"
        expired = evicted = 0
        more = 1
        while more:
            reply = await self._pipeline(
                self._remove_old.sha,
                [((self._index,), (cutoff, self.max_records, _SWEEP_LIMIT, self._record_prefix))],
            )
            batch_expired, batch_evicted, more = reply[0]
            expired += batch_expired
            evicted += batch_evicted
        return Removed(expired=expired, evicted=evicted)

    async def count(self) -> int:
        self._check_open()
        try:
            return await self._client.zcard(self._index)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    # -- plumbing ----------------------------------------------------------------------------

    def _key(self, request_id: str) -> str:
        return self._record_prefix + request_id

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"prediction store {self._url} is closed")

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"prediction store {self._url}: {type(exc).__name__}: {exc}")

    async def _load_scripts(self) -> None:
        for script in (self._put_record, self._put_shadow, self._set_label, self._remove_old):
            script.sha = await self._client.script_load(script.script)

    async def _pipeline(
        self, sha: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Runs one script once per call, in one round trip; loads the scripts once more if
        Redis lost them (a restart, SCRIPT FLUSH) and runs the batch again: when one call
        failed with NOSCRIPT, they all did, so the batch had no effect."""
        self._check_open()
        if not calls:
            return []
        try:
            for attempt in (1, 2):
                async with self._client.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.evalsha(sha, len(keys), *keys, *args)
                    try:
                        return await pipe.execute()
                    except redis.exceptions.NoScriptError:
                        if attempt == 2:
                            raise
                await self._load_scripts()
        except redis.exceptions.TimeoutError as exc:
            if "connecting" in str(exc).lower():  # nothing was sent
                raise self._unavailable(exc) from exc
            raise StoreTimedOut(
                f"prediction store {self._url}: no answer in time; the write may still be"
                f" applied ({exc})"
            ) from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")


def _record(request_id: str, flat: list[bytes]) -> Record:
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    label = fields.get(b"label")
    labelled_at = fields.get(b"labelled_at")
    return Record(
        request_id=request_id,
        route=fields[b"route"].decode(),
        created=float(fields[b"created"]),
        production=fields[b"production"].decode(),
        predictions=orjson.loads(fields[b"predictions"]),
        shadows={
            name[2:].decode(): orjson.loads(value)
            for name, value in fields.items()
            if name.startswith(b"s:")
        },
        label=None if label is None else orjson.loads(label),
        labelled_at=None if labelled_at is None else float(labelled_at),
    )

"""JSON-lines logging on stderr: the formatter, the one set-up function, and the throttle that
keeps a repeated warning (an upstream down, answers unreadable) to one line per key and period."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Hashable
from typing import Any

import orjson

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, msg, the `extra` fields, exc.

    >>> handler.setFormatter(JsonFormatter())
    >>> log.warning("shadow failed", extra={"shadow": "iris-rf"})
    {"ts":"2026-11-27T15:30:00.123Z","level":"warning","logger":"proxy","msg":"shadow failed",...}
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "info") -> None:
    """Send every logger's records to stderr as JSON lines, at `level` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    # Warnings too are JSON lines: nothing else may write to stderr.
    logging.captureWarnings(True)


def set_level(level: str) -> None:
    """A reload's log_level, applied to every logger of this process."""
    logging.getLogger().setLevel(level.upper())


class Throttled:
    """At most one warning per key every `every` seconds; the ones held back are counted, and
    the next line says how many (`suppressed`). Keys are bounded by the config (route, target,
    cause); past `max_keys` the oldest are forgotten.

    >>> throttled = Throttled(logging.getLogger("proxy.front"), every=10.0)
    >>> throttled.warning(("iris", "iris-lr", "refused"), "production unreachable: %s", err)
    """

    def __init__(
        self,
        logger: logging.Logger,
        every: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        self._logger = logger
        self._every = every
        self._clock = clock
        self._max_keys = max_keys
        self._last: dict[Hashable, tuple[float, int]] = {}  # key -> (when logged, held back)

    def warning(self, key: Hashable, msg: str, *args: object, extra: dict[str, Any]) -> bool:
        """Log unless `key` was logged less than `every` seconds ago; True when logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._every:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is None and len(self._last) >= self._max_keys:
            del self._last[next(iter(self._last))]
        self._last.pop(key, None)  # re-inserted last: the dict stays oldest first
        self._last[key] = (now, 0)
        suppressed = last[1] if last is not None else 0
        self._logger.warning(msg, *args, extra={**extra, "suppressed": suppressed})
        return True

"""Reading a capture export for replay: JSON lines or Parquet (pyarrow, imported only for
Parquet), checked column by column against proxy/capture/schema.py, in two passes: which
requests to replay and their labels (`plan`), then each request once (`requests_of`). Every
error names the file and the line or row. No sending, no counting."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.capture.schema import COLUMNS
from proxy.config import Config
from proxy.core.extraction import ExtractionError, Extractor

__all__ = [
    "Captured",
    "Export",
    "ExportError",
    "Plan",
    "ReplayError",
    "plan",
    "requests_of",
]

_PARQUET_MAGIC: Final = b"PAR1"

_TYPES: Final = {name: (kind, nullable) for name, kind, nullable in COLUMNS}
_READ: Final = (
    "request_id", "route", "shadow", "method", "path", "request_headers", "request_body",
    "request_truncated", "production_status", "production_body", "production_ms",
    "production_predictions", "captured_at", "label", "labelled_at",
)  # fmt: skip
"""The export's columns that replay reads (proxy.capture.schema says their types)."""
_PLANNED: Final = ("request_id", "route", "shadow", "request_truncated", "label")
"""What the first pass reads: which requests to replay, and their labels."""
_INT64: Final = range(-(2**63), 2**63)
_MAX_DEPTH: Final = 100
"""How deep the JSON text of a column may nest: predictions, labels and headers are a few levels
deep; far deeper ones would exhaust Python's recursion where replay compares and scores them."""
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP method or header name (RFC 9110 5.6.2): what can be sent again as it was."""
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What a header value cannot hold (RFC 9110 5.5): sent, it would end the header early."""
_NOT_IN_TARGET: Final = re.compile(r"[\x00-\x20\x7f]")
"""What a request target cannot hold: its request line ends at a space, and the front takes
no control character in it, so a captured path has neither."""


class ReplayError(Exception):
    """The replay cannot be made, or its files written: one line says why (exit status 1)."""


class ExportError(ReplayError):
    """The export cannot be read: one line naming the file, and the line or row at fault."""


# -- the export -----------------------------------------------------------------------------------


def _check(path: str, where: str, row: dict[str, Any], name: str) -> Any:
    """The value of column `name` of one row, checked against its type in the schema."""
    if name not in row:
        raise ExportError(f"{path}: {where}: no column {name!r} (is it a capture export?)")
    value = row[name]
    kind, nullable = _TYPES[name]
    if value is None and nullable:
        return None
    ok = {
        "string": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int64": isinstance(value, int) and not isinstance(value, bool) and value in _INT64,
        "float64": isinstance(value, int | float) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise ExportError(f"{path}: {where}: column {name!r} is not a {kind}: {value!r:.60}")
    if kind != "float64":
        return value
    # JSON reads 1e400 as inf, and an integer of 400 digits fits no float: neither is a time or
    # a duration the export could have written.
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ExportError(
            f"{path}: {where}: column {name!r} is not a finite float64: {value!r:.60}"
        )
    return number


def _json_text(path: str, where: str, name: str, text: str) -> Any:
    too_deep = f"{path}: {where}: column {name!r} is JSON nested deeper than {_MAX_DEPTH} levels"
    try:
        value = json.loads(text)
    except RecursionError:
        raise ExportError(too_deep) from None
    except ValueError as exc:
        raise ExportError(f"{path}: {where}: column {name!r} is not JSON ({exc})") from None
    if _deeper_than(value, _MAX_DEPTH):
        raise ExportError(too_deep)
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest in `value` more than `limit` levels (iteratively: the
    check must not itself run out of recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item if isinstance(child, list | dict))
    return False


def _utf8(path: str, where: str, name: str, text: str) -> bytes:
    """A text column as the bytes it stands for: surrogateescape gives back bytes that were not
    UTF-8, as the capture escaped them; any other lone surrogate is no text at all."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise ExportError(
            f"{path}: {where}: column {name!r} is not text: {exc.reason} at character {exc.start}"
        ) from None


@dataclass(slots=True, eq=False)
class Captured:
    """One captured request to send again, with production's side of its exchange and its
    label. `production_predictions` are as captured; None when there were none to compare then
    (they are extracted from `production_body` when the candidate's answer calls for it)."""

    request_id: str
    route: str
    method: str
    query: str  # the captured path's query string, without "?"; "" when it had none
    headers: tuple[tuple[str, str], ...]  # lower-case names, as captured (redacted ones too)
    body: bytes
    production_status: int | None  # None: production gave no answer
    production_body: str | None
    production_ms: float | None
    production_predictions: list[Any] | None
    captured_at: float
    labelled: bool = False
    label: Any = None  # as posted
    labelled_at: float | None = None
    where: str = ""  # the export's file and line (or row), for an error about the request
    _parsed: list[Any] | ExtractionError | None = field(default=None, repr=False)

    def predictions(self, extractor: Extractor) -> list[Any]:
        """Production's predictions: as captured, else read from its captured answer with the
        route's extractor (once); ExtractionError when it holds none."""
        if self._parsed is None:
            if self.production_predictions is not None:
                self._parsed = self.production_predictions
            else:
                try:
                    body = (self.production_body or "").encode("utf-8", "surrogateescape")
                    self._parsed = extractor.extract(body)
                except ExtractionError as exc:
                    self._parsed = exc
        if isinstance(self._parsed, ExtractionError):
            raise self._parsed
        return self._parsed


class Export:
    """A file written by `shadow-proxy capture export`: JSON lines, or Parquet (read with
    pyarrow, an optional dependency: `pip install shadow-proxy[export]`). Rows are read as often
    as asked, in file order, never all held at once.

    >>> export = Export("export.jsonl")
    >>> for where, row in export.rows(("request_id", "route")): ...
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as file:
                magic = file.read(len(_PARQUET_MAGIC))
        except OSError as exc:
            raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None
        self.parquet = magic == _PARQUET_MAGIC
        if self.parquet:
            self._check_parquet_schema()

    def _pyarrow_parquet(self) -> Any:
        try:
            import pyarrow.parquet
        except ImportError:
            raise ExportError(
                f"{self.path} is Parquet, which needs pyarrow: pip install shadow-proxy[export]"
                " (or export JSON lines: shadow-proxy capture export --format jsonl)"
            ) from None
        return pyarrow.parquet

    def _check_parquet_schema(self) -> None:
        parquet = self._pyarrow_parquet()
        try:
            names = set(parquet.read_schema(self.path).names)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ExportError(f"cannot read {self.path} as Parquet: {exc}") from None
        missing = [name for name in _READ if name not in names]
        if missing:
            raise ExportError(
                f"{self.path}: no column {', '.join(map(repr, missing))} (is it a capture export?)"
            )

    def rows(self, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, row) for every row: `where` names it in an error ("line 3", "row 3")."""
        return self._parquet_rows(columns) if self.parquet else self._json_rows()

    def _json_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            with open(self.path, "rb") as file:
                for number, line in enumerate(file, 1):
                    if not line.strip():
                        continue
                    where = f"line {number}"
                    try:
                        row = json.loads(line.strip())
                    except json.JSONDecodeError as exc:
                        raise ExportError(
                            f"{self.path}: {where}: not JSON ({exc.msg}, at column {exc.colno});"
                            " an export is JSON lines or Parquet"
                        ) from None
                    except RecursionError:
                        raise ExportError(
                            f"{self.path}: {where}: JSON nested too deeply to read"
                        ) from None
                    except ValueError as exc:  # not UTF-8
                        raise ExportError(f"{self.path}: {where}: not JSON ({exc})") from None
                    if not isinstance(row, dict):
                        raise ExportError(f"{self.path}: {where}: not a JSON object")
                    yield where, row
        except OSError as exc:
            raise ExportError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def _parquet_rows(self, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        parquet = self._pyarrow_parquet()
        number = 0
        try:
            for batch in parquet.ParquetFile(self.path).iter_batches(
                batch_size=1024, columns=list(columns)
            ):
                for row in batch.to_pylist():
                    number += 1
                    yield f"row {number}", row
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read {self.path} as Parquet: {exc}") from None


@dataclass(slots=True)
class Plan:
    """What the first pass over the export found: the requests to replay, per route (in the
    config's order), and what is left out. A request is one request_id: rows of several shadows
    of one request share it, and it is replayed once."""

    rows: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # per route name
    unknown: Counter[str] = field(default_factory=Counter)  # rows of routes not in the config
    not_asked: int = 0  # rows left out by --route or --shadow
    truncated: int = 0  # requests whose body the capture cut: not replayed
    shadows: set[str] = field(default_factory=set)  # the export's shadows, for messages
    labels: dict[str, str] = field(default_factory=dict)  # request_id -> the label's JSON
    routes: frozenset[str] = frozenset()  # the routes asked for (all the config's by default)
    shadow: str | None = None  # the captured shadow asked for; None: any

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def chosen(self, route: str, shadow: str) -> bool:
        """Whether a row of `route` and captured `shadow` is one to replay."""
        return route in self.routes and (self.shadow is None or shadow == self.shadow)


def plan(
    export: Export, config: Config, route: str | None = None, shadow: str | None = None
) -> Plan:
    """The first pass: which requests to replay. `route` and `shadow` keep only the rows of
    that route (a name of the config's) or of that captured shadow."""
    names = [r.name for r in config.routes if route is None or r.name == route]
    found = Plan(requests=dict.fromkeys(names, 0), routes=frozenset(names), shadow=shadow)
    known = {r.name for r in config.routes}
    seen: set[str] = set()
    path = export.path
    for where, row in export.rows(_PLANNED):
        found.rows += 1
        request_id = _check(path, where, row, "request_id")
        route_name = _check(path, where, row, "route")
        shadow_name = _check(path, where, row, "shadow")
        found.shadows.add(shadow_name)
        label = _check(path, where, row, "label")
        if label is not None and request_id not in found.labels:
            found.labels[request_id] = label  # the request's: the same on each of its rows
        if route_name not in known:
            found.unknown[route_name] += 1
            continue
        if not found.chosen(route_name, shadow_name):
            found.not_asked += 1
            continue
        if request_id in seen:
            continue
        seen.add(request_id)
        if _check(path, where, row, "request_truncated"):
            found.truncated += 1
        else:
            found.requests[route_name] += 1
    found.requests = {name: count for name, count in found.requests.items() if count}
    return found


def _captured(path: str, where: str, row: dict[str, Any], label: str | None) -> Captured:
    def get(name: str) -> Any:
        return _check(path, where, row, name)

    method = get("method")
    if _TOKEN.fullmatch(method) is None:
        raise ExportError(f"{path}: {where}: column 'method' is not an HTTP method: {method!r:.60}")
    headers = _json_text(path, where, "request_headers", get("request_headers"))
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ExportError(f"{path}: {where}: request_headers is not a JSON object of strings")
    for name, value in headers.items():
        # Sent as they are: a CR or LF would end the header early (aiohttp refuses it).
        if _TOKEN.fullmatch(name) is None:
            raise ExportError(
                f"{path}: {where}: request_headers: {name!r:.60} is not an HTTP header name"
            )
        if _CONTROL.search(value) is not None:
            raise ExportError(
                f"{path}: {where}: request_headers: the value of {name!r:.60} holds a control"
                " character (CR, LF, ...)"
            )
    target = get("path")
    if _NOT_IN_TARGET.search(target) is not None:
        raise ExportError(
            f"{path}: {where}: column 'path' is not a request path (it holds a space or a"
            f" control character): {target!r:.60}"
        )
    # The query is what follows the first '?' of the path as sent (not urlsplit's: it reads a
    # path starting '//' as a host, and refuses '//[x').
    query = target.partition("#")[0].partition("?")[2]
    production_body = get("production_body")
    if production_body is not None:
        _utf8(path, where, "production_body", production_body)  # read when it is compared
    predictions = get("production_predictions")
    if predictions is not None:
        predictions = _json_text(path, where, "production_predictions", predictions)
        if predictions is not None and not isinstance(predictions, list):
            raise ExportError(f"{path}: {where}: production_predictions is not a JSON list")
    captured = Captured(
        request_id=get("request_id"),
        route=get("route"),
        method=method,
        query=query,
        headers=tuple((name.lower(), value) for name, value in headers.items()),
        # surrogateescape: a body whose bytes were not UTF-8 goes back as they were, when the
        # capture kept them so (else as it escaped them)
        body=_utf8(path, where, "request_body", get("request_body")),
        production_status=get("production_status"),
        production_body=production_body,
        production_ms=get("production_ms"),
        production_predictions=predictions,
        captured_at=get("captured_at"),
        where=f"{path}: {where}",
    )
    if label is not None:
        value = _json_text(path, where, "label", label)
        if value is not None:
            captured.labelled, captured.label = True, value
            captured.labelled_at = get("labelled_at")
    return captured


def requests_of(export: Export, found: Plan) -> Iterator[Captured]:
    """The second pass: each request of the plan, once, from its first row, in file order."""
    seen: set[str] = set()
    path = export.path
    for where, row in export.rows(_READ):
        request_id = _check(path, where, row, "request_id")
        route, shadow = _check(path, where, row, "route"), _check(path, where, row, "shadow")
        if not found.chosen(route, shadow) or request_id in seen:
            continue
        seen.add(request_id)
        if not _check(path, where, row, "request_truncated"):
            yield _captured(path, where, row, found.labels.get(request_id))

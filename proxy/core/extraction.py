"""Extraction: find the per-instance predictions in a model server's answer, per protocol.

Owns the wire layout of each supported protocol's *answer* (KServe v1, Open Inference v2, MLflow,
TF Serving, a custom JSON path). Pure: no I/O, no asyncio, no metrics; bodies in, lists out.
"""

from __future__ import annotations

import enum
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ExtractionError", "Extractor", "Protocol", "decoded"]


class Protocol(enum.Enum):
    """The answer layout a model server speaks."""

    KSERVE_V1 = "kserve-v1"
    OPEN_INFERENCE_V2 = "open-inference-v2"
    MLFLOW = "mlflow"
    TFSERVING = "tfserving"
    CUSTOM = "custom"


class ExtractionError(ValueError):
    """The body holds no predictions where the protocol says they are."""


def decoded(body: bytes, content_encoding: str | None, limit: int | None = None) -> bytes:
    """`body` with a gzip or deflate content-encoding undone; ExtractionError for another one,
    and, with `limit`, for a body that decodes to more than `limit` bytes (found having decoded
    at most one byte more: a few kilobytes of gzip can decode to gigabytes).

    >>> decoded(gzip.compress(b'{"predictions": [1]}'), "gzip")
    b'{"predictions": [1]}'
    """
    encoding = (content_encoding or "identity").lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ExtractionError(f"unsupported content-encoding {encoding!r}")
    inflater = zlib.decompressobj(wbits=47)  # 47: gzip or zlib, detected
    try:
        data = inflater.decompress(body, 0 if limit is None else limit + 1)
    except zlib.error as exc:
        raise ExtractionError(f"cannot decode {encoding} body: {exc}") from exc
    if limit is not None and len(data) > limit:
        raise ExtractionError(f"{encoding} body decodes to more than {limit} bytes")
    if not inflater.eof:
        raise ExtractionError(f"cannot decode {encoding} body: incomplete or truncated stream")
    return data


def decoded_answer(
    headers: Sequence[tuple[bytes, bytes]], body: bytes, limit: int | None = None
) -> bytes:
    """An answer's body as `decoded` undoes its Content-Encoding header, if it has one."""
    for name, value in headers:
        if name.lower() == b"content-encoding":
            return decoded(body, value.decode("latin-1").strip(), limit)
    return body


@dataclass(frozen=True, slots=True)
class Extractor:
    """Finds the per-instance predictions in one protocol's answer.

    ``output`` names the Open Inference v2 output, or the TF Serving / MLflow column (or row
    key) to read; when unset, the first output or the only column is taken.
    ``path`` is the custom protocol's path, already split (list indexes are digit strings).

        >>> Extractor(Protocol.KSERVE_V1).extract(b'{"predictions": [1, 0]}')
        [1, 0]
        >>> Extractor(Protocol.CUSTOM, path=("result", "0")).extract(b'{"result": [{"y": 2}]}')
        [{'y': 2}]
    """

    protocol: Protocol
    output: str | None = None
    path: tuple[str, ...] = ()

    def extract(self, body: bytes) -> list[Any]:
        """Parse ``body`` and return one item per instance of the batch."""
        try:
            doc = orjson.loads(body)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ExtractionError(f"body is not JSON: {exc}") from exc
        return self.extract_parsed(doc)

    def extract_parsed(self, doc: Any) -> list[Any]:
        """Return one item per instance from an already-parsed JSON document."""
        try:
            match self.protocol:
                case Protocol.KSERVE_V1:
                    return _list_at(doc, "predictions")
                case Protocol.OPEN_INFERENCE_V2:
                    return self._open_inference_v2(doc)
                case Protocol.MLFLOW:
                    return self._mlflow(doc)
                case Protocol.TFSERVING:
                    return self._tfserving(doc)
                case Protocol.CUSTOM:
                    return self._custom(doc)
        except ExtractionError:
            raise
        # The checks above should leave nothing else to raise; this net keeps the promise that
        # a malformed body can only ever surface as ExtractionError.
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise ExtractionError(f"malformed {self.protocol.value} answer: {exc}") from exc
        raise AssertionError(f"unhandled protocol {self.protocol!r}")  # pragma: no cover

    def _open_inference_v2(self, doc: Any) -> list[Any]:
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
        if not isinstance(outputs, list) or not outputs:
            raise ExtractionError("no 'outputs' list")
        if self.output is None:
            chosen = outputs[0]
        else:
            for candidate in outputs:
                if isinstance(candidate, dict) and candidate.get("name") == self.output:
                    chosen = candidate
                    break
            else:
                names = [o.get("name") for o in outputs if isinstance(o, dict)]
                raise ExtractionError(f"output {self.output!r} not among outputs {names}")
        if not isinstance(chosen, dict):
            raise ExtractionError(f"output is {_json_type(chosen)}, not an object")
        data = chosen.get("data")
        if not isinstance(data, list):
            raise ExtractionError(f"output {chosen.get('name')!r} has no 'data' list")
        if any(isinstance(value, list) for value in data):
            # The spec says row-major flat, but some servers send nested rows: flatten so that
            # `shape` alone decides the layout.
            data = _flatten(data)
        shape = chosen.get("shape")
        if shape is None:
            return list(data)
        return _reshape(data, _valid_shape(shape))

    def _mlflow(self, doc: Any) -> list[Any]:
        # Older MLflow scoring servers answer with a bare list instead of {"predictions": ...}.
        predictions = doc if isinstance(doc, list) else _value_at(doc, "predictions")
        if isinstance(predictions, dict):
            return _list_in_column(predictions, self.output, "columns")
        if not isinstance(predictions, list):
            raise ExtractionError(f"'predictions' is {_json_type(predictions)}, not an array")
        if predictions and isinstance(predictions[0], dict):
            return _pick_from_rows(predictions, self.output)
        return list(predictions)

    def _tfserving(self, doc: Any) -> list[Any]:
        if isinstance(doc, dict) and "predictions" in doc:
            rows = _list_at(doc, "predictions")
            # Row format with several named outputs gives one object per instance.
            return rows if self.output is None else _pick_from_rows(rows, self.output)
        if not isinstance(doc, dict) or "outputs" not in doc:
            raise ExtractionError("no 'predictions' or 'outputs' key")
        outputs = doc["outputs"]
        if isinstance(outputs, dict):
            return _list_in_column(outputs, self.output, "outputs")
        if not isinstance(outputs, list):
            raise ExtractionError(f"'outputs' is {_json_type(outputs)}, not an array or object")
        return list(outputs)

    def _custom(self, doc: Any) -> list[Any]:
        value = doc
        for depth, segment in enumerate(self.path):
            where = ".".join(self.path[: depth + 1])
            if isinstance(value, dict):
                if segment not in value:
                    raise ExtractionError(f"path segment {segment!r} not found at {where!r}")
                value = value[segment]
            elif isinstance(value, list):
                if not (segment.isascii() and segment.isdigit()):
                    raise ExtractionError(
                        f"path segment {segment!r} at {where!r} is not an index into an array"
                    )
                index = int(segment)
                if index >= len(value):
                    raise ExtractionError(
                        f"path segment {segment!r} at {where!r} is out of range "
                        f"for an array of {len(value)}"
                    )
                value = value[index]
            else:
                raise ExtractionError(
                    f"path segment {segment!r} at {where!r} cannot index {_json_type(value)}"
                )
        return list(value) if isinstance(value, list) else [value]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _value_at(doc: Any, key: str) -> Any:
    if not isinstance(doc, dict):
        raise ExtractionError(f"body is {_json_type(doc)}, not an object")
    if key not in doc:
        raise ExtractionError(f"no {key!r} key")
    return doc[key]


def _list_at(doc: Any, key: str) -> list[Any]:
    value = _value_at(doc, key)
    if not isinstance(value, list):
        raise ExtractionError(f"{key!r} is {_json_type(value)}, not an array")
    return list(value)


def _list_in_column(columns: dict[str, Any], name: str | None, what: str) -> list[Any]:
    """Pick the named column, or the only one, from a columnar answer."""
    if name is None:
        if len(columns) != 1:
            raise ExtractionError(f"no output configured to choose among {what} {list(columns)}")
        ((name, values),) = columns.items()
    elif name in columns:
        values = columns[name]
    else:
        raise ExtractionError(f"output {name!r} not among {what} {list(columns)}")
    if not isinstance(values, list):
        raise ExtractionError(f"{name!r} is {_json_type(values)}, not an array")
    return list(values)


def _pick_from_rows(rows: list[Any], name: str | None) -> list[Any]:
    """Pick the named key, or the only one, from each row of a records-style answer."""
    first = rows[0] if rows else None
    if not isinstance(first, dict):
        raise ExtractionError(f"row 0 is {_json_type(first)}, not an object")
    if name is None:
        if len(first) != 1:
            raise ExtractionError(f"no output configured to choose among keys {list(first)}")
        (name,) = first
    picked = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or name not in row:
            raise ExtractionError(f"row {index} has no key {name!r}")
        picked.append(row[name])
    return picked


def _flatten(nested: list[Any]) -> list[Any]:
    # Iterative on purpose: JSON nests deeper than Python's default recursion limit.
    flat: list[Any] = []
    stack = [iter(nested)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _valid_shape(shape: Any) -> list[int]:
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ExtractionError(f"shape {shape!r} is not a list of sizes [N, ...]")
    return shape


def _reshape(data: list[Any], shape: list[int]) -> list[Any]:
    """Split flat row-major ``data`` into ``shape[0]`` instances of ``shape[1:]``."""
    needed = math.prod(shape)
    if needed != len(data):
        raise ExtractionError(f"data has {len(data)} values but shape {shape} needs {needed}")
    if needed == 0:
        # Refused rather than built: [10**9, 0] would otherwise allocate a billion empty rows.
        if shape[0] != 0:
            raise ExtractionError(f"shape {shape} has instances without values")
        return []
    if len(shape) > 1 and shape[-1] == 1:
        # [N, 1] is how servers send one label or score per row: make those scalars.
        shape = shape[:-1]
    rows: list[Any] = data
    # Innermost dimension first. With no zero sizes, every group count is at most len(data).
    for axis in range(len(shape) - 1, 0, -1):
        size, groups = shape[axis], math.prod(shape[:axis])
        rows = [rows[i * size : (i + 1) * size] for i in range(groups)]
    return list(rows)

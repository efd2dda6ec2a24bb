"""The export's schema: one row per captured exchange (a request, production's answer and one
shadow's), the same columns in JSON lines and in Parquet, the label joined. Written by
`shadow-proxy capture export`, read by `shadow-proxy replay`, pandas, DuckDB or Spark. Pure.

JSON values whose type varies from model to model (predictions, labels, the differing
instances) are JSON text, so that every column has one type: read them with json.loads, or
DuckDB's json functions.
"""

from __future__ import annotations

from typing import Final, Literal, TypedDict

__all__ = ["COLUMNS", "ExportRow"]


class ExportRow(TypedDict):
    request_id: str
    route: str  # the route's name
    shadow: str
    role: str  # the shadow's: candidate, or baseline
    kind: str  # the route's compare.kind: classification, regression, probabilities
    captured_at: float  # unix seconds, when the shadow's answer was compared
    result: str  # as shadowproxy_comparisons_total: agree, disagree, status_mismatch, ...
    method: str
    path: str  # the request's path and query as the client sent them
    request_headers: str  # JSON object, names lower-case, redacted
    request_body: str  # UTF-8 text (bytes that are not UTF-8 are escaped), redacted, capped
    request_truncated: bool  # the body was longer than capture.max_body and was cut
    production_status: int | None  # null: production gave no answer
    production_body: str | None
    production_ms: float | None
    shadow_status: int | None  # null: the shadow gave no answer
    shadow_body: str | None
    shadow_ms: float | None
    production_predictions: str | None  # JSON list, null when there were none to compare
    shadow_predictions: str | None
    instances: int | None  # instances compared
    disagreed: int | None  # of those, the ones that differ
    differing: str | None  # JSON list of the differing instances' indexes
    max_difference: float | None  # regression: the largest |shadow - production|
    label: str | None  # JSON: the label posted for the request, null until then
    labelled_at: float | None


Type = Literal["string", "bool", "int64", "float64"]

COLUMNS: Final[tuple[tuple[str, Type, bool], ...]] = (
    ("request_id", "string", False),
    ("route", "string", False),
    ("shadow", "string", False),
    ("role", "string", False),
    ("kind", "string", False),
    ("captured_at", "float64", False),
    ("result", "string", False),
    ("method", "string", False),
    ("path", "string", False),
    ("request_headers", "string", False),
    ("request_body", "string", False),
    ("request_truncated", "bool", False),
    ("production_status", "int64", True),
    ("production_body", "string", True),
    ("production_ms", "float64", True),
    ("shadow_status", "int64", True),
    ("shadow_body", "string", True),
    ("shadow_ms", "float64", True),
    ("production_predictions", "string", True),
    ("shadow_predictions", "string", True),
    ("instances", "int64", True),
    ("disagreed", "int64", True),
    ("differing", "string", True),
    ("max_difference", "float64", True),
    ("label", "string", True),
    ("labelled_at", "float64", True),
)
"""(name, type, nullable) of every column, in order: what the Parquet schema is built from."""

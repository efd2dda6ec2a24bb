"""YAML config -> frozen, typed, validated objects.

Owns: reading one YAML file, ``${VAR}`` substitution, validation, defaults, and the effective
config printed by ``check-config``. Must not touch: aiohttp, asyncio, DNS, or any I/O beyond
reading the file. Every error names file, line, key path and value, and all of them are
collected before raising, so one run of ``check-config`` shows everything that is wrong.

    >>> config = parse_config('''
    ... routes:
    ...   - match: /v1/models/iris:predict
    ...     protocol: kserve-v1
    ...     production: {name: iris-lr, url: "http://iris-lr:8080"}
    ... ''')
    >>> config.routes[0].production.timeout, config.max_body
    (30.0, 10485760)

Keys (durations: "2s", "500ms", "1.5s", "1m", "1h", "250us" or a bare number of seconds; sizes:
"10MiB", "512KiB", "1GiB", "10MB" (1000-based), "100B" or a bare number of bytes; fractions:
"30%", "12.5%" or a number 0..1; a null value means "use the default"):

=====================================  =====================  ======================================
key                                    default                meaning
=====================================  =====================  ======================================
listen                                 0.0.0.0:8080           host:port to serve on; "[::]:8080" for
                                                              IPv6; port 0 picks a free port
request_id_header                      X-Request-ID           header carrying the request id
max_body                               10MiB                  request body cap; larger -> 413
shadow_max_body                        1MiB                   request or production answer bodies
                                                              above this are not teed to shadows
shadow_strip_headers                   [Authorization,        headers removed from shadow copies
                                       Cookie]
shutdown_timeout                       10s                    time for in-flight production requests
                                                              on SIGTERM
shadow_drain_timeout                   5s                     time for shadow queues to drain on
                                                              SIGTERM
access_log                             false                  log one line per request
log_level                              info                   debug | info | warning | error
routes                                 (required)             non-empty list of routes
routes[].name                          the match string       metric label of the route
routes[].match                         (required)             path prefix, starts with "/"; the
                                                              longest matching prefix wins
routes[].methods                       any method             list of HTTP methods (upper-cased)
routes[].protocol                      (required)             kserve-v1 | open-inference-v2 |
                                                              mlflow | tfserving | custom
routes[].output                        none                   Open Inference v2 output name, or
                                                              TF Serving / MLflow column; not for
                                                              kserve-v1 or custom
routes[].prediction_path               (custom: required)     dot-separated path to the predictions,
                                                              e.g. result.scores; custom only
routes[].production.name               (required)             [A-Za-z0-9_.-], at most 64 chars
routes[].production.url                (required)             http(s) URL, no query or fragment; its
                                                              path replaces the matched prefix
routes[].production.timeout            30s                    total time per request
routes[].production.connect_timeout    1s                     time to connect
routes[].production.max_connections    256                    connection-pool size of this target
routes[].shadows                       none                   list of shadow targets
routes[].shadows[].name                (required)             as production.name; unique per route
                                                              and unlike production's
routes[].shadows[].url                 (required)             as production.url
routes[].shadows[].sample              100%                   share of requests teed to it
routes[].shadows[].timeout             5s                     total time per request
routes[].shadows[].connect_timeout     1s                     time to connect
routes[].shadows[].max_in_flight       16                     workers = connection-pool size
routes[].shadows[].max_queue           1000                   queued requests; full -> dropped
routes[].compare.kind                  classification         classification | regression |
                                                              probabilities
routes[].compare.tolerance             0.0                    absolute tolerance, >= 0; regression
routes[].compare.relative_tolerance    0.0                    relative tolerance, >= 0; regression
routes[].compare.distance              total_variation        total_variation | jensen_shannon;
                                                              probabilities
routes[].compare.classes               none                   the classes named by the class-mix
                                                              metric (probabilities: by index);
                                                              others count as "other"; without,
                                                              the first 20 seen; not regression
=====================================  =====================  ======================================

``${VAR}`` in any string value is replaced by the environment variable VAR (an error if unset),
``${VAR:-default}`` falls back to ``default`` when VAR is unset or empty, and ``$${`` writes a
literal ``${``. Substitution happens after YAML parsing, so a value cannot inject YAML; an unquoted
value that was substituted is then typed like a plain YAML scalar (``max_queue: ${Q}`` with
Q=500 is the integer 500).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson
import yaml

from proxy.core.comparison import OTHER_CLASS, Comparator, CompareKind, Distance, class_label
from proxy.core.extraction import Extractor, Protocol

__all__ = [
    "Config",
    "ConfigError",
    "LabelsConfig",
    "Route",
    "Shadow",
    "StoreConfig",
    "Target",
    "VerdictConfig",
    "config_hash",
    "config_to_dict",
    "config_warnings",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_fraction",
    "parse_size",
]


@dataclass(frozen=True, slots=True)
class Target:
    """The production upstream of a route.

    ``origin`` is ``scheme://host[:port]``; ``path`` is the URL path without a trailing slash,
    "" when the URL has none.
    """

    name: str
    url: str
    origin: str
    path: str
    timeout: float
    connect_timeout: float
    max_connections: int


@dataclass(frozen=True, slots=True)
class Shadow:
    """A shadow upstream: receives a ``sample`` share of a route's requests, answers unseen."""

    name: str
    url: str
    origin: str
    path: str
    sample: float
    timeout: float
    connect_timeout: float
    max_in_flight: int
    max_queue: int


@dataclass(frozen=True, slots=True)
class Route:
    """Requests whose path starts with ``match`` (and whose method is in ``methods``, if set)."""

    name: str
    match: str
    methods: frozenset[str] | None
    extractor: Extractor
    comparator: Comparator
    production: Target
    shadows: tuple[Shadow, ...]
    record: float = 0.0  # share of requests whose predictions are stored for labels
    classes: tuple[str, ...] | None = None  # class labels of the class-mix metric


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where recorded predictions wait for their labels: ``sqlite`` (embedded) or ``redis``."""

    backend: str = "sqlite"
    path: str = "shadow-proxy-predictions.db"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "shadowproxy:"
    ttl: float = 7 * 86400.0
    tombstone_ttl: float = 86400.0
    max_records: int = 1_000_000
    timeout: float = 1.0
    batch_size: int = 500
    flush_interval: float = 0.05
    queue: int = 10_000
    sweep_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class VerdictConfig:
    """How a shadow's verdict is reached, and how much history the report keeps."""

    alpha: float = 0.05
    min_labels: int = 100  # paired labelled instances before accuracy is judged
    min_requests: int = 100  # shadow requests before the guardrails judge
    max_error_rate: float = 0.01  # shadow errors (5xx, timeouts, connection errors)
    max_latency_ratio: float = 1.5  # shadow p99 over production p99
    max_disagreement: float | None = None  # judged on disagreement while labels are missing
    history_interval: float = 60.0
    history_points: int = 1440


@dataclass(frozen=True, slots=True)
class LabelsConfig:
    """The label endpoint, POST /labels."""

    token: str | None = None
    token_file: str | None = None  # where `token` was read from, when it was
    max_body: int = 1024**2
    max_batch: int = 1000


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin API (/admin/...): off without a token. `listen` None serves it on the main
    listener; an address of its own (like 127.0.0.1:9901) keeps it off the proxied port."""

    token: str | None = None
    token_file: str | None = None
    listen: tuple[str, int] | None = None

    @property
    def enabled(self) -> bool:
        return self.token is not None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Where /metrics is served: None on the main listener, else on an address of its own."""

    listen: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated config; ``routes`` are sorted longest match first.

    >>> config = load_config("configs/demo.yaml")  # doctest: +SKIP
    >>> config.routes[0].shadows[0].name  # doctest: +SKIP
    'demo-candidate'
    """

    source: str
    listen_host: str
    listen_port: int
    request_id_header: str
    max_body: int
    shadow_max_body: int
    shadow_strip_headers: tuple[str, ...]
    shutdown_timeout: float
    shadow_drain_timeout: float
    access_log: bool
    log_level: str
    routes: tuple[Route, ...]
    store: StoreConfig = StoreConfig()
    labels: LabelsConfig = LabelsConfig()
    verdict: VerdictConfig = VerdictConfig()
    admin: AdminConfig = AdminConfig()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def records(self) -> bool:
        """Whether any route records predictions, so that labels and the store are in use."""
        return any(route.record > 0 for route in self.routes)


class ConfigError(Exception):
    """One or more problems in a config; ``errors`` holds one "FILE:LINE: key.path: ..." each.

    >>> try:
    ...     parse_config("routes: []", source="proxy.yaml")
    ... except ConfigError as exc:
    ...     print(exc)
    proxy.yaml:1: routes: must be a non-empty list (got [])
    """

    errors: tuple[str, ...]

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[tuple[str, ...]]]:
        # The default reduce would pass the joined message back in as `errors`.
        return (ConfigError, (self.errors,))


# --- scalar parsers: public so the CLI and loadtest read units the same way -----------------

_DURATION_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(us|µs|ms|s|m|h|d)?\s*")
_DURATION_UNITS: Final = {
    "us": Decimal("0.000001"),
    "µs": Decimal("0.000001"),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    None: Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION_HINT: Final = "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us'"

_SIZE_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*", re.IGNORECASE)
_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_HINT: Final = "expected a size like '10MiB', '512KiB', '1GiB', '10MB' or '100B'"

_FRACTION_RE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(%?)\s*")
_FRACTION_HINT: Final = "expected a percentage like '30%' or a number between 0 and 1"


def parse_duration(value: object) -> float:
    """Seconds from "2s", "500ms", "1.5s", "1m", "1h", "7d", "250us" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{_DURATION_HINT}, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{_DURATION_HINT}; it must be finite")
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{_DURATION_HINT}, not {_kind(value)}")
    if value.strip().startswith("-"):
        raise ValueError("must not be negative")
    found = _DURATION_RE.fullmatch(value)
    if found is None:
        raise ValueError(_DURATION_HINT)
    # Decimal keeps "0.1s" and "100ms" the same float, which config_to_dict's round trip needs.
    return float(Decimal(found[1]) * _DURATION_UNITS[found[2]])


def parse_size(value: object) -> int:
    """Bytes from "10MiB", "512KiB", "1GiB", "10MB" (1000-based), "100B" or a bare integer."""
    if isinstance(value, bool):
        raise ValueError(f"{_SIZE_HINT}, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{_SIZE_HINT}, not {_kind(value)}")
    if value.strip().startswith("-"):
        raise ValueError("must not be negative")
    found = _SIZE_RE.fullmatch(value)
    if found is None or found[2].lower() not in _SIZE_UNITS:
        raise ValueError(_SIZE_HINT)
    size = Decimal(found[1]) * _SIZE_UNITS[found[2].lower()]
    if size != size.to_integral_value():
        raise ValueError("must be a whole number of bytes")
    return int(size)


def parse_fraction(value: object) -> float:
    """A share in [0, 1] from "30%", "12.5%" or a number such as 0.3."""
    if isinstance(value, bool):
        raise ValueError(f"{_FRACTION_HINT}, not a boolean")
    if isinstance(value, int | float):
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise ValueError("must be between 0 and 1 (or 0% and 100%)")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{_FRACTION_HINT}, not {_kind(value)}")
    if value.strip().startswith("-"):
        raise ValueError("must be between 0% and 100%")
    found = _FRACTION_RE.fullmatch(value)
    if found is None:
        raise ValueError(_FRACTION_HINT)
    number = Decimal(found[1])
    if found[2]:
        if number > 100:
            raise ValueError("must be between 0% and 100%")
        return float(number / 100)
    if number > 1:
        raise ValueError("must be between 0 and 1 (write '30%' for a percentage)")
    return float(number)


# --- formatting back to human units, for config_to_dict --------------------------------------


def _decimal_text(number: Decimal) -> str:
    return format(number.normalize(), "f")


def _format_duration(seconds: float) -> str:
    exact = Decimal(repr(seconds))
    if exact >= 86400 and exact % 86400 == 0:
        return f"{_decimal_text(exact / 86400)}d"
    if exact >= 3600 and exact % 3600 == 0:
        return f"{_decimal_text(exact / 3600)}h"
    if exact >= 60 and exact % 60 == 0:
        return f"{_decimal_text(exact / 60)}m"
    if exact >= 1 or exact == 0:
        return f"{_decimal_text(exact)}s"
    for unit, factor in (("ms", 1000), ("us", 1_000_000)):
        scaled = exact * factor
        if scaled == scaled.to_integral_value():
            return f"{_decimal_text(scaled)}{unit}"
    return f"{_decimal_text(exact)}s"


def _format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _format_fraction(share: float) -> str:
    return f"{_decimal_text(Decimal(repr(share)) * 100)}%"


# --- value checkers: each takes the (substituted) YAML value, returns it typed, or raises
# ValueError with a message that does not repeat the value (the error line adds "(got ...)").

_T = TypeVar("_T")
_E = TypeVar("_E", bound=Enum)

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_BEARER_RE: Final = re.compile(r"[-._~+/0-9A-Za-z]+=*")  # RFC 6750 b64token
_TARGET_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LISTEN_RE: Final = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]/]+)):([0-9]{1,5})")
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def _kind(value: object) -> str:
    kinds: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
    ]
    if value is None:
        return "null"
    for cls, name in kinds:
        if isinstance(value, cls):
            return name
    return f"a {type(value).__name__}"


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {_kind(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {_kind(value)}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, not {_kind(value)}")
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _tolerance(value: object) -> float:
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; take it as the number it plainly is.
        try:
            value = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, not {_kind(value)}")
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return float(value)


def _timeout(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


def _body_cap(value: object) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError("must be at least 1 byte")
    return size


def _choice(enum_type: type[_E]) -> Callable[[object], _E]:
    def check(value: object) -> _E:
        allowed = [member.value for member in enum_type]
        if isinstance(value, str):
            for member in enum_type:
                if member.value == value.lower():
                    return member
        raise ValueError(_one_of(value, allowed))

    return check


def _one_of(value: object, allowed: Sequence[str]) -> str:
    message = f"expected one of {', '.join(allowed)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), allowed, n=1)
        if close:
            message = f"{message} (did you mean {close[0]!r}?)"
    return message


def _log_level(value: object) -> str:
    if isinstance(value, str) and value.lower() in _LOG_LEVELS:
        return value.lower()
    raise ValueError(_one_of(value, _LOG_LEVELS))


def _header(value: object) -> str:
    name = _text(value)
    if _TOKEN_RE.fullmatch(name) is None:
        raise ValueError("not a valid HTTP header name")
    return name


def _method(value: object) -> str:
    name = _text(value)
    if _TOKEN_RE.fullmatch(name) is None:
        raise ValueError("not a valid HTTP method")
    return name.upper()


def _listen(value: object) -> tuple[str, int]:
    hint = "expected 'host:port', like '0.0.0.0:8080' or '[::]:8080'"
    if not isinstance(value, str):
        raise ValueError(f"{hint}, not {_kind(value)}")
    found = _LISTEN_RE.fullmatch(value)
    if found is None:
        raise ValueError(hint)
    port = int(found[3])
    if port > 65535:
        raise ValueError("port must be between 0 and 65535")
    return found[1] or found[2], port


def _match(value: object) -> str:
    prefix = _text(value)
    if not prefix.startswith("/"):
        raise ValueError("must be a path prefix starting with '/'")
    if any(ch.isspace() or ch in "?#" for ch in prefix):
        raise ValueError("must be a plain path: no whitespace, query or fragment")
    return prefix


def _target_name(value: object) -> str:
    name = _text(value)
    if _TARGET_NAME_RE.fullmatch(name) is None:
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.' and '-'")
    return name


def _prediction_path(value: object) -> tuple[str, ...]:
    segments = tuple(_text(value).split("."))
    if not all(segments):
        raise ValueError("expected dot-separated keys like 'result.scores'")
    return segments


@dataclass(frozen=True, slots=True)
class _Url:
    url: str
    origin: str
    path: str


def _url(value: object) -> _Url:
    url = _text(value)
    if any(ch.isspace() for ch in url):
        raise ValueError("URL must not contain whitespace")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("URL has no host")
    if "@" in parts.netloc:
        # The origin ends up in logs; credentials belong in headers, not in the config.
        raise ValueError("URL must not contain credentials")
    if port == 0:
        raise ValueError("URL port must be between 1 and 65535")
    if "?" in url or "#" in url:
        raise ValueError("upstream URL must not have a query or fragment")
    return _Url(url, f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/"))


# --- walking the YAML node tree alongside the constructed data --------------------------------

_STR_TAG: Final = "tag:yaml.org,2002:str"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_ENV_RE: Final = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_REF_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)

_TOP_KEYS: Final = (
    "listen",
    "request_id_header",
    "max_body",
    "shadow_max_body",
    "shadow_strip_headers",
    "shutdown_timeout",
    "shadow_drain_timeout",
    "access_log",
    "log_level",
    "routes",
    "store",
    "labels",
    "verdict",
    "admin",
    "metrics",
)
_ROUTE_KEYS: Final = (
    "name",
    "match",
    "methods",
    "protocol",
    "output",
    "prediction_path",
    "production",
    "shadows",
    "compare",
    "record",
)
_PRODUCTION_KEYS: Final = ("name", "url", "timeout", "connect_timeout", "max_connections")
_SHADOW_KEYS: Final = (
    "name",
    "url",
    "sample",
    "timeout",
    "connect_timeout",
    "max_in_flight",
    "max_queue",
)
_COMPARE_KEYS: Final = ("kind", "tolerance", "relative_tolerance", "distance", "classes")
_STORE_KEYS: Final = tuple(StoreConfig.__dataclass_fields__)
_LABELS_KEYS: Final = tuple(LabelsConfig.__dataclass_fields__)
_VERDICT_KEYS: Final = tuple(VerdictConfig.__dataclass_fields__)
_ADMIN_KEYS: Final = tuple(AdminConfig.__dataclass_fields__)
_METRICS_KEYS: Final = tuple(MetricsConfig.__dataclass_fields__)
_STORE_BACKENDS: Final = ("sqlite", "redis")
_OUTPUT_PROTOCOLS: Final = (Protocol.OPEN_INFERENCE_V2, Protocol.MLFLOW, Protocol.TFSERVING)


class _Invalid:
    """Marks a value whose error has already been recorded."""


_INVALID: Final = _Invalid()


@dataclass(frozen=True, slots=True)
class _Loc:
    """A constructed YAML value with the node it came from and its key path."""

    value: object
    node: yaml.Node
    path: str

    @property
    def line(self) -> int:
        return _line(self.node)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _child_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 200 else f"{shown[:197]}..."


class _Checker:
    """Collects errors while the validators walk the document; never stops at the first one."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env
        self._errors: list[tuple[int, str]] = []

    @property
    def errors(self) -> list[str]:
        # Sorted by line so the report reads top to bottom however the checks were ordered.
        return [message for _, message in sorted(self._errors, key=lambda item: item[0])]

    def mark(self) -> int:
        return len(self._errors)

    def add(self, line: int, path: str, message: str) -> None:
        self._errors.append((line, f"{self.source}:{line}: {path or '(top level)'}: {message}"))

    def bad(self, loc: _Loc, message: str, value: object) -> None:
        self.add(loc.line, loc.path, f"{message} (got {_show(value)})")

    def mapping(self, loc: _Loc, allowed: Sequence[str]) -> dict[str, _Loc] | None:
        if not (isinstance(loc.value, dict) and isinstance(loc.node, yaml.MappingNode)):
            self.bad(loc, f"expected a mapping, not {_kind(loc.value)}", loc.value)
            return None
        items: dict[str, _Loc] = {}
        # After construction the node holds merged (<<) pairs first; later pairs win, as in
        # the constructed dict.
        for key_node, value_node in loc.node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            path = _child_path(loc.path, str(key))
            if key_node.tag != _STR_TAG or key not in allowed:
                self.add(_line(key_node), path, _unknown_key(str(key), allowed))
                continue
            items[key] = _Loc(loc.value[key], value_node, path)
        return items

    def sequence(self, loc: _Loc) -> list[_Loc] | None:
        if not (isinstance(loc.value, list) and isinstance(loc.node, yaml.SequenceNode)):
            self.bad(loc, f"expected a list, not {_kind(loc.value)}", loc.value)
            return None
        return [
            _Loc(value, node, f"{loc.path}[{index}]")
            for index, (value, node) in enumerate(zip(loc.value, loc.node.value, strict=True))
        ]

    def convert(self, loc: _Loc, check: Callable[[object], _T], default: _T) -> _T:
        """``check`` the substituted value; on error, record it and return ``default``."""
        value = self.substitute(loc)
        if isinstance(value, _Invalid):
            return default
        try:
            return check(value)
        except ValueError as exc:
            self.bad(loc, str(exc), value)
            return default

    def optional(
        self, items: Mapping[str, _Loc], key: str, check: Callable[[object], _T], default: _T
    ) -> _T:
        loc = items.get(key)
        if loc is None or loc.value is None:
            return default
        return self.convert(loc, check, default)

    def required(
        self,
        parent: _Loc,
        items: Mapping[str, _Loc],
        key: str,
        check: Callable[[object], _T],
        placeholder: _T,
    ) -> _T:
        loc = self.present(parent, items, key)
        return placeholder if loc is None else self.convert(loc, check, placeholder)

    def present(self, parent: _Loc, items: Mapping[str, _Loc], key: str) -> _Loc | None:
        loc = items.get(key)
        if loc is None:
            self.add(parent.line, _child_path(parent.path, key), "required key missing")
            return None
        if loc.value is None:
            self.bad(loc, "required key has no value", None)
            return None
        return loc

    def list_of(self, loc: _Loc, check: Callable[[object], _T], placeholder: _T) -> tuple[_T, ...]:
        return tuple(self.convert(item, check, placeholder) for item in self.sequence(loc) or [])

    def substitute(self, loc: _Loc) -> object:
        raw = loc.value
        if not isinstance(raw, str) or "${" not in raw:
            return raw
        problems: list[str] = []
        replaced = False

        def replace(found: re.Match[str]) -> str:
            nonlocal replaced
            if found[0] == "$${":
                return "${"
            if found[1] is None:
                problems.append("unterminated '${' (write '$${' for a literal '${')")
                return found[0]
            ref = _ENV_REF_RE.fullmatch(found[1])
            if ref is None:
                problems.append(f"bad variable reference {found[0]!r}")
                return found[0]
            replaced = True
            name, default = ref[1], ref[2]
            value = self.env.get(name)
            if default is not None and not value:
                return default
            if value is None:
                problems.append(f"environment variable {name!r} is not set and has no default")
                return found[0]
            return value

        text = _ENV_RE.sub(replace, raw)
        for problem in problems:
            self.bad(loc, problem, raw)
        if problems:
            return _INVALID
        if replaced and isinstance(loc.node, yaml.ScalarNode) and loc.node.style is None:
            return _plain_scalar(text)
        return text


def _plain_scalar(text: str) -> object:
    """Type ``text`` as YAML would an unquoted scalar: scalars only, so nothing is injected."""
    loader = yaml.SafeLoader("")
    try:
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return loader.construct_object(yaml.ScalarNode(tag, text))
    finally:
        loader.dispose()


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    message = f"unknown key {key!r}"
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        message = f"{message} (did you mean {close[0]!r}?)"
    return f"{message}; allowed: {', '.join(allowed)}"


def _duplicate_keys(checker: _Checker, node: yaml.Node, path: str, seen: set[int]) -> None:
    """PyYAML keeps the last of duplicate keys silently; report them on the composed tree."""
    if id(node) in seen:  # an alias: already checked, and may be recursive
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            child = _child_path(path, str(key))
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                where = (key_node.tag, key_node.value)
                if where in first:
                    checker.add(
                        _line(key_node),
                        child,
                        f"duplicate key {key!r} (first on line {first[where]}; YAML would "
                        "silently keep only this one)",
                    )
                else:
                    first[where] = _line(key_node)
            _duplicate_keys(checker, value_node, child, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(checker, item, f"{path}[{index}]", seen)


# --- the schema --------------------------------------------------------------------------------

_NO_URL: Final = _Url("", "", "")


def _value_loc(loc: _Loc, key: str) -> _Loc | None:
    """The located value of ``key`` in a mapping already checked, without re-reporting."""
    if isinstance(loc.value, dict) and isinstance(loc.node, yaml.MappingNode):
        for key_node, value_node in reversed(loc.node.value):
            if key_node.tag == _STR_TAG and key_node.value == key:
                return _Loc(loc.value[key], value_node, _child_path(loc.path, key))
    return None


def _target(c: _Checker, loc: _Loc) -> Target | None:
    start = c.mark()
    items = c.mapping(loc, _PRODUCTION_KEYS)
    if items is None:
        return None
    url = c.required(loc, items, "url", _url, _NO_URL)
    target = Target(
        name=c.required(loc, items, "name", _target_name, ""),
        url=url.url,
        origin=url.origin,
        path=url.path,
        timeout=c.optional(items, "timeout", _timeout, 30.0),
        connect_timeout=c.optional(items, "connect_timeout", _timeout, 1.0),
        max_connections=c.optional(items, "max_connections", _count, 256),
    )
    return target if c.mark() == start else None


def _shadow(c: _Checker, loc: _Loc) -> Shadow | None:
    start = c.mark()
    items = c.mapping(loc, _SHADOW_KEYS)
    if items is None:
        return None
    url = c.required(loc, items, "url", _url, _NO_URL)
    shadow = Shadow(
        name=c.required(loc, items, "name", _target_name, ""),
        url=url.url,
        origin=url.origin,
        path=url.path,
        sample=c.optional(items, "sample", parse_fraction, 1.0),
        timeout=c.optional(items, "timeout", _timeout, 5.0),
        connect_timeout=c.optional(items, "connect_timeout", _timeout, 1.0),
        max_in_flight=c.optional(items, "max_in_flight", _count, 16),
        max_queue=c.optional(items, "max_queue", _count, 1000),
    )
    return shadow if c.mark() == start else None


def _comparator(c: _Checker, loc: _Loc | None) -> Comparator:
    if loc is None or loc.value is None:
        return Comparator(CompareKind.CLASSIFICATION)
    items = c.mapping(loc, _COMPARE_KEYS)
    if items is None:
        return Comparator(CompareKind.CLASSIFICATION)
    before = c.mark()
    kind = c.optional(items, "kind", _choice(CompareKind), CompareKind.CLASSIFICATION)
    kind_ok = c.mark() == before
    tolerance = c.optional(items, "tolerance", _tolerance, 0.0)
    relative = c.optional(items, "relative_tolerance", _tolerance, 0.0)
    distance = c.optional(items, "distance", _choice(Distance), Distance.TOTAL_VARIATION)
    # A tolerance on a classification route would be silently ignored: say so instead. Default
    # values stay allowed so config_to_dict can print every key for every kind.
    if kind_ok and kind is not CompareKind.REGRESSION:
        for key, value in (("tolerance", tolerance), ("relative_tolerance", relative)):
            if value != 0.0:
                c.bad(
                    items[key], f"only applies to kind 'regression' (kind is {kind.value!r})", value
                )
    if (
        kind_ok
        and kind is not CompareKind.PROBABILITIES
        and distance is not Distance.TOTAL_VARIATION
    ):
        c.bad(
            items["distance"],
            f"only applies to kind 'probabilities' (kind is {kind.value!r})",
            items["distance"].value,
        )
    return Comparator(kind, tolerance, relative, distance)


def _class_name(value: object) -> str:
    name = class_label(value)
    if name is None:
        raise ValueError(
            "expected a class: a string (1-100 characters), a finite number or a boolean"
        )
    if name == OTHER_CLASS:
        raise ValueError("'other' already names every class not listed; leave it out")
    return name


def _classes(c: _Checker, compare: _Loc | None, kind: CompareKind) -> tuple[str, ...] | None:
    """``compare.classes``: distinct class labels (1 and 1.0 are one), in order."""
    loc = None if compare is None else _value_loc(compare, "classes")
    if loc is None or loc.value is None:
        return None
    if kind is CompareKind.REGRESSION:
        message = (
            "only applies to kinds 'classification' and 'probabilities' (kind is 'regression')"
        )
        c.bad(loc, message, loc.value)
        return None
    if loc.value == []:
        c.bad(loc, "must not be empty; leave it out to name the first 20 classes seen", [])
        return None
    names: list[str] = []
    first: dict[str, int] = {}
    for index, item in enumerate(c.sequence(loc) or []):
        before = c.mark()
        name = c.convert(item, _class_name, "")
        if c.mark() > before:
            continue
        if name in first:
            c.bad(item, f"duplicate class {name!r} (also classes[{first[name]}])", item.value)
            continue
        first[name] = index
        names.append(name)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class _SeenMatch:
    index: int
    match: str
    methods: frozenset[str] | None

    def overlaps(self, match: str, methods: frozenset[str] | None) -> bool:
        if match != self.match:
            return False
        return self.methods is None or methods is None or bool(self.methods & methods)


class _RouteChecker:
    """Checks routes one by one, remembering what cross-route rules need."""

    def __init__(self, checker: _Checker) -> None:
        self.c = checker
        self.names: dict[str, int] = {}
        self.matches: list[_SeenMatch] = []

    def route(self, loc: _Loc, index: int) -> Route | None:
        c = self.c
        start = c.mark()
        items = c.mapping(loc, _ROUTE_KEYS)
        if items is None:
            return None

        before = c.mark()
        match = c.required(loc, items, "match", _match, "")
        methods = self.methods(items.get("methods"))
        if c.mark() == before:
            self.check_overlap(items["match"], index, match, methods)

        before = c.mark()
        name = c.optional(items, "name", _text, match)
        if c.mark() == before and match:
            self.check_name(items.get("name") or loc, index, name)

        before = c.mark()
        protocol = c.required(loc, items, "protocol", _choice(Protocol), Protocol.CUSTOM)
        protocol_ok = c.mark() == before
        output = c.optional(items, "output", _text, None)
        if protocol_ok and output is not None and protocol not in _OUTPUT_PROTOCOLS:
            c.bad(items["output"], f"not used by protocol {protocol.value!r}", output)
        path: tuple[str, ...] = ()
        path_loc = items.get("prediction_path")
        if protocol_ok and protocol is Protocol.CUSTOM:
            path = c.required(loc, items, "prediction_path", _prediction_path, ())
        elif protocol_ok and path_loc is not None and path_loc.value is not None:
            message = f"only allowed with protocol 'custom' (protocol is {protocol.value!r})"
            c.bad(path_loc, message, path_loc.value)

        production_loc = c.present(loc, items, "production")
        production = None if production_loc is None else _target(c, production_loc)
        shadows = self.shadows(items.get("shadows"), production)
        comparator = _comparator(c, items.get("compare"))
        classes = _classes(c, items.get("compare"), comparator.kind)
        record = c.optional(items, "record", parse_fraction, 0.0)
        if c.mark() > start or production is None:
            return None
        return Route(
            name=name,
            match=match,
            methods=methods,
            extractor=Extractor(protocol, output, path),
            comparator=comparator,
            production=production,
            shadows=shadows,
            record=record,
            classes=classes,
        )

    def methods(self, loc: _Loc | None) -> frozenset[str] | None:
        if loc is None or loc.value is None:
            return None
        if loc.value == []:
            self.c.bad(loc, "must not be empty; leave it out to allow any method", [])
            return None
        return frozenset(self.c.list_of(loc, _method, ""))

    def check_overlap(
        self, loc: _Loc, index: int, match: str, methods: frozenset[str] | None
    ) -> None:
        for seen in self.matches:
            if seen.overlaps(match, methods):
                message = f"same match and overlapping methods as routes[{seen.index}]"
                self.c.bad(loc, message, match)
                break
        self.matches.append(_SeenMatch(index, match, methods))

    def check_name(self, loc: _Loc, index: int, name: str) -> None:
        if name in self.names:
            message = (
                f"duplicate route name {name!r} (also routes[{self.names[name]}]); routes "
                "sharing a match need distinct names"
            )
            self.c.add(loc.line, f"routes[{index}].name", message)
        else:
            self.names[name] = index

    def shadows(self, loc: _Loc | None, production: Target | None) -> tuple[Shadow, ...]:
        if loc is None or loc.value is None:
            return ()
        shadows: list[Shadow] = []
        first: dict[str, int] = {}
        for index, shadow_loc in enumerate(self.c.sequence(loc) or []):
            shadow = _shadow(self.c, shadow_loc)
            if shadow is None:
                continue
            name_loc = _value_loc(shadow_loc, "name") or shadow_loc
            if shadow.name in first:
                message = f"duplicate shadow name (also shadows[{first[shadow.name]}])"
                self.c.bad(name_loc, message, shadow.name)
            elif production is not None and shadow.name == production.name:
                self.c.bad(name_loc, "same name as the production target", shadow.name)
            first.setdefault(shadow.name, index)
            shadows.append(shadow)
        return tuple(shadows)


def _redis_url(value: object) -> str:
    text = _text(value)
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a URL like 'redis://host:6379/0', 'rediss://…' or 'unix://…'")
    return text


def _store_backend(value: object) -> str:
    if isinstance(value, str) and value.lower() in _STORE_BACKENDS:
        return value.lower()
    raise ValueError(_one_of(value, _STORE_BACKENDS))


def _store(c: _Checker, loc: _Loc | None) -> StoreConfig:
    default = StoreConfig()
    items = _section(c, loc, _STORE_KEYS)
    if items is None:
        return default
    return StoreConfig(
        backend=c.optional(items, "backend", _store_backend, "sqlite"),
        path=c.optional(items, "path", _text, default.path),
        url=c.optional(items, "url", _redis_url, default.url),
        prefix=c.optional(items, "prefix", _text, default.prefix),
        ttl=c.optional(items, "ttl", _timeout, default.ttl),
        tombstone_ttl=c.optional(items, "tombstone_ttl", _timeout, default.tombstone_ttl),
        max_records=c.optional(items, "max_records", _count, default.max_records),
        timeout=c.optional(items, "timeout", _timeout, default.timeout),
        batch_size=c.optional(items, "batch_size", _count, default.batch_size),
        flush_interval=c.optional(items, "flush_interval", _timeout, default.flush_interval),
        queue=c.optional(items, "queue", _count, default.queue),
        sweep_interval=c.optional(items, "sweep_interval", _timeout, default.sweep_interval),
    )


def _section(c: _Checker, loc: _Loc | None, keys: Sequence[str]) -> dict[str, _Loc] | None:
    """A top-level section's items; None when it is absent, null, or not a mapping (recorded)."""
    if loc is None or loc.value is None:
        return None
    return c.mapping(loc, keys)


def _inline_token(c: _Checker, loc: _Loc | None) -> str | None:
    """`token`, checked without ever showing its value in an error: errors reach logs."""
    if loc is None or loc.value is None:
        return None
    value = c.substitute(loc)
    if isinstance(value, _Invalid) or value is None:  # None: the whole value was ${VAR:-}
        return None
    if not isinstance(value, str):
        c.add(loc.line, loc.path, f"expected a string, not {_kind(value)} (value not shown)")
        return None
    value = value.strip()  # a token from an env var often ends in a newline
    if value and _BEARER_RE.fullmatch(value) is None:
        message = "must be one bearer token: letters, digits and -._~+/ (value not shown)"
        c.add(loc.line, loc.path, message)
        return None
    return value


def _secret(c: _Checker, items: Mapping[str, _Loc]) -> tuple[str | None, str | None]:
    """(token, token_file) from `token` (often ``${VAR}``) or `token_file` (a mounted secret,
    read now: a reload re-reads it, which is how a token is rotated)."""
    token = _inline_token(c, items.get("token"))
    file_loc = items.get("token_file")
    if file_loc is None or file_loc.value is None:
        # An empty token (an unset ${VAR:-}) means no token, not a token that is "".
        return token or None, None
    path = c.convert(file_loc, _text, "")
    if not path:
        return None, None
    if token:
        c.bad(file_loc, "set token or token_file, not both", path)
        return None, None
    # Relative to the config file, as Prometheus reads paths in its config.
    where = Path(c.source).parent / path if c.source != "<string>" else Path(path)
    try:
        secret = where.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        c.bad(file_loc, f"cannot read the token file: {reason or exc}", path)
        return None, None
    if _BEARER_RE.fullmatch(secret) is None:
        c.bad(file_loc, "the token file must hold one token (letters, digits, -._~+/)", path)
        return None, None
    return secret, path


def _labels(c: _Checker, loc: _Loc | None) -> LabelsConfig:
    default = LabelsConfig()
    items = _section(c, loc, _LABELS_KEYS)
    if items is None:
        return default
    token, token_file = _secret(c, items)
    return LabelsConfig(
        token=token,
        token_file=token_file,
        max_body=c.optional(items, "max_body", _body_cap, default.max_body),
        max_batch=c.optional(items, "max_batch", _count, default.max_batch),
    )


def _admin(c: _Checker, loc: _Loc | None) -> AdminConfig:
    items = _section(c, loc, _ADMIN_KEYS)
    if items is None:
        return AdminConfig()
    token, token_file = _secret(c, items)
    listen: tuple[str, int] | None = c.optional(items, "listen", _listen, None)
    return AdminConfig(token=token, token_file=token_file, listen=listen)


def _metrics(c: _Checker, loc: _Loc | None) -> MetricsConfig:
    items = _section(c, loc, _METRICS_KEYS)
    if items is None:
        return MetricsConfig()
    listen: tuple[str, int] | None = c.optional(items, "listen", _listen, None)
    return MetricsConfig(listen=listen)


def _alpha(value: object) -> float:
    alpha = parse_fraction(value)
    if not 0 < alpha < 0.5:
        raise ValueError("must be between 0 and 0.5, like 0.05 or '5%'")
    return alpha


def _ratio(value: object) -> float:
    ratio = _tolerance(value)
    if ratio < 1:
        raise ValueError("must be at least 1 (a multiple of production's p99)")
    return ratio


def _verdict(c: _Checker, loc: _Loc | None) -> VerdictConfig:
    default = VerdictConfig()
    items = _section(c, loc, _VERDICT_KEYS)
    if items is None:
        return default
    return VerdictConfig(
        alpha=c.optional(items, "alpha", _alpha, default.alpha),
        min_labels=c.optional(items, "min_labels", _count, default.min_labels),
        min_requests=c.optional(items, "min_requests", _count, default.min_requests),
        max_error_rate=c.optional(items, "max_error_rate", parse_fraction, default.max_error_rate),
        max_latency_ratio=c.optional(items, "max_latency_ratio", _ratio, default.max_latency_ratio),
        max_disagreement=c.optional(items, "max_disagreement", parse_fraction, None),
        history_interval=c.optional(items, "history_interval", _timeout, default.history_interval),
        history_points=c.optional(items, "history_points", _count, default.history_points),
    )


def _config(c: _Checker, root: _Loc) -> Config | None:
    items = c.mapping(root, _TOP_KEYS)
    if items is None:
        return None
    host, port = c.optional(items, "listen", _listen, ("0.0.0.0", 8080))
    strip_loc = items.get("shadow_strip_headers")
    strip: tuple[str, ...] = ("Authorization", "Cookie")
    if strip_loc is not None and strip_loc.value is not None:
        strip = c.list_of(strip_loc, _header, "")

    routes: list[Route] = []
    routes_loc = c.present(root, items, "routes")
    if routes_loc is not None:
        if routes_loc.value == []:
            c.bad(routes_loc, "must be a non-empty list", [])
        checker = _RouteChecker(c)
        for index, route_loc in enumerate(c.sequence(routes_loc) or []):
            route = checker.route(route_loc, index)
            if route is not None:
                routes.append(route)

    config = Config(
        source=c.source,
        listen_host=host,
        listen_port=port,
        request_id_header=c.optional(items, "request_id_header", _header, "X-Request-ID"),
        max_body=c.optional(items, "max_body", _body_cap, 10 * 1024**2),
        shadow_max_body=c.optional(items, "shadow_max_body", parse_size, 1024**2),
        shadow_strip_headers=strip,
        shutdown_timeout=c.optional(items, "shutdown_timeout", _timeout, 10.0),
        shadow_drain_timeout=c.optional(items, "shadow_drain_timeout", _timeout, 5.0),
        access_log=c.optional(items, "access_log", _boolean, False),
        log_level=c.optional(items, "log_level", _log_level, "info"),
        # Stable: routes with equally long matches keep file order.
        routes=tuple(sorted(routes, key=lambda route: -len(route.match))),
        store=_store(c, items.get("store")),
        labels=_labels(c, items.get("labels")),
        verdict=_verdict(c, items.get("verdict")),
        admin=_admin(c, items.get("admin")),
        metrics=_metrics(c, items.get("metrics")),
    )
    _check_listeners(c, items, config)
    return None if c.errors else config


_WILDCARDS: Final = {"0.0.0.0", "::", ""}  # addresses that take a port on every interface


def _check_listeners(c: _Checker, items: Mapping[str, _Loc], config: Config) -> None:
    """The admin and metrics listeners need addresses of their own (port 0 picks one)."""
    taken = {(config.listen_host, config.listen_port): "listen"}
    for key, listen in (("admin", config.admin.listen), ("metrics", config.metrics.listen)):
        if listen is None or listen[1] == 0:
            continue
        clash = taken.get(listen) or next(
            (k for (h, p), k in taken.items() if p == listen[1] and _WILDCARDS & {h, listen[0]}),
            None,
        )
        if clash is not None:
            loc = items[key]
            c.add(
                loc.line,
                f"{key}.listen",
                f"same address as {clash} (got {_show(_listen_text(*listen))})",
            )
        taken[listen] = f"{key}.listen"


def _syntax_error(source: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line = int(mark.line) + 1
    else:  # ReaderError (a non-printable character) has only an offset
        line = text.count("\n", 0, int(getattr(exc, "position", 0))) + 1
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context:
        problem = f"{context}, {problem}"
    return ConfigError([f"{source}:{line}: invalid YAML: {problem}"])


def parse_config(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> Config:
    """Validate YAML ``text``; ``source`` names it in errors, ``env`` feeds ``${VAR}``.

    Raises ConfigError listing every problem found.
    """
    checker = _Checker(source, os.environ if env is None else env)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([f"{source}:1: config is empty"])
        # Before construction: constructing flattens merge keys into the node in place.
        _duplicate_keys(checker, node, "", set())
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _syntax_error(source, text, exc) from None
    finally:
        loader.dispose()
    config = _config(checker, _Loc(data, node, ""))
    if config is None:
        raise ConfigError(checker.errors)
    return config


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML file at ``path``; see parse_config."""
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: config is not UTF-8: {exc.reason}"]) from None
    return parse_config(text, source, env)


def _escape(value: Any) -> Any:
    # A literal "${" in the effective config came from "$${"; escape it again so the output
    # parses back to the same config.
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, list):
        return [_escape(item) for item in value]
    if isinstance(value, dict):
        return {key: _escape(item) for key, item in value.items()}
    return value


def _listen_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


REDACTED: Final = "<redacted>"

RESERVED_PATHS: Final = (
    "/metrics", "/healthz", "/readyz", "/labels", "/report", "/report.html", "/admin",
)  # fmt: skip
"""The proxy's own endpoints (and everything under /admin/); they take precedence over routes."""


def config_to_dict(config: Config, *, redact: bool = False) -> dict[str, Any]:
    """The effective config as plain data, every default filled in, in the YAML's own units.

    ``parse_config(yaml.safe_dump(config_to_dict(c)))`` equals ``c`` but for ``source``.
    With ``redact``, secrets (the label and admin tokens) read "<redacted>": for printing, not
    parsing. A token read from a file shows as its ``token_file``.
    """
    routes = []
    for route in config.routes:
        production = route.production
        routes.append(
            {
                "name": route.name,
                "match": route.match,
                "methods": None if route.methods is None else sorted(route.methods),
                "protocol": route.extractor.protocol.value,
                "output": route.extractor.output,
                "prediction_path": ".".join(route.extractor.path) or None,
                "production": {
                    "name": production.name,
                    "url": production.url,
                    "timeout": _format_duration(production.timeout),
                    "connect_timeout": _format_duration(production.connect_timeout),
                    "max_connections": production.max_connections,
                },
                "shadows": [
                    {
                        "name": shadow.name,
                        "url": shadow.url,
                        "sample": _format_fraction(shadow.sample),
                        "timeout": _format_duration(shadow.timeout),
                        "connect_timeout": _format_duration(shadow.connect_timeout),
                        "max_in_flight": shadow.max_in_flight,
                        "max_queue": shadow.max_queue,
                    }
                    for shadow in route.shadows
                ],
                "compare": {
                    "kind": route.comparator.kind.value,
                    "tolerance": route.comparator.tolerance,
                    "relative_tolerance": route.comparator.relative_tolerance,
                    "distance": route.comparator.distance.value,
                    "classes": None if route.classes is None else list(route.classes),
                },
                "record": _format_fraction(route.record),
            }
        )
    store = config.store
    result: dict[str, Any] = _escape(
        {
            "listen": _listen_text(config.listen_host, config.listen_port),
            "request_id_header": config.request_id_header,
            "max_body": _format_size(config.max_body),
            "shadow_max_body": _format_size(config.shadow_max_body),
            "shadow_strip_headers": list(config.shadow_strip_headers),
            "shutdown_timeout": _format_duration(config.shutdown_timeout),
            "shadow_drain_timeout": _format_duration(config.shadow_drain_timeout),
            "access_log": config.access_log,
            "log_level": config.log_level,
            "routes": routes,
            "store": {
                "backend": store.backend,
                "path": store.path,
                "url": _redact_url(store.url) if redact else store.url,
                "prefix": store.prefix,
                "ttl": _format_duration(store.ttl),
                "tombstone_ttl": _format_duration(store.tombstone_ttl),
                "max_records": store.max_records,
                "timeout": _format_duration(store.timeout),
                "batch_size": store.batch_size,
                "flush_interval": _format_duration(store.flush_interval),
                "queue": store.queue,
                "sweep_interval": _format_duration(store.sweep_interval),
            },
            "verdict": {
                "alpha": config.verdict.alpha,
                "min_labels": config.verdict.min_labels,
                "min_requests": config.verdict.min_requests,
                "max_error_rate": _format_fraction(config.verdict.max_error_rate),
                "max_latency_ratio": config.verdict.max_latency_ratio,
                "max_disagreement": None
                if config.verdict.max_disagreement is None
                else _format_fraction(config.verdict.max_disagreement),
                "history_interval": _format_duration(config.verdict.history_interval),
                "history_points": config.verdict.history_points,
            },
            "labels": {
                **_secret_dict(config.labels.token, config.labels.token_file, redact),
                "max_body": _format_size(config.labels.max_body),
                "max_batch": config.labels.max_batch,
            },
            "admin": {
                **_secret_dict(config.admin.token, config.admin.token_file, redact),
                "listen": listen_text(config.admin.listen),
            },
            "metrics": {"listen": listen_text(config.metrics.listen)},
        }
    )
    return result


def _redact_url(url: str) -> str:
    """A store URL with its password (user:password@, or ?password=) shown as <redacted>."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{key}={REDACTED}" if key.lower() == "password" else pair
        for pair in parts.query.split("&")
        if pair
        for key in [pair.partition("=")[0]]
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secret_dict(token: str | None, token_file: str | None, redact: bool) -> dict[str, Any]:
    if token_file is not None:  # the file is the source: a reload re-reads it
        return {"token_file": token_file}
    return {"token": REDACTED if redact and token else token}


def listen_text(listen: tuple[str, int] | None) -> str | None:
    """An address as the config writes it: host:port, [v6]:port; None stays None."""
    return None if listen is None else _listen_text(*listen)


def config_warnings(config: Config) -> list[str]:
    """What is valid but probably a mistake; `check-config` prints these, `run` logs them."""
    warnings = []
    loopback = config.listen_host in ("127.0.0.1", "::1", "localhost")
    if config.records and config.labels.token is None and not loopback:
        warnings.append(
            f"{config.source}: labels.token: POST /labels is exposed on "
            f"{_listen_text(config.listen_host, config.listen_port)} without a token; anyone who "
            "can reach the proxy can post labels (set labels.token, e.g. to ${LABEL_TOKEN})"
        )
    if config.admin.enabled and config.admin.listen is None and not loopback:
        warnings.append(
            f"{config.source}: admin.listen: the admin API is served on the proxied port "
            f"{_listen_text(config.listen_host, config.listen_port)}; give it a listener of its "
            "own on loopback or a management network, e.g. admin.listen: 127.0.0.1:9901"
        )
    for route in config.routes:
        if route.match in RESERVED_PATHS or route.match.startswith("/admin/"):
            warnings.append(
                f"{config.source}: routes[].match: {route.match} (route {route.name!r}) is the "
                "proxy's own endpoint; requests to it never reach the route"
            )
    if config.admin.listen is not None and not config.admin.enabled:
        warnings.append(
            f"{config.source}: admin.listen: the admin API is off without admin.token or "
            "admin.token_file: it answers 404 on "
            f"{_listen_text(*config.admin.listen)} until one is set"
        )
    return warnings


def config_hash(config: Config) -> str:
    """12 hex digits identifying the effective config (not its file name), for metrics and logs.
    Secrets are left out: the hash is public, and must not let anyone test guesses at a token."""
    canonical = orjson.dumps(config_to_dict(config, redact=True), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]

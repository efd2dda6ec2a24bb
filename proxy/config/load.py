"""The schema: the section loaders that turn a checked YAML document into a Config, and
parse_config / load_config.

Owns: which keys each section takes, their defaults and cross-key rules. Must not touch: I/O
beyond reading the config file and a token_file (and asyncio, aiohttp, prometheus_client, redis,
sqlite).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Final

import yaml

from proxy.capture.redaction import parse_path
from proxy.config.limits import MAX_CONFIG_BYTES, _BoundedLoader, too_big
from proxy.config.model import (
    AdminConfig,
    CaptureConfig,
    Config,
    ConfigError,
    LabelsConfig,
    MetricsConfig,
    Route,
    Shadow,
    StoreConfig,
    Target,
    VerdictConfig,
)
from proxy.config.units import (
    _BEARER_RE,
    _alpha,
    _batch,
    _body_cap,
    _boolean,
    _choice,
    _class_name,
    _connections,
    _count,
    _disk_cap,
    _effect_size,
    _header,
    _in_flight,
    _kind,
    _listen,
    _listen_text,
    _log_level,
    _match,
    _method,
    _points,
    _prediction_path,
    _prometheus_url,
    _queue,
    _records,
    _redis_url,
    _relative_tolerance,
    _store_backend,
    _target_name,
    _text,
    _timeout,
    _tolerance,
    _Url,
    _url,
    parse_fraction,
    parse_size,
)
from proxy.config.yamlcheck import (
    _Checker,
    _duplicate_keys,
    _Invalid,
    _Loc,
    _show,
    _syntax_error,
    _value_loc,
)
from proxy.core.comparison import MAX_INSTANCES, Comparator, CompareKind, Distance
from proxy.core.extraction import Extractor, Protocol
from proxy.core.segments import SegmentPath

_TOP_KEYS: Final = (
    "listen",
    "request_id_header",
    "max_body",
    "shadow_max_body",
    "shadow_max_response",
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
    "capture",
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
    "segment",
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
    "eject_after",
    "eject_for",
    "role",
)
_COMPARE_KEYS: Final = (
    "kind",
    "tolerance",
    "relative_tolerance",
    "distance",
    "classes",
    "max_instances",
)
_STORE_KEYS: Final = tuple(StoreConfig.__dataclass_fields__)
_LABELS_KEYS: Final = tuple(LabelsConfig.__dataclass_fields__)
_VERDICT_KEYS: Final = tuple(VerdictConfig.__dataclass_fields__)
_VERDICT_REPLACED: Final = ("max_latency_ratio",)  # refused with a message saying what replaced it
_ADMIN_KEYS: Final = tuple(AdminConfig.__dataclass_fields__)
_METRICS_KEYS: Final = tuple(MetricsConfig.__dataclass_fields__)
_CAPTURE_KEYS: Final = (
    "enabled", "path", "max_per_second", "agreements", "max_disk", "max_age", "max_body",
    "queue", "redact", "token", "token_file",
)  # fmt: skip
_REDACT_KEYS: Final = ("headers", "fields", "patterns")
_ROLES: Final = ("candidate", "baseline")
_SCHEMA: Final[Mapping[str, Sequence[str]]] = {
    "": _TOP_KEYS,
    "routes[]": _ROUTE_KEYS,
    "routes[].production": _PRODUCTION_KEYS,
    "routes[].shadows[]": _SHADOW_KEYS,
    "routes[].compare": _COMPARE_KEYS,
    "store": _STORE_KEYS,
    "labels": _LABELS_KEYS,
    "verdict": _VERDICT_KEYS,
    "admin": _ADMIN_KEYS,
    "metrics": _METRICS_KEYS,
    "capture": _CAPTURE_KEYS,
    "capture.redact": _REDACT_KEYS,
}
"""Every section by its path (a list's items as []), with the keys its loader below takes: an
unknown key found in another section is pointed there (`alpha` at the top: verdict.alpha)."""
_OUTPUT_PROTOCOLS: Final = (Protocol.OPEN_INFERENCE_V2, Protocol.MLFLOW, Protocol.TFSERVING)


# --- the schema --------------------------------------------------------------------------------

_NO_URL: Final = _Url("", "", "")


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
        max_connections=c.optional(items, "max_connections", _connections, 256),
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
        max_in_flight=c.optional(items, "max_in_flight", _in_flight, 16),
        max_queue=c.optional(items, "max_queue", _queue, 1000),
        eject_after=c.optional(items, "eject_after", _count, 20),
        eject_for=c.optional(items, "eject_for", _timeout, 1.0),
        role=c.optional(items, "role", _role, "candidate"),
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
    relative = c.optional(items, "relative_tolerance", _relative_tolerance, 0.0)
    distance = c.optional(items, "distance", _choice(Distance), Distance.TOTAL_VARIATION)
    max_instances = c.optional(items, "max_instances", _count, MAX_INSTANCES)
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
    return Comparator(kind, tolerance, relative, distance, max_instances)


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
        segment: SegmentPath | None = c.optional(items, "segment", _segment, None)
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
            segment=segment,
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
        max_records=c.optional(items, "max_records", _records, default.max_records),
        max_disk=c.optional(items, "max_disk", _disk_cap, default.max_disk),
        timeout=c.optional(items, "timeout", _timeout, default.timeout),
        batch_size=c.optional(items, "batch_size", _batch, default.batch_size),
        flush_interval=c.optional(items, "flush_interval", _timeout, default.flush_interval),
        queue=c.optional(items, "queue", _queue, default.queue),
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
        max_batch=c.optional(items, "max_batch", _batch, default.max_batch),
    )


def _admin(c: _Checker, loc: _Loc | None) -> AdminConfig:
    items = _section(c, loc, _ADMIN_KEYS)
    if items is None:
        return AdminConfig()
    token, token_file = _secret(c, items)
    listen: tuple[str, int] | None = c.optional(items, "listen", _listen, None)
    return AdminConfig(token=token, token_file=token_file, listen=listen)


def _segment(value: object) -> SegmentPath | None:
    return SegmentPath.parse(_text(value))


def _role(value: object) -> str:
    if isinstance(value, str) and value.lower() in _ROLES:
        return value.lower()
    raise ValueError(
        "expected candidate, or baseline (an A/A comparison: production again, or a replica of"
        " it, whose disagreement is the noise floor of the route's other shadows)"
    )


def _json_path(value: object) -> str:
    text = _text(value)
    parse_path(text)  # ValueError says what is wrong
    return text


def _pattern(value: object) -> str:
    text = _text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return text


def _capture(c: _Checker, loc: _Loc | None) -> CaptureConfig:
    default = CaptureConfig()
    if loc is not None and loc.value is None:
        return CaptureConfig(enabled=True)  # a bare `capture:`: on, with every default
    items = _section(c, loc, _CAPTURE_KEYS)
    if items is None:
        return default
    token, token_file = _secret(c, items)
    headers: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    redact_loc = items.get("redact")
    if redact_loc is not None and redact_loc.value is not None:
        redact = c.mapping(redact_loc, _REDACT_KEYS) or {}
        for key, check in (("headers", _header), ("fields", _json_path), ("patterns", _pattern)):
            found = redact.get(key)
            if found is None or found.value is None:
                continue
            values = c.list_of(found, check, "")
            if key == "headers":
                headers = values
            elif key == "fields":
                fields = values
            else:
                patterns = values
    return CaptureConfig(
        enabled=c.optional(items, "enabled", _boolean, True),
        path=c.optional(items, "path", _text, default.path),
        max_per_second=c.optional(items, "max_per_second", _rate, default.max_per_second),
        agreements=c.optional(items, "agreements", parse_fraction, default.agreements),
        max_disk=c.optional(items, "max_disk", _disk_cap, default.max_disk),
        max_age=c.optional(items, "max_age", _timeout, default.max_age),
        max_body=c.optional(items, "max_body", _body_cap, default.max_body),
        queue=c.optional(items, "queue", _queue, default.queue),
        redact_headers=headers,
        redact_fields=fields,
        redact_patterns=patterns,
        token=token,
        token_file=token_file,
    )


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError("expected a number of exchanges per second, greater than 0")
    if value > 1_000_000:
        raise ValueError("at most 1000000 per second")
    return float(value)


def _metrics(c: _Checker, loc: _Loc | None) -> MetricsConfig:
    items = _section(c, loc, _METRICS_KEYS)
    if items is None:
        return MetricsConfig()
    listen: tuple[str, int] | None = c.optional(items, "listen", _listen, None)
    return MetricsConfig(listen=listen)


def _verdict(c: _Checker, loc: _Loc | None) -> VerdictConfig:
    default = VerdictConfig()
    items = _section(c, loc, (*_VERDICT_KEYS, *_VERDICT_REPLACED))
    if items is None:
        return default
    replaced = items.get("max_latency_ratio")
    if replaced is not None:
        c.add(
            replaced.line,
            replaced.path,
            "was replaced by verdict.latency_margin (the share of shadow requests slower than"
            " production's p99 beyond production's own share, tested with its uncertainty;"
            " default 1%): remove it",
        )
    return VerdictConfig(
        alpha=c.optional(items, "alpha", _alpha, default.alpha),
        min_labels=c.optional(items, "min_labels", _count, default.min_labels),
        min_requests=c.optional(items, "min_requests", _count, default.min_requests),
        margin=c.optional(items, "margin", parse_fraction, default.margin),
        effect_size=c.optional(items, "effect_size", _effect_size, default.effect_size),
        max_error_rate=c.optional(items, "max_error_rate", parse_fraction, default.max_error_rate),
        latency_margin=c.optional(items, "latency_margin", parse_fraction, default.latency_margin),
        max_disagreement=c.optional(items, "max_disagreement", parse_fraction, None),
        fleet_prometheus=c.optional(items, "fleet_prometheus", _prometheus_url, None),
        fleet_window=c.optional(items, "fleet_window", _timeout, default.fleet_window),
        history_interval=c.optional(items, "history_interval", _timeout, default.history_interval),
        history_points=c.optional(items, "history_points", _points, default.history_points),
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
        shadow_max_response=c.optional(items, "shadow_max_response", _body_cap, 4 * 1024**2),
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
        capture=_capture(c, items.get("capture")),
    )
    _check_listeners(c, items, config)
    _check_capture_file(c, items, config)
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


def _check_capture_file(c: _Checker, items: Mapping[str, _Loc], config: Config) -> None:
    """The capture needs a file of its own: its max_disk counts the whole file's pages, and
    would remove the prediction store's share."""
    capture, store = config.capture, config.store
    section = items.get("capture")
    if section is None or not capture.enabled or store.backend != "sqlite":
        return
    if os.path.abspath(capture.path) != os.path.abspath(store.path):
        return
    loc = _value_loc(section, "path") or section
    message = "must not be store.path's file: give the capture a file of its own"
    c.add(loc.line, "capture.path", f"{message} (got {_show(capture.path)})")


def parse_config(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> Config:
    """Validate YAML ``text``; ``source`` names it in errors, ``env`` feeds ``${VAR}``.

    Raises ConfigError listing every problem found; or the one cap (limits.py) the text is
    over: its size, its YAML aliases, nodes or nesting.
    """
    # The bytes the file would have: surrogatepass counts a lone surrogate instead of failing.
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise too_big(source, size)
    checker = _Checker(source, os.environ if env is None else env, _SCHEMA)
    try:
        # The reader checks every character as it is built: a control character fails here.
        loader = _BoundedLoader(text, source)
    except yaml.YAMLError as exc:
        raise _syntax_error(source, text, exc) from None
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
    """Read and validate the YAML file at ``path``; see parse_config. A file over
    MAX_CONFIG_BYTES is refused before it is read."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            stat = os.fstat(file.fileno())
            if S_ISREG(stat.st_mode) and stat.st_size > MAX_CONFIG_BYTES:
                raise too_big(source, stat.st_size)
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read config: {exc.strerror or exc}"]) from None
    if len(data) > MAX_CONFIG_BYTES:  # not a regular file, or one that grew
        raise too_big(source, None)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: config is not UTF-8: {exc.reason}"]) from None
    # As a text-mode read would (the file used to be read so): universal newlines.
    return parse_config(text.replace("\r\n", "\n").replace("\r", "\n"), source, env)

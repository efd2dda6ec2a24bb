"""The effective config as plain data (config_to_dict), with secrets redacted for printing;
its hash, its warnings, and listen addresses as text.

Owns: the way back from a Config to YAML-shaped data. Must not touch: parsing or validation,
or any I/O (and asyncio, aiohttp, prometheus_client, redis, sqlite).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from proxy.config.model import Config
from proxy.config.units import _format_duration, _format_fraction, _format_size, _listen_text


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


REDACTED: Final = "<redacted>"

RESERVED_PATHS: Final = (
    "/metrics", "/healthz", "/readyz", "/labels", "/report", "/report.html", "/admin",
    "/disagreements", "/exchanges",
)  # fmt: skip
"""The proxy's own endpoints (and everything under /admin/ and /exchanges/); they take
precedence over routes."""


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
                        "eject_after": shadow.eject_after,
                        "eject_for": _format_duration(shadow.eject_for),
                        "role": shadow.role,
                    }
                    for shadow in route.shadows
                ],
                "compare": {
                    "kind": route.comparator.kind.value,
                    "tolerance": route.comparator.tolerance,
                    "relative_tolerance": route.comparator.relative_tolerance,
                    "distance": route.comparator.distance.value,
                    "classes": None if route.classes is None else list(route.classes),
                    "max_instances": route.comparator.max_instances,
                },
                "record": _format_fraction(route.record),
                "segment": None if route.segment is None else route.segment.text,
            }
        )
    store = config.store
    result: dict[str, Any] = _escape(
        {
            "listen": _listen_text(config.listen_host, config.listen_port),
            "request_id_header": config.request_id_header,
            "max_body": _format_size(config.max_body),
            "shadow_max_body": _format_size(config.shadow_max_body),
            "shadow_max_response": _format_size(config.shadow_max_response),
            "shadow_strip_headers": list(config.shadow_strip_headers),
            "shutdown_timeout": _format_duration(config.shutdown_timeout),
            "shadow_drain_timeout": _format_duration(config.shadow_drain_timeout),
            "access_log": config.access_log,
            "log_level": config.log_level,
            "routes": routes,
            "store": {
                "backend": store.backend,
                "path": store.path,
                "url": redact_url(store.url) if redact else store.url,
                "prefix": store.prefix,
                "ttl": _format_duration(store.ttl),
                "tombstone_ttl": _format_duration(store.tombstone_ttl),
                "max_records": store.max_records,
                "max_disk": None if store.max_disk is None else _format_size(store.max_disk),
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
                "margin": _format_fraction(config.verdict.margin),
                "effect_size": config.verdict.effect_size,
                "max_error_rate": _format_fraction(config.verdict.max_error_rate),
                "latency_margin": None
                if config.verdict.latency_margin is None
                else _format_fraction(config.verdict.latency_margin),
                "max_disagreement": None
                if config.verdict.max_disagreement is None
                else _format_fraction(config.verdict.max_disagreement),
                "fleet_prometheus": config.verdict.fleet_prometheus,
                "fleet_window": _format_duration(config.verdict.fleet_window),
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
            "capture": _capture_dict(config, redact),
        }
    )
    return result


def _capture_dict(config: Config, redact: bool) -> dict[str, Any]:
    capture = config.capture
    return {
        "enabled": capture.enabled,
        "path": capture.path,
        "max_per_second": capture.max_per_second,
        "agreements": _format_fraction(capture.agreements),
        "max_disk": _format_size(capture.max_disk),
        "max_age": _format_duration(capture.max_age),
        "max_body": _format_size(capture.max_body),
        "queue": capture.queue,
        "redact": {
            "headers": list(capture.redact_headers),
            "fields": list(capture.redact_fields),
            "patterns": list(capture.redact_patterns),
        },
        **_secret_dict(capture.token, capture.token_file, redact),
    }


def redact_url(url: str) -> str:
    """``url`` with its password, in the userinfo or in a ``password=`` query parameter, shown as
    <redacted>: for logs, error messages and the printed config. The rest is left as written.

    >>> redact_url("redis://app:s3cret@redis:6379/0?db=1&password=s3cret")
    'redis://app:<redacted>@redis:6379/0?db=1&password=<redacted>'
    """
    parts = urlsplit(url)
    if parts.password is not None:
        # Edited in place rather than rebuilt: urlunsplit drops the "//" of "unix:///path".
        netloc = f"{parts.username or ''}:{REDACTED}@{parts.netloc.rpartition('@')[2]}"
        url = url.replace(f"//{parts.netloc}", f"//{netloc}", 1)
    # Split as urlsplit does: the fragment first, then the query.
    rest, hash_mark, fragment = url.partition("#")
    head, query_mark, query = rest.partition("?")
    pairs = [
        f"{key}={REDACTED}" if key.lower() == "password" else pair
        for pair in query.split("&")
        for key in [pair.partition("=")[0]]
    ]
    return f"{head}{query_mark}{'&'.join(pairs)}{hash_mark}{fragment}"


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
    if (
        config.capture.enabled
        and config.capture.token is None
        and config.labels.token is None
        and not loopback
    ):
        warnings.append(
            f"{config.source}: capture.token: GET /disagreements and /exchanges/ show captured"
            f" requests and answers on {_listen_text(config.listen_host, config.listen_port)}"
            " without a token (set capture.token, or labels.token, which they accept too)"
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

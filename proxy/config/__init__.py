"""YAML config -> frozen, typed, validated objects.

Owns: reading one YAML file, ``${VAR}`` substitution, validation, defaults, and the effective
config printed by ``check-config``. Must not touch: aiohttp, asyncio, DNS, or any I/O beyond
reading the file. Every error names file, line, key path and value, and all of them are
collected before raising, so one run of ``check-config`` shows everything that is wrong.

Modules: ``model`` (the frozen objects, ConfigError), ``units`` (durations, sizes, fractions
and the other single values), ``yamlcheck`` (node locations, ``${VAR}``, duplicate keys, the
error collector), ``load`` (the sections; parse_config, load_config), ``dump`` (config_to_dict,
redaction, config_hash, config_warnings). This package re-exports their public names.

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

from proxy.config.dump import (
    REDACTED,
    RESERVED_PATHS,
    config_hash,
    config_to_dict,
    config_warnings,
    listen_text,
    redact_url,
)
from proxy.config.load import load_config, parse_config
from proxy.config.model import (
    AdminConfig,
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
from proxy.config.units import parse_duration, parse_fraction, parse_size

__all__ = [
    "REDACTED",
    "RESERVED_PATHS",
    "AdminConfig",
    "Config",
    "ConfigError",
    "LabelsConfig",
    "MetricsConfig",
    "Route",
    "Shadow",
    "StoreConfig",
    "Target",
    "VerdictConfig",
    "config_hash",
    "config_to_dict",
    "config_warnings",
    "listen_text",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_fraction",
    "parse_size",
    "redact_url",
]

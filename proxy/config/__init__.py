"""YAML config -> frozen, typed, validated objects.

Owns: reading one YAML file, ``${VAR}`` substitution, validation, defaults, and the effective
config printed by ``check-config``. Must not touch: aiohttp, asyncio, prometheus_client, redis,
sqlite, DNS, or any I/O beyond reading the file (and a token_file). Every error names file, line,
key path and value, and all of them are collected before raising, so one run of ``check-config``
shows everything that is wrong.

Modules: ``model`` (the frozen objects, ConfigError), ``units`` (durations, sizes, fractions
and the other single values), ``limits`` (the caps on a file's size and its YAML aliases, nodes
and nesting, counted while composing), ``yamlcheck`` (node locations, ``${VAR}``, duplicate
keys, the error collector), ``load`` (the sections; parse_config, load_config), ``dump``
(config_to_dict, redaction, config_hash, config_warnings). This package re-exports their public
names.

    >>> config = parse_config('''
    ... routes:
    ...   - match: /v1/models/iris:predict
    ...     protocol: kserve-v1
    ...     production: {name: iris-lr, url: "http://iris-lr:8080"}
    ... ''')
    >>> config.routes[0].production.timeout, config.max_body
    (30.0, 10485760)

Keys (durations: "2s", "500ms", "1.5s", "1m", "1h", "7d", "250us" or a bare number of seconds;
sizes: "10MiB", "512KiB", "1GiB", "10MB" (1000-based), "100B" or a bare number of bytes;
fractions: "30%", "12.5%" or a number 0..1; a null value means "use the default"):

===================================  ===========================  ==================================
key                                  default                      meaning
===================================  ===========================  ==================================
listen                               0.0.0.0:8080                 host:port to serve on; "[::]:8080"
                                                                  for IPv6; port 0 picks a free port
request_id_header                    X-Request-ID                 header carrying the request id
max_body                             10MiB                        request body cap; larger -> 413
shadow_max_body                      1MiB                         request or production answer
                                                                  bodies above this are not teed to
                                                                  shadows
shadow_max_response                  4MiB                         a shadow's answer above this is
                                                                  cut while it is read (too_large);
                                                                  its gzip or deflate body may not
                                                                  decode to more either
shadow_strip_headers                 [Authorization, Cookie]      headers removed from shadow copies
shutdown_timeout                     10s                          time for in-flight production
                                                                  requests on SIGTERM
shadow_drain_timeout                 5s                           time for shadow queues to drain on
                                                                  SIGTERM
access_log                           false                        log one line per request
log_level                            info                         debug | info | warning | error
routes                               (required)                   non-empty list of routes
routes[].name                        the match string             metric label of the route
routes[].match                       (required)                   path prefix, starts with "/"; the
                                                                  longest matching prefix wins
routes[].methods                     any method                   list of HTTP methods (upper-cased)
routes[].protocol                    (required)                   kserve-v1 | open-inference-v2 |
                                                                  mlflow | tfserving | custom
routes[].output                      none                         Open Inference v2 output name, or
                                                                  TF Serving / MLflow column; not
                                                                  for kserve-v1 or custom
routes[].prediction_path             (custom: required)           dot-separated path to the
                                                                  predictions, e.g. result.scores;
                                                                  custom only
routes[].production.name             (required)                   [A-Za-z0-9_.-], at most 64 chars
routes[].production.url              (required)                   http(s) URL, no query or fragment;
                                                                  its path replaces the matched
                                                                  prefix
routes[].production.timeout          30s                          total time per request
routes[].production.connect_timeout  1s                           time to connect
routes[].production.max_connections  256                          connection-pool size of this
                                                                  target
routes[].shadows                     none                         list of shadow targets
routes[].shadows[].name              (required)                   as production.name; unique per
                                                                  route and unlike production's
routes[].shadows[].url               (required)                   as production.url
routes[].shadows[].sample            100%                         share of requests teed to it
routes[].shadows[].timeout           5s                           total time per request
routes[].shadows[].connect_timeout   1s                           time to connect
routes[].shadows[].max_in_flight     16                           workers = connection-pool size
routes[].shadows[].max_queue         1000                         queued requests; full -> dropped
routes[].shadows[].eject_after       20                           failures in a row (no usable
                                                                  answer) before it is ejected
routes[].shadows[].eject_for         1s                           first ejection; a failed probe
                                                                  doubles it, up to 30s
routes[].shadows[].role              candidate                    candidate | baseline: an A/A
                                                                  comparison (production again, or
                                                                  a replica) whose disagreement is
                                                                  the others' noise floor
routes[].compare.kind                classification               classification | regression |
                                                                  probabilities
routes[].compare.tolerance           0.0                          absolute tolerance, >= 0, in the
                                                                  target's units; regression
routes[].compare.relative_tolerance  0.0                          share of production's value,
                                                                  "1%" or 0.01; regression
routes[].compare.distance            total_variation              total_variation | jensen_shannon;
                                                                  probabilities
routes[].compare.classes             none                         the classes named by the class-mix
                                                                  metric (probabilities: by index);
                                                                  others count as "other"; without,
                                                                  the first 20 seen; not regression
routes[].compare.max_instances       10000                        answers holding more instances
                                                                  are not compared (counted as
                                                                  too_many_instances)
routes[].segment                     none                         a field of the request's JSON,
                                                                  like parameters.country: each
                                                                  shadow's disagreement by its
                                                                  value (the first 20 values)
routes[].record                      0%                           share of requests whose
                                                                  predictions are stored to be
                                                                  joined with labels; 0: no labels
                                                                  for the route
store.backend                        sqlite                       sqlite (an embedded file) | redis
                                                                  (shared by replicas)
store.path                           shadow-proxy-predictions.db  sqlite: the database file,
                                                                  relative to the working directory
store.url                            redis://127.0.0.1:6379/0     redis: a redis://, rediss:// or
                                                                  unix:// URL; its password
                                                                  (user:password@ or ?password=)
                                                                  reads <redacted> when shown
store.prefix                         shadowproxy:                 redis: the key prefix
store.ttl                            7d                           how long a prediction waits for
                                                                  its label
store.tombstone_ttl                  1d                           how long after ttl a late label is
                                                                  still told "expired"
store.max_records                    1000000                      records kept; the oldest beyond it
                                                                  are evicted
store.max_disk                       10GiB                        SQLite: database bytes in use; the
                                                                  oldest records beyond are removed
store.timeout                        1s                           time per store operation
store.batch_size                     500                          writes per store round trip
store.flush_interval                 50ms                         how long a write may wait for
                                                                  others to batch with
store.queue                          10000                        writes waiting for the store;
                                                                  beyond it, new ones are dropped
store.sweep_interval                 1m                           how often expired and surplus
                                                                  records are removed
labels.token                         none                         bearer token for POST /labels,
                                                                  e.g. ${LABEL_TOKEN}
labels.token_file                    none                         instead of token: a file holding
                                                                  it, relative to the config file;
                                                                  re-read by every reload
labels.max_body                      1MiB                         label request body cap (413 above)
labels.max_batch                     1000                         labels per request
verdict.alpha                        0.05                         family-wise false-decision rate
                                                                  per route, however often it is
                                                                  checked (split between shadows
                                                                  and checks); above 0, below 0.5
verdict.min_labels                   100                          labelled requests scored for both
                                                                  models before quality is judged
verdict.min_requests                 100                          shadow requests before the
                                                                  guardrails judge
verdict.margin                       1%                           equivalence margin: accuracy
                                                                  points, or (regression) a share
                                                                  of production's mean abs. error
verdict.effect_size                  0.1                          the sequential test's mixture
                                                                  width, in standard deviations of
                                                                  the per-request advantage
verdict.max_error_rate               1%                           guardrail: shadow error rate
                                                                  (5xx, timeouts, connection errors,
                                                                  answers over shadow_max_response)
                                                                  above production's by this
verdict.latency_margin               1%                           guardrail: share of shadow
                                                                  requests slower than production's
                                                                  p99, above production's own share
verdict.max_disagreement             none                         guardrail while labels are
                                                                  missing: a disagreement rate above
                                                                  it is "worse"
verdict.fleet_prometheus             none                         Prometheus's base URL: also judge
                                                                  every replica's counts together
                                                                  (shadowproxy_fleet_verdict)
verdict.fleet_window                 30d                          what the fleet verdict counts
verdict.history_interval             1m                           how often the report samples its
                                                                  history
verdict.history_points               1440                         history points kept per shadow
admin.token                          none                         bearer token of the admin API
                                                                  (/admin/...); without one the
                                                                  admin API is off
admin.token_file                     none                         instead of token: a file holding
                                                                  it, relative to the config file;
                                                                  re-read by every reload
admin.listen                         the main listener            host:port of a listener of its
                                                                  own, e.g. 127.0.0.1:9901; a change
                                                                  needs a restart
metrics.listen                       the main listener            host:port of a listener of its own
                                                                  for /metrics and /healthz, e.g.
                                                                  0.0.0.0:9464; a change needs a
                                                                  restart
capture.enabled                      true (with capture:)         keep exchanges for the drill-down,
                                                                  export and replay; off without a
                                                                  capture section; a change needs a
                                                                  restart
capture.path                         shadow-proxy-capture.db      the capture's SQLite file, not
                                                                  store.path's; a change needs a
                                                                  restart
capture.max_per_second               10.0                         disagreements and status
                                                                  mismatches kept per shadow and
                                                                  second (the rest counted)
capture.agreements                   1%                           share of agreements kept
capture.max_disk                     1GiB                         the capture's pages in use; the
                                                                  oldest beyond are removed
capture.max_age                      7d                           older exchanges are removed
capture.max_body                     64KiB                        bytes kept of each body (after
                                                                  redaction); the rest is cut
capture.queue                        1000                         exchanges waiting to be written;
                                                                  full -> dropped and counted
capture.redact.headers               []                           header names whose values are
                                                                  never written (Authorization,
                                                                  Cookie, Set-Cookie and
                                                                  Proxy-Authorization always)
capture.redact.fields                []                           JSON paths in bodies: a.b,
                                                                  inputs[*].data, *.x, **.password
capture.redact.patterns              []                           regular expressions replaced in
                                                                  the bodies' and headers' text
capture.token                        none                         bearer token of GET /disagreements
                                                                  and /exchanges/... (without one,
                                                                  labels.token is asked for)
capture.token_file                   none                         instead of token: a file holding
                                                                  it
===================================  ===========================  ==================================

``${VAR}`` in any string value is replaced by the environment variable VAR (an error if unset),
``${VAR:-default}`` falls back to ``default`` when VAR is unset or empty, and ``$${`` writes a
literal ``${``. Substitution happens after YAML parsing, so a value cannot inject YAML; an unquoted
value that was substituted is then typed like a plain YAML scalar (``max_queue: ${Q}`` with
Q=500 is the integer 500).

A config is at most 1 MiB (MAX_CONFIG_BYTES), uses at most 100 YAML aliases, expands to at most
100,000 YAML nodes with every alias resolved, and nests lists and mappings at most 64 deep: a
file over a cap is refused with the cap it broke, before an alias bomb can expand.
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
from proxy.config.limits import (
    MAX_CONFIG_BYTES,
    MAX_YAML_ALIASES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
)
from proxy.config.load import load_config, parse_config
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
from proxy.config.units import parse_duration, parse_fraction, parse_size

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_YAML_ALIASES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "REDACTED",
    "RESERVED_PATHS",
    "AdminConfig",
    "CaptureConfig",
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

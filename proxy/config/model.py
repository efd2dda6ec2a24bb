"""The validated config as frozen value objects, and ConfigError.

Owns: the shape of a config and its defaults. Must not touch: YAML, validation, formatting, or
any I/O (and asyncio, aiohttp, prometheus_client, redis, sqlite).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.core.comparison import Comparator
from proxy.core.extraction import Extractor
from proxy.core.segments import SegmentPath


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
    eject_after: int = 20  # consecutive failures (no usable answer) before it is ejected
    eject_for: float = 1.0  # the first ejection's length; each failed probe doubles it
    # candidate, or baseline: an A/A comparison (production again, or a replica of it), whose
    # disagreement is the noise floor the others are read against
    role: str = "candidate"


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
    segment: SegmentPath | None = None  # a request field: disagreement broken down by its value


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
    max_disk: int | None = 10 * 1024**3  # SQLite: bytes in use; the oldest records beyond go
    timeout: float = 1.0
    batch_size: int = 500
    flush_interval: float = 0.05
    queue: int = 10_000
    sweep_interval: float = 60.0


ALWAYS_REDACTED = ("authorization", "cookie", "proxy-authorization", "set-cookie")
"""Header names whose values are never written to the capture, whatever the config says."""


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """The capture of exchanges for the drill-down (GET /disagreements, /exchanges/{id}, the
    report's disagreeing requests) and for export and offline replay: off unless `enabled`.
    Every disagreement and status mismatch is kept up to `max_per_second` per shadow, and a
    share (`agreements`) of the agreements; bounded by `max_disk` and `max_age`, oldest out
    first. Redacted before anything is written: `redact_headers` (and ALWAYS_REDACTED),
    `redact_fields` (JSON paths, like inputs[*].data or customer.email) and `redact_patterns`
    (regular expressions, on the bodies' text)."""

    enabled: bool = False
    path: str = "shadow-proxy-capture.db"
    max_per_second: float = 10.0  # disagreements and status mismatches kept, per shadow
    agreements: float = 0.01  # the share of agreeing exchanges kept
    max_disk: int = 1024**3
    max_age: float = 7 * 86400.0
    max_body: int = 64 * 1024  # each body's bytes kept; the rest is cut, and flagged
    queue: int = 1000
    redact_headers: tuple[str, ...] = ()
    redact_fields: tuple[str, ...] = ()
    redact_patterns: tuple[str, ...] = ()
    token: str | None = None  # for GET /disagreements and /exchanges/...; else labels.token
    token_file: str | None = None


@dataclass(frozen=True, slots=True)
class VerdictConfig:
    """How a shadow's verdict is reached, and how much history the report keeps."""

    alpha: float = 0.05  # family-wise, per route: split between shadows and checks
    min_labels: int = 100  # labelled requests scored for both models before quality is judged
    min_requests: int = 100  # shadow requests before the guardrails judge
    margin: float = 0.01  # equivalence: accuracy points, or a share of production's MAE
    effect_size: float = 0.1  # the mixture's width, in sds of the per-request advantage
    max_error_rate: float = 0.01  # shadow error rate over production's (5xx, timeouts, ...)
    # The extra share of shadow requests over production's p99; None: reported, not judged
    # (a replay, whose latency is measured from elsewhere).
    latency_margin: float | None = 0.01
    max_disagreement: float | None = None  # judged on disagreement while labels are missing
    fleet_prometheus: str | None = None  # Prometheus's URL: also judge every replica's counts
    fleet_window: float = 30 * 86400.0  # what the fleet verdict counts: the last 30 days
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
    shadow_max_response: int  # a shadow's answer over it is cut while read (too_large)
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
    capture: CaptureConfig = CaptureConfig()

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

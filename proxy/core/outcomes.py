"""Typed outcomes: every result that becomes a metric label value, as a StrEnum member, so that
a typo is a type error rather than a KeyError at run time. Pure: names and values only.

A member is its own label value (`str(Outcome.OK) == "ok"`), and since it is a str it still finds
its entry in a dict keyed by the members when looked up by the plain string.

>>> counters = {o: family.labels(route, o) for o in Outcome}
>>> counters[Outcome.TIMEOUT].inc()
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """An upstream request's outcome."""

    OK = "ok"  # an answer below 500
    HTTP_ERROR = "http_error"  # an answer of 500 or above
    TIMEOUT = "timeout"  # no answer in time
    CONNECT_ERROR = "connect_error"  # no connection, or it broke
    TOO_LARGE = "too_large"  # an answer over the size cap, cut while it was being read

    @classmethod
    def of_status(cls, status: int) -> Outcome:
        return cls.OK if status < 500 else cls.HTTP_ERROR


class Cause(StrEnum):
    """Why an upstream gave no usable answer, finer than its Outcome: for logs and
    shadowproxy_upstream_errors_total, so that "unreachable" says what to fix."""

    DNS = "dns"  # the host name did not resolve
    REFUSED = "refused"  # nothing listens at the port
    TLS = "tls"  # the TLS handshake or certificate check failed
    CONNECT_TIMEOUT = "connect_timeout"  # no connection within connect_timeout
    UNREACHABLE = "unreachable"  # no route to the host, network down, other socket errors
    RESET = "reset"  # the connection was reset or closed before the whole answer
    TIMEOUT = "timeout"  # no whole answer in time (or no pooled connection free in time)
    TOO_LARGE = "too_large"  # the answer passed the size cap
    BAD_RESPONSE = "bad_response"  # not a valid HTTP/1.1 answer
    CLOSED = "closed"  # the pool was closing (a reload or shutdown)


class Role(StrEnum):
    PRODUCTION = "production"
    SHADOW = "shadow"


class SkipReason(StrEnum):
    """Why a request was not sent to a shadow."""

    SAMPLED_OUT = "sampled_out"
    PAUSED = "paused"  # sampled in while the admin API had it paused
    QUEUE_FULL = "queue_full"
    BODY_TOO_LARGE = "body_too_large"
    SHUTTING_DOWN = "shutting_down"
    EJECTED = "ejected"  # the shadow failed eject_after times in a row: resting


class ComparisonResult(StrEnum):
    """What comparing one shadow answer with production's found."""

    AGREE = "agree"  # every instance agrees
    DISAGREE = "disagree"  # at least one instance disagrees
    STATUS_MISMATCH = "status_mismatch"  # different status codes
    SAME_ERROR = "same_error"  # the same non-2xx status: nothing to compare
    SHADOW_UNPARSEABLE = "shadow_unparseable"  # the shadow's 2xx answer holds no predictions
    PRODUCTION_UNPARSEABLE = "production_unparseable"  # production's 2xx answer holds none
    SHAPE_MISMATCH = "shape_mismatch"  # different instance counts or vector lengths
    SHADOW_FAILED = "shadow_failed"  # the shadow gave no usable answer (timeout, connection
    # error, or an answer over shadow_max_response)
    PRODUCTION_FAILED = "production_failed"  # production gave no answer
    TOO_MANY_INSTANCES = "too_many_instances"  # either side holds more than compare.max_instances


MAX_REQUEST_ID = 256
"""The longest request id, in characters (bytes, on the proxied port): a longer one is refused
with a 400 there and by POST /labels, so every recorded request can be labelled."""


class RejectReason(StrEnum):
    """Requests the proxy answers itself, without asking production."""

    NO_ROUTE = "no_route"
    BODY_TOO_LARGE = "body_too_large"
    BAD_REQUEST_ID = "bad_request_id"
    BAD_PATH = "bad_path"


class LabelResult(StrEnum):
    """What became of one label received; they always add up to the labels received."""

    JOINED = "joined"
    UNKNOWN_ID = "unknown_id"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


class LabelRejection(StrEnum):
    """Label requests refused as a whole, before any of their labels counted as received."""

    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    STORE_UNAVAILABLE = "store_unavailable"
    DISABLED = "disabled"


class RecordKind(StrEnum):
    """A store write: a request's record (production's predictions), or a shadow's predictions."""

    RECORD = "record"
    SHADOW = "shadow"


class RecordDrop(StrEnum):
    """Why a write never reached the store."""

    QUEUE_FULL = "queue_full"  # the recorder's queue was full
    STORE_UNAVAILABLE = "store_unavailable"  # the store failed
    # The store did not answer in time after the write was sent: it may have been applied (a
    # frozen Redis runs it on resuming). Not known lost, and not known written.
    TIMED_OUT = "timed_out"
    NO_PREDICTIONS = "no_predictions"  # production failed or answered non-2xx: nothing to keep
    # A 2xx answer whose predictions could not be read: the route's protocol, output or
    # prediction_path does not fit the model server's answers (a misconfiguration, logged).
    UNREADABLE = "unreadable"
    ORPHAN = "orphan"  # a shadow's record was not in the store: nothing was written


class PairedOutcome(StrEnum):
    """A labelled instance scored for both production and a shadow (McNemar's table)."""

    BOTH_RIGHT = "both_right"
    PRODUCTION_ONLY = "production_only"
    SHADOW_ONLY = "shadow_only"
    BOTH_WRONG = "both_wrong"


class RequestSum(StrEnum):
    """One of the additive per-request sums behind the verdict (proxy.core.stats.RequestSums),
    summed over labelled requests: m_i is a request's instances, d_i its advantage (how much
    better the shadow did, summed over its instances). Counters only go up, so sums that can
    be negative are kept as their positive and negative parts."""

    REQUESTS = "requests"
    INSTANCES = "instances"
    INSTANCES_SQUARED = "instances_squared"
    ADVANTAGE_POSITIVE = "advantage_positive"
    ADVANTAGE_NEGATIVE = "advantage_negative"
    ADVANTAGE_SQUARED = "advantage_squared"
    CROSS_POSITIVE = "cross_positive"
    CROSS_NEGATIVE = "cross_negative"

    @staticmethod
    def of(m: float, d: float) -> dict[RequestSum, float]:
        """What one request with m instances and advantage d adds to each sum."""
        cross = m * d
        return {
            RequestSum.REQUESTS: 1.0,
            RequestSum.INSTANCES: m,
            RequestSum.INSTANCES_SQUARED: m * m,
            RequestSum.ADVANTAGE_POSITIVE: max(d, 0.0),
            RequestSum.ADVANTAGE_NEGATIVE: max(-d, 0.0),
            RequestSum.ADVANTAGE_SQUARED: d * d,
            RequestSum.CROSS_POSITIVE: max(cross, 0.0),
            RequestSum.CROSS_NEGATIVE: max(-cross, 0.0),
        }


class StoreOperation(StrEnum):
    PUT_RECORDS = "put_records"
    PUT_SHADOWS = "put_shadows"
    GET_RECORDS = "get_records"
    SET_LABELS = "set_labels"
    REMOVE_OLD = "remove_old"


class Removal(StrEnum):
    """Why records left the store."""

    EXPIRED = "expired"  # older than ttl + tombstone_ttl
    EVICTED = "evicted"  # beyond max_records
    OVER_DISK = "over_disk"  # beyond store.max_disk, the oldest first (SQLite)


class ReloadOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class AdminAction(StrEnum):
    CONFIG = "config"
    SHADOWS = "shadows"
    PAUSE = "pause"
    RESUME = "resume"
    SAMPLE = "sample"
    RELOAD = "reload"
    UNKNOWN = "unknown"


class AdminResult(StrEnum):
    OK = "ok"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    OFF = "off"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    FAILURE = "failure"


class Verdict(StrEnum):
    """A shadow's verdict, and its value on the verdict gauge: ordered from worse to better,
    so that a gate reads `>= 0.5` as "promote" (better or equivalent) and `== -1` as "worse"."""

    BETTER = "better"
    EQUIVALENT = "equivalent"
    INCONCLUSIVE = "inconclusive"
    INSUFFICIENT_DATA = "insufficient_data"
    WORSE = "worse"

    @property
    def gauge(self) -> float:
        return _VERDICT_GAUGE[self.value]


_VERDICT_GAUGE = {
    "better": 1.0,
    "equivalent": 0.5,
    "inconclusive": 0.0,
    "insufficient_data": -0.5,
    "worse": -1.0,
}


class Handoff(StrEnum):
    """What became of an exchange the front handed to the analysis process."""

    SENT = "sent"  # written to the channel
    CHANNEL_FULL = "channel_full"  # the channel's buffer was full: the analysis is behind
    ANALYSIS_DOWN = "analysis_down"  # no analysis process connected
    TOO_LARGE = "too_large"  # its bodies together are over the hand-off's frame cap

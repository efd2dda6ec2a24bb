"""The report's shape, the JSON of GET /report, as TypedDicts, so that mypy checks every key the
builder writes and the server, the page and the command line read; it owns that shape and nothing
else (no figure is computed, read or formatted here). Pure. Every key is always there, a missing
figure being null; `verdict` is a `Verdict` StrEnum, which in JSON, and in a report read back from
it, is the member's plain string: it compares and formats alike."""

from __future__ import annotations

from typing import TypedDict

from proxy.core.outcomes import Verdict

__all__ = [
    "Accuracy",
    "CalibrationBin",
    "CapturedExchange",
    "CapturedInstance",
    "ClassFlip",
    "ClassLabelling",
    "Disagreement",
    "DrillDown",
    "ErrorFigures",
    "Guardrail",
    "HistoryPoint",
    "LargestDifference",
    "LatencyFigures",
    "NoiseFloor",
    "PairedClassification",
    "PairedOutcomes",
    "PairedRegression",
    "ProbabilityFigures",
    "Proportion",
    "QualityFigures",
    "Report",
    "RouteDiagnostics",
    "RouteReport",
    "ScoreDifference",
    "SegmentFigures",
    "ShadowDiagnostics",
    "ShadowReport",
]


class LatencyFigures(TypedDict):
    """An upstream's latency quantiles in seconds, from its histogram; null with no requests."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None


class Proportion(TypedDict):
    """A share with its Wilson interval; the interval is null with nothing counted."""

    value: float | None
    low: float | None
    high: float | None


class Accuracy(Proportion):
    """A model's share of labelled instances it got right."""

    labelled: int
    correct: int


class Disagreement(Proportion):
    """The shadow's share of compared instances on which it disagrees with production."""

    compared: int
    disagreed: int


class ErrorFigures(TypedDict):
    """A model's errors on labelled instances of a regression route; null with no labels."""

    labelled: int
    mae: float | None
    rmse: float | None


class PairedOutcomes(TypedDict):
    """McNemar's table: labelled instances scored for both models, by which was right
    (the keys are the values of `PairedOutcome`)."""

    both_right: int
    production_only: int
    shadow_only: int
    both_wrong: int


class PairedClassification(PairedOutcomes):
    """Fixed-sample figures on instances (for reading, never for a decision): the paired
    accuracy difference, shadow minus production, with Newcombe's interval, McNemar's p, and the
    beta-mixture test's p and sequence for theta on the discordant instances mapped onto the
    difference scale (cs_low, cs_high) with the observed discordance."""

    n: int
    difference: float | None
    low: float | None
    high: float | None
    mcnemar_p: float
    sequential_p: float
    cs_low: float | None
    cs_high: float | None


class PairedRegression(TypedDict):
    """Fixed-sample figures on instances (for reading, never for a decision): the shadow's
    advantage in absolute error, production's minus the shadow's per instance (up is the shadow
    doing better, as everywhere in the report), with its t interval, and the instance-level
    mSPRT's sequence on the same scale, in the target's units."""

    n: int
    advantage: float | None
    low: float | None
    high: float | None
    sequential_p: float
    cs_low: float | None
    cs_high: float | None


class QualityFigures(TypedDict):
    """The verdict's quality test, with the request as the unit: the shadow's advantage per
    instance (up is the shadow doing better: accuracy points, or production's mean absolute
    error minus the shadow's) with its always-valid confidence sequence, safe to check at any
    moment. `method` is "exact" (single-instance requests: the beta-mixture test boxed with the
    discordance rate's sequence) or "requests" (cluster-robust normal mixture). `alpha` is the
    share of verdict.alpha this test has; `margin` the equivalence margin in advantage units;
    `decision` what it has decided (held once made), null while undecided."""

    method: str
    requests: int
    instances: int
    advantage: float | None
    low: float | None
    high: float | None
    p_value: float
    alpha: float
    margin: float | None
    decision: Verdict | None


class Guardrail(TypedDict):
    """One guardrail: `value` the point estimate shown, `low` and `high` its always-valid
    interval (of the shadow's figure minus production's, for error_rate and slow_requests),
    `limit` what the low end must pass to trip it; `tripped` is held once true."""

    name: str
    value: float | None
    low: float | None
    high: float | None
    limit: float | None
    alpha: float
    tripped: bool


class ClassLabelling(TypedDict):
    """Production's predicted class: instances predicted, and labelled."""

    name: str
    predicted: int
    labelled: int


class RouteDiagnostics(TypedDict):
    """What the verdict rests on, per route: how many recorded requests got labels, how late,
    and whether the label rate depends on production's predicted class (a chi-square test; a
    small p means labels arrive for some classes more than for others, and the verdict is
    about the labelled ones). `warnings` says it in words."""

    recorded_requests: int
    labelled_requests: int
    labelled_instances: int
    coverage: float | None
    label_delay_p50: float | None
    label_delay_p95: float | None
    classes: list[ClassLabelling]
    selection_bias_p: float | None
    warnings: list[str]


class ShadowDiagnostics(TypedDict):
    """Per shadow: labelled requests it has a pair for, those it has none for (not sampled for
    it; or it failed, timed out, was dropped or skipped, or answered the wrong shape: never
    compared), and about
    how many labelled requests in all the verdict needs for an advantage of `effect`."""

    paired_requests: int
    lost_pairs: int
    unscorable_instances: int  # the shadow's labelled instances it answered unscorably
    coverage: float | None
    effect: float | None
    labels_needed: int | None


class ScoreDifference(TypedDict):
    """A paired score's difference, production's minus the shadow's (up is the shadow doing
    better), per instance with the request as the unit, with its always-valid interval (for
    reading: the verdict is decided on accuracy)."""

    requests: int
    instances: int
    advantage: float | None
    low: float | None
    high: float | None
    p_value: float


class CalibrationBin(TypedDict):
    """One bin of a reliability chart: instances whose confidence (largest probability) is
    from `low` to low + 0.1, and how many of them the model got right."""

    low: float
    instances: int
    correct: int


class ProbabilityFigures(TypedDict):
    """A probabilities route's shadow: mean log loss and Brier score of both models on their
    labelled instances, the paired differences with always-valid intervals, and the shadow's
    reliability chart (production's is the route's)."""

    production_log_loss: float | None
    shadow_log_loss: float | None
    production_brier: float | None
    shadow_brier: float | None
    log_loss: ScoreDifference
    brier: ScoreDifference
    calibration: list[CalibrationBin]


class HistoryPoint(TypedDict):
    """The shadow's advantage (up is better) at time t, with its interval."""

    t: float
    labelled: int
    difference: float | None
    low: float | None
    high: float | None


class CapturedInstance(TypedDict):
    """One instance of a captured exchange: both models' predictions side by side (as the
    answers held them), whether they differ, and the label once known (null before)."""

    index: int
    production: object
    shadow: object
    differs: bool
    label: object


class CapturedExchange(TypedDict):
    """A captured exchange the shadow disagreed on (or answered with another status), for the
    drill-down: GET /exchanges/{request_id} has the whole record. `instances` is capped at the
    first 50; `truncated` says whether more were left out."""

    request_id: str
    captured_at: float
    result: str
    production_status: int | None
    shadow_status: int | None
    instances: list[CapturedInstance]
    instance_count: int  # the request's instances in all
    truncated: bool
    labelled: bool


class ClassFlip(TypedDict):
    """Instances on which production predicted `production` and the shadow `shadow` (classes,
    or argmax on probabilities routes), counted over every compared request since start."""

    production: str
    shadow: str
    instances: int


class LargestDifference(TypedDict):
    """A regression instance among the captured ones with the largest |shadow - production|."""

    request_id: str
    index: int
    production: float
    shadow: float
    difference: float  # shadow - production
    label: float | None


class NoiseFloor(TypedDict):
    """The baseline shadow's (an A/A comparison: role baseline) disagreement, next to this
    shadow's: `within` is true when this shadow's disagreement is not above the baseline's
    (its interval's low end does not pass the baseline's high end)."""

    baseline: str
    disagreement: float | None
    low: float | None
    high: float | None
    within: bool | None


class DrillDown(TypedDict):
    """Where this shadow disagrees, from the capture (capture: in the config; empty without):
    its latest disagreeing exchanges, which classes flip to which, and on regression routes
    the largest differences."""

    capture: bool  # the capture is on (it may have nothing yet)
    exchanges: list[CapturedExchange]
    flips: list[ClassFlip]
    largest_differences: list[LargestDifference]


class SegmentFigures(Proportion):
    """The shadow's disagreement on the requests of one segment (routes[].segment): compared
    instances, those that disagree, and the share with its Wilson interval."""

    segment: str
    compared: int
    disagreed: int


class ShadowReport(TypedDict):
    """One shadow of a route: its verdict, the reason in words, and every figure. `role` is
    "candidate", or "baseline" for an A/A comparison (the noise floor of the others)."""

    shadow: str
    role: str
    sample: float | None  # the share of requests it is sent now (null: unknown)
    verdict: Verdict
    reason: str
    requests: int
    errors: int
    error_rate: float | None
    latency: LatencyFigures
    latency_counts: list[int]
    disagreement: Disagreement
    accuracy: Accuracy
    error: ErrorFigures
    quality: QualityFigures
    guardrails: list[Guardrail]
    diagnostics: ShadowDiagnostics
    probabilities: ProbabilityFigures | None  # null on a route that is not probabilities
    paired: PairedClassification
    regression: PairedRegression | None  # null on a route that is not a regression
    history: list[HistoryPoint]
    noise_floor: NoiseFloor | None  # null without a baseline shadow on the route
    drilldown: DrillDown
    segments: list[SegmentFigures]  # empty without routes[].segment


class RouteReport(TypedDict):
    """One route: its production model's figures and its shadows (every configured one, those
    with no traffic yet included). Latency counts are per histogram bucket, one more than the
    bounds (the last is +Inf). `problems` are what stops the route from being measured at all
    (answers that cannot be read, predictions never recorded), in words: shown in red."""

    route: str
    kind: str
    production: str
    production_latency: LatencyFigures
    production_accuracy: Accuracy
    production_error: ErrorFigures
    latency_buckets: list[float]
    production_latency_counts: list[int]
    production_calibration: list[CalibrationBin]  # empty on a route that is not probabilities
    diagnostics: RouteDiagnostics
    problems: list[str]
    shadows: list[ShadowReport]


class Report(TypedDict):
    """The whole report: the JSON of GET /report.

    >>> report = build_report(samples, settings, generated_at=time.time())
    >>> [shadow["verdict"] for route in report["routes"] for shadow in route["shadows"]]
    [<Verdict.BETTER: 'better'>]
    """

    generated_at: float
    config_hash: str
    alpha: float
    routes: list[RouteReport]

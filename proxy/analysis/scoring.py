"""RouteScorer: one route's records scored against their labels, per model and paired, and
counted into their metrics. Used by the label endpoint and by the recorder's late joins; the
rules themselves are pure (proxy.core.joining)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.core.comparison import CompareKind, ShapeMismatch
from proxy.core.joining import InvalidLabel, Score, label_values, pair, score
from proxy.metrics import ClassCounter, ModelMetrics, PairMetrics, RecordingMetrics
from proxy.store.base import Record


@dataclass(frozen=True, slots=True)
class RouteScorer:
    """Scores one route's records against their labels and counts the results.

    >>> scorer = RouteScorer(CompareKind.CLASSIFICATION, production, shadows, pairs, recording)
    >>> scorer.join(record)                   # production and the shadows present
    >>> scorer.join_shadow(record, "iris-rf")  # a shadow that answered after the label
    """

    kind: CompareKind
    production: ModelMetrics
    shadows: dict[str, ModelMetrics]
    pairs: dict[str, PairMetrics]
    recording: RecordingMetrics
    production_classes: ClassCounter | None = None  # labelled instances by predicted class

    def labels_for(self, record: Record, label: Any) -> tuple[list[Any], Score]:
        """The label per instance, and production's score; InvalidLabel if the label does not
        fit what production predicted."""
        labels = label_values(label, len(record.predictions))
        return labels, score(self.kind, record.predictions, labels)

    def join(
        self, record: Record, now: float, scored: tuple[list[Any], Score] | None = None
    ) -> None:
        """Count a labelled record: production, and every shadow present. `scored` is what
        `labels_for` already computed for this record's label, so it is not scored twice."""
        labels, production_score = scored or self.labels_for(record, record.label)
        self.production.count(production_score)
        if self.production_classes is not None:
            self.production_classes.count(record.predictions)
        self.recording.delay.observe(max(0.0, now - record.created))
        for shadow in record.shadows:
            self._join_shadow(record, shadow, labels)

    def join_shadow(self, record: Record, shadow: str) -> None:
        labels = label_values(record.label, len(record.predictions))
        self._join_shadow(record, shadow, labels)

    def _join_shadow(self, record: Record, shadow: str, labels: list[Any]) -> None:
        metrics = self.shadows.get(shadow)
        if metrics is None:  # a shadow that a config reload removed
            return
        predictions = record.shadows[shadow]
        try:
            metrics.count(score(self.kind, predictions, labels))
            paired = pair(self.kind, record.predictions, predictions, labels)
        except (InvalidLabel, ShapeMismatch):
            # The shadow answered with another number of instances than production did.
            metrics.unscorable.inc(len(labels))
            return
        self.pairs[shadow].count(paired)

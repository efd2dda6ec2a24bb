"""Joining: score predictions against a label, per model and paired production-vs-shadow.

Owns the rules that turn a client's label and a model's predictions into counts and error sums:
how one label maps onto the instances of a request, when a prediction is right, and what a
prediction that cannot be scored counts as. Pure: no I/O, no asyncio, no metrics. Callers store
the results and turn them into metrics and statistics.

One-element lists stand for their item on both sides (a prediction ``[x]`` or a label ``[x]``
is ``x``): Open Inference v2 answers and clients' label arrays often keep an ``[N, 1]`` shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.core.comparison import CompareKind, ShapeMismatch

__all__ = ["InvalidLabel", "Paired", "Score", "label_values", "pair", "score"]

# Floor on the probability given to the true class, so that one confident miss adds a large
# but finite loss (about 34.5) instead of turning the running sum into infinity.
_MIN_PROBABILITY = 1e-15
# Label values are echoed back to the client in error messages; a huge one must not be.
_SHOWN = 40


class InvalidLabel(ValueError):
    """The label cannot be scored against the predictions; the message says why.

    The message is sent back to the client, so it names the label, never internals.
    """


def label_values(label: Any, instances: int) -> list[Any]:
    """One label per instance of a request that had ``instances`` instances.

    A list gives one label per item and must hold exactly ``instances`` items; any other value
    is the label of a single-instance request.

        >>> label_values([1, 0], 2)
        [1, 0]
        >>> label_values("cat", 1)
        ['cat']
    """
    if instances < 1:
        raise InvalidLabel("the request had no instances to label")
    if label is None:
        raise InvalidLabel("label is null")
    if isinstance(label, dict):
        raise InvalidLabel("label must be a value or a list of values, got an object")
    if not isinstance(label, list):
        if instances == 1:
            return [label]
        raise InvalidLabel(f"label is a single value but the request had {instances} instances")
    if not label:
        raise InvalidLabel("label is an empty list")
    if len(label) != instances:
        raise InvalidLabel(
            f"label has {_plural(len(label), 'value')} "
            f"but the request had {_plural(instances, 'instance')}"
        )
    for index, value in enumerate(label):
        if value is None:
            raise InvalidLabel(f"label of instance {index} is null")
        if isinstance(value, dict):
            raise InvalidLabel(f"label of instance {index} must be a value, got an object")
    return list(label)


@dataclass(frozen=True, slots=True)
class Score:
    """One model's predictions scored against the labels of one request.

    ``correct`` counts right classes (classification, and the argmax of probabilities); it stays
    0 for regression. ``absolute_errors`` and ``squared_error`` are regression's, ``log_loss``
    (natural log, summed over instances) is probabilities'. Sums cover the ``scored`` instances
    only: ``unscorable`` ones (a non-numeric regression prediction, a malformed probability
    vector) are counted in ``instances`` and in nothing else.

        >>> result = score(CompareKind.REGRESSION, [1.0, "oops"], [1.5, 2.0])
        >>> result.absolute_errors, result.squared_error, result.unscorable
        ((0.5,), 0.25, 1)
        >>> score(CompareKind.PROBABILITIES, [[0.25, 0.75]], [1]).correct
        1
    """

    instances: int
    correct: int
    absolute_errors: tuple[float, ...] = ()
    squared_error: float = 0.0
    log_loss: float = 0.0
    unscorable: int = 0
    brier: float = 0.0  # probabilities: the sum of Brier scores over the scored instances
    # probabilities: (confidence, right) per scored instance, for the reliability chart
    confidences: tuple[tuple[float, bool], ...] = ()

    @property
    def scored(self) -> int:
        """Instances that the error sums cover: divide ``log_loss`` by this, not ``instances``."""
        return self.instances - self.unscorable


@dataclass(frozen=True, slots=True)
class Paired:
    """Production and one shadow scored on the same instances.

    Classification and probabilities fill the four outcome counts (McNemar's test uses the
    discordant two). Regression fills ``n``, ``d_sum`` and ``d_squared_sum`` over
    ``d = |shadow error| - |production error|`` (a paired t interval's inputs); a negative mean
    d means the shadow is closer. Instances unscorable on either side (a malformed probability
    vector, a non-numeric regression prediction) are left out of the pair, as a request the
    shadow failed on is: they are counted as unscorable for their model, and reported.

        >>> paired = pair(CompareKind.CLASSIFICATION, [1, 0, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1])
        >>> paired.both_right, paired.production_only, paired.shadow_only, paired.both_wrong
        (1, 1, 1, 1)
        >>> pair(CompareKind.REGRESSION, [1.0, 2.0], [0.5, 5.0], [0.0, 0.0]).d_sum
        2.5
    """

    both_right: int = 0
    production_only: int = 0
    shadow_only: int = 0
    both_wrong: int = 0
    n: int = 0
    d_sum: float = 0.0
    d_squared_sum: float = 0.0
    d_positive_sum: float = 0.0  # the d > 0 part of d_sum, for counters that only go up
    # Probabilities: instances scorable on both sides, and the shadow's advantage summed over
    # them in log loss and in Brier score (production's minus the shadow's: up is better).
    scored_probabilities: int = 0
    log_loss_advantage: float = 0.0
    brier_advantage: float = 0.0

    def request(self) -> tuple[int, float]:
        """This request as the verdict's unit: its instances scored for both models, and the
        shadow's advantage summed over them (+1 per instance only the shadow got right, -1 per
        one only production got right; for regression, |production error| - |shadow error|).

            >>> Paired(both_right=3, production_only=1, shadow_only=2).request()
            (6, 1)
            >>> Paired(n=2, d_sum=-0.5).request()
            (2, 0.5)
        """
        classified = self.both_right + self.production_only + self.shadow_only + self.both_wrong
        if classified:
            return classified, self.shadow_only - self.production_only
        return self.n, -self.d_sum if self.n else 0.0


def score(kind: CompareKind, predictions: Sequence[Any], labels: Sequence[Any]) -> Score:
    """Score one model's predictions against one label per instance (see ``label_values``)."""
    _check_lengths(predictions, labels)
    instances = len(labels)
    match kind:
        case CompareKind.CLASSIFICATION:
            correct = sum(
                1
                for prediction, label in zip(predictions, labels, strict=True)
                if _same_class(prediction, _class_label(label))
            )
            return Score(instances, correct)
        case CompareKind.REGRESSION:
            errors = []
            for prediction, label in zip(predictions, labels, strict=True):
                error = _absolute_error(prediction, _regression_label(label))
                if error is not None:
                    errors.append(error)
            squared = sum(error * error for error in errors)
            return Score(instances, 0, tuple(errors), squared, 0.0, instances - len(errors))
        case CompareKind.PROBABILITIES:
            correct, loss, brier, unscorable = 0, 0.0, 0.0, 0
            confidences = []
            for prediction, label in zip(predictions, labels, strict=True):
                outcome = _probability_outcome(prediction, label)
                if outcome is None:
                    unscorable += 1
                else:
                    correct += outcome[0]
                    loss += outcome[1]
                    brier += outcome[2]
                    confidences.append((outcome[3], outcome[0]))
            return Score(
                instances, correct, log_loss=loss, unscorable=unscorable, brier=brier,
                confidences=tuple(confidences),
            )  # fmt: skip
    raise AssertionError(f"unhandled kind {kind!r}")  # pragma: no cover


def pair(
    kind: CompareKind, production: Sequence[Any], shadow: Sequence[Any], labels: Sequence[Any]
) -> Paired:
    """Score production and a shadow instance by instance against the same labels.

    Raises InvalidLabel when the labels do not fit production's predictions, and ShapeMismatch
    when the shadow predicted a different number of instances than production.
    """
    _check_lengths(production, labels)
    if len(shadow) != len(production):
        raise ShapeMismatch(f"production has {len(production)} instances, shadow {len(shadow)}")
    rows = zip(production, shadow, labels, strict=True)
    match kind:
        case CompareKind.CLASSIFICATION:
            outcomes = []
            for prod, shad, label in rows:
                value = _class_label(label)
                outcomes.append((_same_class(prod, value), _same_class(shad, value)))
            return _tally(outcomes)
        case CompareKind.PROBABILITIES:
            outcomes = []
            scored, log_loss, brier = 0, 0.0, 0.0
            for prod, shad, label in rows:
                prod_outcome = _probability_outcome(prod, label)
                shad_outcome = _probability_outcome(shad, label)
                if prod_outcome is None or shad_outcome is None:
                    continue  # left out, as a failed answer is; counted as unscorable
                outcomes.append((prod_outcome[0], shad_outcome[0]))
                scored += 1
                log_loss += prod_outcome[1] - shad_outcome[1]
                brier += prod_outcome[2] - shad_outcome[2]
            tally = _tally(outcomes)
            return Paired(
                tally.both_right, tally.production_only, tally.shadow_only, tally.both_wrong,
                scored_probabilities=scored, log_loss_advantage=log_loss, brier_advantage=brier,
            )  # fmt: skip
        case CompareKind.REGRESSION:
            n, d_sum, d_squared_sum, d_positive_sum = 0, 0.0, 0.0, 0.0
            for prod, shad, label in rows:
                value = _regression_label(label)
                prod_error = _absolute_error(prod, value)
                shad_error = _absolute_error(shad, value)
                if prod_error is None or shad_error is None:
                    continue
                d = shad_error - prod_error
                n += 1
                d_sum += d
                d_squared_sum += d * d
                d_positive_sum += max(d, 0.0)
            return Paired(
                n=n, d_sum=d_sum, d_squared_sum=d_squared_sum, d_positive_sum=d_positive_sum
            )
    raise AssertionError(f"unhandled kind {kind!r}")  # pragma: no cover


def _check_lengths(predictions: Sequence[Any], labels: Sequence[Any]) -> None:
    if len(predictions) != len(labels):
        raise InvalidLabel(
            f"label has {_plural(len(labels), 'value')} "
            f"but the model predicted {_plural(len(predictions), 'instance')}"
        )


def _tally(outcomes: Iterable[tuple[bool, bool]]) -> Paired:
    both_right = production_only = shadow_only = both_wrong = 0
    for production_right, shadow_right in outcomes:
        if production_right:
            if shadow_right:
                both_right += 1
            else:
                production_only += 1
        elif shadow_right:
            shadow_only += 1
        else:
            both_wrong += 1
    return Paired(both_right, production_only, shadow_only, both_wrong)


def _unwrap(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _class_label(label: Any) -> Any:
    value = _unwrap(label)
    # bool is an int, so True/False pass; NaN or infinity would silently match nothing.
    if isinstance(value, str | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise InvalidLabel(
        f"classification labels must be strings, numbers or booleans, got {_show(label)}"
    )


def _same_class(prediction: Any, label: Any) -> bool:
    # == for numbers (1 == 1.0 count as one class), while "1" and 1 stay distinct, and so do
    # true and 1: a boolean is a class of its own, not the number Python makes of it.
    value = _unwrap(prediction)
    if isinstance(value, bool) != isinstance(label, bool):
        return False
    return bool(value == label)


def _number(value: Any) -> float | None:
    """The value as a finite float, or None; bools are not numbers here."""
    value = _unwrap(value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def _regression_label(label: Any) -> float:
    value = _number(label)
    if value is None:
        raise InvalidLabel(f"regression labels must be numbers, got {_show(label)}")
    return value


def _absolute_error(prediction: Any, label: float) -> float | None:
    value = _number(prediction)
    if value is None:
        return None
    error = abs(value - label)
    # An error whose square overflows would turn the batch's squared-error sum into infinity.
    return error if math.isfinite(error * error) else None


def _probability_vector(value: Any) -> tuple[list[float], float] | None:
    """The vector and its sum, or None when it is not a usable probability vector."""
    value = _unwrap(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # One number is a binary classifier's P(class 1).
        vector: list[Any] = [1 - value, value]
    elif isinstance(value, list) and value:
        vector = value
    else:
        return None
    if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in vector):
        return None
    try:
        floats = [float(p) for p in vector]
    except OverflowError:
        return None
    total = sum(floats)
    # The sum check also catches NaN and infinity; negatives would make normalising meaningless.
    if not (0.0 < total < math.inf and all(p >= 0.0 for p in floats)):
        return None
    return floats, total


def _class_index(label: Any, classes: int | None) -> int:
    """The label as a class index below ``classes`` (unknown when the prediction is unusable)."""
    value = _unwrap(label)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 0
        and (classes is None or value < classes)
    ):
        return value
    span = "(integers from 0)" if classes is None else f"0..{classes - 1}"
    raise InvalidLabel(f"probabilities labels must be class indexes {span}, got {_show(label)}")


def _probability_outcome(prediction: Any, label: Any) -> tuple[bool, float, float, float] | None:
    """(argmax is the label, log loss, Brier score, confidence) for one instance, or None when
    unscorable. The Brier score is sum_k (p_k - [k = label])^2 over the normalised vector (0 to
    2); the confidence is the largest normalised probability (the reliability chart's x)."""
    parsed = _probability_vector(prediction)
    if parsed is None:
        _class_index(label, None)  # a bad label is the client's error whatever the model said
        return None
    vector, total = parsed
    index = _class_index(label, len(vector))
    # max() keeps the first of equal maxima, like numpy.argmax.
    best = max(range(len(vector)), key=vector.__getitem__)
    loss = -math.log(max(vector[index] / total, _MIN_PROBABILITY))
    brier = sum((p / total - (k == index)) ** 2 for k, p in enumerate(vector))
    return best == index, loss, brier, vector[best] / total


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."

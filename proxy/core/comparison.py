"""Comparison: when production's and a shadow's predictions disagree, instance by instance, and
which bounded class label names a prediction. Pure: no I/O, no asyncio, no metrics. Callers turn
the results into metrics and store rows.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from proxy.core.extraction import ExtractionError
from proxy.core.outcomes import ComparisonResult

__all__ = [
    "MAX_CLASSES",
    "MAX_INSTANCES",
    "OTHER_CLASS",
    "ClassLabels",
    "Classified",
    "Comparator",
    "CompareKind",
    "Comparison",
    "Distance",
    "ShapeMismatch",
    "class_label",
    "classify",
]

FloatArray = npt.NDArray[np.float64]

# Up to this many numbers per batch, plain Python beats numpy's fixed cost per call (array
# creation, ufunc dispatch: tens of µs); the proxy's typical batch holds 1 to 3 instances.
_SMALL = 32

OTHER_CLASS = "other"
"""The class label of every prediction outside the configured classes, or beyond MAX_CLASSES."""

MAX_CLASSES = 20
"""Without configured classes, how many distinct classes a process names before the rest are
"other": the first ones it sees, so that a model answering free text cannot flood the metrics."""

MAX_INSTANCES = 10_000
"""The default of `compare.max_instances`: the most instances one answer may hold for it to be
compared. The answer size cap bounds parsing; this bounds the per-instance work after it
(comparing, counting classes, recording), which is plain Python for small or irregular batches."""

# A longer class name is taken for free text rather than a class: it counts as "other".
_MAX_CLASS_NAME = 100


class CompareKind(enum.Enum):
    """What a prediction is, hence how two of them are compared."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    PROBABILITIES = "probabilities"


class Distance(enum.Enum):
    """How far apart two probability vectors are; both lie in [0, 1]."""

    TOTAL_VARIATION = "total_variation"
    JENSEN_SHANNON = "jensen_shannon"


class ShapeMismatch(ValueError):
    """Production and shadow predictions cannot be compared instance by instance."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """How one batch of shadow predictions compares with production's.

    >>> Comparator(CompareKind.CLASSIFICATION).compare([1, 0, 1], [1, 1, 1])
    Comparison(instances=3, disagreements=1, distances=())
    """

    instances: int
    disagreements: int
    distances: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Comparator:
    """Decides, instance by instance, whether a shadow's predictions agree with production's.

    ``tolerance`` and ``relative_tolerance`` apply to regression only, with numpy.isclose's
    meaning: agree when ``|shadow - production| <= tolerance + relative_tolerance*|production|``.
    ``distance`` applies to probabilities only. ``max_instances`` is read by `classify`: an answer
    holding more instances than that is not compared.

        >>> Comparator(CompareKind.REGRESSION, tolerance=0.5).compare([1.0, 2.0], [1.5, 3.0])
        Comparison(instances=2, disagreements=1, distances=())
        >>> Comparator(CompareKind.PROBABILITIES).compare([[0.25, 0.75]], [[0.75, 0.25]])
        Comparison(instances=1, disagreements=1, distances=(0.5,))
    """

    kind: CompareKind
    tolerance: float = 0.0
    relative_tolerance: float = 0.0
    distance: Distance = Distance.TOTAL_VARIATION
    max_instances: int = MAX_INSTANCES

    def __post_init__(self) -> None:
        for name in ("tolerance", "relative_tolerance"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        limit = self.max_instances
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_instances must be an integer >= 1, got {limit!r}")

    def compare(self, production: Sequence[Any], shadow: Sequence[Any]) -> Comparison:
        """Compare two batches; raises ShapeMismatch when they cannot be paired up."""
        if len(production) != len(shadow):
            raise ShapeMismatch(f"production has {len(production)} instances, shadow {len(shadow)}")
        if not production:
            return Comparison(0, 0)
        match self.kind:
            case CompareKind.CLASSIFICATION:
                # A boolean is a class of its own, not the number Python makes of it.
                differ = sum(
                    1
                    for p, s in zip(production, shadow, strict=True)
                    if p != s or isinstance(p, bool) != isinstance(s, bool)
                )
                return Comparison(len(production), differ)
            case CompareKind.REGRESSION:
                return Comparison(len(production), self._regression(production, shadow))
            case CompareKind.PROBABILITIES:
                return self._probabilities(production, shadow)
        raise AssertionError(f"unhandled kind {self.kind!r}")  # pragma: no cover

    def _regression(self, production: Sequence[Any], shadow: Sequence[Any]) -> int:
        if _small_and_flat(production) and _small_and_flat(shadow):
            return sum(
                1 for p, s in zip(production, shadow, strict=True) if not self._close_flat(p, s)
            )
        try:
            prod, shad = _numeric_array(production), _numeric_array(shadow)
        except _NotNumeric:
            # Ragged or partly non-numeric batch: go instance by instance so that only the
            # faulty instances count as disagreements.
            return sum(
                1 for p, s in zip(production, shadow, strict=True) if not self._close_array(p, s)
            )
        if prod.shape != shad.shape:
            raise ShapeMismatch(
                f"production instances have shape {list(prod.shape[1:])}, "
                f"shadow {list(shad.shape[1:])}"
            )
        return _count_not_close(prod, shad, self.tolerance, self.relative_tolerance)

    def _close_flat(self, production: Any, shadow: Any) -> bool:
        """Plain-Python isclose for an instance that is a number or a flat list of numbers."""
        p_list, s_list = isinstance(production, list), isinstance(shadow, list)
        if p_list and s_list and len(production) == len(shadow):
            return all(self._close(p, s) for p, s in zip(production, shadow, strict=True))
        if not (p_list or s_list):
            return self._close(production, shadow)
        # As in the numpy path, a non-numeric instance is a disagreement before it is a shape.
        if not (_numbers_only(production) and _numbers_only(shadow)):
            return False
        raise ShapeMismatch(
            f"a production instance has shape {_flat_shape(production)}, "
            f"shadow {_flat_shape(shadow)}"
        )

    def _close(self, production: Any, shadow: Any) -> bool:
        if not (_is_number(production) and _is_number(shadow)):
            return False
        try:
            p, s = float(production), float(shadow)
        except OverflowError:  # an integer beyond float range, which numpy refuses too
            return False
        if p == s:  # also the only way two infinities agree, as in numpy
            return True
        if not (math.isfinite(p) and math.isfinite(s)):
            return False
        return abs(s - p) <= self.tolerance + self.relative_tolerance * abs(p)

    def _close_array(self, production: Any, shadow: Any) -> bool:
        try:
            prod, shad = _numeric_array(production), _numeric_array(shadow)
        except _NotNumeric:
            return False
        if prod.shape != shad.shape:
            raise ShapeMismatch(
                f"a production instance has shape {list(prod.shape)}, shadow {list(shad.shape)}"
            )
        batch_of_one = prod[np.newaxis], shad[np.newaxis]
        return _count_not_close(*batch_of_one, self.tolerance, self.relative_tolerance) == 0

    def _probabilities(self, production: Sequence[Any], shadow: Sequence[Any]) -> Comparison:
        if _probability_size(production) > _SMALL:
            prod, shad = _probability_matrix(production), _probability_matrix(shadow)
            if prod is not None and shad is not None and prod.shape == shad.shape:
                disagreements = int(np.count_nonzero(prod.argmax(axis=1) != shad.argmax(axis=1)))
                if self.distance is Distance.TOTAL_VARIATION:
                    by_row = _total_variation(prod, shad)
                else:
                    by_row = _jensen_shannon(prod, shad)
                return Comparison(len(production), disagreements, tuple(by_row.tolist()))
        # Small batches, and irregular ones that numpy cannot hold (mixed class counts, wrong
        # types, bad values): here every row is checked, and the error names the fault.
        prod_rows = [_probability_vector(v) for v in production]
        shad_rows = [_probability_vector(v) for v in shadow]
        for index, (p, s) in enumerate(zip(prod_rows, shad_rows, strict=True)):
            if len(p) != len(s):
                raise ShapeMismatch(
                    f"instance {index}: production has {len(p)} probabilities, shadow {len(s)}"
                )
        pairs = list(zip(prod_rows, shad_rows, strict=True))
        disagreements = sum(1 for p, s in pairs if _argmax(p) != _argmax(s))
        if self.distance is Distance.TOTAL_VARIATION:
            distances = [_total_variation_row(p, s) for p, s in pairs]
        else:
            distances = _jensen_shannon(np.array(prod_rows), np.array(shad_rows)).tolist()
        return Comparison(len(prod_rows), disagreements, tuple(distances))


def class_label(value: Any) -> str | None:
    """The label naming the class ``value``, or None when ``value`` cannot name a class.

    A whole number reads the same whether it came as an integer or a float, and booleans read as
    in JSON. An empty or long (over 100 characters) text, a non-finite number, null, a list or
    an object is no class.

        >>> [class_label(v) for v in ("setosa", 2, 2.0, 0.5, True, "", None)]
        ['setosa', '2', '2', '0.5', 'true', None, None]
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        # Checked first: str() of an integer of thousands of digits raises.
        text = str(value) if value.bit_length() <= 4 * _MAX_CLASS_NAME else ""
    elif isinstance(value, float) and math.isfinite(value):
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        return None
    return text if 0 < len(text) <= _MAX_CLASS_NAME else None


class ClassLabels:
    """Names the predicted class of each instance from a bounded set of labels, for the metric
    of the predicted-class mix.

    The class is the predicted value (classification; a one-element list stands for its item),
    or the argmax of the probability vector (probabilities: its index, or ``classes[index]``).
    With ``classes``, any other class, and any prediction that names no class, is "other".
    Without, the first ``limit`` classes seen are named and the rest are "other".

        >>> labels = ClassLabels(CompareKind.CLASSIFICATION, ("cat", "dog"))
        >>> [labels.label(p) for p in ("cat", ["dog"], "bird", None)]
        ['cat', 'dog', 'other', 'other']
        >>> labels = ClassLabels(CompareKind.PROBABILITIES, limit=2)
        >>> [labels.label(p) for p in ([0.9, 0.1], 0.8, [0.1, 0.1, 0.8], [0.6, 0.4])]
        ['0', '1', 'other', '0']
    """

    __slots__ = ("_classes", "_limit", "_named", "_probabilities")

    def __init__(
        self, kind: CompareKind, classes: Sequence[str] | None = None, limit: int = MAX_CLASSES
    ) -> None:
        if kind is CompareKind.REGRESSION:
            raise ValueError("regression predictions have no classes")
        self._probabilities = kind is CompareKind.PROBABILITIES
        self._classes = None if classes is None else tuple(classes)
        self._named: set[str] = set() if classes is None else set(classes)
        self._limit = limit

    @property
    def named(self) -> frozenset[str]:
        """The labels other than "other" given so far (configured: every class)."""
        return frozenset(self._named)

    def label(self, prediction: Any) -> str:
        """The label of one instance's class."""
        if self._probabilities:
            try:
                index = _argmax(_probability_vector(prediction))
            except ShapeMismatch:
                return OTHER_CLASS
            if self._classes is not None:
                return self._classes[index] if index < len(self._classes) else OTHER_CLASS
            name: str | None = str(index)
        else:
            if isinstance(prediction, list) and len(prediction) == 1:
                prediction = prediction[0]
            name = class_label(prediction)
        if name in self._named:
            return name
        if (
            name is None
            or name == OTHER_CLASS  # a model's own "other" takes no place among the named
            or self._classes is not None
            or len(self._named) >= self._limit
        ):
            return OTHER_CLASS
        self._named.add(name)
        return name


class _NotNumeric(Exception):
    """A value does not form a regular array of real numbers."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers_only(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_number(v) for v in value)
    return _is_number(value)


def _flat_shape(value: Any) -> list[int]:
    return [len(value)] if isinstance(value, list) else []


def _small_and_flat(batch: Sequence[Any]) -> bool:
    """Whether a batch of numbers or flat lists is small enough for plain Python to win."""
    size = 0
    for value in batch:
        if isinstance(value, list):
            if any(isinstance(v, list) for v in value):
                return False
            size += len(value)
        else:
            size += 1
        if size > _SMALL:
            return False
    return True


def _numeric_array(values: Any) -> FloatArray:
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged nesting, huge integers
        raise _NotNumeric from exc
    # Checked before converting to float so that strings such as "1.5" do not pass as numbers.
    if array.dtype.kind not in "iuf":
        raise _NotNumeric
    return array.astype(np.float64, copy=False)


def _count_not_close(prod: FloatArray, shad: FloatArray, atol: float, rtol: float) -> int:
    """Count instances (axis 0) in which any element is not close."""
    close = np.isclose(shad, prod, rtol=rtol, atol=atol)
    return int(np.count_nonzero(~close.all(axis=tuple(range(1, close.ndim)))))


def _probability_vector(value: Any) -> list[float]:
    if _is_number(value):
        # One number is a binary classifier's P(class 1).
        vector = [1 - value, value]
    elif isinstance(value, list) and value:
        vector = value
    elif isinstance(value, list):
        raise ShapeMismatch("a probability vector is empty")
    else:
        raise ShapeMismatch("probabilities must be numbers")
    if not all(_is_number(p) for p in vector):
        raise ShapeMismatch("probabilities must be numbers")
    try:
        floats = [float(p) for p in vector]
    except OverflowError as exc:
        raise ShapeMismatch("probabilities must be numbers") from exc
    # Negative, infinite, NaN or all-zero vectors would turn distances into NaN or nonsense.
    if not (all(0.0 <= p < math.inf for p in floats) and sum(floats) > 0):
        raise ShapeMismatch("probabilities must be finite, non-negative and not all zero")
    return floats


def _probability_size(batch: Sequence[Any]) -> int:
    """Estimate how many numbers a batch of probability vectors holds, from its first row."""
    if not batch:
        return 0
    first = batch[0]
    return len(batch) * (len(first) if isinstance(first, list) else 2)


def _probability_matrix(batch: Sequence[Any]) -> FloatArray | None:
    """The batch as one validated 2-D array, or None to leave it to the per-row path."""
    try:
        array = np.asarray(batch)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind not in "iuf" or array.ndim not in (1, 2) or array.size == 0:
        return None
    array = array.astype(np.float64, copy=False)
    if array.ndim == 1:
        array = np.column_stack((1 - array, array))
    if not (np.isfinite(array).all() and (array >= 0).all() and (array.sum(axis=1) > 0).all()):
        return None
    return array


def _argmax(vector: list[float]) -> int:
    # max() keeps the first of equal maxima, like numpy.argmax.
    return max(range(len(vector)), key=vector.__getitem__)


def _total_variation_row(p: list[float], q: list[float]) -> float:
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))


def _total_variation(prod: FloatArray, shad: FloatArray) -> FloatArray:
    return np.asarray(0.5 * np.abs(prod - shad).sum(axis=1), dtype=np.float64)


def _jensen_shannon(prod: FloatArray, shad: FloatArray) -> FloatArray:
    """Row-wise Jensen-Shannon distance, base 2, in [0, 1]; rows are normalised to sum to 1."""
    # Imported here: scipy.spatial costs a quarter of a second and ~50 MB, which the front
    # process and the config validator, importing the config's comparators, never need.
    from scipy.spatial.distance import jensenshannon

    return np.asarray(jensenshannon(prod, shad, base=2, axis=1), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Classified:
    """What one shadow answer came to, next to production's: the result the metrics count, the
    shadow's predictions once they were parsed (even when their shape then differs), and the
    comparison when there was one."""

    result: ComparisonResult
    shadow_predictions: list[Any] | None = None
    comparison: Comparison | None = None
    detail: str = field(default="", compare=False)  # why nothing was compared, in words


def classify(
    production_status: int | None,
    shadow_status: int,
    production: Callable[[], list[Any]],
    shadow: Callable[[], list[Any]],
    comparator: Comparator,
) -> Classified:
    """The decision on one shadow answer. `production_status` is None when production gave no
    answer; `production` and `shadow` extract each side's predictions (raising ExtractionError),
    and are called only when the statuses leave something to compare. A side holding more than
    `comparator.max_instances` instances ends it there (too_many_instances, without the shadow's
    predictions, so that nothing downstream walks them either); production's is checked before
    the shadow's answer is parsed.

    >>> classify(200, 200, lambda: [1, 0], lambda: [1, 1], Comparator(CompareKind.CLASSIFICATION))
    Classified(result=<ComparisonResult.DISAGREE: 'disagree'>, shadow_predictions=[1, 1], ...)
    """
    if production_status is None:
        return Classified(ComparisonResult.PRODUCTION_FAILED)
    if production_status != shadow_status:
        return Classified(ComparisonResult.STATUS_MISMATCH)
    if not 200 <= shadow_status < 300:
        return Classified(ComparisonResult.SAME_ERROR)
    try:
        expected = production()
    except ExtractionError as exc:
        return Classified(ComparisonResult.PRODUCTION_UNPARSEABLE, detail=str(exc))
    cap = comparator.max_instances
    if len(expected) > cap:
        return Classified(
            ComparisonResult.TOO_MANY_INSTANCES,
            detail=f"production's answer holds {len(expected)} instances, over {cap}",
        )
    try:
        got = shadow()
    except ExtractionError as exc:
        return Classified(ComparisonResult.SHADOW_UNPARSEABLE, detail=str(exc))
    if len(got) > cap:
        return Classified(
            ComparisonResult.TOO_MANY_INSTANCES,
            detail=f"the shadow's answer holds {len(got)} instances, over {cap}",
        )
    try:
        comparison = comparator.compare(expected, got)
    except ShapeMismatch as exc:
        return Classified(ComparisonResult.SHAPE_MISMATCH, got, detail=str(exc))
    agreed = ComparisonResult.DISAGREE if comparison.disagreements else ComparisonResult.AGREE
    return Classified(agreed, got, comparison)

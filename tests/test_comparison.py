"""Tests for proxy.core.comparison: when production's and a shadow's predictions disagree, and
how predictions are named by class."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from proxy.core.comparison import (
    MAX_CLASSES,
    MAX_INSTANCES,
    OTHER_CLASS,
    Classified,
    ClassLabels,
    Comparator,
    CompareKind,
    Comparison,
    Distance,
    ShapeMismatch,
    class_label,
    classify,
)
from proxy.core.extraction import ExtractionError
from proxy.core.outcomes import ComparisonResult

# --- comparison: common rules ----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CompareKind))
def test_instance_count_mismatch(kind: CompareKind) -> None:
    with pytest.raises(ShapeMismatch, match=r"^production has 3 instances, shadow 2$"):
        Comparator(kind).compare([1, 0, 1], [1, 0])


@pytest.mark.parametrize("kind", list(CompareKind))
def test_empty_batches(kind: CompareKind) -> None:
    assert Comparator(kind).compare([], []) == Comparison(instances=0, disagreements=0)


@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf])
def test_comparator_rejects_bad_tolerances(value: float) -> None:
    with pytest.raises(ValueError, match=r"^tolerance must be a finite number >= 0"):
        Comparator(CompareKind.REGRESSION, tolerance=value)
    with pytest.raises(ValueError, match=r"^relative_tolerance must be a finite number >= 0"):
        Comparator(CompareKind.REGRESSION, relative_tolerance=value)


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_comparator_rejects_a_bad_instance_cap(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^max_instances must be an integer >= 1"):
        Comparator(CompareKind.CLASSIFICATION, max_instances=value)


# --- classification --------------------------------------------------------------------------


def test_classification_counts_unequal_labels() -> None:
    production = [1, 0, "cat", [1, 2], True, 2, None]
    shadow = [1.0, 1, "cat", [1, 2], 1, 3, None]
    result = Comparator(CompareKind.CLASSIFICATION).compare(production, shadow)
    # 0 vs 1, True vs 1 (a boolean is a class of its own, as in the class mix), 2 vs 3.
    assert result == Comparison(instances=7, disagreements=3)


def test_classification_nan_labels_disagree() -> None:
    result = Comparator(CompareKind.CLASSIFICATION).compare([math.nan, "a"], [math.nan, "b"])
    assert result == Comparison(instances=2, disagreements=2)


# --- regression ------------------------------------------------------------------------------


def regression(tolerance: float = 0.0, relative: float = 0.0) -> Comparator:
    return Comparator(CompareKind.REGRESSION, tolerance=tolerance, relative_tolerance=relative)


def test_regression_exact_by_default() -> None:
    result = regression().compare([1.0, 2, 3.5], [1, 2.0, 3.5000001])
    assert result == Comparison(instances=3, disagreements=1)


def test_regression_exactly_at_the_absolute_tolerance_agrees() -> None:
    assert regression(0.5).compare([1.0, 1.0], [1.5, 0.5]).disagreements == 0
    assert regression(0.5).compare([1.0, 1.0], [1.5000001, 0.4999999]).disagreements == 2


def test_regression_relative_tolerance_is_relative_to_production() -> None:
    # |4 - 2| <= 0.5 * |2| fails; |2 - 4| <= 0.5 * |4| holds, as in numpy.isclose(shadow, prod).
    assert regression(relative=0.5).compare([2.0, 4.0], [4.0, 2.0]).disagreements == 1
    assert regression(relative=0.1).compare([10.0, -10.0], [11.0, -11.0]).disagreements == 0
    assert regression(relative=0.1).compare([10.0], [11.5]).disagreements == 1


def test_regression_tolerances_add_up() -> None:
    # 1 + 0.1 * 10 = 2 allowed.
    assert regression(1.0, 0.1).compare([10.0, 10.0], [12.0, 12.5]).disagreements == 1


def test_regression_nan_and_infinities() -> None:
    production = [math.nan, 1.0, math.nan, math.inf, math.inf, 1e308]
    shadow = [1.0, math.nan, math.nan, math.inf, -math.inf, math.inf]
    result = regression(1.0, 1.0).compare(production, shadow)
    assert result == Comparison(instances=6, disagreements=5)


def test_regression_non_numeric_values_disagree() -> None:
    production = ["1.5", None, True, {"a": 1}, 1.5, "x"]
    shadow = ["1.5", None, True, {"a": 1}, "1.5", "x"]
    assert regression(1.0).compare(production, shadow) == Comparison(6, 6)


def test_regression_list_instances() -> None:
    production = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    shadow = [[1.0, 2.0], [3.0, 4.2], [5.1, 6.0]]
    assert regression(0.1).compare(production, shadow) == Comparison(3, 1)


def test_regression_nested_list_instances() -> None:
    production = [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]
    shadow = [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 9.0]]]
    assert regression().compare(production, shadow) == Comparison(2, 1)


def test_regression_non_numeric_inside_lists_disagrees() -> None:
    production = [[1.0, "a"], [1.0, 2.0], [[1.0], [2.0, 3.0]]]
    shadow = [[1.0, "a"], [1.0, 2.0], [[1.0], [2.0, 3.0]]]
    assert regression().compare(production, shadow) == Comparison(3, 2)
    assert regression().compare([[1.0, "a"]], [[1.0]]) == Comparison(1, 1)


@pytest.mark.parametrize(
    ("production", "shadow"),
    [
        ([[1.0, 2.0]], [[1.0]]),
        ([1.0], [[1.0]]),
        ([[1.0, 2.0]], [3.0]),
        ([[[1.0, 2.0]]], [[1.0, 2.0]]),
        ([[[1.0, 2.0]], 1.0], [[[1.0, 2.0, 3.0]], 1.0]),
    ],
)
def test_regression_shape_differences_within_an_instance(
    production: list[Any], shadow: list[Any]
) -> None:
    with pytest.raises(ShapeMismatch, match=r"shape"):
        regression().compare(production, shadow)


@pytest.mark.parametrize("copies", [1, 40])
def test_regression_small_and_large_batches_agree(copies: int) -> None:
    # 40 copies push the batch past the plain-Python path into the numpy one.
    production = [1.0, 2.0, 3.0, math.nan, 5.0] * copies
    shadow = [1.5, 2.6, 3.0, 4.0, "5"] * copies
    assert regression(0.5).compare(production, shadow) == Comparison(5 * copies, 3 * copies)
    rows = [[1.0, 2.0], [3.0, 4.0]] * copies
    other = [[1.5, 2.0], [3.0, 4.6]] * copies
    assert regression(0.5).compare(rows, other) == Comparison(2 * copies, copies)


def test_regression_large_batch_shape_mismatch() -> None:
    with pytest.raises(
        ShapeMismatch, match=r"^production instances have shape \[2\], shadow \[3\]"
    ):
        regression().compare([[1.0, 2.0]] * 40, [[1.0, 2.0, 3.0]] * 40)


def test_regression_large_integers_are_not_numbers() -> None:
    assert regression().compare([10**400, 1], [10**400, 1]) == Comparison(2, 1)
    assert regression().compare([[10**400, 1]] * 40, [[10**400, 1]] * 40) == Comparison(40, 40)


# --- probabilities ---------------------------------------------------------------------------


def probabilities(distance: Distance = Distance.TOTAL_VARIATION) -> Comparator:
    return Comparator(CompareKind.PROBABILITIES, distance=distance)


def test_probabilities_argmax_and_total_variation() -> None:
    production = [[0.1, 0.9], [0.6, 0.4], [0.2, 0.5, 0.3]]
    shadow = [[0.3, 0.7], [0.4, 0.6], [0.2, 0.3, 0.5]]
    result = probabilities().compare(production, shadow)
    assert result.instances == 3
    assert result.disagreements == 2
    assert result.distances == pytest.approx((0.2, 0.2, 0.2))


def test_probabilities_jensen_shannon() -> None:
    production = [[1.0, 0.0], [1.0, 0.0], [0.5, 0.5], [0.25, 0.75]]
    shadow = [[0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [0.25, 0.75]]
    result = probabilities(Distance.JENSEN_SHANNON).compare(production, shadow)
    # [1, 0] vs [0.5, 0.5]: m = [0.75, 0.25], KL(p||m) = log2(4/3), KL(q||m) = (log2(2/3) + 1)/2.
    half_way = math.sqrt((math.log2(4 / 3) + (math.log2(2 / 3) + 1) / 2) / 2)
    assert result.instances == 4
    assert result.disagreements == 1
    assert result.distances == pytest.approx((1.0, half_way, 0.0, 0.0))
    assert half_way == pytest.approx(0.5579230452)


def test_probabilities_total_variation_extremes() -> None:
    result = probabilities().compare([[1, 0], [0.5, 0.5]], [[0, 1], [0.5, 0.5]])
    assert result == Comparison(instances=2, disagreements=1, distances=(1.0, 0.0))


def test_probabilities_ties_pick_the_first_class() -> None:
    result = probabilities().compare([[0.5, 0.5], [0.4, 0.4, 0.2]], [[0.5, 0.5], [0.2, 0.4, 0.4]])
    assert result.disagreements == 1


def test_jensen_shannon_normalises_like_scipy() -> None:
    # scipy's jensenshannon divides each vector by its sum first; so does ours.
    result = probabilities(Distance.JENSEN_SHANNON).compare([[2.0, 0.0]], [[0.0, 3.0]])
    assert result.distances == pytest.approx((1.0,))


def test_binary_scalar_probabilities() -> None:
    result = probabilities().compare([0.2, 0.2, 0.9], [0.4, 0.6, [0.1, 0.9]])
    assert result.instances == 3
    assert result.disagreements == 1
    assert result.distances == pytest.approx((0.2, 0.4, 0.0), abs=1e-12)
    js = probabilities(Distance.JENSEN_SHANNON).compare([1], [0])
    assert js.disagreements == 1
    assert js.distances == pytest.approx((1.0,))


def test_probability_vector_length_mismatch() -> None:
    with pytest.raises(
        ShapeMismatch, match=r"^instance 1: production has 2 probabilities, shadow 3$"
    ):
        probabilities().compare([[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.2, 0.3, 0.5]])
    with pytest.raises(
        ShapeMismatch, match=r"^instance 0: production has 2 probabilities, shadow 3"
    ):
        probabilities().compare([0.5], [[0.2, 0.3, 0.5]])


@pytest.mark.parametrize(
    "bad", [["0.5", 0.5], "0.5", None, [[0.5, 0.5]], [True, False], {"p": 0.5}, 10**400]
)
def test_non_numeric_probabilities(bad: Any) -> None:
    with pytest.raises(ShapeMismatch, match=r"^probabilities must be numbers$"):
        probabilities().compare([[0.5, 0.5]], [bad])
    with pytest.raises(ShapeMismatch, match=r"^probabilities must be numbers$"):
        probabilities().compare([bad], [[0.5, 0.5]])


@pytest.mark.parametrize("bad", [[-0.1, 1.1], [math.nan, 1.0], [math.inf, 0.0], [0.0, 0.0], 1.5])
def test_probabilities_out_of_range(bad: Any) -> None:
    with pytest.raises(ShapeMismatch, match=r"^probabilities must be finite, non-negative"):
        probabilities().compare([[0.5, 0.5]], [bad])


def test_empty_probability_vector() -> None:
    with pytest.raises(ShapeMismatch, match=r"^a probability vector is empty$"):
        probabilities().compare([[]], [[]])


@pytest.mark.parametrize("distance", list(Distance))
@pytest.mark.parametrize(
    ("production", "shadow"),
    [
        ([[0.1, 0.9], [0.6, 0.4], [1.0, 0.0]], [[0.3, 0.7], [0.4, 0.6], [0.5, 0.5]]),
        ([0.9, 0.4, 0.0], [0.7, 0.6, 0.5]),
    ],
)
def test_probabilities_small_and_large_batches_agree(
    distance: Distance, production: list[Any], shadow: list[Any]
) -> None:
    small = probabilities(distance).compare(production, shadow)
    # 30 copies push the batch past the plain-Python path into the numpy one.
    large = probabilities(distance).compare(production * 30, shadow * 30)
    assert small.disagreements == 1
    assert large.instances == 90
    assert large.disagreements == 30
    assert large.distances == pytest.approx(small.distances * 30, abs=1e-12)


def test_probabilities_large_batch_mixing_scalars_and_vectors() -> None:
    result = probabilities().compare([0.9, [0.5, 0.5]] * 30, [[0.3, 0.7], 0.5] * 30)
    assert result.disagreements == 0
    assert result.distances == pytest.approx((0.2, 0.0) * 30)


def test_probabilities_large_batch_with_bad_values() -> None:
    with pytest.raises(ShapeMismatch, match=r"^probabilities must be finite, non-negative"):
        probabilities().compare([[0.5, 0.5]] * 40, [[0.5, 0.5]] * 39 + [[math.nan, 1.0]])
    with pytest.raises(ShapeMismatch, match=r"^probabilities must be numbers$"):
        probabilities().compare([[0.5, 0.5]] * 40, [[0.5, 0.5]] * 39 + [["0.5", 0.5]])


def test_probabilities_large_batch_with_different_class_counts() -> None:
    production = [[0.5, 0.5], [0.2, 0.3, 0.5]] * 30
    shadow = [[0.5, 0.5], [0.5, 0.3, 0.2]] * 30
    result = probabilities().compare(production, shadow)
    assert result.disagreements == 30
    assert result.distances == pytest.approx((0.0, 0.3) * 30)


@pytest.mark.parametrize("copies", [1, 50])
def test_jensen_shannon_matches_scipy(copies: int) -> None:
    from scipy.spatial import distance

    production = [[0.1, 0.2, 0.7], [0.0, 0.5, 0.5], [0.3, 0.3, 0.4]] * copies
    shadow = [[0.2, 0.2, 0.6], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]] * copies
    result = probabilities(Distance.JENSEN_SHANNON).compare(production, shadow)
    expected = [
        distance.jensenshannon(p, q, base=2) for p, q in zip(production, shadow, strict=True)
    ]
    assert result.distances == pytest.approx(expected, abs=1e-12)


# --- class labels of the predicted-class mix -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("setosa", "setosa"),
        ("1", "1"),
        ("x" * 100, "x" * 100),
        (0, "0"),
        (-3, "-3"),
        (2.0, "2"),
        (-0.0, "0"),
        (0.25, "0.25"),
        (1e20, "100000000000000000000"),
        (10**99, "1" + "0" * 99),
        (True, "true"),
        (False, "false"),
    ],
)
def test_class_label(value: Any, label: str) -> None:
    assert class_label(value) == label


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * 101,
        10**100,
        pytest.param(10**5000, id="10**5000"),
        1e200,
        None,
        math.nan,
        math.inf,
        -math.inf,
        [1],
        {"a": 1},
    ],
)
def test_values_that_name_no_class(value: Any) -> None:
    assert class_label(value) is None


def test_configured_classes_name_their_own_and_everything_else_is_other() -> None:
    labels = ClassLabels(CompareKind.CLASSIFICATION, ("cat", "1", "true"))
    predictions = ["cat", "dog", 1, 1.0, "1", True, ["cat"], ["cat", "dog"], None, {}, "other"]
    assert [labels.label(p) for p in predictions] == [
        "cat", "other", "1", "1", "1", "true", "cat", "other", "other", "other", "other",
    ]  # fmt: skip
    assert labels.named == {"cat", "1", "true"}


def test_without_classes_the_first_ones_seen_are_named_then_other() -> None:
    labels = ClassLabels(CompareKind.CLASSIFICATION)
    seen = [labels.label(i) for i in range(MAX_CLASSES + 5)]
    assert seen == [str(i) for i in range(MAX_CLASSES)] + [OTHER_CLASS] * 5
    # Named classes stay named; nothing else ever is.
    later = [labels.label(v) for v in (7, 7.0, "19", "new", None)]
    assert later == ["7", "7", "19", "other", "other"]
    assert labels.named == {str(i) for i in range(MAX_CLASSES)}


def test_a_models_own_other_takes_no_place_among_the_named() -> None:
    labels = ClassLabels(CompareKind.CLASSIFICATION, limit=1)
    assert [labels.label(v) for v in ("other", None, "a", "b")] == ["other", "other", "a", "other"]


def test_probabilities_are_named_by_their_argmax() -> None:
    rows = [[0.1, 0.9], [0.5, 0.5], 0.75, 0.25, [0, 0, 3], [[0.2, 0.8]], [], [0.0, 0.0], "x", -1]
    named = ClassLabels(CompareKind.PROBABILITIES, ("neg", "pos"))
    assert [named.label(r) for r in rows] == [
        "pos", "neg", "pos", "neg", "other", "other", "other", "other", "other", "other",
    ]  # fmt: skip
    indexes = ClassLabels(CompareKind.PROBABILITIES, limit=2)
    assert [indexes.label(r) for r in rows] == [
        "1", "0", "1", "0", "other", "other", "other", "other", "other", "other",
    ]  # fmt: skip


def test_regression_has_no_class_labels() -> None:
    with pytest.raises(ValueError, match="regression predictions have no classes"):
        ClassLabels(CompareKind.REGRESSION)


# --- classify: the decision on one shadow answer ---------------------------------------------


def _raises() -> list[Any]:
    raise ExtractionError("no predictions")


def _never() -> list[Any]:
    raise AssertionError("not to be parsed")


@pytest.mark.parametrize(
    ("production_status", "shadow_status", "production", "shadow", "expected"),
    [
        (None, 200, _never, _never, ComparisonResult.PRODUCTION_FAILED),
        (200, 503, _never, _never, ComparisonResult.STATUS_MISMATCH),
        (503, 503, _never, _never, ComparisonResult.SAME_ERROR),
        (200, 200, _raises, _never, ComparisonResult.PRODUCTION_UNPARSEABLE),
        (200, 200, lambda: [1], _raises, ComparisonResult.SHADOW_UNPARSEABLE),
        (200, 200, lambda: [1, 2], lambda: [1], ComparisonResult.SHAPE_MISMATCH),
        (200, 200, lambda: [1, 2], lambda: [1, 0], ComparisonResult.DISAGREE),
        (201, 201, lambda: [1, 2], lambda: [1, 2], ComparisonResult.AGREE),
    ],
)
def test_classify_decides_each_result(
    production_status: int | None,
    shadow_status: int,
    production: Callable[[], list[Any]],
    shadow: Callable[[], list[Any]],
    expected: ComparisonResult,
) -> None:
    found = classify(
        production_status, shadow_status, production, shadow, Comparator(CompareKind.CLASSIFICATION)
    )
    assert found.result is expected


def test_classify_keeps_the_shadow_predictions_once_parsed() -> None:
    comparator = Comparator(CompareKind.CLASSIFICATION)
    assert classify(200, 200, lambda: [1, 2], lambda: [1], comparator) == Classified(
        ComparisonResult.SHAPE_MISMATCH, [1]
    )
    assert classify(200, 200, lambda: [1, 2], lambda: [1, 0], comparator) == Classified(
        ComparisonResult.DISAGREE, [1, 0], Comparison(instances=2, disagreements=1)
    )
    assert classify(200, 503, _never, _never, comparator) == Classified(
        ComparisonResult.STATUS_MISMATCH
    )


def test_classify_compares_no_more_than_max_instances() -> None:
    assert Comparator(CompareKind.CLASSIFICATION).max_instances == MAX_INSTANCES == 10_000
    comparator = Comparator(CompareKind.CLASSIFICATION, max_instances=3)
    at_the_cap = classify(200, 200, lambda: [1, 2, 3], lambda: [1, 2, 3], comparator)
    assert at_the_cap == Classified(ComparisonResult.AGREE, [1, 2, 3], Comparison(3, 0))
    # Production's count is known before the shadow's answer is parsed: it never is.
    assert classify(200, 200, lambda: [1, 2, 3, 4], _never, comparator) == Classified(
        ComparisonResult.TOO_MANY_INSTANCES
    )
    # Nor are a shadow's predictions handed on to be counted by class or recorded.
    assert classify(200, 200, lambda: [1], lambda: [1, 2, 3, 4], comparator) == Classified(
        ComparisonResult.TOO_MANY_INSTANCES
    )

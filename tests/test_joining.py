from __future__ import annotations

import math
from typing import Any

import pytest

from proxy.core.comparison import CompareKind, ShapeMismatch
from proxy.core.joining import InvalidLabel, Paired, Score, label_values, pair, score

CLASSIFICATION = CompareKind.CLASSIFICATION
REGRESSION = CompareKind.REGRESSION
PROBABILITIES = CompareKind.PROBABILITIES


# --- label_values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "instances", "expected"),
    [
        pytest.param("cat", 1, ["cat"], id="scalar"),
        pytest.param(2.5, 1, [2.5], id="number"),
        pytest.param(False, 1, [False], id="bool"),
        pytest.param([7], 1, [7], id="single-instance list of one"),
        pytest.param([[0.2, 0.8]], 1, [[0.2, 0.8]], id="single-instance list holding a list"),
        pytest.param([1, 0, 1], 3, [1, 0, 1], id="batch"),
        pytest.param([[1], [0]], 2, [[1], [0]], id="batch of one-element lists"),
    ],
)
def test_label_values(label: Any, instances: int, expected: list[Any]) -> None:
    assert label_values(label, instances) == expected


def test_label_values_returns_a_copy() -> None:
    label = [1, 2]
    values = label_values(label, 2)
    values.append(3)
    assert label == [1, 2]


@pytest.mark.parametrize(
    ("label", "instances", "message"),
    [
        pytest.param(None, 1, "label is null", id="null"),
        pytest.param(None, 3, "label is null", id="null batch"),
        pytest.param(
            {"y": 1}, 1, "label must be a value or a list of values, got an object", id="dict"
        ),
        pytest.param([], 1, "label is an empty list", id="empty single"),
        pytest.param([], 3, "label is an empty list", id="empty batch"),
        pytest.param(
            [1, 0], 3, "label has 2 values but the request had 3 instances", id="batch mismatch"
        ),
        pytest.param(
            [1], 3, "label has 1 value but the request had 3 instances", id="batch of one value"
        ),
        pytest.param(
            [1, 0], 1, "label has 2 values but the request had 1 instance", id="single list of 2"
        ),
        pytest.param(
            5, 2, "label is a single value but the request had 2 instances", id="scalar for batch"
        ),
        pytest.param([1, None], 2, "label of instance 1 is null", id="null item"),
        pytest.param(
            [{"y": 1}, 2], 2, "label of instance 0 must be a value, got an object", id="dict item"
        ),
        pytest.param(1, 0, "the request had no instances to label", id="no instances"),
    ],
)
def test_label_values_rejects(label: Any, instances: int, message: str) -> None:
    with pytest.raises(InvalidLabel) as info:
        label_values(label, instances)
    assert str(info.value) == message


def test_invalid_label_is_a_value_error() -> None:
    assert issubclass(InvalidLabel, ValueError)


# --- score: shared rules -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CompareKind))
def test_score_rejects_length_mismatch(kind: CompareKind) -> None:
    with pytest.raises(InvalidLabel) as info:
        score(kind, [1, 0, 1], [1, 0])
    assert str(info.value) == "label has 2 values but the model predicted 3 instances"


@pytest.mark.parametrize("kind", list(CompareKind))
def test_score_length_mismatch_singular(kind: CompareKind) -> None:
    with pytest.raises(InvalidLabel) as info:
        score(kind, [1], [1, 0])
    assert str(info.value) == "label has 2 values but the model predicted 1 instance"


@pytest.mark.parametrize("kind", list(CompareKind))
def test_score_empty_batch(kind: CompareKind) -> None:
    assert score(kind, [], []) == Score(instances=0, correct=0)


# --- score: classification ----------------------------------------------------------------------


def test_classification_counts_matches() -> None:
    result = score(CLASSIFICATION, ["cat", "dog", "cat"], ["cat", "cat", "cat"])
    assert result == Score(instances=3, correct=2)
    assert result.scored == 3


def test_classification_uses_numeric_equality() -> None:
    assert score(CLASSIFICATION, [1, 1.0, True, False], [1.0, 1, True, False]).correct == 4


def test_a_boolean_is_a_class_of_its_own() -> None:
    # A label true used to count as right for a prediction of class 1 (Python's True == 1).
    assert score(CLASSIFICATION, [1, 0, True, 1.0], [True, False, 1, True]).correct == 0
    paired = pair(CLASSIFICATION, [1], [True], [True])
    assert (paired.production_only, paired.shadow_only) == (0, 1)


def test_classification_string_and_int_differ() -> None:
    assert score(CLASSIFICATION, ["1", 1], [1, "1"]) == Score(instances=2, correct=0)


def test_classification_one_element_prediction_compares_as_its_item() -> None:
    assert score(CLASSIFICATION, [[1], [0], ["a"]], [1, 1, "a"]).correct == 2


def test_classification_one_element_label_compares_as_its_item() -> None:
    assert score(CLASSIFICATION, [[1], 0], [[1], [0]]).correct == 2


def test_classification_odd_predictions_are_wrong_not_errors() -> None:
    result = score(CLASSIFICATION, [[1, 0], {"y": 1}, None, float("nan")], [1, 1, 1, 1])
    assert result == Score(instances=4, correct=0, unscorable=0)


@pytest.mark.parametrize(
    ("label", "shown"),
    [([1, 2], "[1, 2]"), (float("nan"), "nan"), (float("inf"), "inf")],
)
def test_classification_rejects_labels_that_are_not_classes(label: Any, shown: str) -> None:
    with pytest.raises(InvalidLabel) as info:
        score(CLASSIFICATION, [1], [label])
    assert str(info.value) == (
        f"classification labels must be strings, numbers or booleans, got {shown}"
    )


def test_long_labels_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidLabel) as info:
        score(CLASSIFICATION, [1], [list(range(100))])
    message = str(info.value)
    assert message.endswith("got [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11...")
    assert len(message.split("got ", 1)[1]) == 40


# --- score: regression --------------------------------------------------------------------------


def test_regression_errors() -> None:
    result = score(REGRESSION, [1.0, 5, -2.5], [1.5, 3.0, -2.5])
    assert result.instances == 3
    assert result.correct == 0
    assert result.absolute_errors == pytest.approx((0.5, 2.0, 0.0))
    assert result.squared_error == pytest.approx(0.25 + 4.0)
    assert result.log_loss == 0.0
    assert result.unscorable == 0


def test_regression_one_element_prediction_and_label() -> None:
    result = score(REGRESSION, [[2.0], 4], [1, [4.5]])
    assert result.absolute_errors == pytest.approx((1.0, 0.5))
    assert result.squared_error == pytest.approx(1.25)


@pytest.mark.parametrize(
    "prediction",
    [
        pytest.param("abc", id="string"),
        pytest.param(None, id="null"),
        pytest.param(True, id="bool"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(10**400, id="int beyond float range"),
        pytest.param([1.0, 2.0], id="vector"),
        pytest.param([], id="empty list"),
        pytest.param({"y": 1.0}, id="object"),
        pytest.param(1e200, id="error too large to square"),
    ],
)
def test_regression_unscorable_predictions(prediction: Any) -> None:
    result = score(REGRESSION, [prediction, 3.0], [1.0, 2.0])
    assert result == Score(
        instances=2, correct=0, absolute_errors=(1.0,), squared_error=1.0, unscorable=1
    )
    assert result.scored == 1


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("abc", "'abc'"),
        (True, "True"),
        (False, "False"),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
        ([1.0, 2.0], "[1.0, 2.0]"),
    ],
)
def test_regression_rejects_labels_that_are_not_numbers(label: Any, shown: str) -> None:
    with pytest.raises(InvalidLabel) as info:
        score(REGRESSION, [1.0], [label])
    assert str(info.value) == f"regression labels must be numbers, got {shown}"


def test_regression_checks_labels_even_when_the_prediction_is_unscorable() -> None:
    with pytest.raises(InvalidLabel, match="regression labels must be numbers, got 'abc'"):
        score(REGRESSION, ["oops"], ["abc"])


# --- score: probabilities -----------------------------------------------------------------------


def test_probabilities_log_loss_exact() -> None:
    result = score(PROBABILITIES, [[0.25, 0.75]], [1])
    assert (result.instances, result.correct, result.unscorable) == (1, 1, 0)
    assert result.log_loss == pytest.approx(math.log(4 / 3))


def test_probabilities_wrong_argmax() -> None:
    result = score(PROBABILITIES, [[0.25, 0.75]], [0])
    assert result.correct == 0
    assert result.log_loss == pytest.approx(math.log(4))


def test_probabilities_sums_over_instances() -> None:
    result = score(PROBABILITIES, [[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], [2, 0])
    assert result.instances == 2
    assert result.correct == 1
    assert result.log_loss == pytest.approx(math.log(5) + math.log(2))


def test_probabilities_vectors_are_normalised() -> None:
    result = score(PROBABILITIES, [[1, 3]], [1])
    assert result.correct == 1
    assert result.log_loss == pytest.approx(math.log(4 / 3))


def test_probabilities_binary_scalar() -> None:
    result = score(PROBABILITIES, [0.75, 0.75, 0.5], [1, 0, 1])
    # 0.5 ties [0.5, 0.5]: the first class wins, so label 1 is a miss.
    assert result.correct == 1
    assert result.log_loss == pytest.approx(math.log(4 / 3) + math.log(4) + math.log(2))


def test_probabilities_one_element_prediction_is_a_binary_scalar() -> None:
    result = score(PROBABILITIES, [[0.75]], [1])
    assert result.correct == 1
    assert result.log_loss == pytest.approx(math.log(4 / 3))


def test_probabilities_ties_go_to_the_first_class() -> None:
    result = score(PROBABILITIES, [[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]], [0, 1])
    assert result.correct == 1
    assert result.log_loss == pytest.approx(2 * math.log(2.5))


def test_probabilities_float_integral_label_is_accepted() -> None:
    result = score(PROBABILITIES, [[0.25, 0.75], [0.25, 0.75]], [1.0, [1]])
    assert result.correct == 2
    assert result.log_loss == pytest.approx(2 * math.log(4 / 3))


def test_probabilities_zero_probability_is_clipped() -> None:
    result = score(PROBABILITIES, [[1.0, 0.0], 1.0], [1, 0])
    assert result.correct == 0
    assert result.log_loss == pytest.approx(-2 * math.log(1e-15))


@pytest.mark.parametrize(
    "prediction",
    [
        pytest.param([0.0, 0.0], id="all zero"),
        pytest.param([-0.5, 1.5], id="negative"),
        pytest.param([float("nan"), 1.0], id="nan"),
        pytest.param([float("inf"), 1.0], id="inf"),
        pytest.param([1e308, 1e308], id="sum overflows"),
        pytest.param([10**400, 1], id="int beyond float range"),
        pytest.param(["a", "b"], id="strings"),
        pytest.param([True, False], id="bools"),
        pytest.param([], id="empty"),
        pytest.param(None, id="null"),
        pytest.param("0.5", id="string scalar"),
        pytest.param(1.5, id="scalar above 1"),
        pytest.param(-0.25, id="scalar below 0"),
        pytest.param(True, id="bool scalar"),
    ],
)
def test_probabilities_unscorable_predictions(prediction: Any) -> None:
    result = score(PROBABILITIES, [prediction, [0.25, 0.75]], [0, 1])
    assert (result.instances, result.correct, result.unscorable) == (2, 1, 1)
    assert result.log_loss == pytest.approx(math.log(4 / 3))


@pytest.mark.parametrize(
    ("prediction", "label", "message"),
    [
        pytest.param([0.2, 0.3, 0.5], 3, "class indexes 0..2, got 3", id="out of range"),
        pytest.param(0.5, 2, "class indexes 0..1, got 2", id="out of binary range"),
        pytest.param([0.5, 0.5], -1, "class indexes 0..1, got -1", id="negative"),
        pytest.param([0.5, 0.5], 1.5, "class indexes 0..1, got 1.5", id="fractional"),
        pytest.param([0.5, 0.5], True, "class indexes 0..1, got True", id="bool"),
        pytest.param([0.5, 0.5], "1", "class indexes 0..1, got '1'", id="string"),
        pytest.param([0.5, 0.5], float("nan"), "class indexes 0..1, got nan", id="nan"),
        pytest.param("bad", -1, "class indexes (integers from 0), got -1", id="unscorable"),
    ],
)
def test_probabilities_rejects_labels(prediction: Any, label: Any, message: str) -> None:
    with pytest.raises(InvalidLabel) as info:
        score(PROBABILITIES, [prediction], [label])
    assert str(info.value) == f"probabilities labels must be {message}"


def test_probabilities_large_label_is_fine_when_the_prediction_is_unscorable() -> None:
    # The class count is unknown, so only the label's form can be checked.
    assert score(PROBABILITIES, [[0.0, 0.0]], [7]) == Score(instances=1, correct=0, unscorable=1)


# --- pair ---------------------------------------------------------------------------------------


def test_pair_classification_tallies_every_outcome() -> None:
    labels = ["a", "b", "a", "b", "a", "b"]
    production = ["a", "b", "a", "a", "b", "a"]
    shadow = ["a", "b", "b", "b", "b", "a"]
    # instances 0-1 both right, 2 production only, 3 shadow only, 4-5 both wrong
    assert pair(CLASSIFICATION, production, shadow, labels) == Paired(
        both_right=2, production_only=1, shadow_only=1, both_wrong=2
    )


def test_pair_probabilities_leaves_out_instances_unscorable_on_either_side() -> None:
    labels = [1, 0, 1, 0, 1, 2]
    production = [0.9, [0.6, 0.4], [0.2, 0.8], "bad", [0.0, 0.0], [0.5, 0.3, 0.2]]
    shadow = [[0.1, 0.9], [0.7, 0.3], None, [0.9, 0.1], 0.3, [0.1, 0.1, 0.1]]
    # 0-1 both right; 2, 3, 4 unscorable on one side; 5 both wrong (shadow ties to class 0).
    result = pair(PROBABILITIES, production, shadow, labels)
    tallies = (result.both_right, result.production_only, result.shadow_only, result.both_wrong)
    # Unscorable on one side (2, 3 and 4): left out of the pair, as a failed answer is.
    assert tallies == (2, 0, 0, 1)
    # Scorable on both sides: instances 0, 1 and 5. Log loss and Brier, production's minus the
    # shadow's: 0 on instance 0 (the same vector), then ln(0.7 / 0.6) and ln((1/3) / 0.2);
    # Brier 0.32 - 0.18 and 0.98 - 6/9.
    assert result.scored_probabilities == 3
    assert result.log_loss_advantage == pytest.approx(math.log(0.7 / 0.6) + math.log(5 / 3))
    assert result.brier_advantage == pytest.approx(0.14 + 0.98 - 6 / 9)


def test_pair_regression_differences() -> None:
    # production errors [1, 2], shadow errors [0.5, 3]
    result = pair(REGRESSION, [11.0, 18.0], [10.5, 23.0], [10.0, 20.0])
    assert result.n == 2
    assert result.d_sum == pytest.approx(0.5)
    assert result.d_squared_sum == pytest.approx(1.25)
    assert result.d_positive_sum == pytest.approx(1.0)  # d = [-0.5, 1]
    tallies = (result.both_right, result.production_only, result.shadow_only, result.both_wrong)
    assert tallies == (0, 0, 0, 0)


def test_pair_regression_skips_instances_unscorable_on_either_side() -> None:
    result = pair(REGRESSION, [11.0, "x", 3.0, None], [10.5, 5.0, [1, 2], "y"], [10, 5, 3, 0])
    assert result.n == 1
    assert result.d_sum == pytest.approx(-0.5)
    assert result.d_squared_sum == pytest.approx(0.25)
    assert result.d_positive_sum == 0.0


def test_pair_classification_counts_odd_predictions_as_wrong() -> None:
    result = pair(CLASSIFICATION, [[1], {"y": 1}], [None, [1]], [1, 1])
    assert result == Paired(production_only=1, shadow_only=1)


@pytest.mark.parametrize("kind", list(CompareKind))
def test_pair_rejects_labels_that_do_not_fit_production(kind: CompareKind) -> None:
    with pytest.raises(InvalidLabel) as info:
        pair(kind, [1, 0], [1, 0], [1])
    assert str(info.value) == "label has 1 value but the model predicted 2 instances"


@pytest.mark.parametrize("kind", list(CompareKind))
def test_pair_rejects_a_shadow_of_another_length(kind: CompareKind) -> None:
    with pytest.raises(ShapeMismatch) as info:
        pair(kind, [1, 0], [1], [1, 0])
    assert str(info.value) == "production has 2 instances, shadow 1"


@pytest.mark.parametrize(
    ("kind", "label", "message"),
    [
        (REGRESSION, "abc", "regression labels must be numbers, got 'abc'"),
        (PROBABILITIES, 5, "probabilities labels must be class indexes 0..1, got 5"),
        (
            CLASSIFICATION,
            [1, 2],
            "classification labels must be strings, numbers or booleans, got [1, 2]",
        ),
    ],
)
def test_pair_validates_labels(kind: CompareKind, label: Any, message: str) -> None:
    with pytest.raises(InvalidLabel) as info:
        pair(kind, [0.5], [0.5], [label])
    assert str(info.value) == message


@pytest.mark.parametrize("kind", list(CompareKind))
def test_pair_empty_batch(kind: CompareKind) -> None:
    assert pair(kind, [], [], []) == Paired()


def test_pair_agrees_with_score() -> None:
    labels = [2, 0, 1, 1]
    production = [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]
    shadow = [[0.3, 0.3, 0.4], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.4, 0.4, 0.2]]
    paired = pair(PROBABILITIES, production, shadow, labels)
    assert (
        paired.both_right + paired.production_only
        == score(PROBABILITIES, production, labels).correct
    )
    assert paired.both_right + paired.shadow_only == score(PROBABILITIES, shadow, labels).correct

"""Tests for proxy.core.predictions: extraction per protocol and production-vs-shadow comparison."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.core.predictions import (
    MAX_CLASSES,
    OTHER_CLASS,
    ClassLabels,
    Comparator,
    CompareKind,
    Comparison,
    Distance,
    ExtractionError,
    Extractor,
    Protocol,
    ShapeMismatch,
    class_label,
)

SAMPLES = Path(__file__).resolve().parent / "protocol-samples"  # captured from MLServer 1.7.1

PROBA = [
    [0.010868981942189881, 0.9891310180578101],
    [0.9960110508055856, 0.00398894919441441],
    [0.07271445792966691, 0.9272855420703331],
]


def sample_response(name: str) -> dict[str, Any]:
    response: dict[str, Any] = orjson.loads((SAMPLES / name).read_bytes())["response"]
    return response


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def oip(*outputs: dict[str, Any]) -> bytes:
    return body({"model_name": "m", "id": "1", "outputs": list(outputs)})


# --- every protocol: bodies that are not JSON, or not the expected JSON type ---------------


@pytest.mark.parametrize("protocol", list(Protocol))
@pytest.mark.parametrize("raw", [b"not json", b"", b'{"predictions": [1,', b"\xff\xfe"])
def test_non_json_body_is_an_extraction_error(protocol: Protocol, raw: bytes) -> None:
    with pytest.raises(ExtractionError, match=r"^body is not JSON"):
        Extractor(protocol, path=("x",)).extract(raw)


def test_a_body_of_the_wrong_python_type_is_an_extraction_error() -> None:
    with pytest.raises(ExtractionError, match=r"^body is not JSON"):
        Extractor(Protocol.KSERVE_V1).extract(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "protocol", [Protocol.KSERVE_V1, Protocol.OPEN_INFERENCE_V2, Protocol.TFSERVING]
)
@pytest.mark.parametrize("raw", [b"3", b'"text"', b"null", b"true"])
def test_json_that_is_not_an_object_is_an_extraction_error(protocol: Protocol, raw: bytes) -> None:
    with pytest.raises(ExtractionError):
        Extractor(protocol).extract(raw)


def test_extraction_error_is_a_value_error() -> None:
    assert issubclass(ExtractionError, ValueError)
    assert issubclass(ShapeMismatch, ValueError)
    assert not issubclass(ExtractionError, ShapeMismatch)


# --- KServe v1 -------------------------------------------------------------------------------


def test_kserve_v1_returns_the_predictions_items() -> None:
    raw = b'{"predictions": [1, 0, [0.2, 0.8], "cat"], "model_name": "x"}'
    assert Extractor(Protocol.KSERVE_V1).extract(raw) == [1, 0, [0.2, 0.8], "cat"]


def test_kserve_v1_empty_batch() -> None:
    assert Extractor(Protocol.KSERVE_V1).extract(b'{"predictions": []}') == []


def test_kserve_v1_missing_predictions() -> None:
    with pytest.raises(ExtractionError, match=r"^no 'predictions' key$"):
        Extractor(Protocol.KSERVE_V1).extract(b'{"outputs": [1]}')


def test_kserve_v1_predictions_not_a_list() -> None:
    with pytest.raises(ExtractionError, match=r"^'predictions' is an object, not an array$"):
        Extractor(Protocol.KSERVE_V1).extract(b'{"predictions": {"a": 1}}')


def test_kserve_v1_body_not_an_object() -> None:
    with pytest.raises(ExtractionError, match=r"^body is an array, not an object$"):
        Extractor(Protocol.KSERVE_V1).extract(b"[1, 2]")


# --- Open Inference v2 -----------------------------------------------------------------------


def test_oip_real_predict_sample_gives_scalar_labels() -> None:
    raw = body(sample_response("open-inference-v2-predict.json"))
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw) == [1, 0, 1]
    assert Extractor(Protocol.OPEN_INFERENCE_V2, output="predict").extract(raw) == [1, 0, 1]


def test_oip_real_proba_sample_gives_rows_of_probabilities() -> None:
    raw = body(sample_response("open-inference-v2-proba.json"))
    assert Extractor(Protocol.OPEN_INFERENCE_V2, output="predict_proba").extract(raw) == PROBA
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw) == PROBA


def test_oip_extract_parsed_matches_extract() -> None:
    doc = sample_response("open-inference-v2-proba.json")
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract_parsed(doc) == PROBA


def test_oip_named_output_among_several() -> None:
    raw = oip(
        {"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [1, 0]},
        {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 0.9, 1, 0]},
    )
    proba = Extractor(Protocol.OPEN_INFERENCE_V2, output="predict_proba")
    assert proba.extract(raw) == [[0.1, 0.9], [1, 0]]
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw) == [1, 0]


def test_oip_missing_output_lists_the_available_names() -> None:
    raw = oip({"name": "predict", "shape": [3, 1], "data": [1, 0, 1]})
    with pytest.raises(ExtractionError, match=r"^output 'proba' not among outputs \['predict'\]$"):
        Extractor(Protocol.OPEN_INFERENCE_V2, output="proba").extract(raw)


def test_oip_bad_shape() -> None:
    raw = oip({"name": "y", "shape": [3, 2], "data": [1, 2, 3, 4, 5]})
    with pytest.raises(ExtractionError, match=r"^data has 5 values but shape \[3, 2\] needs 6$"):
        Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw)


@pytest.mark.parametrize(
    ("shape", "data", "expected"),
    [
        ([3], [1.5, 2.5, 3.5], [1.5, 2.5, 3.5]),
        ([3, 1], ["a", "b", "c"], ["a", "b", "c"]),
        ([1, 3], [1, 2, 3], [[1, 2, 3]]),
        ([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8], [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]),
        ([2, 3, 1], [1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]),
        ([2, 1, 2], [1, 2, 3, 4], [[[1, 2]], [[3, 4]]]),
        ([0, 2], [], []),
        ([0], [], []),
    ],
)
def test_oip_shape_gives_the_rows(shape: list[int], data: list[Any], expected: list[Any]) -> None:
    raw = oip({"name": "y", "shape": shape, "data": data})
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw) == expected


@pytest.mark.parametrize("shape", [[2, 0], [10**12, 0], [3, 2, 0]])
def test_oip_instances_without_values_are_refused(shape: list[int]) -> None:
    raw = oip({"name": "y", "shape": shape, "data": []})
    with pytest.raises(ExtractionError, match=r"has instances without values$"):
        Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw)


def test_oip_nested_data_is_flattened_before_shape_applies() -> None:
    raw = oip({"name": "y", "shape": [2, 2], "data": [[0.1, 0.9], [0.8, 0.2]]})
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw) == [[0.1, 0.9], [0.8, 0.2]]
    raw = oip({"name": "y", "shape": [3, 1], "data": [[1], [0], [1]]})
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw) == [1, 0, 1]


def test_oip_deeply_nested_data_does_not_hit_the_recursion_limit() -> None:
    deep: list[Any] = [7]
    for _ in range(5000):
        deep = [deep]
    doc = {"outputs": [{"name": "y", "shape": [1], "data": deep}]}
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract_parsed(doc) == [7]


def test_oip_missing_shape_means_one_scalar_per_instance() -> None:
    raw = oip({"name": "y", "data": [3, 4, 5]})
    assert Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw) == [3, 4, 5]


@pytest.mark.parametrize("shape", ["3", [], [-1], [3, "1"], [True, 1], [1.5]])
def test_oip_invalid_shape(shape: Any) -> None:
    raw = oip({"name": "y", "shape": shape, "data": [1, 2, 3]})
    with pytest.raises(ExtractionError, match=r"is not a list of sizes"):
        Extractor(Protocol.OPEN_INFERENCE_V2).extract(raw)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"model_name": "m"}, "^no 'outputs' list$"),
        ({"outputs": []}, "^no 'outputs' list$"),
        ({"outputs": {"name": "y"}}, "^no 'outputs' list$"),
        ({"outputs": [{"name": "y", "shape": [1]}]}, "^output 'y' has no 'data' list$"),
        ({"outputs": [{"name": "y", "data": 3}]}, "^output 'y' has no 'data' list$"),
        ({"outputs": ["y"]}, "^output is a string, not an object$"),
    ],
)
def test_oip_malformed_outputs(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ExtractionError, match=message):
        Extractor(Protocol.OPEN_INFERENCE_V2).extract(body(doc))


# --- MLflow ----------------------------------------------------------------------------------


def test_mlflow_list_of_values() -> None:
    assert Extractor(Protocol.MLFLOW).extract(b'{"predictions": [0.5, 1.5]}') == [0.5, 1.5]


def test_mlflow_bare_list_from_older_servers() -> None:
    assert Extractor(Protocol.MLFLOW).extract(b"[1, 0, 1]") == [1, 0, 1]
    assert Extractor(Protocol.MLFLOW).extract(b'[{"y": 1}, {"y": 0}]') == [1, 0]


def test_mlflow_dict_of_columns() -> None:
    raw = b'{"predictions": {"label": [1, 0], "score": [0.9, 0.2]}}'
    assert Extractor(Protocol.MLFLOW, output="score").extract(raw) == [0.9, 0.2]
    assert Extractor(Protocol.MLFLOW, output="label").extract(raw) == [1, 0]


def test_mlflow_dict_with_a_single_column_needs_no_name() -> None:
    raw = b'{"predictions": {"score": [0.9, 0.2]}}'
    assert Extractor(Protocol.MLFLOW).extract(raw) == [0.9, 0.2]


def test_mlflow_dict_of_several_columns_needs_a_name() -> None:
    raw = b'{"predictions": {"label": [1, 0], "score": [0.9, 0.2]}}'
    with pytest.raises(ExtractionError, match=r"among columns \['label', 'score'\]$"):
        Extractor(Protocol.MLFLOW).extract(raw)
    with pytest.raises(
        ExtractionError, match=r"^output 'proba' not among columns \['label', 'score'\]$"
    ):
        Extractor(Protocol.MLFLOW, output="proba").extract(raw)


def test_mlflow_records() -> None:
    raw = b'{"predictions": [{"label": 1, "score": 0.9}, {"label": 0, "score": 0.2}]}'
    assert Extractor(Protocol.MLFLOW, output="score").extract(raw) == [0.9, 0.2]
    only_key = b'{"predictions": [{"score": 0.9}, {"score": 0.2}]}'
    assert Extractor(Protocol.MLFLOW).extract(only_key) == [0.9, 0.2]


def test_mlflow_records_errors() -> None:
    raw = b'{"predictions": [{"label": 1, "score": 0.9}, {"label": 0}]}'
    with pytest.raises(ExtractionError, match=r"among keys \['label', 'score'\]$"):
        Extractor(Protocol.MLFLOW).extract(raw)
    with pytest.raises(ExtractionError, match=r"^row 1 has no key 'score'$"):
        Extractor(Protocol.MLFLOW, output="score").extract(raw)


def test_mlflow_errors() -> None:
    with pytest.raises(ExtractionError, match=r"^no 'predictions' key$"):
        Extractor(Protocol.MLFLOW).extract(b'{"outputs": [1]}')
    with pytest.raises(ExtractionError, match=r"^'predictions' is a string, not an array$"):
        Extractor(Protocol.MLFLOW).extract(b'{"predictions": "1"}')
    with pytest.raises(ExtractionError, match=r"^'score' is a number, not an array$"):
        Extractor(Protocol.MLFLOW).extract(b'{"predictions": {"score": 1}}')


# --- TF Serving ------------------------------------------------------------------------------


def test_tfserving_row_format() -> None:
    raw = b'{"predictions": [[0.1, 0.9], [0.7, 0.3]]}'
    assert Extractor(Protocol.TFSERVING).extract(raw) == [[0.1, 0.9], [0.7, 0.3]]


def test_tfserving_row_format_with_named_outputs() -> None:
    raw = (
        b'{"predictions": [{"scores": [0.1, 0.9], "classes": 1}, {"scores": [1, 0], "classes": 0}]}'
    )
    assert Extractor(Protocol.TFSERVING, output="classes").extract(raw) == [1, 0]
    assert Extractor(Protocol.TFSERVING).extract(raw) == [
        {"scores": [0.1, 0.9], "classes": 1},
        {"scores": [1, 0], "classes": 0},
    ]
    with pytest.raises(ExtractionError, match=r"^row 0 has no key 'probs'$"):
        Extractor(Protocol.TFSERVING, output="probs").extract(raw)


def test_tfserving_columnar_list() -> None:
    assert Extractor(Protocol.TFSERVING).extract(b'{"outputs": [3.5, 4.5]}') == [3.5, 4.5]


def test_tfserving_columnar_named_outputs() -> None:
    raw = b'{"outputs": {"scores": [[0.1, 0.9], [1, 0]], "classes": [1, 0]}}'
    assert Extractor(Protocol.TFSERVING, output="scores").extract(raw) == [[0.1, 0.9], [1, 0]]
    assert Extractor(Protocol.TFSERVING, output="classes").extract(raw) == [1, 0]
    with pytest.raises(ExtractionError, match=r"^no output configured to choose among outputs"):
        Extractor(Protocol.TFSERVING).extract(raw)
    with pytest.raises(
        ExtractionError, match=r"^output 'x' not among outputs \['scores', 'classes'\]$"
    ):
        Extractor(Protocol.TFSERVING, output="x").extract(raw)


def test_tfserving_columnar_single_named_output() -> None:
    assert Extractor(Protocol.TFSERVING).extract(b'{"outputs": {"y": [1, 2]}}') == [1, 2]


def test_tfserving_errors() -> None:
    with pytest.raises(ExtractionError, match=r"^no 'predictions' or 'outputs' key$"):
        Extractor(Protocol.TFSERVING).extract(b'{"error": "Serving signature not found"}')
    with pytest.raises(ExtractionError, match=r"^'outputs' is a number, not an array or object$"):
        Extractor(Protocol.TFSERVING).extract(b'{"outputs": 3}')
    with pytest.raises(ExtractionError, match=r"^'predictions' is null, not an array$"):
        Extractor(Protocol.TFSERVING).extract(b'{"predictions": null}')


# --- custom path -----------------------------------------------------------------------------


def test_custom_path_through_objects() -> None:
    raw = b'{"result": {"scores": [0.1, 0.2, 0.3]}}'
    assert Extractor(Protocol.CUSTOM, path=("result", "scores")).extract(raw) == [0.1, 0.2, 0.3]


def test_custom_path_with_a_list_index() -> None:
    raw = b'{"result": [{"label": "cat"}, {"label": ["dog", "fox"]}]}'
    custom = Extractor(Protocol.CUSTOM, path=("result", "1", "label"))
    assert custom.extract(raw) == ["dog", "fox"]
    assert Extractor(Protocol.CUSTOM, path=("result", "0", "label")).extract(raw) == ["cat"]


def test_custom_path_to_a_scalar_is_one_instance() -> None:
    assert Extractor(Protocol.CUSTOM, path=("y",)).extract(b'{"y": 0.5}') == [0.5]
    assert Extractor(Protocol.CUSTOM, path=("y",)).extract(b'{"y": {"a": 1}}') == [{"a": 1}]


def test_custom_empty_path_is_the_whole_document() -> None:
    assert Extractor(Protocol.CUSTOM).extract(b"[1, 2]") == [1, 2]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("result", "labels"), r"^path segment 'labels' not found at 'result\.labels'$"),
        (("missing",), r"^path segment 'missing' not found at 'missing'$"),
        (("result", "scores", "5"), r"^path segment '5' at 'result\.scores\.5' is out of range"),
        (("result", "scores", "x"), r"^path segment 'x' at 'result\.scores\.x' is not an index"),
        (("result", "scores", "-1"), r"^path segment '-1' at 'result\.scores\.-1' is not an index"),
        (("result", "name", "0"), r"^path segment '0' at 'result\.name\.0' cannot index a string$"),
    ],
)
def test_custom_path_error_names_the_failing_segment(path: tuple[str, ...], message: str) -> None:
    raw = b'{"result": {"scores": [0.1, 0.2], "name": "m"}}'
    with pytest.raises(ExtractionError, match=message):
        Extractor(Protocol.CUSTOM, path=path).extract(raw)


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


def test_differences_in_ids_and_versions_are_not_disagreements() -> None:
    production = sample_response("open-inference-v2-proba.json")
    shadow = copy.deepcopy(production)
    shadow.update(
        id="another-request-id",
        model_name="cancer-lr-v2",
        model_version="v2",
        parameters={"headers": {"x": "y"}},
    )
    shadow["outputs"][0]["parameters"] = {"content_type": "np", "extra": 1}
    extract = Extractor(Protocol.OPEN_INFERENCE_V2, output="predict_proba")
    prod, shad = extract.extract(body(production)), extract.extract(body(shadow))
    result = Comparator(CompareKind.PROBABILITIES).compare(prod, shad)
    assert result == Comparison(instances=3, disagreements=0, distances=(0.0, 0.0, 0.0))
    labels = Extractor(Protocol.OPEN_INFERENCE_V2)
    label_doc = sample_response("open-inference-v2-predict.json")
    other = {**label_doc, "id": "x", "model_version": "v9", "model_name": "other"}
    assert Comparator(CompareKind.CLASSIFICATION).compare(
        labels.extract_parsed(label_doc), labels.extract_parsed(other)
    ) == Comparison(instances=3, disagreements=0)


# --- classification --------------------------------------------------------------------------


def test_classification_counts_unequal_labels() -> None:
    production = [1, 0, "cat", [1, 2], True, 2, None]
    shadow = [1.0, 1, "cat", [1, 2], 1, 3, None]
    result = Comparator(CompareKind.CLASSIFICATION).compare(production, shadow)
    assert result == Comparison(instances=7, disagreements=2)


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

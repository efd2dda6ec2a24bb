"""Tests for proxy.core.extraction: predictions found in each protocol's answers, on real captured
MLServer samples among others."""

from __future__ import annotations

import copy
import gzip
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.core.comparison import (
    Comparator,
    CompareKind,
    Comparison,
    ShapeMismatch,
)
from proxy.core.extraction import ExtractionError, Extractor, Protocol, decoded

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


# --- extraction and comparison on captured samples ---------------------------------------------


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


# --- content-encoding --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "X-Gzip", "deflate"])
def test_decoded_undoes_gzip_and_deflate(encoding: str) -> None:
    body = b'{"predictions": [1]}'
    packed = gzip.compress(body) if "gzip" in encoding.lower() else zlib.compress(body)
    assert decoded(packed, encoding) == body
    assert decoded(packed, encoding, limit=len(body)) == body
    assert decoded(body, None) == decoded(body, "identity") == body


def test_decoded_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)  # about 10 KB that decode to 10 MB
    with pytest.raises(ExtractionError, match=r"^gzip body decodes to more than 1000 bytes$"):
        decoded(bomb, "gzip", limit=1000)


@pytest.mark.parametrize(
    ("body", "encoding", "message"),
    [
        (gzip.compress(b"[1, 2]")[:-4], "gzip", "incomplete or truncated stream"),
        (b"not gzip", "gzip", "cannot decode gzip body"),
        (b"x", "br", "unsupported content-encoding 'br'"),
    ],
)
def test_decoded_refuses_what_it_cannot_undo(body: bytes, encoding: str, message: str) -> None:
    with pytest.raises(ExtractionError, match=message):
        decoded(body, encoding, limit=100)

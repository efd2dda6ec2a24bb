"""Property-based fuzzing (Hypothesis) of what reads untrusted input: the config loader, the
label items of POST /labels, every protocol's prediction extractor, the comparators and the
scoring of labels. Each must end in a correct result or its own clear error, never another
exception (which would be a 500 or a traceback). A bounded, derandomized number of examples
runs in CI; HYPOTHESIS_PROFILE=long runs thousands."""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.analysis.labels import _parse_item
from proxy.config import ConfigError, parse_config
from proxy.core.comparison import Comparator, CompareKind, Distance, ShapeMismatch
from proxy.core.extraction import ExtractionError, Extractor, Protocol
from proxy.core.joining import InvalidLabel, label_values, pair, score

settings.register_profile(
    "ci", max_examples=150, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)
JSON_SAFE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)
ROUTE = """
routes:
  - match: /m
    protocol: kserve-v1
    production: {name: p, url: "http://127.0.0.1:9001"}
"""


def _config_or_error(text: str) -> None:
    """parse_config either returns or raises ConfigError with messages; nothing else."""
    errors: tuple[str, ...] = ()
    try:
        parse_config(text)
    except ConfigError as exc:
        errors = tuple(exc.errors)
        assert errors, "a ConfigError without a message"
    assert all(isinstance(e, str) and e for e in errors)


@given(st.text(max_size=400))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    _config_or_error(text)


@given(JSON_SAFE)
def test_any_value_in_any_section_is_a_config_or_a_config_error(value: Any) -> None:
    for key in ("store", "verdict", "labels", "admin", "max_body", "listen"):
        _config_or_error(ROUTE + f"{key}: {orjson.dumps(value).decode()}\n")


@given(JSON_SAFE)
def test_any_value_in_a_route_is_a_config_or_a_config_error(value: Any) -> None:
    dumped = orjson.dumps(value).decode()
    for key in ("compare", "shadows", "record", "methods", "classes", "production"):
        _config_or_error(ROUTE + f"    {key}: {dumped}\n")


@given(JSON)
def test_any_label_item_is_parsed_or_refused_with_a_message(raw: Any) -> None:
    item = _parse_item(raw)
    answer = item.answer()
    assert isinstance(answer, dict)
    orjson.dumps(answer)  # what the client gets back serialises


@pytest.mark.parametrize("protocol", list(Protocol))
@given(doc=JSON_SAFE)
def test_any_answer_is_predictions_or_an_extraction_error(protocol: Protocol, doc: Any) -> None:
    extractor = Extractor(protocol, path=("result",) if protocol is Protocol.CUSTOM else None)
    found: Any = []
    message = "-"
    try:
        found = extractor.extract(orjson.dumps(doc))
    except ExtractionError as exc:
        message = str(exc)
    assert isinstance(found, list)
    assert message


@given(st.binary(max_size=200))
def test_any_bytes_are_predictions_or_an_extraction_error(body: bytes) -> None:
    for protocol in Protocol:
        extractor = Extractor(protocol, path=("x",) if protocol is Protocol.CUSTOM else None)
        with contextlib.suppress(ExtractionError):
            extractor.extract(body)


@given(
    kind=st.sampled_from(list(CompareKind)),
    distance=st.sampled_from(list(Distance)),
    production=st.lists(JSON, max_size=5),
    shadow=st.lists(JSON, max_size=5),
)
def test_any_two_batches_compare_or_mismatch(
    kind: CompareKind, distance: Distance, production: list[Any], shadow: list[Any]
) -> None:
    comparator = Comparator(kind, tolerance=0.1, distance=distance)
    try:
        result = comparator.compare(production, shadow)
    except ShapeMismatch:
        return
    assert result.disagreements >= 0
    assert result.disagreements <= result.instances
    assert all(0.0 <= d <= 1.0 or math.isnan(d) for d in result.distances)


@given(
    kind=st.sampled_from(list(CompareKind)),
    production=st.lists(JSON, min_size=1, max_size=4),
    shadow=st.lists(JSON, min_size=1, max_size=4),
    label=JSON,
)
def test_any_label_scores_or_is_invalid(
    kind: CompareKind, production: list[Any], shadow: list[Any], label: Any
) -> None:
    try:
        labels = label_values(label, len(production))
        result = score(kind, production, labels)
        paired = pair(kind, production, shadow, labels)
    except (InvalidLabel, ShapeMismatch) as exc:
        assert str(exc)  # noqa: PT017  # the message the client gets
        return
    assert result.instances == len(production)
    assert 0 <= result.correct <= result.instances
    outcomes = paired.both_right + paired.production_only + paired.shadow_only + paired.both_wrong
    assert outcomes <= len(production)
    instances, advantage = paired.request()
    assert instances <= len(production)
    assert math.isfinite(advantage)


# -- what the fuzzing found ----------------------------------------------------------------------


def test_a_control_character_is_a_config_error_not_a_traceback() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("\x1f")
    assert raised.value.errors == (
        "<string>:1:1: invalid YAML: unacceptable character #x001f: special characters are not"
        " allowed; hint: remove it (control characters are not allowed in YAML, even quoted: in"
        " double quotes, write it as an escape such as \\x1f)",
    )


@pytest.mark.parametrize("kind", list(CompareKind))
@pytest.mark.parametrize("distance", list(Distance))
def test_two_empty_batches_compare_as_nothing(kind: CompareKind, distance: Distance) -> None:
    comparison = Comparator(kind, distance=distance).compare([], [])
    assert (comparison.instances, comparison.disagreements) == (0, 0)


def test_a_boolean_class_disagrees_with_the_number() -> None:
    comparison = Comparator(CompareKind.CLASSIFICATION).compare([True, 1, False], [1, 1, False])
    assert (comparison.instances, comparison.disagreements) == (3, 1)

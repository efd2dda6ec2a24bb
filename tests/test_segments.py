"""proxy.core.segments: the segment field's path, its value in a request, and the bound on
segment labels."""

from __future__ import annotations

import re

import pytest

from proxy.core.segments import NO_SEGMENT, SegmentLabels, SegmentPath


@pytest.mark.parametrize(
    ("path", "doc", "value"),
    [
        ("parameters.country", {"parameters": {"country": "FR"}}, "FR"),
        ("inputs[1].data", {"inputs": [{"data": [0]}, {"data": ["DE"]}]}, "DE"),
        ("a.b", {"a": {"b": 3.0}}, "3"),
        ("a.b", {"a": {"b": 2.5}}, "2.5"),
        ("a", {"a": True}, "true"),
        ("a", {"a": 7}, "7"),
        ("a", {"a": [1, 2]}, NO_SEGMENT),  # not one value
        ("a", {"a": {"b": 1}}, NO_SEGMENT),
        ("a", {"a": "x" * 65}, NO_SEGMENT),  # segments are categories, not texts
        ("a", {"a": ""}, NO_SEGMENT),
        ("a", {"a": float("nan")}, NO_SEGMENT),
        ("a.b", {"a": [1]}, NO_SEGMENT),
        ("a[3]", {"a": [1]}, NO_SEGMENT),
        ("a", None, NO_SEGMENT),  # a body that is not JSON
    ],
)
def test_a_segment_is_a_short_scalar_at_its_path(path: str, doc: object, value: str) -> None:
    assert SegmentPath.parse(path).value(doc) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a path in the request's JSON, like parameters.country"),
        ("a.*", "'*' is not a path segment: a key, or key[n] (no wildcards: a request has one"
         " segment)"),
        ("a[*]", "'a[*]' is not a path segment: a key, or key[n] (no wildcards: a request has"
         " one segment)"),
        ("a..b", "'' is not a path segment: a key, or key[n] (no wildcards: a request has one"
         " segment)"),
    ],
)  # fmt: skip
def test_a_path_that_is_not_one_says_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SegmentPath.parse(text)


def test_the_labels_are_bounded() -> None:
    labels = SegmentLabels(limit=2)
    assert [labels.label(v) for v in ("a", "none", "b", "c", "a", "other")] == [
        "a", "none", "b", "other", "a", "other",
    ]  # fmt: skip

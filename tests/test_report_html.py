from __future__ import annotations

import ast
import copy
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, get_type_hints, is_typeddict

import pytest

from proxy.report.html import (
    DASH,
    fmt_count,
    fmt_interval,
    fmt_ms,
    fmt_number,
    fmt_p,
    fmt_percent,
    fmt_points,
    render_html,
)

SAMPLE = Path(__file__).with_name("report-sample.json")

# Elements HTML defines as having no end tag; everything else the page emits must be closed.
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}


class Page(HTMLParser):
    """Checks that tags balance, and keeps every element's attributes and text for queries."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[list[str]] = []  # text collectors of the open elements
        self.feed(html)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed at end: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text: list[str] = []
        self.elements.append((tag, {k: v or "" for k, v in attrs}, text))
        if tag not in VOID:
            self.stack.append(tag)
            self._open.append(text)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag for void element {tag}")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for text in self._open:
            text.append(data)

    def find(self, tag: str, cls: str) -> list[tuple[dict[str, str], str]]:
        """Elements of a tag whose class list holds `cls`, with their text content."""
        return [
            (attrs, "".join(text))
            for t, attrs, text in self.elements
            if t == tag and cls in attrs.get("class", "").split()
        ]


def sample() -> dict[str, Any]:
    report: dict[str, Any] = json.loads(SAMPLE.read_text())
    return report


def card(html: str, shadow: str) -> str:
    """The markup of one shadow's card, found by the name in its verdict badge."""
    for match in re.finditer(r'<article class="card".*?</article>', html, re.S):
        if f'data-shadow="{shadow}"' in match.group(0):
            return match.group(0)
    raise AssertionError(f"no card for {shadow}")


def chart(html: str, kind: str, shadow: str) -> str:
    found = re.findall(
        rf'<svg class="chart chart-{kind}" data-shadow="{re.escape(shadow)}".*?</svg>', html, re.S
    )
    assert len(found) == 1
    return str(found[0])


@pytest.fixture(scope="module")
def html() -> str:
    return render_html(sample())


# --- the sample page -----------------------------------------------------------------------------


def test_sample_is_well_formed(html: str) -> None:
    page = Page(html)
    assert page.errors == []
    assert html.startswith('<!DOCTYPE html>\n<html lang="en">')
    assert [t for t, _, _ in page.elements].count("section") == 2
    assert [t for t, _, _ in page.elements].count("article") == 3


def test_sample_is_self_contained(html: str) -> None:
    lowered = html.lower()
    for needle in ("http://", "https://", "src=", "<link", "<script", "@import", "url("):
        assert needle not in lowered, needle


def test_header_shows_generation_time_config_hash_and_alpha(html: str) -> None:
    assert '<time datetime="2026-11-27T17:20:00Z">2026-11-27 17:20 UTC</time>' in html
    assert "<code>733d20f1d7e1</code>" in html
    assert "<dd>0.05 (95% intervals)</dd>" in html


def test_verdict_badges_carry_class_and_shadow(html: str) -> None:
    badges = Page(html).find("span", "verdict")
    assert [(a["class"], a["data-shadow"]) for a, _ in badges] == [
        ("verdict verdict-better", "iris-rf"),
        ("verdict verdict-insufficient_data", "iris-xgb-canary"),
        ("verdict verdict-worse", "price-nn"),
    ]
    assert [text for _, text in badges] == [
        "verdict: ▲ better",
        "verdict: ○ insufficient data",
        "verdict: ▼ worse",
    ]


def test_reason_sits_under_the_badge(html: str) -> None:
    assert (
        '<p class="reason">shadow is right on 4.1 points more labelled instances '
        "(95% CS 1.2 to 7.0), sequential p = 0.004</p>"
    ) in card(html, "iris-rf")
    assert "shadow&#x27;s absolute error is 0.70 higher" in card(html, "price-nn")


def test_one_accuracy_and_one_latency_chart_per_shadow(html: str) -> None:
    page = Page(html)
    for kind in ("chart-accuracy", "chart-latency"):
        charts = page.find("svg", kind)
        assert sorted(a["data-shadow"] for a, _ in charts) == [
            "iris-rf",
            "iris-xgb-canary",
            "price-nn",
        ]
        assert all(a["class"] == f"chart {kind}" for a, _ in charts)


def test_better_shadow_history_is_a_30_point_line_with_band_and_zero(html: str) -> None:
    svg = chart(html, "accuracy", "iris-rf")
    (points,) = re.findall(r'<polyline class="line" points="([^"]*)"', svg)
    xy = [tuple(map(float, p.split(","))) for p in points.split()]
    assert len(xy) == 30
    assert [x for x, _ in xy] == sorted(x for x, _ in xy)
    assert xy[0][0] == 60.0  # the left edge of the plot area
    assert xy[-1][0] == 584.0  # the right edge
    assert svg.count('<polygon class="band"') == 1
    assert svg.count('<line class="zero"') == 1
    assert svg.count('<circle class="point"') == 30
    assert "time (UTC)" in svg
    assert "accuracy difference (pp)" in svg
    assert ">+20</text>" in svg
    assert ">0</text>" in svg
    assert "not enough history yet" not in svg


def test_insufficient_data_shadow_has_no_history_yet(html: str) -> None:
    svg = chart(html, "accuracy", "iris-xgb-canary")
    assert "not enough history yet" in svg
    assert "<polyline" not in svg
    insufficient = card(html, "iris-xgb-canary")
    assert "no labels yet" in insufficient
    mcnemar = f'<th scope="row">McNemar p</th><td colspan="2"><span class="v">{DASH}</span>'
    assert mcnemar in insufficient


def test_classification_figures_are_formatted(html: str) -> None:
    better = card(html, "iris-rf")
    expected = [
        '<span class="v">90.2%</span> <span class="ci">[88.1%, 92.0%]</span>',
        '<span class="n">812 of 900 right</span>',
        '<span class="v">94.3%</span> <span class="ci">[92.6%, 95.7%]</span>',
        '<span class="v">+4.1 pp</span> <span class="ci">[+2.2, +6.0] pp</span>',
        "only shadow right on 59, only production on 22",
        '<span class="v">p &lt; 0.001</span>',  # McNemar 0.00007
        '<span class="v">p = 0.004</span>',
        '<span class="v">[+1.2, +7.0] pp</span>',
        '<span class="v">8.0%</span> <span class="ci">[6.6%, 9.7%]</span>',
        "95 of 1,190 compared",
        '<th scope="row">p50 latency</th><td><span class="v">4.1 ms</span></td>'
        '<td><span class="v">5.2 ms</span></td>',
        '<th scope="row">p99 latency</th><td><span class="v">18.7 ms</span></td>'
        '<td><span class="v">31.0 ms</span></td>',
        '<span class="v">0.2%</span> <span class="n">3 of 1,200 requests failed</span>',
    ]
    for fragment in expected:
        assert fragment in better, fragment
    assert "MAE" not in better


def test_regression_figures_are_formatted(html: str) -> None:
    worse = card(html, "price-nn")
    expected = [
        '<th scope="row">MAE</th><td><span class="v">12.4</span> <span class="n">500 labelled'
        '</span></td><td><span class="v">13.1</span> <span class="n">500 labelled</span></td>',
        '<th scope="row">RMSE</th><td><span class="v">18.9</span></td>'
        '<td><span class="v">20.2</span></td>',
        '<span class="v">+0.7</span> <span class="ci">[+0.3, +1.1]</span>',
        "n = 500 pairs",
        '<span class="v">p = 0.012</span>',
        '<span class="v">[+0.1, +1.3]</span>',
        "31.9%",
        "143.2 ms",
    ]
    for fragment in expected:
        assert fragment in worse, fragment
    assert "Accuracy on labelled" not in worse
    svg = chart(html, "accuracy", "price-nn")
    assert "error difference" in svg
    assert svg.count('<circle class="point"') == 6


def test_latency_chart_draws_bucket_shares_with_legend(html: str) -> None:
    svg = chart(html, "latency", "iris-rf")
    assert svg.count('<rect class="bar bar-production"') == 11
    assert svg.count('<rect class="bar bar-shadow"') == 11
    labels = re.findall(r'text-anchor="middle">([^<]*)</text>', svg)
    assert labels[:11] == ["1", "2", "5", "10", "20", "50", "100", "200", "500", "1000", "+Inf"]
    assert "bucket upper bound (ms)" in svg
    assert "share of requests (%)" in svg
    assert ">production</text>" in svg
    assert ">shadow</text>" in svg
    # 500 of 1,200 production and 520 of 1,197 shadow requests fell in (5 ms, 10 ms].
    assert "<title>production, bucket ≤ 10 ms: 41.7% (500)</title>" in svg
    assert "<title>shadow, bucket ≤ 10 ms: 43.4% (520)</title>" in svg


def test_summary_links_every_shadow(html: str) -> None:
    page = Page(html)
    assert [a["href"] for t, a, _ in page.elements if t == "a"] == [
        "#shadow-0-0",
        "#shadow-0-1",
        "#shadow-1-0",
    ]
    assert [a["class"] for a, _ in page.find("span", "pill")] == [
        "pill pill-better",
        "pill pill-insufficient_data",
        "pill pill-worse",
    ]


# --- hostile and empty reports -------------------------------------------------------------------


def test_strings_from_the_report_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    report = sample()
    report["config_hash"] = evil
    route = report["routes"][0]
    route["route"] = '/v2/"><img src=x onerror=alert(1)>'
    route["production"] = evil
    shadow = route["shadows"][0]
    shadow["shadow"] = evil
    shadow["reason"] = evil
    shadow["verdict"] = '"><b>'
    html = render_html(report)
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-shadow="&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert "/v2/&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    page = Page(html)
    assert page.errors == []
    badge = page.find("span", "verdict")[0][0]
    assert badge == {"class": "verdict verdict-unknown", "data-shadow": evil}
    assert sum(1 for a, _ in page.find("svg", "chart-accuracy") if a["data-shadow"] == evil) == 1


def test_empty_report_renders() -> None:
    html = render_html({})
    assert Page(html).errors == []
    assert "No routes in this report." in html
    assert f"<dd>{DASH}</dd>" in html  # alpha


NULL_ROUTE: dict[str, Any] = {
    "route": "/predict",
    "kind": "classification",
    "production": "prod",
    "production_latency": None,
    "production_accuracy": {"labelled": None, "correct": None, "value": None},
    "production_error": None,
    "latency_buckets": [],
    "production_latency_counts": [],
    "shadows": [],
}


def test_route_without_shadows_and_null_figures() -> None:
    report = {
        "generated_at": None,
        "config_hash": None,
        "alpha": None,
        "routes": [NULL_ROUTE, {**NULL_ROUTE, "kind": "regression", "route": "/reg"}],
    }
    html = render_html(report)
    page = Page(html)
    assert page.errors == []
    assert html.count("No shadow models on this route.") == 2
    assert "No shadow models in this report." in html
    assert page.find("svg", "chart") == []


@pytest.mark.parametrize("kind", ["classification", "probabilities", "regression", None])
def test_shadow_with_every_figure_null_or_malformed(kind: str | None) -> None:
    shadow = {
        "shadow": "s",
        "verdict": "inconclusive",
        "reason": None,
        "requests": None,
        "errors": None,
        "error_rate": math.nan,
        "latency": None,
        "latency_counts": [None, "x", -3],
        "disagreement": {"compared": None, "value": math.inf, "low": None, "high": None},
        "accuracy": None,
        "error": None,
        "paired": {"difference": "0.1", "mcnemar_p": True, "sequential_p": math.nan},
        "regression": {"n": None, "mean_difference": None},
        "history": [
            {"t": 1795796400.0, "difference": 0.02, "low": None, "high": None},
            {"t": None, "difference": 0.03},
            "junk",
        ],
    }
    route = {**NULL_ROUTE, "kind": kind, "latency_buckets": [0.01, None], "shadows": [shadow]}
    report = {"generated_at": 1e300, "alpha": 2, "routes": [route]}
    html = render_html(report)
    page = Page(html)
    assert page.errors == []
    assert page.find("span", "verdict")[0][0]["class"] == "verdict verdict-inconclusive"
    assert "not enough history yet" in chart(html, "accuracy", "s")
    assert "no latency observations yet" in chart(html, "latency", "s")
    assert "Figures with their intervals" in html  # alpha out of range: no level claimed


def test_two_points_at_one_instant_and_mismatched_buckets() -> None:
    history = [
        {"t": 1795796400.0, "difference": -0.01, "low": -0.05, "high": 0.03},
        {"t": 1795796400.0, "difference": 0.01, "low": -0.03, "high": 0.05},
    ]
    shadow = {"shadow": "s", "verdict": "better", "history": history, "latency_counts": [1] * 20}
    route = {
        **NULL_ROUTE,
        "latency_buckets": [0.005, 0.05],
        "production_latency_counts": [3],
        "shadows": [shadow],
    }
    html = render_html({"routes": [route]})
    assert Page(html).errors == []
    (points,) = re.findall(r'<polyline class="line" points="([^"]*)"', chart(html, "accuracy", "s"))
    assert len(points.split()) == 2
    latency = chart(html, "latency", "s")
    assert latency.count('<rect class="bar bar-production"') == 3
    assert latency.count('<rect class="bar bar-shadow"') == 3
    assert "<title>production, bucket ≤ 5 ms: 100.0% (3)</title>" in latency
    assert "<title>shadow, bucket +Inf: 33.3% (1)</title>" in latency


# --- number formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.943, "94.3%"),
        (0.0798, "8.0%"),
        (1, "100.0%"),
        (0, "0.0%"),
        (None, DASH),
        (math.nan, DASH),
    ],
)
def test_fmt_percent(value: Any, text: str) -> None:
    assert fmt_percent(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.004, "0.004"),
        (0.00007, "<0.001"),
        (0.000999, "<0.001"),
        (0.001, "0.001"),
        (0.045678, "0.0457"),
        (0.12345, "0.123"),
        (0.5, "0.5"),
        (1.0, "1"),
        (0, "<0.001"),
        (-0.1, DASH),
        (None, DASH),
        (math.nan, DASH),
        (True, DASH),
        ("0.01", DASH),
    ],
)
def test_fmt_p(value: Any, text: str) -> None:
    assert fmt_p(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0041, "4.1 ms"), (0.031, "31.0 ms"), (1.5, "1500.0 ms"), (None, DASH), (math.inf, DASH)],
)
def test_fmt_ms(value: Any, text: str) -> None:
    assert fmt_ms(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.041, "+4.1 pp"), (-0.02, "-2.0 pp"), (-0.0001, "0.0 pp"), (0, "0.0 pp"), (None, DASH)],
)
def test_fmt_points(value: Any, text: str) -> None:
    assert fmt_points(value) == text


def test_fmt_count_and_number() -> None:
    assert fmt_count(5400) == "5,400"
    assert fmt_count(900.0) == "900"
    assert fmt_count(None) == DASH
    assert fmt_count(10**400) == DASH
    assert fmt_number(12.4) == "12.4"
    assert fmt_number(18.934) == "18.93"
    assert fmt_number(123456.7) == "123,457"
    assert fmt_number(0.7, signed=True) == "+0.7"
    assert fmt_number(-0.25, signed=True) == "-0.25"
    assert fmt_number(0.0, signed=True) == "0"
    assert fmt_number(None, signed=True) == DASH


def test_fmt_interval() -> None:
    assert fmt_interval(0.881, 0.92, fmt_percent) == "[88.1%, 92.0%]"
    assert fmt_interval(0.0041, 0.0102, fmt_ms) == "[4.1 ms, 10.2 ms]"
    assert fmt_interval(None, 0.92, fmt_percent) == DASH
    assert fmt_interval(1, 2, fmt_number, "kg") == "[1, 2] kg"


def test_sample_is_left_unchanged_by_rendering() -> None:
    report = sample()
    before = copy.deepcopy(report)
    render_html(report)
    assert report == before


def test_every_key_the_page_reads_by_name_is_a_key_of_the_model() -> None:
    """mypy types an unknown key in TypedDict.get() as object without a word, and a misspelt key
    would read as a dash for good."""
    from proxy.report import html as page
    from proxy.report import model

    known = {key for t in vars(model).values() if is_typeddict(t) for key in get_type_hints(t)}
    read = set()
    for node in ast.walk(ast.parse(Path(page.__file__).read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            key = node.args[0] if node.func.attr == "get" else None
        else:
            key = node.slice if isinstance(node, ast.Subscript) else None
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            read.add(key.value)
    assert len(read) > 40
    assert read <= known, read - known

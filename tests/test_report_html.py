from __future__ import annotations

import ast
import copy
import itertools
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
    time_ticks,
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
    # The sample's regression figures are the shadow's absolute error minus production's
    # ("mean_difference"); the model's are the shadow's advantage, production's minus the
    # shadow's: turned round here.
    for route in report["routes"]:
        if route["kind"] != "regression":
            continue
        for shadow in route["shadows"]:
            old = shadow["regression"]
            if "mean_difference" in old:
                shadow["regression"] = {
                    "n": old["n"],
                    "advantage": -old["mean_difference"],
                    "low": -old["high"],
                    "high": -old["low"],
                    "sequential_p": old["sequential_p"],
                    "cs_low": -old["cs_high"],
                    "cs_high": -old["cs_low"],
                }
                shadow["history"] = [
                    {**h, "difference": -h["difference"], "low": -h["high"], "high": -h["low"]}
                    for h in shadow["history"]
                ]
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


def test_one_history_and_one_latency_chart_per_shadow_by_kind(html: str) -> None:
    """The history is of accuracy points on a classification route, of the MAE advantage on a
    regression route."""
    page = Page(html)
    for kind, shadows in (
        ("chart-accuracy", ["iris-rf", "iris-xgb-canary"]),
        ("chart-mae", ["price-nn"]),
        ("chart-latency", ["iris-rf", "iris-xgb-canary", "price-nn"]),
    ):
        charts = page.find("svg", kind)
        assert sorted(a["data-shadow"] for a, _ in charts) == shadows
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
    assert ">time (UTC), 2026</text>" in svg
    assert ">accuracy advantage (pp)</text>" in svg
    assert ">▲ shadow better</text>" in svg
    # 30 hourly points: a tick every 6 hours, with the day, as the history spans two days.
    assert re.findall(r'class="tick-x"[^>]*>([^<]*)<', svg) == [
        "26 Nov 18:00",
        "27 Nov 00:00",
        "27 Nov 06:00",
        "27 Nov 12:00",
    ]
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
        '<span class="n">812 of 900 labelled instances right</span>',
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
    assert 'Accuracy advantage <span class="n">(+ = shadow better)</span></th>' in better
    assert "the shadow&#x27;s accuracy minus production&#x27;s, in percentage points" in better


def test_regression_figures_are_formatted(html: str) -> None:
    worse = card(html, "price-nn")
    expected = [
        '<th scope="row">MAE</th><td><span class="v">12.4</span> <span class="n">500 labelled'
        ' instances</span></td><td><span class="v">13.1</span> <span class="n">500 labelled'
        " instances</span></td>",
        '<th scope="row">RMSE</th><td><span class="v">18.9</span></td>'
        '<td><span class="v">20.2</span></td>',
        '<span class="v">-0.7</span> <span class="ci">[-1.1, -0.3]</span>',
        "on 500 labelled instances of both",
        '<span class="v">p = 0.012</span>',
        '<span class="v">[-1.3, -0.1]</span>',
        "31.9%",
        "143.2 ms",
    ]
    for fragment in expected:
        assert fragment in worse, fragment
    assert "accuracy" not in worse.lower()
    assert 'MAE advantage <span class="n">(+ = shadow better)</span></th>' in worse
    svg = chart(html, "mae", "price-nn")
    assert ">MAE advantage</text>" in svg
    assert svg.count('<circle class="point"') == 6


def test_latency_chart_draws_bucket_shares_with_legend(html: str) -> None:
    svg = chart(html, "latency", "iris-rf")
    # The 11 buckets' last three are empty for both: left out.
    assert svg.count('<rect class="bar bar-production"') == 8
    assert svg.count('<rect class="bar bar-shadow"') == 8
    labels = re.findall(r'class="tick-x"[^>]*>([^<]*)</text>', svg)
    assert labels == ["0", "1", "2", "5", "10", "20", "50", "100", "200"]  # the buckets' edges
    assert ">latency (ms), histogram bucket edges</text>" in svg
    assert ">share of requests (%)</text>" in svg
    assert ">production</text>" in svg
    assert ">shadow</text>" in svg
    # 500 of 1,200 production and 520 of 1,197 shadow requests fell in (5 ms, 10 ms].
    assert "<title>production, 5-10 ms: 41.7% (500)</title>" in svg
    assert "<title>shadow, 5-10 ms: 43.4% (520)</title>" in svg


def _latency_route(production: list[int], shadow: list[int]) -> dict[str, Any]:
    bounds = [
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
        0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
    ]  # fmt: skip
    return {
        **NULL_ROUTE,
        "latency_buckets": bounds,
        "production_latency_counts": production,
        "shadows": [{"shadow": "s", "verdict": "better", "requests": 9, "latency_counts": shadow}],
    }


def test_latency_chart_of_26_buckets_shows_the_populated_range_with_spaced_labels() -> None:
    """26 buckets, requests in the 3rd to the 24th: 22 bars each, and labels only as many as
    fit without touching (one every other edge), the edges labelled in ms, then seconds."""
    production = [0, 0, 4, 9, 3] + [0] * 21
    shadow = [0] * 8 + [1, 5, 2] + [0] * 12 + [1, 0, 0]
    svg = chart(render_html({"routes": [_latency_route(production, shadow)]}), "latency", "s")
    assert svg.count('<rect class="bar bar-production"') == 22
    assert svg.count('<rect class="bar bar-shadow"') == 22
    ticks = re.findall(r'<text class="tick-x" x="([\d.]+)"[^>]*>([^<]*)</text>', svg)
    labels = [label for _, label in ticks]
    assert labels == [
        "1", "3", "7.5", "15", "30", "75", "150", "300", "750", "1.5 s", "3 s", "10 s",
    ]  # fmt: skip
    assert len(set(labels)) == len(labels)
    xs = [float(x) for x, _ in ticks]
    assert xs[0] == 60.0  # the plot's left edge: the lower edge of the first bar
    gaps = [b - a for a, b in itertools.pairwise(xs)]
    widest = max(len(label) for label in labels) * 6.2
    assert min(gaps) >= widest
    assert svg.count('<line class="axis" x1=') == 1 + 23 + 1  # y axis, 23 edges, x axis


def test_latency_chart_of_one_populated_bucket() -> None:
    svg = chart(
        render_html({"routes": [_latency_route([0] * 25 + [7], [0] * 25 + [2])]}), "latency", "s"
    )
    assert svg.count('<rect class="bar bar-production"') == 1
    assert re.findall(r'class="tick-x"[^>]*>([^<]*)</text>', svg) == ["30 s", "+Inf"]
    assert "<title>production, over 30 s: 100.0% (7)</title>" in svg


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
        "regression": {"n": None, "advantage": None},
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
    history = "mae" if kind == "regression" else "accuracy"
    assert "not enough history yet" in chart(html, history, "s")
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
    assert "<title>production, 0-5 ms: 100.0% (3)</title>" in latency
    assert "<title>shadow, over 50 ms: 33.3% (1)</title>" in latency


# --- each route by its kind, one sign, shadows with no traffic, problems -------------------------


def route_section(html: str, index: int) -> str:
    found = re.search(rf'<section class="route" id="route-{index}".*?</section>', html, re.S)
    assert found is not None
    return found.group(0)


def _shadow(name: str, **figures: Any) -> dict[str, Any]:
    return {"shadow": name, "verdict": "inconclusive", "requests": 50, **figures}


def test_a_regression_route_never_shows_accuracy_even_if_the_report_has_some() -> None:
    """build_report gives a regression route's accuracy too (0%: no prediction is exactly
    right); the page shows MAE and RMSE only."""
    zero = {"labelled": 540, "correct": 0, "value": 0.0, "low": 0.0, "high": 0.007}
    shadow = _shadow(
        "s",
        accuracy=zero,
        error={"labelled": 540, "mae": 0.49, "rmse": 0.55},
        paired={"n": 540, "difference": 0.0, "low": 0.0, "high": 0.0, "mcnemar_p": 1.0},
        quality={"method": "requests", "advantage": 0.51, "low": 0.49, "high": 0.53},
        regression={"n": 540, "advantage": 0.51, "low": 0.48, "high": 0.53},
        history=[
            {"t": 1795796400.0 + 20 * k, "difference": 0.5, "low": 0.4, "high": 0.6}
            for k in range(3)
        ],
    )
    route = {
        **NULL_ROUTE,
        "kind": "regression",
        "production_accuracy": zero,
        "production_error": {"labelled": 540, "mae": 1.0, "rmse": 1.0},
        "shadows": [shadow],
    }
    html = render_html({"alpha": 0.05, "routes": [route]})
    section = route_section(html, 0)
    assert "accuracy" not in section.lower()
    assert " pp" not in section
    assert "MAE 1, RMSE 1 on 540 labelled instances" in section
    assert '<span class="v">+0.51</span> <span class="ci">[+0.49, +0.53]</span>' in section
    assert ">MAE advantage</text>" in section  # the history's y axis
    assert "<td>MAE (target&#x27;s units)</td><td>+0.51</td><td>[+0.49, +0.53]</td>" in html


def test_every_advantage_is_labelled_plus_is_shadow_better() -> None:
    """Table rows, captions, chart titles, the summary's header and the footer."""
    html = render_html(sample())
    rows = re.findall(r'<th scope="row">([^<]*advantage[^<]*)(.{0,60})', html, re.I)
    assert rows
    for label, rest in rows:
        assert label.endswith(" "), label
        assert rest.startswith('<span class="n">(+ = shadow better)</span></th>'), label
    assert '<th scope="col">Advantage (+ = shadow better)</th>' in html
    captions = re.findall(r"<figcaption>([^<]*advantage[^<]*)<", html, re.I)
    assert captions == [
        "Accuracy advantage over time (+ = shadow better)",
        "Accuracy advantage over time (+ = shadow better)",
        "MAE advantage over time (+ = shadow better)",
    ]
    titles = re.findall(r"<title id=[^>]*>([^<]*advantage[^<]*)<", html, re.I)
    assert len(titles) == 3
    assert all(t.endswith("(+ = shadow better)") for t in titles)
    assert "production's mean absolute error (MAE) minus the shadow's" in html  # the footer
    assert "shadow minus production" not in html.lower()
    assert "production - shadow" not in html


def test_guardrails_read_as_advantages_with_their_floor() -> None:
    guardrails = [
        {"name": "error_rate", "value": 0.03, "low": 0.02, "high": 0.04, "limit": 0.01,
         "alpha": 0.008, "tripped": True},
        {"name": "slow_requests", "value": -0.001, "low": -0.01, "high": 0.008, "limit": 0.01,
         "alpha": 0.008, "tripped": False},
        {"name": "disagreement", "value": 0.08, "low": 0.066, "high": 0.097, "limit": 0.3,
         "alpha": 0.008, "tripped": False},
    ]  # fmt: skip
    html = render_html(
        {"routes": [{**NULL_ROUTE, "shadows": [_shadow("s", guardrails=guardrails)]}]}
    )
    assert (
        '<th scope="row">Error-rate advantage <span class="n">(+ = shadow better)</span></th>'
        '<td colspan="2"><span class="v">-3.0 pp</span> <span class="ci">[-4.0, -2.0] pp</span>'
        ' <span class="n">production&#x27;s error rate minus the shadow&#x27;s; guardrail: worse'
        " if below -1.0 pp, tripped</span></td>"
    ) in html
    assert (
        '<span class="v">+0.1 pp</span> <span class="ci">[-0.8, +1.0] pp</span>'
        ' <span class="n">share of requests slower than production&#x27;s p99: production&#x27;s'
        " minus the shadow&#x27;s; guardrail: worse if below -1.0 pp</span>"
    ) in html
    assert (
        '<th scope="row">Disagreement guardrail</th><td colspan="2"><span class="v">8.0%</span>'
        ' <span class="ci">[6.6%, 9.7%]</span> <span class="n">while labels are missing: worse'
        " if above 30.0%</span>"
    ) in html


@pytest.mark.parametrize("kind", ["classification", "regression", "probabilities"])
def test_a_shadow_with_no_traffic_is_listed_without_figures_or_charts(kind: str) -> None:
    idle = {
        **_shadow("new", verdict="insufficient_data", reason="0 labelled requests", requests=0),
        "history": [{"t": 1795796400.0 + k, "difference": None} for k in range(3)],
        "latency_counts": [0] * 11,
        "quality": {"method": "exact", "advantage": None, "low": -1.0, "high": 1.0},
    }
    route = {**NULL_ROUTE, "kind": kind, "shadows": [_shadow("busy"), idle]}
    html = render_html({"routes": [route]})
    page = Page(html)
    assert page.errors == []
    idle_card = card(html, "new")
    assert '<span class="pill pill-idle">no traffic yet</span>' in idle_card
    assert "No request has reached this shadow yet" in idle_card
    assert "<svg" not in idle_card
    assert "<table" not in idle_card
    assert "<svg" in card(html, "busy")
    [row] = [r for r in re.findall(r"<tr>.*?</tr>", html) if "#shadow-0-1" in r]
    assert '<span class="pill pill-insufficient_data">insufficient data</span>' in row
    assert '<span class="n">no traffic yet</span>' in row


def test_labelled_requests_without_a_pair_say_why_by_the_shadows_sample() -> None:
    diagnostics = {"paired_requests": 100, "lost_pairs": 900, "unscorable_instances": 0}
    sampled = _shadow("sampled", sample=0.1, diagnostics=diagnostics)
    full = _shadow("full", sample=1.0, diagnostics={**diagnostics, "lost_pairs": 3})
    html = render_html({"routes": [{**NULL_ROUTE, "shadows": [sampled, full]}]})
    assert Page(html).errors == []
    assert (
        "900 labelled requests without one (sampled at 10.0%, the shadow gets only that share;"
        " or the shadow failed, timed out or was dropped: never compared)"
    ) in card(html, "sampled")
    assert (
        "3 labelled requests without one (the shadow failed, timed out or was dropped: never"
        " compared)"
    ) in card(html, "full")


def test_problems_are_a_red_box_first_under_the_route_name() -> None:
    problems = ["production's answers held no <predictions>: 30 of 300", "", None, "latest: x"]
    routes = [{**NULL_ROUTE, "problems": problems}, {**NULL_ROUTE, "route": "/ok", "problems": []}]
    html = render_html({"routes": routes})
    assert Page(html).errors == []
    first = route_section(html, 0)
    assert re.search(r"</h2><div class=\"problems\" role=\"alert\">", first)
    assert (
        '<p class="problems-title">Problems: this route is not fully measured</p><ul>'
        "<li>production&#x27;s answers held no &lt;predictions&gt;: 30 of 300</li>"
        "<li>latest: x</li></ul>"
    ) in first
    assert "problems" not in route_section(html, 1).replace('class="route"', "")
    assert html.count('class="problem-flag" href="#route-0"') == 0  # no shadows: no summary rows
    css = re.search(r"\.problems \{[^}]*\}", html)
    assert css is not None
    assert "var(--worse)" in css.group(0)
    assert "var(--problem-bg)" in css.group(0)


def test_labelled_counts_say_requests_or_instances() -> None:
    route = {
        **NULL_ROUTE,
        "production_latency": {"count": 1200},
        "production_accuracy": {"labelled": 657, "correct": 600, "value": 0.913},
        "diagnostics": {
            "recorded_requests": 300,
            "labelled_requests": 290,
            "labelled_instances": 657,
            "coverage": 290 / 300,
        },
    }
    html = render_html({"routes": [route]})
    assert (
        '<p class="route-meta">production <strong>prod</strong> · 1,200 requests · accuracy'
        " 91.3% on 657 labelled instances</p>"
    ) in html
    assert (
        '<p class="route-meta">290 labelled requests (96.7% of 300 recorded) · 657 labelled'
        " instances</p>"
    ) in html
    # A report without the instance count (from before it): production's labelled instances.
    del route["diagnostics"]["labelled_instances"]
    assert "290 labelled requests (96.7% of 300 recorded) · 657 labelled instances" in (
        render_html({"routes": [route]})
    )


HOUR, DAY = 3600.0, 86400.0
T0 = 1795796400.0  # 2026-11-27 16:20:00 UTC


@pytest.mark.parametrize(
    ("t1", "labels", "title"),
    [
        (T0 + 100, ["16:20:00", "16:20:30", "16:21:00", "16:21:30"], "time (UTC), 27 Nov 2026"),
        (T0 + 8, ["16:20:00", "16:20:02", "16:20:04", "16:20:06", "16:20:08"],
         "time (UTC), 27 Nov 2026"),
        (T0 + 50 * 60, ["16:20", "16:30", "16:40", "16:50", "17:00", "17:10"],
         "time (UTC), 27 Nov 2026"),
        (T0 + 6 * HOUR, ["17:00", "18:00", "19:00", "20:00", "21:00", "22:00"],
         "time (UTC), 27 Nov 2026"),
        (T0 + 20 * HOUR, ["27 Nov 18:00", "28 Nov 00:00", "28 Nov 06:00", "28 Nov 12:00"],
         "time (UTC), 2026"),
        (T0 + 4 * DAY, ["28 Nov", "29 Nov", "30 Nov", "01 Dec"], "time (UTC), 2026"),
        (T0 + 40 * DAY, ["2026-12-03", "2026-12-10", "2026-12-17", "2026-12-24", "2026-12-31"],
         "time (UTC)"),
        (T0, ["16:20:00"], "time (UTC), 27 Nov 2026"),
        (T0 + 0.5, ["16:20:00"], "time (UTC), 27 Nov 2026"),
    ],
)  # fmt: skip
def test_time_ticks_are_distinct_and_read_as_the_span_needs(
    t1: float, labels: list[str], title: str
) -> None:
    ticks, axis = time_ticks(T0, t1)
    assert [label for _, label in ticks] == labels
    assert axis == title
    assert all(T0 <= t <= t1 for t, _ in ticks)


def test_time_ticks_of_nonsense() -> None:
    assert time_ticks(T0, T0 - 1) == ([], "time (UTC)")
    assert time_ticks(math.nan, T0) == ([], "time (UTC)")
    ticks, _ = time_ticks(0.0, 1e15)  # no list of a billion candidates on the way
    assert len(ticks) == 2


def test_history_chart_time_labels_are_distinct_within_a_few_minutes() -> None:
    """The history's points a minute apart used to read "22:24" at every tick."""
    history = [
        {"t": 1795818240.0 + 60 * k, "difference": 0.01 * k, "low": -0.1, "high": 0.1}
        for k in range(5)
    ]
    html = render_html({"routes": [{**NULL_ROUTE, "shadows": [_shadow("s", history=history)]}]})
    labels = re.findall(r'class="tick-x"[^>]*>([^<]*)<', chart(html, "accuracy", "s"))
    assert labels == ["22:24", "22:25", "22:26", "22:27", "22:28"]


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


# --- where it disagrees: the drill-down ----------------------------------------------------------


def _instance(index: int, production: Any, shadow: Any, label: Any = None) -> dict[str, Any]:
    return {
        "index": index,
        "production": production,
        "shadow": shadow,
        "differs": production != shadow,
        "label": label,
    }


def _exchange(
    request_id: str, at: float, instances: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "captured_at": at,
        "result": "disagree",
        "production_status": 200,
        "shadow_status": 200,
        "instances": instances,
        "truncated": False,
        "labelled": any(i["label"] is not None for i in instances),
        **fields,
    }


def _drill(
    exchanges: list[dict[str, Any]] | None = None,
    flips: list[tuple[str, str, int]] | None = None,
    largest: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "exchanges": exchanges or [],
        "flips": [{"production": p, "shadow": s, "instances": n} for p, s, n in flips or []],
        "largest_differences": largest or [],
    }


def _disagreeing(name: str, disagreed: int = 201, **figures: Any) -> dict[str, Any]:
    disagreement = {"compared": 1000, "disagreed": disagreed, "value": disagreed / 1000,
                    "low": 0.19, "high": 0.213}  # fmt: skip
    return _shadow(name, role="candidate", disagreement=disagreement, **figures)


def _page(kind: str, *shadows: dict[str, Any]) -> str:
    html = render_html({"routes": [{**NULL_ROUTE, "kind": kind, "shadows": list(shadows)}]})
    assert Page(html).errors == []
    return html


def drilldown(html: str, shadow: str) -> str:
    found = re.search(r'<section class="drilldown".*?</section>', card(html, shadow), re.S)
    assert found is not None, f"no drill-down for {shadow}"
    return found.group(0)


def rows_of(table: str) -> list[list[str]]:
    """A table's body rows, each the text of its cells."""
    body = re.search(r"<tbody>(.*?)</tbody>", table, re.S)
    assert body is not None
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S)
    ]


def table(html: str, cls: str) -> str:
    found = re.findall(rf'<table class="{cls}".*?</table>', html, re.S)
    assert len(found) == 1, found
    return str(found[0])


IRIS_EXCHANGES = [
    _exchange("req-1", T0, [_instance(0, "setosa", "versicolor", "setosa")]),
    _exchange(
        "req-2",
        T0 + 60,
        [_instance(0, "setosa", "setosa"), _instance(1, "virginica", "versicolor")],
    ),
    _exchange("req-3", T0 + 30, [], result="status_mismatch", shadow_status=503),
]
IRIS_FLIPS = [("setosa", "versicolor", 31), ("versicolor", "virginica", 52),
              ("virginica", "versicolor", 9), ("virginica", "setosa", 2)]  # fmt: skip


def test_drilldown_shows_the_latest_disagreeing_requests_newest_first() -> None:
    html = _page("classification", _disagreeing("s", drilldown=_drill(IRIS_EXCHANGES, IRIS_FLIPS)))
    section = drilldown(html, "s")
    assert '<h4 id="shadow-0-0-drill">Where it disagrees</h4>' in section
    heads = re.findall(r'<p class="exchange-head".*?</p>', section, re.S)
    assert [re.sub(r"(<[^>]+>)+", "|", h).strip("|") for h in heads] == [
        "request |req-2|2026-11-27 16:21:00 UTC|disagree|1 of 2 instances differs",
        "request |req-3|2026-11-27 16:20:30 UTC|status mismatch: production 200, shadow 503",
        "request |req-1|2026-11-27 16:20:00 UTC|disagree|1 of 1 instance differs",
    ]
    assert '<a class="rid" href="/exchanges/req-2">req-2</a>' in section
    assert '<time datetime="2026-11-27T16:21:00Z">2026-11-27 16:21:00 UTC</time>' in section
    assert "No predictions to compare." in section  # the status mismatch has none
    tables = re.findall(r'<table class="instances".*?</table>', section, re.S)
    assert [rows_of(t) for t in tables] == [
        [
            ["0", "= same", "setosa", "setosa", "label pending"],
            ["1", "≠ differs", "virginica", "versicolor", "label pending"],
        ],
        [["0", "≠ differs", "setosa", "versicolor", "setosa"]],
    ]
    # The differing instance is highlighted, and says so in words (not by colour alone).
    assert re.findall(r'<tr class="differs"><th scope="row">(\d+)</th>', section) == ["1", "0"]
    assert section.count('<span class="marker">≠ differs</span>') == 2
    assert "+ more instances" not in section
    assert "older ones not shown" not in section


def test_flips_matrix_counts_instances_by_class_with_totals() -> None:
    html = _page("classification", _disagreeing("s", drilldown=_drill(IRIS_EXCHANGES, IRIS_FLIPS)))
    flips = table(drilldown(html, "s"), "flips")
    headers = re.findall(r'<th scope="col">(.*?)</th>', flips)
    assert [re.sub(r"<[^>]+>", "", h) for h in headers] == [
        "production predicts ↓", "setosa", "versicolor", "virginica", "Total",
    ]  # fmt: skip
    assert '<th scope="colgroup" colspan="3">the shadow predicts →</th>' in flips
    assert rows_of(flips) == [
        ["setosa", DASH, "31", "0", "31"],
        ["versicolor", "0", DASH, "52", "52"],
        ["virginica", "2", "9", DASH, "11"],
    ]
    foot = re.search(r"<tfoot>(.*?)</tfoot>", flips, re.S)
    assert foot is not None
    assert re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", foot.group(1)) == [
        "Total", "2", "40", "52", "94",
    ]  # fmt: skip
    # Only the classes that appear: a class production never flips from has no row.
    one = _page("classification", _disagreeing("s", drilldown=_drill(flips=[("0", "2", 4)])))
    assert rows_of(table(one, "flips")) == [["0", "4", "4"]]
    assert "No disagreeing request captured yet." in one


def test_flips_matrix_folds_rare_classes_and_sorts_numbers_by_value() -> None:
    flips = [(str(k), str(k + 1), 100 - k) for k in range(20)]
    html = _page("classification", _disagreeing("s", drilldown=_drill(flips=flips)))
    matrix = table(html, "flips")
    rows = rows_of(matrix)
    assert [r[0] for r in rows] == [*(str(k) for k in range(12)), "other classes"]
    assert [r[-1] for r in rows][-1] == str(sum(100 - k for k in range(12, 20)))
    headers = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r'<th scope="col">(.*?)</th>', matrix)]
    assert headers[1:] == [*(str(k) for k in range(1, 13)), "other classes", "Total"]
    assert matrix.count("<tr>") == 2 + 13 + 1  # the header's, the classes', the totals'
    assert f'<td class="total">{sum(100 - k for k in range(20)):,}</td></tr></tfoot>' in matrix


def test_no_flip_yet_is_a_sentence() -> None:
    only_mismatch = [_exchange("r", T0, [], result="status_mismatch", shadow_status=500)]
    html = _page("classification", _disagreeing("s", drilldown=_drill(only_mismatch)))
    assert "No class has flipped yet." in drilldown(html, "s")
    assert '<table class="flips"' not in html


def test_probabilities_show_vectors_rounded_with_the_argmax_marked() -> None:
    exchange = _exchange(
        "p-1",
        T0,
        [
            _instance(0, [0.1234, 0.8766], [0.61, 0.39], 1),
            _instance(1, [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]),
            _instance(2, [0.01] * 11 + [0.89], [0.9] + [0.01] * 11),
        ],
    )
    html = _page(
        "probabilities",
        _disagreeing("s", drilldown=_drill([exchange], [("1", "0", 7), ("11", "0", 1)])),
    )
    section = drilldown(html, "s")
    marked = (
        '<mark class="argmax" title="the largest: class {k}">{v}</mark>'
        '<span class="visually-hidden"> (largest, class {k})</span>'
    )
    assert f'<span class="pred">[0.123, {marked.format(k=1, v="0.877")}]</span>' in section
    assert f'<span class="pred">[{marked.format(k=0, v="0.610")}, 0.390]</span>' in section
    # A long vector: its first 8, how many more, and the largest when it is past them.
    assert (
        '<span class="pred">[0.010, 0.010, 0.010, 0.010, 0.010, 0.010, 0.010, 0.010, … +4]'
        f" largest: [11] {marked.format(k=11, v='0.890')}</span>"
    ) in section
    assert "(the argmax of each model's probabilities)" in section
    assert [r[0] for r in rows_of(table(section, "flips"))] == ["1", "11"]
    assert "<mark" not in rows_of(table(section, "instances"))[0][4]  # a label of 1: no vector


def test_long_predictions_and_many_exchanges_are_cut() -> None:
    long_text = "cat " * 100
    exchanges = [
        _exchange(f"r{k:02d}", T0 + k, [_instance(0, long_text, "dog")], truncated=k == 11)
        for k in range(12)
    ]
    exchanges.append(
        _exchange("deep", T0 - 1, [_instance(0, json.loads("[" * 500 + "]" * 500), 1)])
    )
    html = _page("classification", _disagreeing("s", drilldown=_drill(exchanges)))
    section = drilldown(html, "s")
    assert section.count('<div class="exchange">') == 10  # the latest ten
    assert "r11" in section
    assert "r01" not in section
    assert '<p class="more">3 older ones not shown: GET /disagreements lists them.</p>' in section
    assert section.count("+ more instances not shown") == 1  # r11 was truncated
    cut = re.findall(r'<span class="pred"><span title="([^"]*)">([^<]*)</span></span>', section)
    assert len(cut) == 10
    title, shown = cut[0]
    assert shown == ("cat " * 15)[:59] + "…"
    assert title == long_text[:400]
    # A deeply nested prediction renders, three levels down.
    deep = _page("classification", _disagreeing("s", drilldown=_drill(exchanges[-1:])))
    assert '<span class="pred">[[[[…]]]]</span>' in deep


def test_hostile_request_ids_predictions_and_classes_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    exchange = _exchange(
        f'{evil}/../admin?x="y"#z',
        T0,
        [_instance(0, evil, {"k": evil}, label=f"\ud800{evil}")],
        result=f"odd_{evil}",
    )
    largest = [{"request_id": evil, "index": 0, "production": 1.0, "shadow": 2.0,
                "difference": 1.0, "label": None}]  # fmt: skip
    html = _page(
        "classification",
        _disagreeing("s", drilldown=_drill([exchange], [(evil, f'"{evil}', 3)])),
    )
    regression = _page("regression", _disagreeing("s", drilldown=_drill([exchange], [], largest)))
    for page in (html, regression):
        assert "<script" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        page.encode("utf-8")  # a lone surrogate reads as "?"
    href = "/exchanges/%3Cscript%3Ealert%281%29%3C%2Fscript%3E%2F..%2Fadmin%3Fx%3D%22y%22%23z"
    assert f'href="{href}"' in html
    assert '<a class="rid" href="/exchanges/%3Cscript%3Ealert%281%29%3C%2Fscript%3E">' in (
        regression
    )
    assert "?&lt;script&gt;" in html  # the label, its surrogate replaced
    assert "odd &lt;script&gt;" in html  # an unknown result, as it is


def test_regression_shows_the_largest_differences_and_no_matrix() -> None:
    largest = [
        {"request_id": "r1", "index": 2, "production": 101.5, "shadow": 140.25,
         "difference": 38.75, "label": 120.0},
        {"request_id": "r2", "index": 0, "production": 10.0, "shadow": 9.5,
         "difference": -0.5, "label": None},
        {"request_id": "r3", "index": 1, "production": 3.0, "shadow": -47.0,
         "difference": -50.0, "label": 4.0},
    ]  # fmt: skip
    exchange = _exchange("r1", T0, [_instance(2, 101.5, 140.25, 120.0)])
    html = _page("regression", _disagreeing("s", drilldown=_drill([exchange], [], largest)))
    section = drilldown(html, "s")
    assert '<table class="flips"' not in section
    assert "Which classes flip" not in section
    differences = table(section, "largest")
    assert rows_of(differences) == [
        ["r3", "1", "3", "-47", "-50", "4"],
        ["r1", "2", "101.5", "140.25", "+38.75", "120"],
        ["r2", "0", "10", "9.5", "-0.5", "label pending"],
    ]
    assert "the shadow's prediction minus production's" in differences
    assert rows_of(table(section, "instances")) == [["2", "≠ differs", "101.5", "140.25", "120"]]
    assert "<mark" not in section  # no argmax on a regression route
    assert "accuracy" not in route_section(html, 0).lower()


def test_noise_floor_line_both_ways() -> None:
    def floor(within: bool | None) -> dict[str, Any]:
        return {"baseline": "prod-replica", "disagreement": 0.008, "low": 0.005, "high": 0.012,
                "within": within}  # fmt: skip

    shadows = [
        _disagreeing(name, noise_floor=floor(within))
        for name, within in (("above", False), ("within", True), ("unknown", None))
    ]
    baseline = _shadow("prod-replica", role="baseline", noise_floor=None)
    html = _page("classification", *shadows, baseline)
    line = (
        '<p class="noise-floor">Disagreement 20.1% [19.0, 21.3] vs the noise floor 0.8%'
        " [0.5, 1.2] (baseline <code>prod-replica</code>): {}.</p>"
    )
    assert line.format('<strong class="noise-above">above the noise floor</strong>') in drilldown(
        html, "above"
    )
    assert line.format('<strong class="noise-within">within the noise floor</strong>') in drilldown(
        html, "within"
    )
    assert line.format("not enough compared instances to tell yet") in drilldown(html, "unknown")
    # Capture off: the noise floor, then the muted line.
    assert drilldown(html, "above").endswith(
        '<p class="muted capture-off">Enable <code>capture:</code> in the config to see the'
        " disagreeing requests.</p></section>"
    )
    # The baseline: a badge on its card, its row marked in the summary; no noise floor line.
    own = card(html, "prod-replica")
    assert (
        '<span class="badge badge-baseline">baseline (A/A): the noise floor of this route'
        "'"
        "s"
        " shadows</span>"
    ) in own
    assert "noise-floor" not in own
    assert "badge-baseline" not in card(html, "above")
    summary = table(html, "summary")
    marked = re.findall(r'<tr class="baseline">.*?href="#shadow-0-(\d)"', summary)
    assert marked == ["3"]
    assert summary.count('<span class="badge badge-baseline">baseline (A/A)</span>') == 1


def test_capture_off_is_one_muted_line_only_with_disagreements() -> None:
    off = '<p class="muted capture-off">Enable <code>capture:</code> in the config to see the'
    disagrees = _disagreeing("disagrees", drilldown=_drill())
    agrees = _disagreeing("agrees", disagreed=0, drilldown=_drill())
    old = _disagreeing("old")  # a report from before the drill-down: no key at all
    html = _page("classification", disagrees, agrees, old)
    assert off in card(html, "disagrees")
    assert '<section class="drilldown"' not in card(html, "disagrees")
    assert off not in card(html, "agrees")
    assert "Where it disagrees" not in card(html, "agrees")
    assert off in card(html, "old")
    assert html.count(off) == 2


def test_malformed_drilldown_never_raises() -> None:
    junk: list[Any] = [
        None, "x", 3, [None, "x"],
        {"exchanges": "x", "flips": {"a": 1}, "largest_differences": None},
        {"exchanges": [None, {"instances": [None, {"index": "x", "differs": "yes"}]}],
         "flips": [{"production": None, "shadow": 1, "instances": "3"},
                   {"production": "a", "shadow": "b", "instances": math.inf}],
         "largest_differences": [{"difference": "x"}, None]},
    ]  # fmt: skip
    for kind in ("classification", "regression", "probabilities"):
        for drill in junk:
            shadow = _disagreeing("s", drilldown=drill, noise_floor={"within": "x"})
            _page(kind, shadow)


def test_capture_on_with_nothing_captured_says_why_not_how_to_turn_it_on() -> None:
    empty = _drill()
    empty["capture"] = True
    html = _page("classification", _disagreeing("rate-limited", drilldown=empty))
    shown = card(html, "rate-limited")
    assert "Enable <code>capture:</code>" not in shown
    assert (
        '<p class="muted capture-empty">Nothing of its disagreements is in the capture (yet, or'
        " any more): they are kept up to <code>capture.max_per_second</code>, and removed after"
        " <code>capture.max_age</code>.</p>"
    ) in shown

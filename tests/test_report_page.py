"""The report page as a browser renders it: a regression, a classification and a probabilities
route, each with a shadow that has had no traffic yet, measured through the proxy from scripted
models and labels (real metric samples, through proxy.report.build), rendered by headless
Chromium and checked by the structure of its DOM, then screenshotted. The drill-down (where a
shadow disagrees) is what the capture would hold for the same scripted traffic, written into
the report here."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.config import parse_config
from proxy.processes.inline import start_inline
from proxy.report.build import build_report, history_point, samples_of
from proxy.report.html import fmt_number, render_html
from proxy.report.model import (
    CapturedExchange,
    CapturedInstance,
    ClassFlip,
    DrillDown,
    HistoryPoint,
    LargestDifference,
    Report,
    RouteReport,
)
from tests.conftest import Answer, FakeModel, Received, RunningProxy, Script, v1

REGRESSION = "/v1/models/price:predict"
CLASSIFICATION = "/v1/models/iris:predict"
PROBABILITIES = "/v1/models/churn:predict"
BATCHES = 6  # of traffic, each followed by a point of history
PER_BATCH = 50  # requests per route and batch
GENERATED = 1796012430.0  # 2026-11-30 04:20:30 UTC
# Each route's history is sampled at its own interval, to span a different range ending at the
# report's time, so that every kind of time axis is seen: 100 seconds, 50 minutes, 2.5 days.
STEP = {REGRESSION: 20.0, PROBABILITIES: 600.0, CLASSIFICATION: 12 * 3600.0}


# --- the scripted models ------------------------------------------------------------------------


def _instances(r: Received) -> list[float]:
    return [float(x) for x in r.json()["instances"]]


def price_lr(r: Received) -> Answer:
    """Off by 1.0 everywhere; one answer in ten holds no predictions (a wrong output name), so
    the route cannot read it: a problem of the route."""
    xs = _instances(r)
    if int(xs[0]) % 10 == 3:
        return Answer(body=orjson.dumps({"outputs": [x + 1.0 for x in xs]}))
    return v1([x + 1.0 for x in xs])


def price_gbm(r: Received) -> Answer:
    """Off by 0.25 or 0.75: a mean absolute error of about 0.5, and slower than production."""
    xs = _instances(r)
    answer = v1([x + (0.25 if int(x) % 2 == 0 else 0.75) for x in xs])
    answer.delay = 0.004 if int(xs[0]) % 3 else 0.012
    return answer


def iris_lr(r: Received) -> Answer:
    """Right (the label is the instance) except on multiples of 5: 80% accurate."""
    return v1([int(x) + 1 if int(x) % 5 == 0 else int(x) for x in _instances(r)])


def iris_rf(r: Received) -> Answer:
    """Wrong only on multiples of 10: 90% accurate."""
    answer = v1([int(x) + 1 if int(x) % 10 == 0 else int(x) for x in _instances(r)])
    answer.delay = 0.002
    return answer


def _probabilities(right: Callable[[int], bool], confidence: float) -> Script:
    def script(r: Received) -> Answer:
        out = []
        for x in _instances(r):
            label = int(x) % 2
            p = confidence if right(int(x)) else 1 - confidence
            out.append([1 - p, p] if label == 1 else [p, 1 - p])
        return v1(out)

    return script


churn_lr = _probabilities(lambda i: i % 5 != 0, 0.7)
churn_gbm = _probabilities(lambda i: i % 10 != 0, 0.85)


def _silent(r: Received) -> Answer:  # a shadow sampled at 0%: never asked
    raise AssertionError("a shadow with no traffic was sent a request")


def _label(route: str, instances: list[int]) -> Any:
    values: list[Any]
    if route == PROBABILITIES:
        values = [i % 2 for i in instances]
    elif route == REGRESSION:
        values = [float(i) for i in instances]
    else:
        values = list(instances)
    return values[0] if len(values) == 1 else values


def _config(models: dict[str, FakeModel], store: Path) -> str:
    def route(match: str, kind: str, production: str, shadow: str, silent: str) -> str:
        return f"""
  - match: {match}
    protocol: kserve-v1
    record: 100%
    compare: {{kind: {kind}}}
    production: {{name: {production}, url: "{models[production].url}{match}"}}
    shadows:
      - {{name: {shadow}, url: "{models[shadow].url}{match}"}}
      - {{name: {silent}, url: "{models[silent].url}{match}", sample: 0%}}
"""

    return (
        f"store: {{path: '{store}', flush_interval: 1ms}}\n"
        "verdict: {latency_margin: 100%}\n"
        "routes:"
        + route(REGRESSION, "regression", "price-lr", "price-gbm", "price-nn")
        + route(CLASSIFICATION, "classification", "iris-lr", "iris-rf", "iris-xgb")
        + route(PROBABILITIES, "probabilities", "churn-lr", "churn-gbm", "churn-mlp")
    )


async def _start_model(script: Script) -> tuple[FakeModel, web.AppRunner]:
    model = FakeModel(script)
    runner = web.AppRunner(model.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    model.url = f"http://{host}:{port}"
    return model, runner


async def measure(store: Path) -> Report:
    """Labelled traffic on the three routes in batches, a point of history after each (at
    scripted times, spaced by STEP), then the report."""
    scripts = {
        "price-lr": price_lr, "price-gbm": price_gbm, "price-nn": _silent,
        "iris-lr": iris_lr, "iris-rf": iris_rf, "iris-xgb": _silent,
        "churn-lr": churn_lr, "churn-gbm": churn_gbm, "churn-mlp": _silent,
    }  # fmt: skip
    started = [await _start_model(script) for script in scripts.values()]
    models = dict(zip(scripts, (model for model, _ in started), strict=True))
    config = parse_config(_config(models, store), "page.yaml", env={})
    registry = CollectorRegistry()
    inline = await start_inline(config, registry, at=("127.0.0.1", 0))
    session = aiohttp.ClientSession()
    p = RunningProxy(inline.urls["proxy"], inline.app, registry, session, inline, inline.urls)
    try:
        reporter = p.state.reporter
        history: dict[tuple[str, str], list[HistoryPoint]] = {}
        request = 0
        for batch in range(BATCHES):
            labels = []
            for _ in range(PER_BATCH):
                request += 1
                # Requests of one to three instances: labelled requests and labelled instances
                # differ.
                instances = [3 * request + k for k in range(1 + request % 3)]
                for route in (REGRESSION, CLASSIFICATION, PROBABILITIES):
                    rid = f"{route}-{request}"
                    status, _, _ = await p.post(
                        route, {"instances": instances}, headers={"X-Request-ID": rid}
                    )
                    assert status == 200
                    labels.append({"request_id": rid, "label": _label(route, instances)})
            await p.settled()
            status, _, _ = await p.post("/labels", labels)
            assert status == 200
            # A point of history per shadow, each route's at its own scripted time.
            for route in reporter.report()["routes"]:
                at = GENERATED - 30 - (BATCHES - 1 - batch) * STEP[route["route"]]
                for shadow in route["shadows"]:
                    key = (route["route"], shadow["shadow"])
                    history.setdefault(key, []).append(history_point(shadow, at))
        p.state.metrics.flush()
        report = build_report(
            samples_of(registry.collect()),
            config.verdict,
            generated_at=GENERATED,
            config_hash="5f0c2a9e41d7",
            history=history,
        )
    finally:
        await p.stop()
        for _, runner in started:
            await runner.cleanup()
    parsed: Report = orjson.loads(orjson.dumps(report))  # as /report serves it
    return parsed


# --- the page in Chromium ------------------------------------------------------------------------

# Run in the browser before the DOM is dumped (test pages only: the report's page has no script):
# what layout decides, written into attributes. Each tick label's box, the problem box's
# colours, and whether the page is wider than the window.
PROBE = """<script>
for (const el of document.querySelectorAll("svg .tick-x, svg .tick-y")) {
  const box = el.getBoundingClientRect();
  el.setAttribute("data-box", [box.left, box.right, box.top, box.bottom].join(","));
}
for (const el of document.querySelectorAll(".problems")) {
  const style = getComputedStyle(el);
  el.setAttribute("data-colours", [style.backgroundColor, style.color,
    style.borderLeftColor].join(";"));
}
document.body.setAttribute("data-overflow",
  String(document.documentElement.scrollWidth > document.documentElement.clientWidth));
</script>"""

WINDOW = (1280, 2400)


@dataclass
class Node:
    """An element of the DOM Chromium dumped: its tag, attributes and children."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def all(self, tag: str = "", cls: str = "") -> list[Node]:
        """Descendants (and self) of a tag and with a class, either optional."""
        return [
            n
            for n in self.iter()
            if (not tag or n.tag == tag) and (not cls or cls in n.attrs.get("class", "").split())
        ]

    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]

    def one(self, tag: str = "", cls: str = "") -> Node:
        [found] = self.all(tag, cls)
        return found

    def markup(self) -> str:
        """Every attribute value and text below, lower-cased: what "never shows" is checked on."""
        parts = [self.tag, *self.attrs.values()]
        parts += [c if isinstance(c, str) else c.markup() for c in self.children]
        return " ".join(parts).lower()


class _Tree(HTMLParser):
    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "wbr"})

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self._open = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self._open[-1].children.append(node)
        if tag not in self.VOID:
            self._open.append(node)

    def handle_endtag(self, tag: str) -> None:
        while len(self._open) > 1:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self._open[-1].children.append(data)


def chromium(*args: str) -> str:
    """Headless Chromium on a fresh profile, with the network features off; its stdout."""
    binary = shutil.which("chromium")
    assert binary is not None, "the test command installs Debian's chromium"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}", *args,
            ],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    return done.stdout


@dataclass
class Rendered:
    report: Report
    dom: Node  # as Chromium laid it out, probed
    screenshot: Path | None = None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return asyncio.run(measure(tmp_path_factory.mktemp("store") / "p.db"))


@pytest.fixture(scope="module")
def pages(report: Report, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """The page of each route alone (the regression and classification ones screenshotted too),
    and the page of all three, as Chromium renders them. With REPORT_SCREENSHOTS set to a
    directory, the screenshots are kept there."""
    where = tmp_path_factory.mktemp("pages")
    kept = os.environ.get("REPORT_SCREENSHOTS")
    size = f"--window-size={WINDOW[0]},{WINDOW[1]}"
    rendered = {}
    for name, routes in (
        ("regression", [REGRESSION]),
        ("classification", [CLASSIFICATION]),
        ("all", [REGRESSION, CLASSIFICATION, PROBABILITIES]),
    ):
        one: Report = {**report, "routes": [r for r in report["routes"] if r["route"] in routes]}
        html = render_html(one)
        probed = where / f"{name}-probed.html"
        probed.write_text(html.replace("</body>", f"{PROBE}</body>"))
        dom = _Tree(chromium(size, "--dump-dom", probed.as_uri())).root
        shot = None
        if name != "all":
            page = where / f"{name}.html"
            page.write_text(html)
            shot = Path(kept) / f"{name}.png" if kept else where / f"{name}.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            chromium(f"--screenshot={shot}", size, page.as_uri())
        rendered[name] = Rendered(one, dom, shot)
    return rendered


def section(page: Rendered, route: str) -> Node:
    [found] = [
        s for s in page.dom.all("section", "route") if s.one("h2").one("code").text() == route
    ]
    return found


def card(page: Rendered, shadow: str) -> Node:
    [found] = [a for a in page.dom.all("article", "card") if a.one("h3").text() == shadow]
    return found


def route_of(report: Report, route: str) -> RouteReport:
    [found] = [r for r in report["routes"] if r["route"] == route]
    return found


def boxes(svg: Node, cls: str) -> list[tuple[str, tuple[float, ...]]]:
    """A chart's tick labels of a class, with their boxes as laid out: left, right, top, bottom."""
    return [
        (t.text(), tuple(float(v) for v in t.attrs["data-box"].split(",")))
        for t in svg.all("text", cls)
    ]


def assert_apart(labels: list[tuple[str, tuple[float, ...]]]) -> None:
    """Tick labels along x are distinct, in order, and none touches the next."""
    texts = [text for text, _ in labels]
    assert len(set(texts)) == len(texts), texts
    for (a, box_a), (b, box_b) in itertools.pairwise(labels):
        assert box_a[1] + 4 <= box_b[0], (a, b, box_a, box_b)


# --- (a) the regression route ---------------------------------------------------------------


def test_regression_route_shows_errors_never_accuracy(pages: dict[str, Rendered]) -> None:
    page = pages["regression"]
    route = section(page, REGRESSION)
    assert route.attrs["data-kind"] == "regression"
    assert "accuracy" not in route.markup()
    gbm = card(page, "price-gbm")
    rows = {tr.one("th").text(): tr for tr in gbm.all("tr") if tr.all("th") and tr.all("td")}
    assert "MAE advantage (+ = shadow better)" in rows
    assert "MAE advantage, per instance (+ = shadow better)" in rows
    assert rows["MAE"].all("td")[0].one("span", "v").text() == "1"  # production, off by 1.0
    assert rows["MAE"].all("td")[1].one("span", "v").text() == "0.4907"
    assert [td.one("span", "v").text() for td in rows["RMSE"].all("td")] == ["1", "0.5507"]
    assert "production's mean absolute error minus the shadow's, in the target's units" in (
        rows["MAE advantage (+ = shadow better)"].text()
    )
    # The chart is the MAE advantage in the target's units, its axes labelled so.
    svg = gbm.one("svg", "chart-mae")
    title = svg.elements()[0]
    assert title.tag == "title"
    assert title.text() == "MAE advantage over time for price-gbm (+ = shadow better)"
    titles = [t.text() for t in svg.all("text", "axis-title")]
    assert titles == ["MAE advantage", "time (UTC), 30 Nov 2026"]
    assert gbm.all("figcaption")[0].text().startswith("MAE advantage over time (+ = shadow better)")
    assert "Measure" in page.dom.one("table", "summary").text()
    summary = [tr.text() for tr in page.dom.one("table", "summary").one("tbody").all("tr")]
    assert all("MAE (target's units)" in row for row in summary)


def test_regression_advantage_has_one_sign_everywhere(pages: dict[str, Rendered]) -> None:
    """The shadow's error is half production's: its advantage is positive in the summary, the
    verdict's row, the fixed-sample row and the chart, where the line is above zero."""
    page = pages["regression"]
    shadow = route_of(page.report, REGRESSION)["shadows"][0]
    assert shadow["shadow"] == "price-gbm"
    advantage = shadow["quality"]["advantage"]
    assert advantage is not None
    assert advantage > 0.4
    shown = fmt_number(advantage, signed=True)
    assert shown.startswith("+")
    summary = page.dom.one("table", "summary")
    assert "Advantage (+ = shadow better)" in [th.text() for th in summary.all("th")]
    assert shown in summary.all("tr")[1].text()
    gbm = card(page, "price-gbm")
    assert gbm.all("tbody")[0].all("tr")[1].one("span", "v").text() == shown
    svg = gbm.one("svg", "chart-mae")
    zero = float(svg.one("line", "zero").attrs["y1"])
    dots = [float(c.attrs["cy"]) for c in svg.all("circle", "point")]
    assert len(dots) == BATCHES
    assert all(cy < zero for cy in dots)  # SVG's y grows downwards: above the line
    assert svg.one("text", "sign").text() == "▲ shadow better"


def test_problems_are_a_red_box_at_the_top_of_the_route(pages: dict[str, Rendered]) -> None:
    page = pages["regression"]
    route = section(page, REGRESSION)
    elements = route.elements()
    assert [e.tag for e in elements[:2]] == ["h2", "div"]
    box = elements[1]
    assert box.attrs["class"] == "problems"
    assert box.attrs["role"] == "alert"
    problems = route_of(page.report, REGRESSION)["problems"]
    assert [li.text() for li in box.all("li")] == problems
    assert problems  # one answer in ten from production cannot be read (build.py words it)
    background, colour, border = box.attrs["data-colours"].split(";")
    assert (background, colour, border) == (
        "rgb(255, 235, 233)",
        "rgb(130, 7, 30)",
        "rgb(207, 34, 46)",
    )
    # The summary flags it too, linking to the route.
    flags = page.dom.one("table", "summary").all("a", "problem-flag")
    assert [(a.text(), a.attrs["href"]) for a in flags] == [
        ("problems", f"#{route.attrs['id']}")
    ] * 2
    assert section(pages["classification"], CLASSIFICATION).all("div", "problems") == []


# --- (b) the classification route and a probabilities one -----------------------------------


def test_classification_route_shows_accuracy_in_points(pages: dict[str, Rendered]) -> None:
    page = pages["classification"]
    route = section(page, CLASSIFICATION)
    markup = route.markup()
    for never in ("mae", "rmse", "log loss", "brier", "reliability"):
        assert never not in markup, never
    rf = card(page, "iris-rf")
    rows = {tr.one("th").text(): tr for tr in rf.all("tr") if tr.all("th") and tr.all("td")}
    assert [td.one("span", "v").text() for td in rows["Accuracy"].all("td")] == ["80.0%", "90.0%"]
    verdict_row = rows["Accuracy advantage (+ = shadow better)"]
    assert verdict_row.one("span", "v").text() == "+10.0 pp"
    assert "the shadow's accuracy minus production's, in percentage points" in verdict_row.text()
    assert (
        rows["Accuracy advantage, per instance (+ = shadow better)"].one("span", "v").text()
        == "+10.0 pp"
    )
    svg = rf.one("svg", "chart-accuracy")
    assert [t.text() for t in svg.all("text", "axis-title")] == [
        "accuracy advantage (pp)",
        "time (UTC), 2026",
    ]
    assert "+10" in [t.text() for t in svg.all("text", "tick-y")]


def test_probabilities_route_adds_scores_and_reliability(pages: dict[str, Rendered]) -> None:
    page = pages["all"]
    route = section(page, PROBABILITIES)
    assert route.attrs["data-kind"] == "probabilities"
    assert "mae" not in route.markup()
    gbm = card(page, "churn-gbm")
    rows = {tr.one("th").text() for tr in gbm.all("tr") if tr.all("th") and tr.all("td")}
    assert {
        "Accuracy",
        "Accuracy advantage (+ = shadow better)",
        "Log loss",
        "Brier score",
        "Log loss advantage (+ = shadow better)",
        "Brier score advantage (+ = shadow better)",
    } <= rows
    assert [s.attrs["class"] for s in gbm.all("svg")] == [
        "chart chart-accuracy",
        "chart chart-latency",
        "chart chart-reliability",
    ]


# --- both: shadows with no traffic, ticks, counts -------------------------------------------


@pytest.mark.parametrize(
    ("name", "route", "idle"),
    [("regression", REGRESSION, "price-nn"), ("classification", CLASSIFICATION, "iris-xgb")],
)
def test_a_shadow_with_no_traffic_is_listed_without_charts(
    pages: dict[str, Rendered], name: str, route: str, idle: str
) -> None:
    page = pages[name]
    shadow = route_of(page.report, route)["shadows"][1]
    assert (shadow["shadow"], shadow["requests"], shadow["verdict"]) == (
        idle,
        0,
        "insufficient_data",
    )
    found = card(page, idle)
    assert found.one("span", "verdict").text() == "verdict: ○ insufficient data"
    assert found.one("span", "pill-idle").text() == "no traffic yet"
    assert found.all("svg") == []
    assert found.all("table") == []
    [row] = [tr for tr in page.dom.one("table", "summary").all("tr") if idle in tr.text()]
    assert "no traffic yet" in row.text()
    assert "insufficient data" in row.text()
    # The shadow with traffic next to it has both its charts.
    busy = card(page, route_of(page.report, route)["shadows"][0]["shadow"])
    assert len(busy.all("svg")) == 2


@pytest.mark.parametrize("name", ["regression", "classification"])
def test_latency_axis_covers_only_populated_buckets_with_readable_ticks(
    pages: dict[str, Rendered], name: str
) -> None:
    page = pages[name]
    [route] = page.report["routes"]
    bounds = route["latency_buckets"]
    assert len(bounds) + 1 == len(route["production_latency_counts"])
    busy = route["shadows"][0]
    filled = [
        k
        for counts in (route["production_latency_counts"], busy["latency_counts"])
        for k, c in enumerate(counts)
        if c
    ]
    first, last = min(filled), max(filled)
    assert last - first + 1 < len(bounds) + 1  # some buckets are empty, and left out
    svg = card(page, busy["shadow"]).one("svg", "chart-latency")
    assert len(svg.all("rect", "bar-production")) == last - first + 1
    assert len(svg.all("rect", "bar-shadow")) == last - first + 1
    labels = boxes(svg, "tick-x")
    assert_apart(labels)
    edges = [0.0, *bounds][first : last + 2]
    in_ms = [float(text) for text, _ in labels]
    assert in_ms[0] == edges[0] * 1000
    assert set(in_ms) <= {round(e * 1000, 6) for e in edges}
    assert 2 <= len(labels) <= 12
    assert max(b[1] for _, b in labels) <= WINDOW[0]


@pytest.mark.parametrize(
    ("name", "route", "pattern", "count"),
    [
        ("all", REGRESSION, r"\d\d:\d\d:\d\d", 4),  # 100 s: every 30 s
        ("all", PROBABILITIES, r"\d\d:\d\d", 6),  # 50 min: every 10 min
        ("all", CLASSIFICATION, r"\d\d [A-Z][a-z]{2} \d\d:\d\d", 5),  # 2.5 days: every 12 h
    ],
)
def test_time_axis_ticks_are_distinct_and_fit_the_span(
    pages: dict[str, Rendered], name: str, route: str, pattern: str, count: int
) -> None:
    page = pages[name]
    busy = route_of(page.report, route)["shadows"][0]["shadow"]
    svg = card(page, busy).one("svg", "chart-mae" if route == REGRESSION else "chart-accuracy")
    labels = boxes(svg, "tick-x")
    assert len(labels) == count
    assert all(re.fullmatch(pattern, text) for text, _ in labels), labels
    assert_apart(labels)


def test_labelled_counts_name_requests_or_instances(pages: dict[str, Rendered]) -> None:
    page = pages["all"]
    regression = section(page, REGRESSION)
    diagnostics = route_of(page.report, REGRESSION)["diagnostics"]
    assert (diagnostics["labelled_requests"], diagnostics["labelled_instances"]) == (270, 540)
    meta = [p.text() for p in regression.all("p", "route-meta")]
    assert meta[1].startswith(
        "270 labelled requests (100.0% of 270 recorded) · 540 labelled instances ·"
    )
    text = re.sub(r"\s+", " ", page.dom.one("body").text())
    unnamed = re.findall(r"\d labelled (?!requests|instances)\w+", text)
    assert unnamed == []
    assert re.findall(r"\d labelled \w+", text)


def test_pages_fit_the_window_and_screenshots_are_taken(pages: dict[str, Rendered]) -> None:
    for name in ("regression", "classification", "all"):
        assert pages[name].dom.one("body").attrs["data-overflow"] == "false", name
    for name in ("regression", "classification"):
        shot = pages[name].screenshot
        assert shot is not None
        png = shot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])  # IHDR
        assert (width, height) == WINDOW
        assert len(png) > 50_000


# --- (c) where it disagrees: the drill-down ---------------------------------------------------

CAPTURED = GENERATED - 40.0  # the latest exchange's capture, a second per request before
DRILL_WINDOW = (1280, 3600)  # tall enough for a card and its drill-down in one screenshot
EXCHANGES = 12  # the latest disagreeing requests given; the page shows 10

# What layout decides for the drill-down, on top of PROBE: the boxes of its tables and exchanges,
# and the background of the instances' rows.
DRILL_PROBE = """<script>
for (const el of document.querySelectorAll(".drilldown table, .drilldown .exchange")) {
  const box = el.getBoundingClientRect();
  el.setAttribute("data-box", [box.left, box.right, box.top, box.bottom].join(","));
}
for (const el of document.querySelectorAll(".instances tbody td")) {
  el.setAttribute("data-bg", getComputedStyle(el).backgroundColor);
}
</script>"""


def _traffic() -> Iterator[tuple[int, list[int]]]:
    """measure()'s requests: their numbers and instances."""
    for request in range(1, BATCHES * PER_BATCH + 1):
        yield request, [3 * request + k for k in range(1 + request % 3)]


def _exchange(route: str, request: int, instances: list[CapturedInstance]) -> CapturedExchange:
    return CapturedExchange(
        request_id=f"{route}-{request}",
        captured_at=CAPTURED - (BATCHES * PER_BATCH - request),
        result="disagree",
        production_status=200,
        shadow_status=200,
        instances=instances,
        truncated=False,
        labelled=True,
    )


def iris_drilldown() -> DrillDown:
    """iris-rf against iris-lr, from their scripts: they disagree on the instances ending in 5,
    where production says x + 1 and the shadow x (the label). Every such pair is its own class
    pair: more classes than the matrix shows, the rest summed."""

    def predict(x: int, wrong_every: int) -> int:
        return x + 1 if x % wrong_every == 0 else x

    exchanges, flips = [], Counter[tuple[str, str]]()
    for request, xs in _traffic():
        instances = [
            CapturedInstance(
                index=k,
                production=predict(x, 5),
                shadow=predict(x, 10),
                differs=predict(x, 5) != predict(x, 10),
                label=x,
            )
            for k, x in enumerate(xs)
        ]
        for i in instances:
            if i["differs"]:
                flips[(str(i["production"]), str(i["shadow"]))] += 1
        if any(i["differs"] for i in instances):
            exchanges.append(_exchange(CLASSIFICATION, request, instances))
    return DrillDown(
        exchanges=exchanges[-EXCHANGES:][::-1],
        flips=[ClassFlip(production=p, shadow=s, instances=n) for (p, s), n in flips.items()],
        largest_differences=[],
    )


def price_drilldown() -> DrillDown:
    """price-gbm against price-lr, from their scripts: production says x + 1, the shadow x + 0.25
    (even x) or x + 0.75 (odd), and with no tolerance every instance differs; the requests whose
    production answer cannot be read are never compared."""
    exchanges, largest = [], []
    for request, xs in _traffic():
        if xs[0] % 10 == 3:
            continue
        shadow = [x + (0.25 if x % 2 == 0 else 0.75) for x in xs]
        exchange = _exchange(
            REGRESSION,
            request,
            [
                CapturedInstance(
                    index=k, production=x + 1.0, shadow=y, differs=True, label=float(x)
                )
                for k, (x, y) in enumerate(zip(xs, shadow, strict=True))
            ],
        )
        exchanges.append(exchange)
        largest.append(
            [
                LargestDifference(
                    request_id=exchange["request_id"],
                    index=k,
                    production=x + 1.0,
                    shadow=y,
                    difference=y - (x + 1.0),
                    label=float(x),
                )
                for k, (x, y) in enumerate(zip(xs, shadow, strict=True))
            ]
        )
    latest = exchanges[-EXCHANGES:][::-1]
    captured = [d for differences in largest[-EXCHANGES:][::-1] for d in differences]
    captured.sort(key=lambda d: -abs(d["difference"]))  # stable: the newest first among equals
    return DrillDown(exchanges=latest, flips=[], largest_differences=captured[:20])


@pytest.fixture(scope="module")
def drilldowns(report: Report, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """The classification and the regression route alone, their busy shadow given the drill-down
    above and their idle one made the baseline (A/A), as Chromium renders them, screenshotted
    (kept as drilldown-<route>.png under REPORT_SCREENSHOTS, when set)."""
    where = tmp_path_factory.mktemp("drilldown")
    kept = os.environ.get("REPORT_SCREENSHOTS")
    size = f"--window-size={DRILL_WINDOW[0]},{DRILL_WINDOW[1]}"
    rendered = {}
    for name, route, drill in (
        ("classification", CLASSIFICATION, iris_drilldown()),
        ("regression", REGRESSION, price_drilldown()),
    ):
        one: Report = orjson.loads(orjson.dumps({**report, "routes": [route_of(report, route)]}))
        busy, idle = one["routes"][0]["shadows"]
        busy["drilldown"] = drill
        busy["role"], idle["role"] = "candidate", "baseline"
        disagreement = busy["disagreement"]
        busy["noise_floor"] = {
            "baseline": idle["shadow"],
            "disagreement": 0.004,
            "low": 0.001,
            "high": 0.011,
            "within": disagreement["low"] is not None and disagreement["low"] <= 0.011,
        }
        html = render_html(one)
        probed = where / f"{name}-probed.html"
        probed.write_text(html.replace("</body>", f"{PROBE}{DRILL_PROBE}</body>"))
        dom = _Tree(chromium(size, "--dump-dom", probed.as_uri())).root
        page = where / f"{name}.html"
        page.write_text(html)
        shot = Path(kept) if kept else where
        shot = shot / f"drilldown-{name}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        chromium(f"--screenshot={shot}", size, page.as_uri())
        rendered[name] = Rendered(one, dom, shot)
    return rendered


def cells(row: Node) -> list[str]:
    return [c.text() for c in row.elements() if c.tag in ("th", "td")]


def box(node: Node) -> tuple[float, ...]:
    return tuple(float(v) for v in node.attrs["data-box"].split(","))


def test_classification_drilldown_shows_the_latest_disagreeing_requests(
    drilldowns: dict[str, Rendered],
) -> None:
    page = drilldowns["classification"]
    drill = route_of(page.report, CLASSIFICATION)["shadows"][0]["drilldown"]
    section = card(page, "iris-rf").one("section", "drilldown")
    assert section.one("h4").text() == "Where it disagrees"
    shown = section.all("div", "exchange")
    assert len(shown) == 10
    assert (
        section.one("p", "more").text() == "2 older ones not shown: GET /disagreements lists them."
    )
    for node, exchange in zip(shown, drill["exchanges"], strict=False):
        link = node.one("a", "rid")
        assert link.text() == exchange["request_id"]
        assert link.attrs["href"] == "/exchanges/" + quote(exchange["request_id"], safe="")
        assert link.attrs["href"].startswith("/exchanges/%2Fv1%2Fmodels%2Firis%3Apredict-")
        assert node.one("span", "result").text() == "disagree"
        rows = node.one("table", "instances").one("tbody").all("tr")
        assert [cells(r) for r in rows] == [
            [
                str(i["index"]),
                "≠ differs" if i["differs"] else "= same",
                str(i["production"]),
                str(i["shadow"]),
                str(i["label"]),
            ]
            for i in exchange["instances"]
        ]
        # The differing rows, and only they, are highlighted: by a background and in words.
        for row, instance in zip(rows, exchange["instances"], strict=True):
            assert ("differs" in row.attrs.get("class", "")) == instance["differs"]
            backgrounds = {td.attrs["data-bg"] for td in row.all("td")}
            assert backgrounds == (
                {"rgb(255, 241, 229)"} if instance["differs"] else {"rgba(0, 0, 0, 0)"}
            )
    # The newest first: the last request with an instance ending in 5.
    newest = max(r for r, xs in _traffic() if any(x % 10 == 5 for x in xs))
    assert shown[0].one("a", "rid").text() == f"{CLASSIFICATION}-{newest}"


def test_classification_drilldown_confusion_matrix_totals(
    drilldowns: dict[str, Rendered],
) -> None:
    page = drilldowns["classification"]
    flips = route_of(page.report, CLASSIFICATION)["shadows"][0]["drilldown"]["flips"]
    total = sum(f["instances"] for f in flips)
    assert total == sum(1 for _, xs in _traffic() for x in xs if x % 10 == 5)
    matrix = card(page, "iris-rf").one("table", "flips")
    header = [cells(r) for r in matrix.one("thead").all("tr")]
    assert header[0] == ["", "the shadow predicts →", ""]
    assert header[1][0] == "production predicts ↓"
    assert header[1][-2:] == ["other classes", "Total"]
    rows = [cells(r) for r in matrix.one("tbody").all("tr")]
    assert len(rows) == 12 + 1
    # Every class pair flips once: the twelve first classes by value are shown.
    assert {f["instances"] for f in flips} == {1}
    assert [r[0] for r in rows[:-1]] == sorted({f["production"] for f in flips}, key=int)[:12]
    assert header[1][1:-2] == sorted({f["shadow"] for f in flips}, key=int)[:12]
    assert rows[0][:3] == ["16", "1", "0"]  # production's 16 is the shadow's 15
    assert rows[-1][0] == "other classes"
    for row in rows:  # each row's total is its cells' sum
        assert sum(int(c) for c in row[1:-1] if c.isdigit()) == int(row[-1])
    [foot] = matrix.one("tfoot").all("tr")
    totals = cells(foot)
    assert totals[0] == "Total"
    assert int(totals[-1].replace(",", "")) == total
    assert sum(int(c) for c in totals[1:-1]) == total
    assert sum(int(r[-1]) for r in rows) == total
    # The baseline: a badge on its card, its row marked in the summary.
    assert "baseline (A/A)" in card(page, "iris-xgb").one("span", "badge").text()
    [marked] = page.dom.one("table", "summary").all("tr", "baseline")
    assert "iris-xgb" in marked.text()
    floor = card(page, "iris-rf").one("p", "noise-floor").text()
    assert floor.startswith("Disagreement ")
    assert "vs the noise floor 0.4% [0.1, 1.1] (baseline iris-xgb): above the noise floor." in floor


def test_regression_drilldown_shows_the_largest_differences(
    drilldowns: dict[str, Rendered],
) -> None:
    page = drilldowns["regression"]
    drill = route_of(page.report, REGRESSION)["shadows"][0]["drilldown"]
    section = card(page, "price-gbm").one("section", "drilldown")
    assert section.all("table", "flips") == []
    largest = section.one("table", "largest")
    rows = [cells(r) for r in largest.one("tbody").all("tr")]
    assert rows == [
        [
            d["request_id"],
            str(d["index"]),
            f"{d['production']:.6g}",
            f"{d['shadow']:.6g}",
            f"{d['difference']:+.6g}",
            f"{d['label']:.6g}",
        ]
        for d in drill["largest_differences"]
    ]
    assert len(rows) == 20
    # The shadow is 0.75 under production on even instances, 0.25 on odd ones: those first.
    assert [r[4] for r in rows] == sorted((r[4] for r in rows), key=float)
    assert {r[4] for r in rows} == {"-0.75", "-0.25"}
    exchanges = section.all("div", "exchange")
    assert len(exchanges) == 10
    first = exchanges[0].one("table", "instances").one("tbody").all("tr")
    assert all(r.attrs["class"] == "differs" for r in first)
    assert exchanges[0].one("a", "rid").text() == drill["exchanges"][0]["request_id"]
    assert "accuracy" not in section.markup()


@pytest.mark.parametrize("name", ["classification", "regression"])
def test_drilldown_fits_the_window_and_is_screenshotted(
    drilldowns: dict[str, Rendered], name: str
) -> None:
    page = drilldowns[name]
    assert page.dom.one("body").attrs["data-overflow"] == "false"
    [article] = [a for a in page.dom.all("article", "card") if a.all("section", "drilldown")]
    parts = article.all("table") + article.all("div", "exchange")
    placed = [box(n) for n in parts if "data-box" in n.attrs]
    assert len(placed) >= 11  # a table of differences or flips, and ten exchanges
    assert all(left >= 0 and right <= DRILL_WINDOW[0] for left, right, _, _ in placed)
    # Two exchanges a row at 1280 px, side by side and apart.
    exchanges = [box(n) for n in article.all("div", "exchange")]
    assert exchanges[0][2] == exchanges[1][2]
    assert exchanges[0][1] < exchanges[1][0]
    shot = page.screenshot
    assert shot is not None
    assert shot.name == f"drilldown-{name}.png"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == DRILL_WINDOW
    assert len(png) > 50_000

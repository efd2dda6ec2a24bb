"""The report as a self-contained HTML page for data scientists: verdicts, figures with their
intervals, inline SVG charts. Pure: a report (proxy.report.model) in, a string out.

Owns the page's markup, styles and hand-written SVG charts, and the display format of numbers.
It computes no statistic (the report carries them all) and references no external asset (no CDN,
font, script or image by URL), so the page opens offline, from a mail attachment or a bucket.
Every string from the report is escaped; any figure may be missing and then reads as an en dash.
The report is typed as the model but not trusted, for it may be a JSON file from disk: every part
is read with .get() and coerced (_num, _str, _map, _list). mypy checks the key of each part read
through _map and _list; an unknown key in .get() it types as object without a word, so a test
checks the keys of the figures read against the model.

Three rules hold in every part of the page (summary, tables, charts and their axes):
- a route shows its own kind's figures: accuracy in percentage points on classification routes
  (and log loss, Brier and reliability on probabilities ones), MAE and RMSE in the target's
  units on regression routes, never accuracy;
- every advantage reads + = shadow better, and says so where it is shown: accuracy the
  shadow's minus production's; MAE, log loss, Brier, error rate and slow requests production's
  minus the shadow's (guardrails, which the report gives the other way round, are turned);
- a count of labels names its unit: labelled requests or labelled instances.
A shadow with no traffic yet is listed, without figures or charts; a route's problems are a red
box under its name.

Each card ends with where the shadow disagrees: its disagreement next to the noise floor (the
baseline A/A shadow's, whose own card and summary row say what it is), which classes flip to
which (or the largest differences, on regression routes) and its latest disagreeing requests
with their instances side by side, from the capture. Request ids, predictions and class names
come from clients and model servers: they are cut to a length, escaped, and never trusted.

>>> page = render_html(json.loads(Path("report.json").read_text()))
>>> Path("report.html").write_text(page)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any, TypeVar, cast
from urllib.parse import quote

from proxy.core.outcomes import Verdict
from proxy.report.model import (
    Accuracy,
    ErrorFigures,
    HistoryPoint,
    Report,
    RouteReport,
    ShadowReport,
)

__all__ = [
    "DASH",
    "fmt_count",
    "fmt_interval",
    "fmt_ms",
    "fmt_number",
    "fmt_p",
    "fmt_percent",
    "fmt_points",
    "render_html",
    "time_ticks",
]

DASH = "\u2013"
"""What a missing figure (null, NaN, infinite, not a number) reads as."""

_VERDICTS = {
    # verdict: (symbol, label). The symbol repeats the colour's message for colour-blind readers.
    Verdict.BETTER: ("▲", "better"),
    Verdict.EQUIVALENT: ("=", "equivalent"),
    Verdict.WORSE: ("▼", "worse"),
    Verdict.INCONCLUSIVE: ("◆", "inconclusive"),
    Verdict.INSUFFICIENT_DATA: ("○", "insufficient data"),
}

_Part = TypeVar("_Part", bound=Mapping[str, Any])
_Item = TypeVar("_Item")

_PRODUCTION_COLOUR = "#4c78a8"
_SHADOW_COLOUR = "#e8871e"


# --- reading the report: tolerant of nulls and wrong types, never raising ------------------------


def _num(value: Any) -> float | None:
    """A finite float, or None for null, NaN, infinities, booleans and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer beyond float range
        return None
    return number if math.isfinite(number) else None


def _map(value: _Part | None) -> _Part:
    """A part of the report as the model types it, or an empty one if it is not a mapping: read
    it with .get() only."""
    return value if isinstance(value, Mapping) else cast("_Part", {})


def _list(value: Sequence[_Item] | None) -> list[_Item]:
    return list(value) if isinstance(value, list | tuple) else []


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _e(text: str) -> str:
    return escape(text, quote=True)


# --- number formats ------------------------------------------------------------------------------


def fmt_percent(value: Any) -> str:
    """A fraction as a percentage with one decimal: 0.943 -> "94.3%"."""
    x = _num(value)
    return DASH if x is None else f"{x * 100:.1f}%"


def _signed(x: float, decimals: int) -> str:
    rounded = round(x, decimals)
    if rounded == 0:  # no "-0.0", and no sign on a zero difference
        return f"{0.0:.{decimals}f}"
    return f"{rounded:+.{decimals}f}"


def _points_bare(value: Any) -> str:
    x = _num(value)
    return DASH if x is None else _signed(x * 100, 1)


def fmt_points(value: Any) -> str:
    """A difference of two fractions in percentage points, signed: 0.041 -> "+4.1 pp"."""
    bare = _points_bare(value)
    return bare if bare == DASH else f"{bare} pp"


def fmt_p(value: Any) -> str:
    """A p-value with 3 significant digits, "<0.001" below that: 0.004 -> "0.004"."""
    p = _num(value)
    if p is None or p < 0:
        return DASH
    if p < 0.001:
        return "<0.001"
    return f"{p:.3g}"


def fmt_duration(seconds: Any) -> str:
    """A delay in the unit that reads best: 0.25 -> "250 ms", 90 -> "90 s", 5400 -> "1.5 h"."""
    x = _num(seconds)
    if x is None:
        return DASH
    for limit, unit, scale in ((1, "ms", 1000), (120, "s", 1), (7200, "min", 1 / 60),
                               (172800, "h", 1 / 3600)):  # fmt: skip
        if x < limit:
            return f"{x * scale:.3g} {unit}"
    return f"{x / 86400:.3g} days"


def fmt_ms(seconds: Any) -> str:
    """A duration in seconds as milliseconds with one decimal: 0.0041 -> "4.1 ms"."""
    x = _num(seconds)
    return DASH if x is None else f"{x * 1000:.1f} ms"


def fmt_count(value: Any) -> str:
    """A count with thousands separators: 5400 -> "5,400"."""
    x = _num(value)
    return DASH if x is None else f"{round(x):,}"


def fmt_number(value: Any, *, signed: bool = False) -> str:
    """A figure in the model's own units (MAE, RMSE): 4 significant digits, no exponent."""
    x = _num(value)
    if x is None:
        return DASH
    sign = "+" if signed and round(x, 6) != 0 else ""
    if abs(x) >= 1000:
        return f"{x:{sign},.0f}"
    return f"{x:{sign}.4g}"


def fmt_interval(low: Any, high: Any, fmt: Callable[[Any], str], unit: str = "") -> str:
    """An interval as "[low, high]" with an optional unit after it; DASH if an end is missing."""
    a, b = fmt(low), fmt(high)
    if DASH in (a, b):
        return DASH
    return f"[{a}, {b}]{' ' + unit if unit else ''}"


def _p_text(value: Any) -> str:
    p = fmt_p(value)
    if p == DASH:
        return DASH
    return f"p < {p[1:]}" if p.startswith("<") else f"p = {p}"


def _utc(t: Any, pattern: str = "%Y-%m-%d %H:%M UTC") -> str:
    x = _num(t)
    if x is None:
        return DASH
    try:
        return datetime.fromtimestamp(x, tz=UTC).strftime(pattern)
    except (OverflowError, OSError, ValueError):
        return DASH


def _level(alpha: Any) -> str:
    """The intervals' confidence level, from the report's alpha: 0.05 -> "95%"."""
    a = _num(alpha)
    if a is None or not 0 < a < 1:
        return ""
    return f"{(1 - a) * 100:.4g}%"


# --- what each kind of route measures ------------------------------------------------------------

_BETTER_UP = "+ = shadow better"


def _kind(route: RouteReport) -> str:
    """The route's kind as the page treats it: regression, probabilities, or classification
    (also for a kind the page does not know, which it shows as it is)."""
    kind = _str(route.get("kind"))
    return kind if kind in ("regression", "probabilities") else "classification"


def _measure(kind: str) -> tuple[str, str]:
    """The name of the verdict's advantage on a kind of route, and what it is, spelled out."""
    if kind == "regression":
        return "MAE advantage", (
            "production's mean absolute error minus the shadow's, in the target's units"
        )
    return "Accuracy advantage", "the shadow's accuracy minus production's, in percentage points"


def _advantage(kind: str, value: Any) -> str:
    """An advantage in its kind's units, signed: "+4.1 pp", or "+0.51" in the target's units."""
    return fmt_number(value, signed=True) if kind == "regression" else fmt_points(value)


def _advantage_bare(kind: str, value: Any) -> str:
    return fmt_number(value, signed=True) if kind == "regression" else _points_bare(value)


def _advantage_interval(kind: str, low: Any, high: Any) -> str:
    unit = "" if kind == "regression" else "pp"
    return fmt_interval(low, high, lambda v: _advantage_bare(kind, v), unit)


def _margin(kind: str, value: Any) -> str:
    x = _num(value)
    if x is None:
        return DASH
    return f"±{fmt_number(abs(x))}" if kind == "regression" else f"±{abs(x) * 100:.1f} pp"


def _is_baseline(shadow: ShadowReport) -> bool:
    """An A/A comparison (role baseline): its disagreement is the noise floor of the others."""
    return _str(shadow.get("role")) == "baseline"


def _no_traffic(shadow: ShadowReport) -> bool:
    """A shadow no request has been sent to yet: configured, but new or sampled at 0%."""
    requests = _num(shadow.get("requests"))
    return requests is not None and requests <= 0


# --- the page ------------------------------------------------------------------------------------

_CSS = """
:root {
  --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --card: #ffffff;
  --better: #1a7f37; --worse: #cf222e; --inconclusive: #9a6700; --insufficient: #59636e;
  --problem-bg: #ffebe9; --problem-fg: #82071e;
}
* { box-sizing: border-box; }
body {
  margin: 0; color: var(--fg); background: var(--bg); line-height: 1.45;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", sans-serif;
}
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
.page-header {
  background: var(--card); border-bottom: 1px solid var(--line); padding: 1.25rem 2rem;
}
.page-header h1 { margin: 0 0 0.5rem; font-size: 1.5rem; }
.meta { display: flex; flex-wrap: wrap; gap: 0.5rem 2rem; margin: 0; }
.meta div { display: flex; gap: 0.4rem; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; font-weight: 600; }
main { padding: 1rem 2rem 2rem; max-width: 96rem; }
h2 { font-size: 1.2rem; margin: 2.25rem 0 0.5rem; display: flex; align-items: center;
  gap: 0.6rem; flex-wrap: wrap; }
.kind { font-size: 0.8rem; font-weight: 600; color: var(--muted); border: 1px solid var(--line);
  border-radius: 999px; padding: 0.05rem 0.55rem; background: var(--card); }
.route-meta, .muted, .empty { color: var(--muted); margin: 0 0 0.5rem; }
.problems { background: var(--problem-bg); color: var(--problem-fg);
  border: 1px solid var(--worse); border-left: 6px solid var(--worse); border-radius: 6px;
  padding: 0.6rem 1rem; margin: 0 0 1rem; }
.problems-title { margin: 0 0 0.25rem; font-weight: 700; }
.problems ul { margin: 0; padding-left: 1.25rem; }
.cards { display: grid; gap: 1.25rem; grid-template-columns: minmax(0, 1fr); margin-top: 1rem; }
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 1rem 1.25rem;
}
.card-header { display: flex; align-items: center; gap: 0.75rem; flex-wrap: wrap; }
.card-header h3 { margin: 0; font-size: 1.1rem; }
.reason { margin: 0.5rem 0 1rem; }
.card-body { display: grid; gap: 1.5rem; align-items: start;
  grid-template-columns: minmax(0, 1fr) minmax(0, 38rem); }
@media (max-width: 70rem) { .card-body { grid-template-columns: minmax(0, 1fr); } }
.card-charts figure:first-child { margin-top: 0; }
.verdict, .pill {
  display: inline-block; padding: 0.15rem 0.6rem; border-radius: 999px; font-weight: 600;
  font-size: 0.85rem; color: #ffffff; background: var(--insufficient); white-space: nowrap;
}
.verdict-better, .pill-better { background: var(--better); }
.verdict-equivalent, .pill-equivalent { background: var(--better); }
.warning { border-left: 4px solid var(--worse); padding: 0.25rem 0.75rem; margin: 0.5rem 0; }
.verdict-worse, .pill-worse { background: var(--worse); }
.verdict-inconclusive, .pill-inconclusive { background: #fff8c5; color: var(--inconclusive);
  box-shadow: inset 0 0 0 1px #d4a72c; }
.verdict-insufficient_data, .pill-insufficient_data { background: var(--insufficient); }
.pill-idle { background: transparent; color: var(--muted); box-shadow: inset 0 0 0 1px #8c959f; }
.idle { color: var(--muted); margin: 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); font-size: 0.85rem; padding-bottom: 0.35rem; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
thead th { font-size: 0.85rem; color: var(--muted); font-weight: 600; }
tbody th { font-weight: 500; }
.figures th[scope="row"] { width: 32%; }
tr.group th { background: var(--bg); font-size: 0.8rem; text-transform: uppercase;
  letter-spacing: 0.04em; color: var(--muted); }
.ci, .n { color: var(--muted); font-size: 0.88em; }
.ci { white-space: nowrap; }
.n { display: block; }
.summary { background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
.summary a { color: inherit; }
.summary .n { display: inline; }
.summary td, .summary tbody th { white-space: nowrap; }
.summary a.problem-flag { color: var(--worse); font-weight: 700; font-size: 0.85rem; }
figure { margin: 1.25rem 0 0; }
figcaption { font-size: 0.9rem; font-weight: 600; margin-bottom: 0.25rem; }
figcaption .n { font-weight: 400; }
.chart { width: 100%; height: auto; max-width: 40rem; display: block; }
.chart text { font-family: inherit; font-size: 11px; fill: var(--muted); }
.chart .axis { stroke: #8c959f; stroke-width: 1; }
.chart .grid { stroke: #eaeef2; stroke-width: 1; }
.chart .zero { stroke: #57606a; stroke-width: 1; stroke-dasharray: 4 3; }
.chart .band { fill: #4c78a8; fill-opacity: 0.18; stroke: none; }
.chart .line { fill: none; stroke: #1f4e79; stroke-width: 2; }
.chart .point { fill: #1f4e79; }
.chart .notice { font-size: 14px; fill: var(--muted); }
.chart .sign { font-weight: 600; fill: var(--better); }
footer { color: var(--muted); font-size: 0.85rem; padding: 0 2rem 2rem; max-width: 60rem; }
.badge { display: inline-block; padding: 0.1rem 0.5rem; border-radius: 4px; font-size: 0.8rem;
  font-weight: 600; color: var(--fg); background: #eaeef2; border: 1px solid #8c959f;
  white-space: nowrap; }
.summary tr.baseline th, .summary tr.baseline td { background: var(--bg); }
.drilldown { margin-top: 1.5rem; border-top: 1px solid var(--line); padding-top: 0.75rem; }
.drilldown h4 { margin: 0 0 0.5rem; font-size: 1rem; }
.drilldown h5 { margin: 1rem 0 0.35rem; font-size: 0.92rem; }
.drilldown h5 .n { display: inline; font-weight: 400; }
.noise-floor { margin: 0 0 0.75rem; }
.noise-above { color: var(--worse); }
.exchanges { display: grid; gap: 1rem; align-items: start;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 34rem), 1fr)); }
.exchange { border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 0.75rem;
  min-width: 0; }
.exchange-head { margin: 0 0 0.35rem; display: flex; flex-wrap: wrap; gap: 0.2rem 0.9rem;
  align-items: baseline; }
.rid, .pred { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 0.88em; overflow-wrap: anywhere; }
.result { font-weight: 600; }
.instances th, .instances td, .largest th, .largest td { padding: 0.2rem 0.45rem;
  font-size: 0.88rem; }
.instances tr.differs th, .instances tr.differs td { background: #fff1e5; }
.instances tr.differs .pred-shadow { font-weight: 700; }
.marker { white-space: nowrap; font-weight: 700; }
mark.argmax { background: #ffd8b5; color: inherit; font-weight: 700; text-decoration: underline;
  padding: 0 0.1em; border-radius: 2px; }
.pending { color: var(--muted); font-style: italic; }
.more { color: var(--muted); font-size: 0.85rem; margin: 0.3rem 0 0; }
.drill-tables { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
.drill-tables > div { min-width: 0; max-width: 100%; overflow-x: auto; }
.flips, .largest { width: auto; }
.flips td { text-align: right; min-width: 3rem; }
.flips .zero, .flips .same { color: var(--muted); }
.flips .total, .flips tfoot th, .flips tfoot td { font-weight: 700; }
.largest td.num { text-align: right; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
"""


def render_html(report: Report) -> str:
    """The whole page for one report. Never raises on missing or null figures."""
    level = _level(report.get("alpha"))
    routes = [_map(r) for r in _list(report.get("routes"))]
    generated = _utc(report.get("generated_at"))
    alpha = _num(report.get("alpha"))
    alpha_text = DASH if alpha is None else f"{alpha:g}"
    if level:
        alpha_text += f" ({level} intervals)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Shadow model report · {_e(generated)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        '<header class="page-header">',
        "<h1>Shadow model report</h1>",
        '<dl class="meta">',
        f"<div><dt>Generated</dt><dd>{_time_element(report.get('generated_at'))}</dd></div>",
        f"<div><dt>Config hash</dt><dd><code>{_e(_str(report.get('config_hash')) or DASH)}"
        "</code></dd></div>",
        f"<div><dt>Alpha</dt><dd>{_e(alpha_text)}</dd></div>",
        "</dl>",
        "</header>",
        "<main>",
    ]
    if routes:
        parts.append(_summary(routes))
        parts.extend(_route(i, route, level) for i, route in enumerate(routes))
    else:
        parts.append('<p class="empty">No routes in this report.</p>')
    parts += [
        "</main>",
        _footer(level),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _time_element(t: Any, pattern: str = "%Y-%m-%d %H:%M UTC") -> str:
    text = _utc(t, pattern)
    if text == DASH:
        return DASH
    iso = _utc(t, "%Y-%m-%dT%H:%M:%SZ")
    return f'<time datetime="{_e(iso)}">{_e(text)}</time>'


def _footer(level: str) -> str:
    at = f"{level} " if level else ""
    return (
        "<footer>"
        f"<p>Every advantage reads the same way: {_BETTER_UP}. On classification and "
        "probabilities routes it is the shadow's accuracy minus production's, in percentage "
        "points (pp); on regression routes production's mean absolute error (MAE) minus the "
        "shadow's, in the target's units; log-loss, Brier, error-rate and slow-request "
        "advantages are production's figure minus the shadow's. "
        "The verdict's test takes the request as the unit and gives an always-valid "
        "confidence sequence of the advantage: it stays valid however often the report is "
        "looked at, so a verdict may be read off it at any time, and decisions are held once "
        f"made. Other intervals in brackets are {at}fixed-sample confidence intervals on "
        "instances, for reading only. Latency shares are per histogram bucket.</p>"
        "</footer>"
    )


def _summary(routes: Sequence[RouteReport]) -> str:
    rows = []
    for i, route in enumerate(routes):
        kind = _kind(route)
        measure = "MAE (target's units)" if kind == "regression" else "accuracy (pp)"
        flag = (
            f' <a class="problem-flag" href="#route-{i}">problems</a>'
            if any(_str(p) for p in _list(route.get("problems")))
            else ""
        )
        for j, shadow in enumerate(_map(s) for s in _list(route.get("shadows"))):
            key, _symbol, label = _verdict(shadow)
            test = _map(shadow.get("quality"))
            if _no_traffic(shadow):
                advantage, interval, p = '<span class="n">no traffic yet</span>', DASH, DASH
            else:
                advantage = _e(_advantage(kind, test.get("advantage")))
                interval = _advantage_interval(kind, test.get("low"), test.get("high"))
                p = _p_text(test.get("p_value"))
            baseline = _is_baseline(shadow)
            rows.append(
                ('<tr class="baseline">' if baseline else "<tr>")
                + f"<td><code>{_e(_str(route.get('route')))}</code>{flag}</td>"
                f'<th scope="row"><a href="#shadow-{i}-{j}">'
                f"{_e(_str(shadow.get('shadow')))}</a>"
                + (' <span class="badge badge-baseline">baseline (A/A)</span>' if baseline else "")
                + "</th>"
                f'<td><span class="pill pill-{key}">{_e(label)}</span></td>'
                f"<td>{_e(measure)}</td>"
                f"<td>{advantage}</td>"
                f"<td>{_e(interval)}</td>"
                f"<td>{_e(p)}</td>"
                "</tr>"
            )
    if not rows:
        return '<p class="empty">No shadow models in this report.</p>'
    return (
        '<table class="summary">'
        "<caption>All shadow models</caption>"
        "<thead><tr>"
        '<th scope="col">Route</th><th scope="col">Shadow</th><th scope="col">Verdict</th>'
        '<th scope="col">Measure</th>'
        f'<th scope="col">Advantage ({_BETTER_UP})</th>'
        '<th scope="col">Always-valid interval</th><th scope="col">Always-valid p</th>'
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody>"
        "</table>"
    )


def _route(i: int, route: RouteReport, level: str) -> str:
    kind = _kind(route)
    shown_kind = _str(route.get("kind")) or "unknown"
    production = _str(route.get("production"))
    latency = _map(route.get("production_latency"))
    diagnostics = _map(route.get("diagnostics"))
    facts = [f"production <strong>{_e(production or DASH)}</strong>"]
    if _num(latency.get("count")) is not None:
        facts.append(f"{_e(fmt_count(latency.get('count')))} requests")
    if kind == "regression":
        err = _map(route.get("production_error"))
        if _num(err.get("mae")) is not None:
            facts.append(
                f"MAE {_e(fmt_number(err.get('mae')))}, RMSE {_e(fmt_number(err.get('rmse')))}"
                f" on {_e(fmt_count(err.get('labelled')))} labelled instances"
            )
    else:
        acc = _map(route.get("production_accuracy"))
        if _num(acc.get("value")) is not None:
            facts.append(
                f"accuracy {_e(fmt_percent(acc.get('value')))} on "
                f"{_e(fmt_count(acc.get('labelled')))} labelled instances"
            )
    shadows = [_map(s) for s in _list(route.get("shadows"))]
    cards = (
        '<div class="cards">'
        + "".join(_card(i, j, route, shadow, level) for j, shadow in enumerate(shadows))
        + "</div>"
        if shadows
        else '<p class="empty">No shadow models on this route.</p>'
    )
    return (
        f'<section class="route" id="route-{i}" data-kind="{_e(kind)}" '
        f'aria-labelledby="route-{i}-title">'
        f'<h2 id="route-{i}-title"><code>{_e(_str(route.get("route")) or DASH)}</code>'
        f' <span class="kind">{_e(shown_kind)} route</span></h2>'
        f"{_problems(_list(route.get('problems')))}"
        f'<p class="route-meta">{" · ".join(facts)}</p>'
        f"{_route_diagnostics(diagnostics, route)}"
        f"{cards}"
        "</section>"
    )


def _problems(problems: Sequence[Any]) -> str:
    """What stops the route from being measured, in red, first thing under its name."""
    items = [_str(p) for p in problems if _str(p)]
    if not items:
        return ""
    return (
        '<div class="problems" role="alert">'
        '<p class="problems-title">Problems: this route is not fully measured</p>'
        f"<ul>{''.join(f'<li>{_e(item)}</li>' for item in items)}</ul>"
        "</div>"
    )


def _route_diagnostics(diagnostics: Any, route: RouteReport) -> str:
    """How much is labelled, in requests and in instances; label coverage and delay in a line;
    any warning (selection bias) as an alert."""
    facts = []
    labelled, recorded = diagnostics.get("labelled_requests"), diagnostics.get("recorded_requests")
    instances = _num(diagnostics.get("labelled_instances"))
    if instances is None:  # a report from before the count was there
        if _kind(route) == "regression":
            instances = _num(_map(route.get("production_error")).get("labelled"))
        else:
            instances = _num(_map(route.get("production_accuracy")).get("labelled"))
    if _num(labelled) is not None:
        of = (
            f" ({fmt_percent(diagnostics.get('coverage'))} of {fmt_count(recorded)} recorded)"
            if _num(recorded)
            else ""
        )
        facts.append(f"{fmt_count(labelled)} labelled requests{of}")
        if instances is not None:
            facts.append(f"{fmt_count(instances)} labelled instances")
    if _num(diagnostics.get("label_delay_p50")) is not None:
        facts.append(
            f"labels arrive after {fmt_duration(diagnostics.get('label_delay_p50'))} (median),"
            f" {fmt_duration(diagnostics.get('label_delay_p95'))} (p95)"
        )
    if _num(diagnostics.get("selection_bias_p")) is not None:
        facts.append(f"selection-bias test {_p_text(diagnostics.get('selection_bias_p'))}")
    out = f'<p class="route-meta">{_e(" · ".join(facts))}</p>' if facts else ""
    for warning in _list(diagnostics.get("warnings")):
        out += f'<p class="warning" role="alert">Warning: {_e(_str(warning))}</p>'
    return out


def _verdict(shadow: ShadowReport) -> tuple[str, str, str]:
    """The verdict's CSS key, symbol and label; a value outside the four reads "unknown" in
    class names (it is never trusted there) and as itself, escaped, in text."""
    verdict = _str(shadow.get("verdict"))
    if verdict in _VERDICTS:
        return (verdict, *_VERDICTS[Verdict(verdict)])
    return "unknown", "?", verdict or "unknown"


def _card(i: int, j: int, route: RouteReport, shadow: ShadowReport, level: str) -> str:
    ident = f"shadow-{i}-{j}"
    name = _str(shadow.get("shadow"))
    key, symbol, label = _verdict(shadow)
    kind = _kind(route)
    reason = _str(shadow.get("reason"))
    idle = _no_traffic(shadow)
    header = (
        f'<article class="card" id="{ident}" aria-labelledby="{ident}-title">'
        '<div class="card-header">'
        f'<h3 id="{ident}-title">{_e(name or DASH)}</h3>'
        f'<span class="verdict verdict-{key}" data-shadow="{_e(name)}">'
        f'<span class="visually-hidden">verdict: </span>'
        f'<span aria-hidden="true">{symbol}</span> {_e(label)}</span>'
        + ('<span class="pill pill-idle">no traffic yet</span>' if idle else "")
        + (
            '<span class="badge badge-baseline">baseline (A/A): the noise floor of this'
            " route's shadows</span>"
            if _is_baseline(shadow)
            else ""
        )
        + "</div>"
        f'<p class="reason">{_e(reason) if reason else DASH}</p>'
    )
    if idle:
        # Nothing measured: no figures to show and no chart to draw, only that it is there.
        why = (
            "it is sampled at 0%: it gets no copies until its sample is raised"
            if _num(shadow.get("sample")) == 0
            else "it is new, or every copy was dropped before it was sent"
        )
        return (
            header + f'<p class="idle">No request has reached this shadow yet ({why}): it has'
            " no figures and no charts until it gets traffic.</p></article>"
        )
    measure, meaning = _measure(kind)
    return (
        header + '<div class="card-body">'
        f'<div class="card-figures">{_figures(route, shadow, level)}</div>'
        '<div class="card-charts">'
        "<figure>"
        f"<figcaption>{_e(measure)} over time ({_BETTER_UP})"
        f'<span class="n">{_e(meaning)}, with its always-valid interval</span></figcaption>'
        f"{_history_chart(_list(shadow.get('history')), name, ident, kind)}"
        "</figure>"
        "<figure>"
        "<figcaption>Latency distribution: production vs shadow"
        '<span class="n">share of each model\'s requests per histogram bucket, over the'
        " buckets any request fell in</span></figcaption>"
        + _latency_chart(
            _list(route.get("latency_buckets")),
            _list(route.get("production_latency_counts")),
            _list(shadow.get("latency_counts")),
            name,
            ident,
        )
        + "</figure>"
        + (_reliability_figure(route, shadow, name, ident) if kind == "probabilities" else "")
        + "</div></div>"
        + _segments(shadow, ident)
        + _drilldown(kind, shadow, ident)
        + "</article>"
    )


# --- the table of figures ------------------------------------------------------------------------


def _cell(value: str, interval: str = DASH, note: str = "") -> str:
    """One table cell's content: a figure, its interval in muted type, and a count note."""
    out = f'<span class="v">{_e(value)}</span>'
    if value != DASH and interval != DASH:
        out += f' <span class="ci">{_e(interval)}</span>'
    if note:
        out += f' <span class="n">{_e(note)}</span>'
    return out


def _row(label: str, production: str, shadow: str) -> str:
    return f'<tr><th scope="row">{_e(label)}</th><td>{production}</td><td>{shadow}</td></tr>'


def _row_span(label: str, both: str, *, better_up: bool = False) -> str:
    """A row whose figure spans both columns; `better_up` notes the sign under the label."""
    sign = f' <span class="n">({_BETTER_UP})</span>' if better_up else ""
    return f'<tr><th scope="row">{_e(label)}{sign}</th><td colspan="2">{both}</td></tr>'


def _group(title: str, rows: Sequence[str]) -> str:
    head = f'<tr class="group"><th colspan="3" scope="colgroup">{_e(title)}</th></tr>'
    return f"<tbody>{head}{''.join(rows)}</tbody>"


def _of(part: Any, whole: Any, noun: str) -> str:
    if _num(part) is None or _num(whole) is None:
        return ""
    return f"{fmt_count(part)} of {fmt_count(whole)} {noun}"


def _figures(route: RouteReport, shadow: ShadowReport, level: str) -> str:
    production, name = _str(route.get("production")), _str(shadow.get("shadow"))
    kind = _kind(route)
    groups = [_verdict_test(route, shadow)]
    if kind == "regression":
        groups.append(_error_figures(route, shadow))
    else:
        groups.append(_accuracy_figures(route, shadow))
    if kind == "probabilities":
        groups.append(_probability_group(_map(shadow.get("probabilities"))))

    dis = _map(shadow.get("disagreement"))
    beyond = " (beyond the tolerance)" if kind == "regression" else ""
    groups.append(
        _group(
            "Agreement",
            [
                _row_span(
                    "Disagreement rate",
                    _cell(
                        fmt_percent(dis.get("value")),
                        fmt_interval(dis.get("low"), dis.get("high"), fmt_percent),
                        _of(dis.get("disagreed"), dis.get("compared"), "compared instances")
                        + (beyond if _num(dis.get("compared")) is not None else ""),
                    ),
                )
            ],
        )
    )

    prod_lat, shadow_lat = _map(route.get("production_latency")), _map(shadow.get("latency"))
    groups.append(
        _group(
            "Latency",
            [
                _row(
                    f"{q} latency",
                    _cell(fmt_ms(prod_lat.get(q))),
                    _cell(fmt_ms(shadow_lat.get(q))),
                )
                for q in ("p50", "p95", "p99")
            ],
        )
    )

    groups.append(
        _group(
            "Requests and errors",
            [
                _row(
                    "Requests",
                    _cell(fmt_count(prod_lat.get("count"))),
                    _cell(fmt_count(shadow.get("requests"))),
                ),
                _row_span(
                    "Shadow error rate",
                    _cell(
                        fmt_percent(shadow.get("error_rate")),
                        note=_of(shadow.get("errors"), shadow.get("requests"), "requests failed"),
                    ),
                ),
            ],
        )
    )
    caption = f"Figures with {level} intervals" if level else "Figures with their intervals"
    return (
        '<table class="figures">'
        f"<caption>{_e(caption)}</caption>"
        "<thead><tr>"
        '<th scope="col">Figure</th>'
        f'<th scope="col">Production <code>{_e(production or DASH)}</code></th>'
        f'<th scope="col">Shadow <code>{_e(name or DASH)}</code></th>'
        "</tr></thead>"
        f"{''.join(groups)}"
        "</table>"
    )


_GUARDRAILS = {
    # name: (row label, what the advantage is), both read with + = shadow better
    "error_rate": ("Error-rate advantage", "production's error rate minus the shadow's"),
    "slow_requests": (
        "Slow-request advantage",
        "share of requests slower than production's p99: production's minus the shadow's",
    ),
}


def _guardrail(guard: Any) -> str:
    """A guardrail's row. The report gives error_rate and slow_requests as the shadow's figure
    minus production's, tripped when the low end passes the limit: shown turned round, as
    advantages (+ = shadow better) that trip when the high end falls below minus the limit."""
    name, limit = _str(guard.get("name")), _num(guard.get("limit"))
    tripped = ", tripped" if guard.get("tripped") else ""
    if name in _GUARDRAILS and limit is not None:
        label, meaning = _GUARDRAILS[name]

        def turned(key: str) -> float | None:
            x = _num(guard.get(key))
            return None if x is None else -x

        return _row_span(
            label,
            _cell(
                fmt_points(turned("value")),
                fmt_interval(turned("high"), turned("low"), _points_bare, "pp"),
                f"{meaning}; guardrail: worse if below {fmt_points(-limit)}{tripped}",
            ),
            better_up=True,
        )
    if name == "disagreement" and limit is not None:
        return _row_span(
            "Disagreement guardrail",
            _cell(
                fmt_percent(guard.get("value")),
                fmt_interval(guard.get("low"), guard.get("high"), fmt_percent),
                f"while labels are missing: worse if above {fmt_percent(limit)}{tripped}",
            ),
        )
    if limit is None:
        return ""
    return _row_span(
        name or DASH,
        _cell(
            fmt_percent(guard.get("value")),
            fmt_interval(guard.get("low"), guard.get("high"), fmt_percent),
            f"limit {fmt_percent(limit)}{tripped}",
        ),
    )


def _unpaired_why(shadow: ShadowReport) -> str:
    """Why labelled requests have no pair: a sampled shadow is never sent most of them."""
    why = "the shadow failed, timed out or was dropped: never compared"
    sample = _num(shadow.get("sample"))
    if sample is not None and sample < 1:
        return f"sampled at {fmt_percent(sample)}, the shadow gets only that share; or {why}"
    return why


def _verdict_test(route: RouteReport, shadow: ShadowReport) -> str:
    """The figures the verdict is decided on: always-valid, the request as the unit."""
    kind = _kind(route)
    test = _map(shadow.get("quality"))
    measure, meaning = _measure(kind)
    method = "exact test" if test.get("method") == "exact" else "test on requests"
    rows = [
        _row_span(
            measure,
            _cell(
                _advantage(kind, test.get("advantage")),
                _advantage_interval(kind, test.get("low"), test.get("high")),
                f"{meaning}; {fmt_count(test.get('requests'))} labelled requests, {method}",
            ),
            better_up=True,
        ),
        _row_span(
            "Always-valid p",
            _cell(_p_text(test.get("p_value")), note=f"alpha {_str(test.get('alpha'))[:6]}"),
        ),
    ]
    if _num(test.get("margin")) is not None:
        rows.append(_row_span("Equivalence margin", _cell(_margin(kind, test.get("margin")))))
    own = _map(shadow.get("diagnostics"))
    if _num(own.get("paired_requests")) is not None:
        rows.append(
            _row_span(
                "Labelled requests with a pair",
                _cell(
                    fmt_count(own.get("paired_requests")),
                    note=f"{fmt_count(own.get('lost_pairs'))} labelled requests without one"
                    f" ({_unpaired_why(shadow)});"
                    f" {fmt_count(own.get('unscorable_instances'))} labelled instances"
                    " unscorable",
                ),
            )
        )
    needed, effect = _num(own.get("labels_needed")), _num(own.get("effect"))
    if needed is not None and effect is not None:
        rows.append(
            _row_span(
                "Labels to decide",
                _cell(
                    f"about {fmt_count(needed)} labelled requests",
                    note=f"for an advantage of {_advantage(kind, effect)} (median)",
                ),
            )
        )
    rows.extend(_guardrail(_map(g)) for g in _list(shadow.get("guardrails")))
    return _group("The verdict's tests (always-valid, held once decided)", rows)


def _error_figures(route: RouteReport, shadow: ShadowReport) -> str:
    """A regression route's figures on labelled instances: MAE, RMSE and the paired advantage."""
    prod_err, shadow_err = _map(route.get("production_error")), _map(shadow.get("error"))
    reg = _map(shadow.get("regression"))

    def signed(value: Any) -> str:
        return fmt_number(value, signed=True)

    n = _num(reg.get("n"))
    return _group(
        "Error on labelled instances",
        [
            _row(
                "MAE",
                _cell(fmt_number(prod_err.get("mae")), note=_labelled(prod_err)),
                _cell(fmt_number(shadow_err.get("mae")), note=_labelled(shadow_err)),
            ),
            _row(
                "RMSE",
                _cell(fmt_number(prod_err.get("rmse"))),
                _cell(fmt_number(shadow_err.get("rmse"))),
            ),
            _row_span(
                "MAE advantage, per instance",
                _cell(
                    signed(reg.get("advantage")),
                    fmt_interval(reg.get("low"), reg.get("high"), signed),
                    "production's absolute error minus the shadow's"
                    + ("" if n is None else f", on {fmt_count(n)} labelled instances of both"),
                ),
                better_up=True,
            ),
            _row_span("Sequential p", _cell(_p_text(reg.get("sequential_p")))),
            _row_span(
                "Confidence sequence",
                _cell(fmt_interval(reg.get("cs_low"), reg.get("cs_high"), signed)),
            ),
        ],
    )


def _accuracy_figures(route: RouteReport, shadow: ShadowReport) -> str:
    """A classification or probabilities route's accuracy on labelled instances."""
    prod_acc, shadow_acc = _map(route.get("production_accuracy")), _map(shadow.get("accuracy"))
    paired = _map(shadow.get("paired"))
    discordant = ""
    shadow_only, production_only = (
        _num(paired.get("shadow_only")),
        _num(paired.get("production_only")),
    )
    if shadow_only is not None and production_only is not None and shadow_only + production_only:
        discordant = (
            f"only shadow right on {fmt_count(paired.get('shadow_only'))}, "
            f"only production on {fmt_count(paired.get('production_only'))}"
        )
    return _group(
        "Accuracy on labelled instances",
        [
            _row(
                "Accuracy",
                _accuracy_cell(prod_acc),
                _accuracy_cell(shadow_acc),
            ),
            _row_span(
                "Accuracy advantage, per instance",
                _cell(
                    fmt_points(paired.get("difference")),
                    fmt_interval(paired.get("low"), paired.get("high"), _points_bare, "pp"),
                    discordant,
                ),
                better_up=True,
            ),
            _row_span("McNemar p", _cell(_p_text(paired.get("mcnemar_p")))),
            _row_span("Sequential p", _cell(_p_text(paired.get("sequential_p")))),
            _row_span(
                "Confidence sequence",
                _cell(
                    fmt_interval(paired.get("cs_low"), paired.get("cs_high"), _points_bare, "pp")
                ),
            ),
        ],
    )


def _labelled(figures: ErrorFigures) -> str:
    return (
        ""
        if _num(figures.get("labelled")) is None
        else f"{fmt_count(figures['labelled'])} labelled instances"
    )


def _accuracy_cell(acc: Accuracy) -> str:
    labelled = _num(acc.get("labelled"))
    return _cell(
        fmt_percent(acc.get("value")),
        fmt_interval(acc.get("low"), acc.get("high"), fmt_percent),
        "no labels yet"
        if labelled == 0
        else _of(acc.get("correct"), labelled, "labelled instances right"),
    )


def _probability_group(figures: Any) -> str:
    """Log loss and Brier score of both models, and their paired advantages (production's
    minus the shadow's: + = shadow better) with always-valid intervals."""

    def signed(value: Any) -> str:
        return fmt_number(value, signed=True)

    def advantage(label: str, noun: str, diff: Any) -> str:
        d = _map(diff)
        return _row_span(
            f"{label} advantage",
            _cell(
                signed(d.get("advantage")),
                fmt_interval(d.get("low"), d.get("high"), signed),
                f"production's {noun} minus the shadow's;"
                f" {fmt_count(d.get('requests'))} labelled requests, always-valid",
            ),
            better_up=True,
        )

    return _group(
        "Probabilities on labelled instances",
        [
            _row(
                "Log loss",
                _cell(fmt_number(figures.get("production_log_loss"))),
                _cell(fmt_number(figures.get("shadow_log_loss"))),
            ),
            _row(
                "Brier score",
                _cell(fmt_number(figures.get("production_brier"))),
                _cell(fmt_number(figures.get("shadow_brier"))),
            ),
            advantage("Log loss", "log loss", figures.get("log_loss")),
            advantage("Brier score", "Brier score", figures.get("brier")),
        ],
    )


# --- where it disagrees: the drill-down from the capture -----------------------------------------

_EXCHANGES_SHOWN = 10  # the latest disagreeing requests shown per shadow
_DIFFERENCES_SHOWN = 20  # rows of the largest differences (regression)
_MATRIX_CLASSES = 12  # classes per axis of the flips matrix; the others are summed as one
_TEXT_CHARS = 60  # a prediction's or a class's text is cut here (the title holds more)
_TITLE_CHARS = 400  # what a cut text's title holds
_ID_CHARS = 40  # a request id's shown characters
_VECTOR_ITEMS = 8  # a vector's elements shown
_DEPTH = 3  # nesting shown in a prediction; deeper reads as […]


def _drilldown(kind: str, shadow: ShadowReport, ident: str) -> str:
    """Where it disagrees: the noise floor line, which classes flip to which (or, on regression
    routes, the largest differences) and the latest disagreeing requests, from the capture. With
    the capture off (nothing captured) and disagreements counted, a muted line on how to turn it
    on; with nothing to show, nothing."""
    drill = _map(shadow.get("drilldown"))
    exchanges = [_map(x) for x in _list(drill.get("exchanges"))]
    flips = _list(drill.get("flips"))
    largest = _list(drill.get("largest_differences"))
    noise = _noise_floor(shadow)
    disagreed = _num(_map(shadow.get("disagreement")).get("disagreed"))
    parts = [noise] if noise else []
    if exchanges or flips or largest:
        parts.append('<div class="drill-tables">')
        if kind == "regression":
            parts.append(_largest_differences(largest, ident))
        else:
            parts.append(_flips_matrix(flips, kind, ident))
        parts.append("</div>")
        parts.append(_exchanges(exchanges, kind, ident))
    elif disagreed is not None and disagreed > 0 and drill.get("capture") is True:
        parts.append(
            '<p class="muted capture-empty">Nothing of its disagreements is in the capture'
            " (yet, or any more): they are kept up to <code>capture.max_per_second</code>, and"
            " removed after <code>capture.max_age</code>.</p>"
        )
    elif disagreed is not None and disagreed > 0:
        off = (
            '<p class="muted capture-off">Enable <code>capture:</code> in the config to see'
            " the disagreeing requests.</p>"
        )
        if not parts:  # one muted line, no section
            return off
        parts.append(off)
    if not parts:
        return ""
    return (
        f'<section class="drilldown" aria-labelledby="{ident}-drill">'
        f'<h4 id="{ident}-drill">Where it disagrees</h4>{"".join(parts)}</section>'
    )


def _bare_percent(value: Any) -> str:
    x = _num(value)
    return DASH if x is None else f"{x * 100:.1f}"


def _noise_floor(shadow: ShadowReport) -> str:
    """This shadow's disagreement next to the baseline's (the noise floor), and which side of it
    it is: "above the noise floor" is a real difference from production, "within" is noise."""
    floor = shadow.get("noise_floor")
    if not isinstance(floor, Mapping):
        return ""
    dis = _map(shadow.get("disagreement"))
    within = floor.get("within")
    if within is True:
        verdict = '<strong class="noise-within">within the noise floor</strong>'
    elif within is False:
        verdict = '<strong class="noise-above">above the noise floor</strong>'
    else:
        verdict = "not enough compared instances to tell yet"
    baseline = _str(floor.get("baseline"))
    return (
        '<p class="noise-floor">'
        f"Disagreement {_e(fmt_percent(dis.get('value')))} "
        f"{_e(fmt_interval(dis.get('low'), dis.get('high'), _bare_percent))} vs the noise floor "
        f"{_e(fmt_percent(floor.get('disagreement')))} "
        f"{_e(fmt_interval(floor.get('low'), floor.get('high'), _bare_percent))} "
        f"(baseline <code>{_e(baseline or DASH)}</code>): {verdict}.</p>"
    )


def _clean(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (JSON allows "\\ud800") reads as "?", so that
    a client's or a model's string cannot make the page fail to encode."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _cut(text: str, limit: int = _TEXT_CHARS) -> str:
    """Escaped text cut to `limit` characters; a cut one says so (…) and keeps more in a title."""
    text = _clean(text)
    if len(text) <= limit:
        return _e(text)
    return f'<span title="{_e(text[:_TITLE_CHARS])}">{_e(text[: limit - 1])}…</span>'


def _scalar(value: Any, *, in_vector: bool = False) -> str:
    """One JSON value that is not a container, as short text: floats to 6 significant digits,
    or 3 decimals in a vector; integers as they are unless huge."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) < 10**15:
        return str(value)
    if isinstance(value, int | float):
        x = _num(value)
        if x is None:
            if isinstance(value, float) and math.isinf(value):
                return "∞" if value > 0 else "-∞"
            return "NaN"
        return f"{x:.3f}" if in_vector and abs(x) < 1e6 else f"{x:.6g}"
    text = _str(value)[:_TITLE_CHARS]
    return f'"{text}"' if in_vector else text


def _compact(value: Any, limit: int = _TITLE_CHARS) -> str:
    """A prediction as plain text, numbers in vectors to 3 decimals, built only as far as
    `limit` characters and `_DEPTH` levels (a model's answer may be huge, or deeply nested)."""
    out: list[str] = []
    size = 0

    def put(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text)

    def walk(item: Any, depth: int) -> None:
        if isinstance(item, Mapping):
            # Lazily: a long answer is read only as far as it is shown.
            entries: Iterator[tuple[str | None, Any]] = ((_str(k), v) for k, v in item.items())
            ends = "{}"
        elif isinstance(item, list | tuple):
            entries, ends = ((None, v) for v in item), "[]"
        else:
            put(_scalar(item, in_vector=depth > 0))
            return
        if depth >= _DEPTH:
            put(f"{ends[0]}…{ends[1]}")
            return
        put(ends[0])
        for k, (key, entry) in enumerate(entries):
            if size > limit:
                put("…")
                break
            put(", " if k else "")
            put("" if key is None else f"{key[:_TEXT_CHARS]}: ")
            walk(entry, depth + 1)
        put(ends[1])

    walk(value, 0)
    return "".join(out)


def _vector(value: Any) -> list[float] | None:
    """A flat list of finite numbers (a probability vector, or scores), or None."""
    if not isinstance(value, list) or not value or len(value) > 100_000:
        return None
    numbers = [_num(v) for v in value]
    if any(n is None for n in numbers):
        return None
    return [n for n in numbers if n is not None]


def _prediction(value: Any, kind: str) -> str:
    """A prediction's cell: numbers and strings as they are (cut when long), a vector rounded
    to 3 decimals with its largest element (the argmax, the class it predicts) marked, in bold
    and underlined as well as coloured, and named for screen readers."""
    vector = _vector(value) if kind != "regression" else None
    if vector is None:
        return f'<span class="pred">{_cut(_compact(value))}</span>'
    top = max(range(len(vector)), key=lambda k: vector[k])

    def item(k: int) -> str:
        text = _scalar(value[k], in_vector=True)
        if k != top:
            return text
        return (
            f'<mark class="argmax" title="the largest: class {k}">{text}</mark>'
            f'<span class="visually-hidden"> (largest, class {k})</span>'
        )

    shown = [item(k) for k in range(min(len(vector), _VECTOR_ITEMS))]
    if len(vector) > _VECTOR_ITEMS:
        shown.append(f"… +{len(vector) - _VECTOR_ITEMS:,}")
    text = f"[{', '.join(shown)}]"
    if top >= _VECTOR_ITEMS:
        text += f" largest: [{top}] {item(top)}"
    return f'<span class="pred">{text}</span>'


def _exchange_link(request_id: str) -> str:
    """The request id, cut when long, linking to its whole record on the control plane."""
    href = "/exchanges/" + quote(_clean(request_id), safe="")
    return f'<a class="rid" href="{_e(href)}">{_cut(request_id, _ID_CHARS)}</a>'


def _result(exchange: Any) -> str:
    result = _str(exchange.get("result"))
    if result == "status_mismatch":
        return (
            f"status mismatch: production {_e(_str(exchange.get('production_status')) or DASH)},"
            f" shadow {_e(_str(exchange.get('shadow_status')) or DASH)}"
        )
    if result == "disagree":
        return "disagree"
    return _cut(result.replace("_", " ") or DASH, 40)


def _exchanges(exchanges: Sequence[Any], kind: str, ident: str) -> str:
    """The latest disagreeing requests, newest first: each one's id (a link to its whole
    record), time and result, and its instances side by side."""
    title = (
        f'<h5 id="{ident}-exchanges">Latest disagreeing requests'
        ' <span class="n">newest first; the whole record at GET /exchanges/{request id},'
        " with the capture's token</span></h5>"
    )
    if not exchanges:
        return title + '<p class="muted">No disagreeing request captured yet.</p>'

    def when(exchange: Any) -> float:
        t = _num(exchange.get("captured_at"))
        return -math.inf if t is None else t

    ordered = sorted(exchanges, key=when, reverse=True)
    shown = ordered[:_EXCHANGES_SHOWN]
    items = "".join(_exchange(x, kind, f"{ident}-x{n}") for n, x in enumerate(shown))
    more = (
        f'<p class="more">{len(ordered) - len(shown):,} older ones not shown:'
        " GET /disagreements lists them.</p>"
        if len(ordered) > len(shown)
        else ""
    )
    return f'{title}<div class="exchanges">{items}</div>{more}'


def _exchange(exchange: Any, kind: str, ident: str) -> str:
    request_id = _str(exchange.get("request_id"))
    labelled = exchange.get("labelled") is True
    instances = [_map(i) for i in _list(exchange.get("instances"))]
    differing = sum(1 for i in instances if i.get("differs") is True)
    head = (
        f'<p class="exchange-head" id="{ident}">'
        f"<span>request {_exchange_link(request_id) if request_id else DASH}</span>"
        f"<span>{_time_element(exchange.get('captured_at'), '%Y-%m-%d %H:%M:%S UTC')}</span>"
        f'<span class="result">{_result(exchange)}</span>'
        + (
            f'<span class="n">{differing} of {len(instances)}'
            f" instance{'' if len(instances) == 1 else 's'}"
            f" differ{'s' if differing == 1 else ''}</span>"
            if instances
            else ""
        )
        + "</p>"
    )
    if not instances:
        return f'<div class="exchange">{head}<p class="muted">No predictions to compare.</p></div>'
    rows = "".join(_instance_row(i, kind, labelled) for i in instances)
    count = _num(exchange.get("instance_count"))
    hidden = f"{fmt_count(count - len(instances))} more instances" if count else "more instances"
    more = (
        f'<p class="more">+ {hidden} not shown: the whole request is at its link.</p>'
        if exchange.get("truncated") is True
        else ""
    )
    return (
        f'<div class="exchange">{head}<table class="instances" aria-labelledby="{ident}">'
        '<thead><tr><th scope="col">Instance</th><th scope="col">Differs</th>'
        '<th scope="col">Production</th><th scope="col">Shadow</th>'
        '<th scope="col">Label</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>{more}</div>"
    )


def _instance_row(instance: Any, kind: str, labelled: bool) -> str:
    differs = instance.get("differs") is True
    label = instance.get("label")
    if label is not None:
        label_cell = _prediction(label, kind)
    else:
        label_cell = f'<span class="pending">{"no label" if labelled else "label pending"}</span>'
    marker = '<span class="marker">≠ differs</span>' if differs else '<span class="n">= same</span>'
    index = _num(instance.get("index"))
    return (
        ('<tr class="differs">' if differs else "<tr>")
        + f'<th scope="row">{DASH if index is None else f"{index:.0f}"}</th>'
        f"<td>{marker}</td>"
        f'<td class="pred-production">{_prediction(instance.get("production"), kind)}</td>'
        f'<td class="pred-shadow">{_prediction(instance.get("shadow"), kind)}</td>'
        f"<td>{label_cell}</td></tr>"
    )


def _class_order(name: str) -> tuple[int, float, str]:
    """Classes in their natural order: numbers by value, before names."""
    try:
        number = float(name)
    except ValueError:
        return 1, 0.0, name
    return (0, number, name) if math.isfinite(number) else (1, 0.0, name)


def _flips_matrix(flips: Sequence[Any], kind: str, ident: str) -> str:
    """Which classes flip to which: disagreeing instances by production's class (rows) and the
    shadow's (columns), only the classes that appear (the most frequent _MATRIX_CLASSES, the
    rest summed as "other"), with totals. Each count is written; the shade only repeats it."""
    counts: dict[tuple[str, str], int] = {}
    for flip in flips:
        entry = _map(flip)
        n = _num(entry.get("instances"))
        if n is None or n <= 0:
            continue
        key = (_str(entry.get("production")), _str(entry.get("shadow")))
        counts[key] = counts.get(key, 0) + round(n)
    argmax = " (the argmax of each model's probabilities)" if kind == "probabilities" else ""
    title = (
        f'<h5 id="{ident}-flips">Which classes flip to which'
        f' <span class="n">disagreeing instances since the capture began{argmax}</span></h5>'
    )
    if not counts:
        return f'<div>{title}<p class="muted">No class has flipped yet.</p></div>'

    def axis(side: int) -> tuple[list[str], bool]:
        totals: dict[str, int] = {}
        for key, n in counts.items():
            totals[key[side]] = totals.get(key[side], 0) + n
        ranked = sorted(totals, key=lambda c: (-totals[c], _class_order(c)))
        kept = sorted(ranked[:_MATRIX_CLASSES], key=_class_order)
        return kept, len(ranked) > _MATRIX_CLASSES

    # None is the other classes, summed: the rows' and the columns' beyond the most frequent.
    rows, rows_other = axis(0)
    columns, columns_other = axis(1)

    def folded(name: str, kept: list[str]) -> str | None:
        return name if name in kept else None

    cells: dict[tuple[str | None, str | None], int] = {}
    for (production, shadow), n in counts.items():
        at = (folded(production, rows), folded(shadow, columns))
        cells[at] = cells.get(at, 0) + n
    row_names: list[str | None] = [*rows, *([None] if rows_other else [])]
    column_names: list[str | None] = [*columns, *([None] if columns_other else [])]
    peak = max(cells.values())

    def name_of(c: str | None) -> str:
        return "<em>other classes</em>" if c is None else f"<code>{_cut(c, 24)}</code>"

    def cell(production: str | None, shadow: str | None) -> str:
        n = cells.get((production, shadow), 0)
        if n:
            shade = 0.12 + 0.55 * n / peak
            return f'<td style="background-color: rgba(232, 135, 30, {shade:.2f})">{n:,}</td>'
        if production == shadow is not None:
            return f'<td class="same" title="the same class: not a disagreement">{DASH}</td>'
        return '<td class="zero">0</td>'

    body = "".join(
        f'<tr><th scope="row">{name_of(r)}</th>'
        + "".join(cell(r, c) for c in column_names)
        + f'<td class="total">{sum(cells.get((r, c), 0) for c in column_names):,}</td></tr>'
        for r in row_names
    )
    foot = (
        '<tfoot><tr><th scope="row">Total</th>'
        + "".join(
            f"<td>{sum(cells.get((r, c), 0) for r in row_names):,}</td>" for c in column_names
        )
        + f'<td class="total">{sum(cells.values()):,}</td></tr></tfoot>'
    )
    head = (
        "<thead><tr><td></td>"
        f'<th scope="colgroup" colspan="{len(column_names)}">the shadow predicts →</th>'
        "<td></td></tr>"
        '<tr><th scope="col">production predicts ↓</th>'
        + "".join(f'<th scope="col">{name_of(c)}</th>' for c in column_names)
        + '<th scope="col">Total</th></tr></thead>'
    )
    return (
        f"<div>{title}"
        f'<table class="flips" aria-labelledby="{ident}-flips">{head}<tbody>{body}</tbody>'
        f"{foot}</table></div>"
    )


def _target(value: Any, *, signed: bool = False) -> str:
    """A regression prediction, label or difference as the exchanges show it: 6 significant
    digits (fmt_number's 4 would read 140.25 as 140.2 next to the exchange's 140.25)."""
    x = _num(value)
    if x is None:
        return DASH
    if signed:
        return "0" if x == 0 else f"{x:+.6g}"
    return f"{x:.6g}"


def _segments(shadow: ShadowReport, ident: str) -> str:
    """The shadow's disagreement by the request's segment (routes[].segment), the most
    compared first, with Wilson intervals; nothing without a segment."""
    entries = [_map(x) for x in _list(shadow.get("segments"))]
    if not entries:
        return ""
    rows = []
    for entry in entries:
        compared = _num(entry.get("compared"))
        rows.append(
            "<tr>"
            f'<th scope="row"><code>{_cut(_str(entry.get("segment")), 64)}</code></th>'
            f'<td class="num">{fmt_percent(entry.get("value"))}</td>'
            f'<td class="num">{fmt_interval(entry.get("low"), entry.get("high"), fmt_percent)}'
            "</td>"
            f'<td class="num">{fmt_count(entry.get("disagreed"))} of'
            f" {DASH if compared is None else fmt_count(compared)}</td>"
            "</tr>"
        )
    return (
        f'<section class="segments" aria-labelledby="{ident}-segments">'
        f'<h4 id="{ident}-segments">Disagreement by segment'
        ' <span class="n">the request\'s <code>segment</code> field; "other": past the first'
        ' 20 values, "none": requests without it</span></h4>'
        '<table class="segments"><thead><tr><th scope="col">Segment</th>'
        '<th scope="col">Disagreement</th><th scope="col">95% interval</th>'
        '<th scope="col">Instances</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _largest_differences(largest: Sequence[Any], ident: str) -> str:
    """A regression shadow's captured instances farthest from production's predictions: the
    difference is the shadow's prediction minus production's, signed."""
    title = (
        f'<h5 id="{ident}-largest">Largest differences'
        ' <span class="n">captured instances farthest from production</span></h5>'
    )
    entries = [_map(x) for x in largest]
    if not entries:
        return f'<div>{title}<p class="muted">No difference captured yet.</p></div>'

    def size(entry: Any) -> float:
        d = _num(entry.get("difference"))
        return -1.0 if d is None else abs(d)

    rows = []
    for entry in sorted(entries, key=size, reverse=True)[:_DIFFERENCES_SHOWN]:
        request_id = _str(entry.get("request_id"))
        label = entry.get("label")
        index = _num(entry.get("index"))
        rows.append(
            "<tr>"
            f"<td>{_exchange_link(request_id) if request_id else DASH}</td>"
            f'<td class="num">{DASH if index is None else f"{index:.0f}"}</td>'
            f'<td class="num">{_e(_target(entry.get("production")))}</td>'
            f'<td class="num">{_e(_target(entry.get("shadow")))}</td>'
            f'<td class="num">{_e(_target(entry.get("difference"), signed=True))}</td>'
            + (
                f'<td class="num">{_e(_target(label))}</td>'
                if label is not None
                else '<td><span class="pending">label pending</span></td>'
            )
            + "</tr>"
        )
    return (
        f"<div>{title}"
        f'<table class="largest" aria-labelledby="{ident}-largest"><thead><tr>'
        '<th scope="col">Request</th><th scope="col">Instance</th>'
        '<th scope="col">Production</th><th scope="col">Shadow</th>'
        '<th scope="col">Difference <span class="n">the shadow\'s prediction minus'
        " production's</span></th>"
        '<th scope="col">Label</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# --- charts --------------------------------------------------------------------------------------

_W, _H = 600, 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 16, 30, 46
_CHAR = 6.2  # the width of a character of an 11 px tick label, about: for spacing labels


def _f(x: float) -> str:
    return f"{x:.1f}"


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not (math.isfinite(low) and math.isfinite(high)) or high - low > 1e300:
        return [low, high] if math.isfinite(low) and math.isfinite(high) else [0.0, 1.0]
    if high <= low:
        low, high = low - 1, high + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    start = math.floor(low / step + 1e-9) * step
    n = min(math.ceil((high - start) / step - 1e-9), 4 * count)
    return [round(start + k * step, 12) + 0.0 for k in range(n + 1)]


def _tick_label(value: float, signed: bool) -> str:
    text = f"{value:.6g}"
    if value == 0:
        return "0"
    return f"+{text}" if signed and value > 0 else text


# Steps of the time axis, in seconds: the first that gives few enough ticks is used.
_TIME_STEPS = (
    1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800,
    3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600,
    86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400, 182 * 86400, 364 * 86400,
)  # fmt: skip


def time_ticks(t0: float, t1: float) -> tuple[list[tuple[float, str]], str]:
    """Ticks for a time axis from t0 to t1 (UTC seconds), and the axis title. Ticks are round
    times (multiples of a step from 1 s to a year: at most six, as many as fit) labelled as the
    step needs: HH:MM:SS for seconds, HH:MM for minutes and hours (with the day when the axis
    spans days), the day for days and weeks; every label distinct. The date, or the year, that
    no label shows goes in the title.

    >>> time_ticks(1795796400.0, 1795796500.0)
    ([(1795796400.0, '16:20:00'), ..., (1795796490.0, '16:21:30')], 'time (UTC), 27 Nov 2026')
    """
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 < t0:
        return [], "time (UTC)"
    one_day = _utc(t0, "%Y-%m-%d") == _utc(t1, "%Y-%m-%d")
    one_year = _utc(t0, "%Y") == _utc(t1, "%Y")
    plot_w = _W - _LEFT - _RIGHT
    for step in _TIME_STEPS:
        first = math.ceil(t0 / step - 1e-9) * step
        count = math.floor((t1 - first) / step + 1e-9) + 1 if first <= t1 else 0
        if count > 6:
            continue
        times = [float(first + k * step) for k in range(count)] or [t0]
        if step < 60:
            pattern = "%H:%M:%S"
        elif step < 86400:
            pattern = "%H:%M" if one_day else "%d %b %H:%M"
        else:
            pattern = "%d %b" if one_year else "%Y-%m-%d"
        labels = [_utc(t, pattern) for t in times]
        width = max(len(label) for label in labels) * _CHAR + 24
        if len(times) <= plot_w // width and len(set(labels)) == len(labels):
            break
    else:  # a span beyond the longest step, or times with no date: only the ends
        times = [t0, t1] if t1 > t0 else [t0]
        pattern = "%Y-%m-%d"
        labels = [_utc(t, pattern) for t in times]
    if one_day and "%d" not in pattern:
        title = f"time (UTC), {_utc(t0, '%d %b %Y')}"
    elif one_year and "%Y" not in pattern:
        title = f"time (UTC), {_utc(t0, '%Y')}"
    else:
        title = "time (UTC)"
    return list(zip(times, labels, strict=True)), title


def _svg_open(kind: str, name: str, ident: str, title: str, desc: str) -> str:
    return (
        f'<svg class="chart chart-{kind}" data-shadow="{_e(name)}" viewBox="0 0 {_W} {_H}" '
        f'width="{_W}" height="{_H}" role="img" '
        f'aria-labelledby="{ident}-{kind}-title {ident}-{kind}-desc">'
        f'<title id="{ident}-{kind}-title">{_e(title)}</title>'
        f'<desc id="{ident}-{kind}-desc">{_e(desc)}</desc>'
    )


def _notice(text: str) -> str:
    return (
        f'<text class="notice" x="{_W / 2:.0f}" y="{_H / 2:.0f}" '
        f'text-anchor="middle">{_e(text)}</text>'
    )


def _y_axis(ticks: Sequence[float], y: Callable[[float], float], signed: bool, title: str) -> str:
    out = [
        f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_f(y(t))}" y2="{_f(y(t))}" />'
        f'<text class="tick-y" x="{_LEFT - 6}" y="{_f(y(t) + 4)}" text-anchor="end">'
        f"{_e(_tick_label(t, signed))}</text>"
        for t in ticks
    ]
    out.append(f'<line class="axis" x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_H - _BOTTOM}" />')
    middle = (_TOP + _H - _BOTTOM) / 2
    out.append(
        f'<text class="axis-title" x="14" y="{_f(middle)}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_f(middle)})">{_e(title)}</text>'
    )
    return "".join(out)


def _x_title(text: str) -> str:
    return (
        f'<text class="axis-title" x="{_LEFT + (_W - _LEFT - _RIGHT) / 2:.0f}" y="{_H - 6}" '
        f'text-anchor="middle">{_e(text)}</text>'
    )


def _history_chart(history: Sequence[HistoryPoint], name: str, ident: str, kind: str) -> str:
    """The verdict's advantage over time (+ = shadow better): a line, its always-valid interval
    as a shaded band, a dashed zero. Classification and probabilities routes give accuracy
    points (chart-accuracy), regression routes the MAE advantage in the target's units
    (chart-mae)."""
    regression = kind == "regression"
    chart = "mae" if regression else "accuracy"
    measure, _ = _measure(kind)
    title = f"{measure} over time for {name or DASH} ({_BETTER_UP})"
    points: list[tuple[float, float, float | None, float | None, HistoryPoint]] = []
    for item in history:
        entry = _map(item)
        t, d = _num(entry.get("t")), _num(entry.get("difference"))
        if t is not None and d is not None:
            points.append((t, d, _num(entry.get("low")), _num(entry.get("high")), entry))
    points.sort(key=lambda p: p[0])
    if len(points) < 2:
        desc = "Not enough history yet to draw the advantage over time."
        return (
            _svg_open(chart, name, ident, title, desc)
            + _notice("not enough history yet")
            + "</svg>"
        )

    # Accuracy advantages are fractions, shown in percentage points.
    scale = 1.0 if regression else 100.0
    values = [0.0]
    for _, d, low, high, _entry in points:
        values += [v * scale for v in (d, low, high) if v is not None]
    ticks = _nice_ticks(min(values), max(values))
    y_lo, y_hi = ticks[0], ticks[-1]
    t0, t1 = points[0][0], points[-1][0]
    t_span = t1 - t0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(t: float) -> float:
        # A history at one instant is drawn in the middle.
        return _LEFT + ((t - t0) / t_span if t_span else 0.5) * plot_w

    def y(v: float) -> float:
        return _TOP + (y_hi - v * scale) / ((y_hi - y_lo) or 1.0) * plot_h

    def y_tick(v: float) -> float:
        return y(v / scale)

    last = points[-1]
    desc = (
        f"{len(points)} points from {_utc(t0)} to {_utc(t1)}; latest advantage "
        f"{_advantage(kind, last[1])}, always-valid interval "
        f"{_advantage_interval(kind, last[2], last[3])}."
    )
    axis = "MAE advantage" if regression else "accuracy advantage (pp)"
    out = [_svg_open(chart, name, ident, title, desc)]
    out.append(_y_axis(ticks, y_tick, signed=True, title=axis))
    out.append(
        f'<text class="sign" x="{_LEFT + 6}" y="{_TOP - 10}">▲ shadow better</text>'
        if y_hi > 0
        else ""
    )
    band = [p for p in points if p[2] is not None and p[3] is not None]
    if len(band) >= 2:
        edge = [f"{_f(x(p[0]))},{_f(y(p[3]))}" for p in band if p[3] is not None]
        edge += [f"{_f(x(p[0]))},{_f(y(p[2]))}" for p in reversed(band) if p[2] is not None]
        out.append(f'<polygon class="band" points="{" ".join(edge)}" />')
    out.append(
        f'<line class="zero" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_f(y(0.0))}" y2="{_f(y(0.0))}" />'
    )
    line = " ".join(f"{_f(x(p[0]))},{_f(y(p[1]))}" for p in points)
    out.append(f'<polyline class="line" points="{line}" />')
    for t, d, low, high, entry in points:
        tip = (
            f"{_utc(t, '%Y-%m-%d %H:%M:%S UTC')}: {_advantage(kind, d)} "
            f"{_advantage_interval(kind, low, high)}, "
            f"{fmt_count(entry.get('labelled'))} labelled requests"
        )
        out.append(
            f'<circle class="point" cx="{_f(x(t))}" cy="{_f(y(d))}" r="2.5">'
            f"<title>{_e(tip)}</title></circle>"
        )
    out.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" '
        f'y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" />'
    )
    ticks_t, axis_title = time_ticks(t0, t1)
    for t, label in ticks_t:
        px = x(t)
        # A label at an edge of the plot is anchored inwards, so that it stays in the chart.
        half = len(label) * _CHAR / 2
        anchor = "start" if px - half < 2 else "end" if px + half > _W - 2 else "middle"
        out.append(
            f'<line class="axis" x1="{_f(px)}" x2="{_f(px)}" '
            f'y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" />'
            f'<text class="tick-x" x="{_f(px)}" y="{_H - _BOTTOM + 16}" '
            f'text-anchor="{anchor}">{_e(label)}</text>'
        )
    out.append(_x_title(axis_title))
    out.append("</svg>")
    return "".join(out)


def _ms(seconds: float) -> str:
    """A bucket bound for an axis: milliseconds below a second, seconds above."""
    if seconds >= 1:
        return f"{seconds:.4g} s"
    return f"{seconds * 1000:.4g}"


def _with_unit(seconds: float | None) -> str:
    """A bucket bound in words: "20 ms", "1.5 s", "+Inf"."""
    if seconds is None:
        return "?"
    if math.isinf(seconds):
        return "+Inf"
    return _ms(seconds) + ("" if seconds >= 1 else " ms")


def _bucket_span(low: float | None, high: float | None) -> str:
    """A bucket's range in words: "5-10 ms", "1.5-2 s", "over 30 s"."""
    if low is None or high is None:
        return "?"
    if math.isinf(high):
        return f"over {_with_unit(low)}"
    if high >= 1:
        return f"{low:.4g}-{high:.4g} s"
    return f"{low * 1000:.4g}-{high * 1000:.4g} ms"


def _shares(counts: Sequence[Any], groups: int) -> tuple[list[float], list[float]] | None:
    """Per-bucket counts padded or cut to the bucket count, and their shares; None if empty."""
    values = [max(_num(c) or 0.0, 0.0) for c in counts[:groups]]
    values += [0.0] * (groups - len(values))
    total = sum(values)
    if total <= 0:
        return None
    return values, [v / total for v in values]


def _reliability_figure(route: RouteReport, shadow: ShadowReport, name: str, ident: str) -> str:
    figures = _map(shadow.get("probabilities"))
    return (
        "<figure>"
        "<figcaption>Reliability: how often each model is right at each confidence"
        '<span class="n">share of labelled instances right per confidence bin; a calibrated'
        " model follows the diagonal</span></figcaption>"
        + _reliability_chart(
            _list(route.get("production_calibration")),
            _list(figures.get("calibration")),
            name,
            ident,
        )
        + "</figure>"
    )


def _reliability_chart(
    production_bins: Sequence[Any], shadow_bins: Sequence[Any], name: str, ident: str
) -> str:
    """A reliability diagram: per confidence bin (the largest probability, in tenths), the share
    of instances each model got right, against the diagonal a calibrated model follows."""
    title = f"Reliability of production and {name or DASH}"
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(confidence: float) -> float:
        return _LEFT + confidence * plot_w

    def y(share: float) -> float:
        return _TOP + (1.0 - share) * plot_h

    series = []
    for who, colour, bins in (
        ("production", _PRODUCTION_COLOUR, production_bins),
        ("shadow", _SHADOW_COLOUR, shadow_bins),
    ):
        points = []
        for b in bins:
            m = _map(b)
            low, instances, correct = (
                _num(m.get("low")),
                _num(m.get("instances")),
                _num(m.get("correct")),
            )
            if low is not None and instances and correct is not None:
                points.append((low + 0.05, correct / instances, int(instances)))
        series.append((who, colour, points))
    desc = "Share right per confidence bin, production vs shadow, against the diagonal."
    out = [_svg_open("reliability", name, ident, title, desc)]
    if not any(points for _, _, points in series):
        return out[0] + _notice("no labelled probabilities yet") + "</svg>"
    out.append(_y_axis([0.0, 0.25, 0.5, 0.75, 1.0], y, signed=False, title="share right"))
    out.append(
        f'<line class="diagonal" x1="{_f(x(0))}" y1="{_f(y(0))}" x2="{_f(x(1))}" '
        f'y2="{_f(y(1))}" stroke="#8c959f" stroke-dasharray="4 3" />'
    )
    for who, colour, points in series:
        if not points:
            continue
        path = " ".join(f"{_f(x(c))},{_f(y(s))}" for c, s, _ in points)
        out.append(
            f'<polyline class="line line-{who}" points="{path}" fill="none" '
            f'stroke="{colour}" stroke-width="2" />'
        )
        for c, s, n in points:
            tip = (
                f"{who}, confidence {c - 0.05:.1f}-{c + 0.05:.1f}: {fmt_percent(s)} right of"
                f" {fmt_count(n)}"
            )
            out.append(
                f'<circle class="dot dot-{who}" cx="{_f(x(c))}" cy="{_f(y(s))}" r="3" '
                f'fill="{colour}"><title>{_e(tip)}</title></circle>'
            )
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(
            f'<text class="tick-x" x="{_f(x(tick))}" y="{_H - _BOTTOM + 16}" '
            f'text-anchor="middle">{tick:g}</text>'
        )
    out.append(_x_title("confidence (largest probability)"))
    out.append(_legend())
    out.append("</svg>")
    return "".join(out)


def _legend() -> str:
    """Production's and the shadow's colours, above the plot so that it never hides a mark."""
    out = []
    for s, (who, colour) in enumerate(
        (("production", _PRODUCTION_COLOUR), ("shadow", _SHADOW_COLOUR))
    ):
        lx = _W - _RIGHT - 190 + s * 100
        out.append(
            f'<rect x="{lx}" y="8" width="12" height="12" fill="{colour}" />'
            f'<text x="{lx + 17}" y="18">{who}</text>'
        )
    return "".join(out)


def _latency_chart(
    bounds: Sequence[Any],
    production_counts: Sequence[Any],
    shadow_counts: Sequence[Any],
    name: str,
    ident: str,
) -> str:
    """Grouped bars: each histogram bucket's share of production's and the shadow's requests,
    over the buckets from the first any request fell in to the last (26 buckets drawn whole
    would be mostly empty, their labels crowded).

    Buckets are the histogram's own (roughly log-spaced) bounds, drawn evenly spaced: a log-ish
    axis, ticked at the bucket edges in milliseconds, as many labelled as fit.
    """
    title = f"Latency distribution of production and {name or DASH}"
    groups = len(bounds) + 1
    series = [
        ("production", _PRODUCTION_COLOUR, _shares(production_counts, groups)),
        ("shadow", _SHADOW_COLOUR, _shares(shadow_counts, groups)),
    ]
    if all(s is None for _, _, s in series):
        desc = "No latency observations yet."
        return (
            _svg_open("latency", name, ident, title, desc)
            + _notice("no latency observations yet")
            + "</svg>"
        )
    filled = [k for _, _, s in series if s is not None for k, c in enumerate(s[0]) if c > 0]
    first, last = min(filled), max(filled)
    shown = range(first, last + 1)

    def edge(k: int) -> float | None:
        """The upper bound of bucket k in seconds (math.inf past the last bound), or None."""
        if k < 0:
            return 0.0
        return _num(bounds[k]) if k < len(bounds) else math.inf

    def edge_text(k: int) -> str:
        b = edge(k)
        return "?" if b is None else "+Inf" if math.isinf(b) else _ms(b)

    top = max(s[1][k] for _, _, s in series if s is not None for k in shown) * 100
    ticks = _nice_ticks(0.0, top, 4)
    y_hi = ticks[-1] or 1.0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def y(percent: float) -> float:
        return _TOP + (y_hi - percent) / y_hi * plot_h

    desc = (
        "Share of requests per latency bucket, production vs shadow, for the "
        f"{len(shown)} buckets from {_with_unit(edge(first - 1))} to {_with_unit(edge(last))}."
    )
    out = [_svg_open("latency", name, ident, title, desc)]
    out.append(_y_axis(ticks, y, signed=False, title="share of requests (%)"))
    slot = plot_w / len(shown)
    bar = slot * 0.38
    for s, (who, colour, data) in enumerate(series):
        if data is None:
            continue
        counts, shares = data
        for n, k in enumerate(shown):
            left = _LEFT + n * slot + slot * 0.12 + s * bar
            span = _bucket_span(edge(k - 1), edge(k))
            tip = f"{who}, {span}: {fmt_percent(shares[k])} ({fmt_count(counts[k])})"
            out.append(
                f'<rect class="bar bar-{who}" x="{_f(left)}" y="{_f(y(shares[k] * 100))}" '
                f'width="{_f(bar)}" '
                f'height="{_f(plot_h - (y(shares[k] * 100) - _TOP))}" fill="{colour}">'
                f"<title>{_e(tip)}</title></rect>"
            )
    out.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" '
        f'y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" />'
    )
    # Ticks at every bucket edge; labels on every stride-th, so that they never overlap.
    edges = [(n, edge_text(first - 1 + n)) for n in range(len(shown) + 1)]
    widest = max(len(text) for _, text in edges) * _CHAR + 8
    stride = max(1, math.ceil(widest / slot))
    for n, text in edges:
        px = _LEFT + n * slot
        out.append(
            f'<line class="axis" x1="{_f(px)}" x2="{_f(px)}" '
            f'y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" />'
        )
        if n % stride == 0:
            out.append(
                f'<text class="tick-x" x="{_f(px)}" y="{_H - _BOTTOM + 16}" '
                f'text-anchor="middle">{_e(text)}</text>'
            )
    out.append(_x_title("latency (ms), histogram bucket edges"))
    out.append(_legend())
    out.append("</svg>")
    return "".join(out)

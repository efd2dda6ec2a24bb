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

>>> page = render_html(json.loads(Path("report.json").read_text()))
>>> Path("report.html").write_text(page)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any, TypeVar, cast

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
]

DASH = "\u2013"
_MINUS = "\u2212"
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


# --- the page ------------------------------------------------------------------------------------

_CSS = """
:root {
  --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --card: #ffffff;
  --better: #1a7f37; --worse: #cf222e; --inconclusive: #9a6700; --insufficient: #59636e;
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
h2 { font-size: 1.2rem; margin: 2rem 0 0.25rem; }
.route-meta, .muted, .empty { color: var(--muted); margin: 0 0 1rem; }
.cards { display: grid; gap: 1.25rem; grid-template-columns: repeat(auto-fit, minmax(36rem, 1fr)); }
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 1rem 1.25rem;
}
.card-header { display: flex; align-items: center; gap: 0.75rem; flex-wrap: wrap; }
.card-header h3 { margin: 0; font-size: 1.1rem; }
.reason { margin: 0.5rem 0 1rem; }
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
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); font-size: 0.85rem; padding-bottom: 0.35rem; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
thead th { font-size: 0.85rem; color: var(--muted); font-weight: 600; }
tbody th { font-weight: 500; }
tr.group th { background: var(--bg); font-size: 0.8rem; text-transform: uppercase;
  letter-spacing: 0.04em; color: var(--muted); }
.ci, .n { color: var(--muted); font-size: 0.88em; white-space: nowrap; }
.n { display: block; }
.summary { background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
.summary a { color: inherit; }
figure { margin: 1rem 0 0; }
figcaption { font-size: 0.9rem; font-weight: 600; margin-bottom: 0.25rem; }
.chart { width: 100%; height: auto; max-width: 40rem; display: block; }
.chart text { font-family: inherit; font-size: 11px; fill: var(--muted); }
.chart .axis { stroke: #8c959f; stroke-width: 1; }
.chart .grid { stroke: #eaeef2; stroke-width: 1; }
.chart .zero { stroke: #57606a; stroke-width: 1; stroke-dasharray: 4 3; }
.chart .band { fill: #4c78a8; fill-opacity: 0.18; stroke: none; }
.chart .line { fill: none; stroke: #1f4e79; stroke-width: 2; }
.chart .point { fill: #1f4e79; }
.chart .notice { font-size: 14px; fill: var(--muted); }
footer { color: var(--muted); font-size: 0.85rem; padding: 0 2rem 2rem; max-width: 60rem; }
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


def _time_element(t: Any) -> str:
    text = _utc(t)
    if text == DASH:
        return DASH
    iso = _utc(t, "%Y-%m-%dT%H:%M:%SZ")
    return f'<time datetime="{_e(iso)}">{_e(text)}</time>'


def _footer(level: str) -> str:
    at = f"{level} " if level else ""
    return (
        "<footer>"
        "<p>The verdict's test takes the request as the unit and gives an always-valid "
        "confidence sequence of the shadow's advantage (up is the shadow doing better): it stays "
        "valid however often the report is looked at, so a verdict may be read off it at any "
        f"time, and decisions are held once made. Other intervals in brackets are {at}"
        "fixed-sample confidence intervals on instances, for reading only. "
        f"Differences are shadow {_MINUS} production; pp = percentage points. "
        "Latency shares are per histogram bucket.</p>"
        "</footer>"
    )


def _summary(routes: Sequence[RouteReport]) -> str:
    rows = []
    for i, route in enumerate(routes):
        regression = route.get("kind") == "regression"
        for j, shadow in enumerate(_map(s) for s in _list(route.get("shadows"))):
            key, _symbol, label = _verdict(shadow)
            test = _map(shadow.get("quality"))
            advantage = test.get("advantage")
            diff = fmt_number(advantage, signed=True) if regression else fmt_points(advantage)
            p = test.get("p_value")
            rows.append(
                "<tr>"
                f"<td><code>{_e(_str(route.get('route')))}</code></td>"
                f'<th scope="row"><a href="#shadow-{i}-{j}">'
                f"{_e(_str(shadow.get('shadow')))}</a></th>"
                f'<td><span class="pill pill-{key}">{_e(label)}</span></td>'
                f"<td>{_e(diff)}</td>"
                f"<td>{_e(_p_text(p))}</td>"
                "</tr>"
            )
    if not rows:
        return '<p class="empty">No shadow models in this report.</p>'
    return (
        '<table class="summary">'
        "<caption>All shadow models</caption>"
        "<thead><tr>"
        '<th scope="col">Route</th><th scope="col">Shadow</th><th scope="col">Verdict</th>'
        '<th scope="col">Advantage</th><th scope="col">Always-valid p</th>'
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody>"
        "</table>"
    )


def _route(i: int, route: RouteReport, level: str) -> str:
    kind = _str(route.get("kind")) or "unknown"
    production = _str(route.get("production"))
    latency = _map(route.get("production_latency"))
    facts = [f"{_e(kind)} route", f"production <strong>{_e(production or DASH)}</strong>"]
    if _num(latency.get("count")) is not None:
        facts.append(f"{_e(fmt_count(latency.get('count')))} requests")
    if kind == "regression":
        err = _map(route.get("production_error"))
        if _num(err.get("mae")) is not None:
            facts.append(
                f"MAE {_e(fmt_number(err.get('mae')))} on "
                f"{_e(fmt_count(err.get('labelled')))} labelled"
            )
    else:
        acc = _map(route.get("production_accuracy"))
        if _num(acc.get("value")) is not None:
            facts.append(
                f"accuracy {_e(fmt_percent(acc.get('value')))} on "
                f"{_e(fmt_count(acc.get('labelled')))} labelled"
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
        f'<section class="route" id="route-{i}" aria-labelledby="route-{i}-title">'
        f'<h2 id="route-{i}-title"><code>{_e(_str(route.get("route")) or DASH)}</code></h2>'
        f'<p class="route-meta">{" · ".join(facts)}</p>'
        f"{_route_diagnostics(_map(route.get('diagnostics')))}"
        f"{cards}"
        "</section>"
    )


def _route_diagnostics(diagnostics: Any) -> str:
    """Label coverage and delay in a line, and any warning (selection bias) as an alert."""
    facts = []
    labelled, recorded = diagnostics.get("labelled_requests"), diagnostics.get("recorded_requests")
    if _num(recorded):
        facts.append(
            f"{fmt_count(labelled)} of {fmt_count(recorded)} recorded requests labelled"
            f" ({fmt_percent(diagnostics.get('coverage'))})"
        )
    if _num(diagnostics.get("label_delay_p50")) is not None:
        facts.append(
            f"labels arrive after {fmt_duration(diagnostics.get('label_delay_p50'))} (median),"
            f" {fmt_duration(diagnostics.get('label_delay_p95'))} (p95)"
        )
    if _num(diagnostics.get("selection_bias_p")) is not None:
        facts.append(f"selection-bias test p = {_p_text(diagnostics.get('selection_bias_p'))}")
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
    regression = route.get("kind") == "regression"
    reason = _str(shadow.get("reason"))
    # Up is the shadow doing better for both kinds: for regression the history holds
    # production's mean absolute error minus the shadow's.
    caption = (
        f"Error advantage over time (production {_MINUS} shadow mean absolute error)"
        if regression
        else f"Accuracy difference over time (shadow {_MINUS} production)"
    )
    return (
        f'<article class="card" id="{ident}" aria-labelledby="{ident}-title">'
        '<div class="card-header">'
        f'<h3 id="{ident}-title">{_e(name or DASH)}</h3>'
        f'<span class="verdict verdict-{key}" data-shadow="{_e(name)}">'
        f'<span class="visually-hidden">verdict: </span>'
        f'<span aria-hidden="true">{symbol}</span> {_e(label)}</span>'
        "</div>"
        f'<p class="reason">{_e(reason) if reason else DASH}</p>'
        f"{_figures(route, shadow, level)}"
        "<figure>"
        f"<figcaption>{caption}</figcaption>"
        f"{_accuracy_chart(_list(shadow.get('history')), name, ident, regression=regression)}"
        "</figure>"
        "<figure>"
        "<figcaption>Latency distribution: production vs shadow</figcaption>"
        + _latency_chart(
            _list(route.get("latency_buckets")),
            _list(route.get("production_latency_counts")),
            _list(shadow.get("latency_counts")),
            name,
            ident,
        )
        + "</figure>"
        + _reliability_figure(route, shadow, name, ident)
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


def _row_span(label: str, both: str) -> str:
    return f'<tr><th scope="row">{_e(label)}</th><td colspan="2">{both}</td></tr>'


def _group(title: str, rows: Sequence[str]) -> str:
    head = f'<tr class="group"><th colspan="3" scope="colgroup">{_e(title)}</th></tr>'
    return f"<tbody>{head}{''.join(rows)}</tbody>"


def _of(part: Any, whole: Any, noun: str) -> str:
    if _num(part) is None or _num(whole) is None:
        return ""
    return f"{fmt_count(part)} of {fmt_count(whole)} {noun}"


def _figures(route: RouteReport, shadow: ShadowReport, level: str) -> str:
    production, name = _str(route.get("production")), _str(shadow.get("shadow"))
    groups = [_verdict_test(route, shadow), _labelled_figures(route, shadow)]
    if shadow.get("probabilities"):
        groups.append(_probability_group(_map(shadow.get("probabilities"))))

    dis = _map(shadow.get("disagreement"))
    groups.append(
        _group(
            "Agreement",
            [
                _row_span(
                    "Disagreement rate",
                    _cell(
                        fmt_percent(dis.get("value")),
                        fmt_interval(dis.get("low"), dis.get("high"), fmt_percent),
                        _of(dis.get("disagreed"), dis.get("compared"), "compared"),
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
            "Reliability",
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


_GUARDRAIL_NAMES = {
    "error_rate": "Error rate, shadow minus production",
    "slow_requests": "Requests slower than production's p99, shadow minus production",
    "disagreement": "Disagreement (before labels)",
}


def _verdict_test(route: RouteReport, shadow: ShadowReport) -> str:
    """The figures the verdict is decided on: always-valid, the request as the unit."""
    regression = route.get("kind") == "regression"
    test = _map(shadow.get("quality"))

    def figure(value: Any) -> str:
        return fmt_number(value, signed=True) if regression else fmt_points(value)

    def bare(value: Any) -> str:
        return fmt_number(value, signed=True) if regression else _points_bare(value)

    unit = "" if regression else "pp"
    method = "exact test" if test.get("method") == "exact" else "test on requests"
    what = "MAE advantage (production - shadow)" if regression else "Accuracy advantage"
    rows = [
        _row_span(
            what,
            _cell(
                figure(test.get("advantage")),
                fmt_interval(test.get("low"), test.get("high"), bare, unit),
                f"{fmt_count(test.get('requests'))} labelled requests, {method}",
            ),
        ),
        _row_span(
            "Always-valid p",
            _cell(_p_text(test.get("p_value")), note=f"alpha {_str(test.get('alpha'))[:6]}"),
        ),
    ]
    margin = _num(test.get("margin"))
    if margin is not None:
        rows.append(_row_span("Equivalence margin", _cell(f"+-{bare(margin)} {unit}".strip())))
    own = _map(shadow.get("diagnostics"))
    if _num(own.get("paired_requests")) is not None:
        rows.append(
            _row_span(
                "Labelled requests with a pair",
                _cell(
                    fmt_count(own.get("paired_requests")),
                    note=f"{fmt_count(own.get('lost_pairs'))} without one (shadow failed,"
                    " timed out or was dropped: never compared);"
                    f" {fmt_count(own.get('unscorable_instances'))} instances unscorable",
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
                    note=f"for an advantage of {bare(effect)} {unit} (median)".replace("  ", " "),
                ),
            )
        )
    for guard in _list(shadow.get("guardrails")):
        g = _map(guard)
        limit = _num(g.get("limit"))
        if limit is None:
            continue
        rows.append(
            _row_span(
                _GUARDRAIL_NAMES.get(_str(g.get("name")), _str(g.get("name"))),
                _cell(
                    fmt_percent(g.get("value")),
                    fmt_interval(g.get("low"), g.get("high"), fmt_percent),
                    f"limit {fmt_percent(limit)}" + (", tripped" if g.get("tripped") else ""),
                ),
            )
        )
    return _group("The verdict's tests (always-valid, held once decided)", rows)


def _labelled_figures(route: RouteReport, shadow: ShadowReport) -> str:
    """Accuracy rows for classification routes, error rows for regression routes."""
    if route.get("kind") == "regression":
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
                    "Paired mean error difference",
                    _cell(
                        signed(reg.get("mean_difference")),
                        fmt_interval(reg.get("low"), reg.get("high"), signed),
                        "" if n is None else f"n = {fmt_count(n)} pairs",
                    ),
                ),
                _row_span("Sequential p", _cell(_p_text(reg.get("sequential_p")))),
                _row_span(
                    "Confidence sequence",
                    _cell(fmt_interval(reg.get("cs_low"), reg.get("cs_high"), signed)),
                ),
            ],
        )
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
                "Paired accuracy difference",
                _cell(
                    fmt_points(paired.get("difference")),
                    fmt_interval(paired.get("low"), paired.get("high"), _points_bare, "pp"),
                    discordant,
                ),
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
        else f"{fmt_count(figures['labelled'])} labelled"
    )


def _accuracy_cell(acc: Accuracy) -> str:
    labelled = _num(acc.get("labelled"))
    return _cell(
        fmt_percent(acc.get("value")),
        fmt_interval(acc.get("low"), acc.get("high"), fmt_percent),
        "no labels yet" if labelled == 0 else _of(acc.get("correct"), labelled, "right"),
    )


# --- charts --------------------------------------------------------------------------------------

_W, _H = 600, 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 16, 30, 46


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
        f'<text x="{_LEFT - 6}" y="{_f(y(t) + 4)}" text-anchor="end">'
        f"{_e(_tick_label(t, signed))}</text>"
        for t in ticks
    ]
    out.append(f'<line class="axis" x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_H - _BOTTOM}" />')
    middle = (_TOP + _H - _BOTTOM) / 2
    out.append(
        f'<text x="14" y="{_f(middle)}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_f(middle)})">{_e(title)}</text>'
    )
    return "".join(out)


def _accuracy_chart(
    history: Sequence[HistoryPoint], name: str, ident: str, *, regression: bool = False
) -> str:
    """The paired difference over time: a line, its interval as a shaded band, a dashed zero."""
    noun = "error" if regression else "accuracy"
    title = (
        f"Error advantage over time for {name or DASH}"
        if regression
        else f"{noun.capitalize()} difference over time for {name or DASH}"
    )
    points: list[tuple[float, float, float | None, float | None, HistoryPoint]] = []
    for item in history:
        entry = _map(item)
        t, d = _num(entry.get("t")), _num(entry.get("difference"))
        if t is not None and d is not None:
            points.append((t, d, _num(entry.get("low")), _num(entry.get("high")), entry))
    points.sort(key=lambda p: p[0])
    if len(points) < 2:
        desc = "Not enough history yet to draw the difference over time."
        return (
            _svg_open("accuracy", name, ident, title, desc)
            + _notice("not enough history yet")
            + "</svg>"
        )

    # Classification differences are fractions, shown in percentage points.
    scale = 1.0 if regression else 100.0
    unit = "" if regression else " pp"
    values = [0.0]
    for _, d, low, high, _entry in points:
        values += [v * scale for v in (d, low, high) if v is not None]
    ticks = _nice_ticks(min(values), max(values))
    y_lo, y_hi = ticks[0], ticks[-1]
    t0, t1 = points[0][0], points[-1][0]
    t_span = (t1 - t0) or 1.0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(t: float) -> float:
        return _LEFT + (t - t0) / t_span * plot_w

    def y(v: float) -> float:
        return _TOP + (y_hi - v * scale) / ((y_hi - y_lo) or 1.0) * plot_h

    def y_tick(v: float) -> float:
        return y(v / scale)

    last = points[-1]
    desc = (
        f"{len(points)} points from {_utc(t0)} to {_utc(t1)}; latest difference "
        f"{_diff_text(last[1], regression)}, interval "
        f"{_interval_text(last[2], last[3], regression)}."
    )
    out = [_svg_open("accuracy", name, ident, title, desc)]
    out.append(_y_axis(ticks, y_tick, signed=True, title=f"{noun} difference{unit and ' (pp)'}"))
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
            f"{_utc(t)}: {_diff_text(d, regression)} {_interval_text(low, high, regression)}, "
            f"{fmt_count(entry.get('labelled'))} labelled"
        )
        out.append(
            f'<circle class="point" cx="{_f(x(t))}" cy="{_f(y(d))}" r="2.5">'
            f"<title>{_e(tip)}</title></circle>"
        )
    # Time axis: five evenly spaced ticks, dates shown once the history spans more than a day.
    pattern = "%H:%M" if t1 - t0 <= 86400 else "%m-%d %H:%M"
    out.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" '
        f'y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" />'
    )
    for k in range(5):
        t = t0 + (t1 - t0) * k / 4
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        out.append(
            f'<line class="axis" x1="{_f(x(t))}" x2="{_f(x(t))}" '
            f'y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM + 4}" />'
            f'<text x="{_f(x(t))}" y="{_H - _BOTTOM + 16}" text-anchor="{anchor}">'
            f"{_e(_utc(t, pattern))}</text>"
        )
    out.append(
        f'<text x="{_LEFT + plot_w / 2:.0f}" y="{_H - 8}" text-anchor="middle">time (UTC)</text>'
    )
    out.append("</svg>")
    return "".join(out)


def _diff_text(value: float | None, regression: bool) -> str:
    return fmt_number(value, signed=True) if regression else fmt_points(value)


def _interval_text(low: float | None, high: float | None, regression: bool) -> str:
    if regression:
        return fmt_interval(low, high, lambda v: fmt_number(v, signed=True))
    return fmt_interval(low, high, _points_bare, "pp")


def _bucket_labels(bounds: Sequence[Any], groups: int) -> list[str]:
    labels = []
    for k in range(groups):
        if k < len(bounds):
            b = _num(bounds[k])
            labels.append("?" if b is None else f"{b * 1000:.4g}")
        else:
            labels.append("+Inf")
    return labels


def _shares(counts: Sequence[Any], groups: int) -> tuple[list[float], list[float]] | None:
    """Per-bucket counts padded or cut to the bucket count, and their shares; None if empty."""
    values = [max(_num(c) or 0.0, 0.0) for c in counts[:groups]]
    values += [0.0] * (groups - len(values))
    total = sum(values)
    if total <= 0:
        return None
    return values, [v / total for v in values]


def _probability_group(figures: Any) -> str:
    """Log loss and Brier score of both models, and their paired differences (production's
    minus the shadow's: up is the shadow doing better) with always-valid intervals."""

    def signed(value: Any) -> str:
        return fmt_number(value, signed=True)

    def difference(label: str, diff: Any) -> str:
        d = _map(diff)
        return _row_span(
            label,
            _cell(
                signed(d.get("advantage")),
                fmt_interval(d.get("low"), d.get("high"), signed),
                f"{fmt_count(d.get('requests'))} labelled requests, always-valid",
            ),
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
            difference("Log loss advantage (production - shadow)", figures.get("log_loss")),
            difference("Brier advantage (production - shadow)", figures.get("brier")),
        ],
    )


def _reliability_figure(route: RouteReport, shadow: ShadowReport, name: str, ident: str) -> str:
    figures = _map(shadow.get("probabilities"))
    if not figures:
        return ""
    return (
        "<figure>"
        "<figcaption>Reliability: how often each model is right at each confidence</figcaption>"
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
    for tick in (0.0, 0.5, 1.0):
        out.append(
            f'<text x="{_f(x(tick))}" y="{_H - _BOTTOM + 16}" text-anchor="middle">'
            f"{tick:.1f}</text>"
        )
    out.append(
        f'<text x="{_f(_LEFT + plot_w / 2)}" y="{_H - 8}" text-anchor="middle">'
        "confidence (largest probability)</text></svg>"
    )
    return "".join(out)


def _latency_chart(
    bounds: Sequence[Any],
    production_counts: Sequence[Any],
    shadow_counts: Sequence[Any],
    name: str,
    ident: str,
) -> str:
    """Grouped bars: each histogram bucket's share of production's and the shadow's requests.

    Buckets are the histogram's own (roughly log-spaced) bounds, drawn evenly spaced: a log-ish
    axis labelled by each bucket's upper bound in milliseconds.
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
    labels = _bucket_labels(bounds, groups)
    top = max(share for _, _, s in series if s is not None for share in s[1]) * 100
    ticks = _nice_ticks(0.0, top, 4)
    y_hi = ticks[-1] or 1.0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def y(percent: float) -> float:
        return _TOP + (y_hi - percent) / y_hi * plot_h

    desc = (
        "Share of requests per latency bucket, production vs shadow, "
        f"for {groups} buckets with upper bounds {', '.join(labels)} ms."
    )
    out = [_svg_open("latency", name, ident, title, desc)]
    out.append(_y_axis(ticks, y, signed=False, title="share of requests (%)"))
    slot = plot_w / groups
    bar = slot * 0.38
    for s, (who, colour, data) in enumerate(series):
        if data is None:
            continue
        counts, shares = data
        for k, share in enumerate(shares):
            left = _LEFT + k * slot + slot * 0.12 + s * bar
            upper = "+Inf" if labels[k] == "+Inf" else f"≤ {labels[k]} ms"
            tip = f"{who}, bucket {upper}: {fmt_percent(share)} ({fmt_count(counts[k])})"
            out.append(
                f'<rect class="bar bar-{who}" x="{_f(left)}" y="{_f(y(share * 100))}" '
                f'width="{_f(bar)}" '
                f'height="{_f(plot_h - (y(share * 100) - _TOP))}" fill="{colour}">'
                f"<title>{_e(tip)}</title></rect>"
            )
    out.append(
        f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" '
        f'y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" />'
    )
    for k, label in enumerate(labels):
        centre = _LEFT + (k + 0.5) * slot
        out.append(
            f'<text x="{_f(centre)}" y="{_H - _BOTTOM + 16}" text-anchor="middle">'
            f"{_e(label)}</text>"
        )
    out.append(
        f'<text x="{_LEFT + plot_w / 2:.0f}" y="{_H - 8}" text-anchor="middle">'
        "bucket upper bound (ms)</text>"
    )
    # Legend, above the plot so it never hides a bar.
    legend_x = _W - _RIGHT - 190
    for s, (who, colour, _data) in enumerate(series):
        lx = legend_x + s * 100
        out.append(
            f'<rect x="{lx}" y="8" width="12" height="12" fill="{colour}" />'
            f'<text x="{lx + 17}" y="18">{who}</text>'
        )
    out.append("</svg>")
    return "".join(out)

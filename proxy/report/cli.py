"""`shadow-proxy report`: fetch the report from a proxy (--url), or compute it from Prometheus's
query API (--prometheus, summed over every replica: the fleet-wide verdict), and print it as a
table for the terminal. Owns the fetching (its errors become one ReportSourceError line naming
the URL) and the table; not the figures (build.py) nor the command line (command.py)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from proxy import metric_names as names
from proxy.config import VerdictConfig
from proxy.report.model import Report, RouteReport, ShadowReport

if TYPE_CHECKING:  # build.py needs scipy: imported only to compute a report (--prometheus)
    from proxy.report.build import Samples

_INFO = (names.ROUTE_INFO, names.SHADOW_INFO)  # gauges, read as they are
_LATEST = (names.SHADOW_SAMPLE_RATIO,)  # gauges whose value is now's: the largest replica's
# What the report reads, and the labels it reads them by; summed over everything else
# (instance, pod, worker), so that replicas add up.
_READ = (
    names.ROUTE_INFO,
    names.SHADOW_INFO,
    names.SHADOW_ENQUEUED,
    names.UPSTREAM_REQUESTS,
    names.COMPARED_INSTANCES,
    names.DISAGREED_INSTANCES,
    names.LABELLED_INSTANCES,
    names.CORRECT_INSTANCES,
    names.SQUARED_ERROR,
    names.PAIRED_OUTCOMES,
    names.PAIRED_ERRORS,
    names.PAIRED_SHADOW_WORSE,
    names.PAIRED_SHADOW_BETTER,
    names.PAIRED_DIFFERENCE_SQUARES,
    names.PAIRED_REQUEST_SUMS,
    names.COMPARED_REQUEST_SUMS,
    names.PREDICTED_INSTANCES,
    names.LABELLED_PREDICTED,
    names.RECORDED,
    names.RECORDING_DROPPED,
    names.COMPARISONS,
    names.SEGMENT_COMPARED,
    names.SEGMENT_DISAGREED,
    names.SHADOW_SAMPLE_RATIO,
    names.BRIER,
    names.LOG_LOSS,
    names.UNSCORABLE_INSTANCES,
    names.CALIBRATION_INSTANCES,
    names.CALIBRATION_CORRECT,
    names.PAIRED_LOG_LOSS_SUMS,
    names.PAIRED_BRIER_SUMS,
)
_QUERIES = {
    **{
        (family.name if family in (*_INFO, *_LATEST) else family.total): ", ".join(family.labels)
        for family in _READ
    },
    names.UPSTREAM_DURATION.bucket: ", ".join((*names.UPSTREAM_DURATION.labels, "le")),
    names.LABEL_DELAY.bucket: ", ".join((*names.LABEL_DELAY.labels, "le")),
    names.ABSOLUTE_ERROR.sum: ", ".join(names.ABSOLUTE_ERROR.labels),
    names.ABSOLUTE_ERROR.count: ", ".join(names.ABSOLUTE_ERROR.labels),
}


class ReportSourceError(RuntimeError):
    """The report could not be had: one line naming the URL fetched and what went wrong."""


_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def base_url(text: str) -> str:
    """A proxy's or Prometheus's base URL as typed on a command line, `http://` assumed when it
    has no scheme; ValueError (saying why) when it is not an http(s) URL with a host.

        >>> base_url("127.0.0.1:8080/"), base_url("https://prom:9090")
        ('http://127.0.0.1:8080', 'https://prom:9090')
    """
    url = text.strip()
    if _SCHEME_RE.match(url) is None:
        url = f"http://{url}"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {text!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http:// or https:// URL: {text!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {text!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a base URL has no query or fragment: {text!r}")
    return url.rstrip("/")


def _cause(exc: BaseException, timeout: float) -> str:
    """Why a request failed, in a few words."""
    if isinstance(exc, urllib.error.HTTPError):
        cause = f"HTTP {exc.code} {exc.reason}"
        try:  # a JSON error body (Prometheus's, the proxy's) says more than the status
            doc = json.loads(exc.read(65536))
        except (OSError, ValueError, http.client.HTTPException):
            doc = None
        finally:
            exc.close()
        detail = doc.get("error") if isinstance(doc, dict) else None
        return f"{cause}: {str(detail)[:300]}" if detail else cause
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return _cause(exc.reason, timeout)
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is it running, and on that port?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _get_json(url: str, timeout: float, shown: str | None = None) -> Any:
    """GET `url` and parse its JSON; ReportSourceError naming `shown` (the URL, readably)."""
    where = shown or url
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ReportSourceError(f"cannot get {where}: {_cause(exc, timeout)}") from exc
    try:
        return json.loads(body)
    except ValueError:
        raise ReportSourceError(
            f"cannot read {where}: the answer is not JSON (it starts {body[:60]!r})"
        ) from None


def fetch_report(url: str, timeout: float = 10.0) -> Report:
    """The report a proxy serves at URL/report, not validated beyond its routes: it is trusted
    as the proxy's own output (its verdicts arrive as plain strings, which compare and format
    as the members do)."""
    where = f"{base_url(url)}/report"
    doc = _get_json(where, timeout)
    if not (isinstance(doc, dict) and isinstance(doc.get("routes"), list)):
        raise ReportSourceError(
            f"cannot read {where}: it is not a shadow-proxy report (no 'routes'); is"
            f" {base_url(url)} the proxy's own port?"
        )
    report: Report = doc  # type: ignore[assignment]  # the proxy's own JSON
    return report


def query(name: str, by: str, since: str) -> str:
    """The PromQL for one series of the report: counters as `increase` over `since`, which
    counts across a replica's restarts (its counters going back to 0), summed over replicas;
    the route info gauge as it is.

        >>> query("shadowproxy_requests_total", "route", "30d")
        'sum by (route) (increase(shadowproxy_requests_total[30d]))'
    """
    if name in (info.name for info in _INFO):
        return f"sum by ({by}) ({name})"
    if name in (gauge.name for gauge in _LATEST):
        return f"max by ({by}) ({name})"
    return f"sum by ({by}) (increase({name}[{since}]))"


LAST_SCRAPE = f"max(timestamp({names.ROUTE_INFO.name}))"


def _prometheus_query(base: str, text: str, timeout: float, at: str | None = None) -> Any:
    """One instant query's result list; ReportSourceError naming the query's URL."""
    params = {"query": text, **({"time": at} if at is not None else {})}
    url = f"{base}/api/v1/query?{urllib.parse.urlencode(params)}"
    shown = f"{base}/api/v1/query?query={text}"
    doc = _get_json(url, timeout, shown)
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise ReportSourceError(f"Prometheus refused {shown}: {error or doc!r}"[:500])
    data = doc.get("data")
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list):
        raise ReportSourceError(f"cannot read {shown}: not a Prometheus query answer")
    return result


def prometheus_samples(url: str, since: str = "30d", timeout: float = 10.0) -> Samples:
    """The samples the report needs, from Prometheus's instant-query API: what every replica
    counted over the last `since`, restarts included. Evaluated at the last scrape, so that
    `increase` has nothing to extrapolate at the end of the window (at the start neither: the
    proxy's counters exist at 0 from its start), and the counts are the counted ones."""
    from proxy.report.build import Samples

    base = base_url(url)
    last = _prometheus_query(base, LAST_SCRAPE, timeout)
    at = str(last[0]["value"][1]) if last else None
    samples: list[tuple[str, dict[str, str], float]] = []
    for name, by in _QUERIES.items():
        for series in _prometheus_query(base, query(name, by, since), timeout, at):
            samples.append((name, dict(series["metric"]), float(series["value"][1])))
    return Samples(samples)


def report_from_prometheus(url: str, settings: VerdictConfig, since: str = "30d") -> Report:
    from proxy.report.build import build_report

    return build_report(prometheus_samples(url, since), settings, generated_at=time.time())


# --- the table -----------------------------------------------------------------------------

_RED: Final = "\x1b[1;31m"
_RESET: Final = "\x1b[0m"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _points(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4g}"


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def _p(x: float | None) -> str:
    """A p-value as a table shows it: never a bare 0, which an underflow would print."""
    if x is None:
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3g}"


def _count(n: int, noun: str) -> str:
    """`1 labelled request`, `2 labelled requests`."""
    return f"{n:,} {noun if n == 1 else noun + 's'}"


def _production(route: RouteReport) -> str:
    """Production's figures on the route's kind: accuracy, or (regression) its errors; for
    probabilities its mean log loss and Brier score too (the same in every shadow's figures)."""
    kind = route["kind"]
    if kind == "regression":
        error = route["production_error"]
        if not error["labelled"]:
            figures = "no labelled instances yet"
        else:
            figures = (
                f"MAE {_number(error['mae'])}, RMSE {_number(error['rmse'])} on"
                f" {_count(error['labelled'], 'labelled instance')}"
            )
    else:
        accuracy = route["production_accuracy"]
        figures = (
            f"accuracy {_pct(accuracy['value'])} on"
            f" {_count(accuracy['labelled'], 'labelled instance')}"
            if accuracy["labelled"]
            else "no labelled instances yet"
        )
        scores = next((s["probabilities"] for s in route["shadows"] if s["probabilities"]), None)
        if kind == "probabilities" and scores and scores["production_log_loss"] is not None:
            figures += (
                f", log loss {_number(scores['production_log_loss'])},"
                f" Brier {_number(scores['production_brier'])}"
            )
    return f"production {route['production']}: {figures}"


def _labels(route: RouteReport) -> str:
    """What the verdict rests on: labelled requests of those recorded, and their instances."""
    d = route["diagnostics"]
    if not d["recorded_requests"] and not d["labelled_requests"]:
        return "labels: no request recorded for labels yet (routes[].record)"
    recorded = _count(d["recorded_requests"], "recorded request")
    instances = _count(d["labelled_instances"], "labelled instance")
    text = (
        f"labels: {d['labelled_requests']:,} of {recorded} labelled ({_pct(d['coverage'])}),"
        f" {instances}"
    )
    if d["label_delay_p50"] is not None and d["label_delay_p95"] is not None:
        text += f"; label delay p50 {d['label_delay_p50']:.3g} s, p95 {d['label_delay_p95']:.3g} s"
    return text


def _columns(kind: str) -> list[str]:
    """The table's header: figures by the route's kind; the advantage's sign is in its name."""
    if kind == "regression":
        figures = ["MAE", "RMSE", "MAE advantage (+ = shadow better)"]
    elif kind == "probabilities":
        figures = ["accuracy", "log loss", "Brier", "advantage, points (+ = shadow better)"]
    else:
        figures = ["accuracy", "advantage, points (+ = shadow better)"]
    return ["shadow", "verdict", "disagree", *figures, "p", "labelled req", "requests", "p99 ms",
            "errors"]  # fmt: skip


def _row(kind: str, shadow: ShadowReport) -> list[str]:
    test = shadow["quality"]
    show = _signed if kind == "regression" else _points
    decided = test["advantage"] is not None
    if shadow["requests"] <= 0:  # configured, but new or sampled at 0%: as the page says it
        advantage = "no traffic yet"
    elif decided:
        advantage = f"{show(test['advantage'])} [{show(test['low'])}, {show(test['high'])}]"
    else:
        advantage = "-"
    if kind == "regression":
        figures = [_number(shadow["error"]["mae"]), _number(shadow["error"]["rmse"]), advantage]
    elif kind == "probabilities":
        scores = shadow["probabilities"]
        figures = [
            _pct(shadow["accuracy"]["value"]),
            _number(scores["shadow_log_loss"] if scores else None),
            _number(scores["shadow_brier"] if scores else None),
            advantage,
        ]
    else:
        figures = [_pct(shadow["accuracy"]["value"]), advantage]
    return [
        shadow["shadow"],
        str(shadow["verdict"]),
        _pct(shadow["disagreement"]["value"]),
        *figures,
        _p(test["p_value"]) if decided else "-",
        f"{test['requests']:,}",
        f"{shadow['requests']:,}",
        _ms(shadow["latency"]["p99"]),
        _pct(shadow["error_rate"]),
    ]


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns as wide as their widest cell; the first two (names) to the left."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _scores(shadow: ShadowReport) -> str | None:
    """A probabilities shadow's paired log-loss and Brier advantages, with their intervals."""
    scores = shadow["probabilities"]
    if scores is None:
        return None
    parts = [
        f"{name} advantage {_signed(diff['advantage'])} [{_signed(diff['low'])},"
        f" {_signed(diff['high'])}]"
        for name, diff in (("log loss", scores["log_loss"]), ("Brier", scores["brier"]))
        if diff["advantage"] is not None
    ]
    if not parts:
        return None
    labelled = _count(scores["log_loss"]["requests"], "labelled request")
    return f"{', '.join(parts)} (+ = shadow better; on {labelled})"


def format_table(report: Report, *, color: bool = False) -> str:
    """The report as plain text: per route, production's figures and what the labels cover, its
    problems (red with `color`), one row per shadow with the figures of the route's kind, then
    each shadow's verdict in words and the route's warnings. Advantages are the shadow's
    (+ = shadow better): accuracy points, or for regression production's mean absolute error
    minus the shadow's, in the target's units."""
    lines = []
    for route in report["routes"]:
        kind = route["kind"]
        lines.append(
            f"{route['route']}  ({kind}; {_production(route)}, p99"
            f" {_ms(route['production_latency']['p99'])} ms)"
        )
        lines.append(f"  {_labels(route)}")
        for problem in route["problems"]:
            text = f"PROBLEM: {problem}"
            lines.append(f"  {_RED}{text}{_RESET}" if color else f"  {text}")
        if route["shadows"]:
            table = _aligned([_columns(kind), *(_row(kind, s) for s in route["shadows"])])
            lines += [table[0], "  " + "-" * (max(map(len, table)) - 2), *table[1:]]
        else:
            lines.append("  no shadows configured")
        for shadow in route["shadows"]:
            reason = shadow["reason"]
            if shadow["requests"] <= 0:
                reason = f"no traffic yet ({shadow['verdict']}: {reason})"
            lines.append(f"  {shadow['shadow']}: {reason}")
            scores = _scores(shadow)
            if scores:
                lines.append(f"    {scores}")
        for warning in route["diagnostics"]["warnings"]:
            lines.append(f"  warning: {warning}")
        lines.append("")
    if not report["routes"]:
        lines.append("no routes reported yet")
    return "\n".join(lines)

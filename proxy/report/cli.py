"""`shadow-proxy report`: fetch the report from a proxy (--url), or compute it from Prometheus's
query API (--prometheus, summed over every replica: the fleet-wide verdict), and print it as a
table for the terminal."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any

from proxy import metric_names as names
from proxy.config import VerdictConfig
from proxy.report.build import Samples, build_report
from proxy.report.model import Report

# What the report reads, and the labels it reads them by; summed over everything else
# (instance, pod, worker), so that replicas add up.
_READ = (
    names.ROUTE_INFO,
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
        (family.name if family is names.ROUTE_INFO else family.total): ", ".join(family.labels)
        for family in _READ
    },
    names.UPSTREAM_DURATION.bucket: ", ".join((*names.UPSTREAM_DURATION.labels, "le")),
    names.LABEL_DELAY.bucket: ", ".join((*names.LABEL_DELAY.labels, "le")),
    names.ABSOLUTE_ERROR.sum: ", ".join(names.ABSOLUTE_ERROR.labels),
    names.ABSOLUTE_ERROR.count: ", ".join(names.ABSOLUTE_ERROR.labels),
}


def _get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def fetch_report(url: str, timeout: float = 10.0) -> Report:
    """The report a proxy serves at URL/report, not validated: it is trusted as the proxy's own
    output (its verdicts arrive as plain strings, which compare and format as the members do)."""
    doc: Report = _get_json(url.rstrip("/") + "/report", timeout)
    return doc


def query(name: str, by: str, since: str) -> str:
    """The PromQL for one series of the report: counters as `increase` over `since`, which
    counts across a replica's restarts (its counters going back to 0), summed over replicas;
    the route info gauge as it is.

        >>> query("shadowproxy_requests_total", "route", "30d")
        'sum by (route) (increase(shadowproxy_requests_total[30d]))'
    """
    if name == names.ROUTE_INFO.name:
        return f"sum by ({by}) ({name})"
    return f"sum by ({by}) (increase({name}[{since}]))"


LAST_SCRAPE = f"max(timestamp({names.ROUTE_INFO.name}))"


def prometheus_samples(url: str, since: str = "30d", timeout: float = 10.0) -> Samples:
    """The samples the report needs, from Prometheus's instant-query API: what every replica
    counted over the last `since`, restarts included. Evaluated at the last scrape, so that
    `increase` has nothing to extrapolate at the end of the window (at the start neither: the
    proxy's counters exist at 0 from its start), and the counts are the counted ones."""
    base = url.rstrip("/")
    at = _get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': LAST_SCRAPE})}", timeout)
    params: dict[str, str] = {}
    if at.get("status") == "success" and at["data"]["result"]:
        params["time"] = at["data"]["result"][0]["value"][1]
    samples: list[tuple[str, dict[str, str], float]] = []
    for name, by in _QUERIES.items():
        query_text = query(name, by, since)
        query_string = urllib.parse.urlencode({"query": query_text, **params})
        doc = _get_json(f"{base}/api/v1/query?{query_string}", timeout)
        if doc.get("status") != "success":
            raise RuntimeError(f"Prometheus query for {name} failed: {doc}")
        for series in doc["data"]["result"]:
            samples.append((name, dict(series["metric"]), float(series["value"][1])))
    return Samples(samples)


def report_from_prometheus(url: str, settings: VerdictConfig, since: str = "30d") -> Report:
    return build_report(prometheus_samples(url, since), settings, generated_at=time.time())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _points(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4g}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def _p(x: float | None) -> str:
    if x is None:
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3g}"


def format_table(report: Report) -> str:
    """The report as plain text: one block per route, one row per shadow, then the reasons."""
    lines = []
    for route in report["routes"]:
        prod = route["production_accuracy"]
        lines.append(
            f"{route['route']}  ({route['kind']}; production {route['production']}: accuracy "
            f"{_pct(prod['value'])} on {prod['labelled']} labels, p99 "
            f"{_ms(route['production_latency']['p99'])} ms)"
        )
        head = (
            f"  {'shadow':<20}{'verdict':<19}{'disagree':>9}{'accuracy':>9}"
            f"{'advantage':>10}{'always-valid CS':>19}{'p':>8}{'p99 ms':>8}{'errors':>8}"
        )
        lines += [head, "  " + "-" * (len(head) - 2)]
        for shadow in route["shadows"]:
            test = shadow["quality"]
            show = _points if route["kind"] != "regression" else _signed
            ci = f"[{show(test['low'])}, {show(test['high'])}]"
            lines.append(
                f"  {shadow['shadow']:<20}{shadow['verdict']:<19}"
                f"{_pct(shadow['disagreement']['value']):>9}{_pct(shadow['accuracy']['value']):>9}"
                f"{show(test['advantage']):>10}{ci:>19}{_p(test['p_value']):>8}"
                f"{_ms(shadow['latency']['p99']):>8}{_pct(shadow['error_rate']):>8}"
            )
        for shadow in route["shadows"]:
            lines.append(f"  {shadow['shadow']}: {shadow['reason']}")
        for warning in route["diagnostics"]["warnings"]:
            lines.append(f"  warning: {warning}")
        lines.append("")
    if not report["routes"]:
        lines.append("no routes reported yet")
    return "\n".join(lines)

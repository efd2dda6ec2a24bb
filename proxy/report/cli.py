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
)
_QUERIES = {
    **{
        (family.name if family is names.ROUTE_INFO else family.total): ", ".join(family.labels)
        for family in _READ
    },
    names.UPSTREAM_DURATION.bucket: ", ".join((*names.UPSTREAM_DURATION.labels, "le")),
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


def prometheus_samples(url: str, timeout: float = 10.0) -> Samples:
    """The samples the report needs, from Prometheus's instant-query API, summed over
    replicas."""
    samples: list[tuple[str, dict[str, str], float]] = []
    for name, by in _QUERIES.items():
        query = urllib.parse.urlencode({"query": f"sum by ({by}) ({name})"})
        doc = _get_json(f"{url.rstrip('/')}/api/v1/query?{query}", timeout)
        if doc.get("status") != "success":
            raise RuntimeError(f"Prometheus query for {name} failed: {doc}")
        for series in doc["data"]["result"]:
            samples.append((name, dict(series["metric"]), float(series["value"][1])))
    return Samples(samples)


def report_from_prometheus(url: str, settings: VerdictConfig) -> Report:
    return build_report(prometheus_samples(url), settings, generated_at=time.time())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _points(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}"


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
            f"{'diff pts':>9}{'CI':>15}{'seq p':>8}{'p99 ms':>8}{'errors':>8}"
        )
        lines += [head, "  " + "-" * (len(head) - 2)]
        for shadow in route["shadows"]:
            paired = shadow["paired"]
            ci = f"[{_points(paired['low'])}, {_points(paired['high'])}]"
            p = paired["sequential_p"]
            if shadow["regression"] is not None:
                p = shadow["regression"]["sequential_p"]
            lines.append(
                f"  {shadow['shadow']:<20}{shadow['verdict']:<19}"
                f"{_pct(shadow['disagreement']['value']):>9}{_pct(shadow['accuracy']['value']):>9}"
                f"{_points(paired['difference']):>9}{ci:>15}{_p(p):>8}"
                f"{_ms(shadow['latency']['p99']):>8}{_pct(shadow['error_rate']):>8}"
            )
        for shadow in route["shadows"]:
            lines.append(f"  {shadow['shadow']}: {shadow['reason']}")
        lines.append("")
    if not report["routes"]:
        lines.append("no routes reported yet")
    return "\n".join(lines)

"""`shadow-proxy report`'s command line: its arguments and their checks, what --url refuses, and
the exit status (--fail-on). The fetching and the table are proxy.report.cli's."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from typing import Any, Final

from proxy.config import VerdictConfig, parse_fraction
from proxy.console import emit
from proxy.core.outcomes import Verdict

FAILED_VERDICT = 3
"""`report`'s exit status when a shadow's verdict is one of --fail-on's."""
_VERDICTS: Final = tuple(verdict.value for verdict in Verdict)
_PROMQL_DURATION: Final = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")


def _url_arg(text: str) -> str:
    from proxy.report.cli import base_url

    try:
        return base_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _alpha_arg(text: str) -> float:
    try:
        alpha = parse_fraction(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None
    if not 0 < alpha < 0.5:
        raise argparse.ArgumentTypeError(
            f"must be between 0 and 0.5, like 0.05 or 5% (got {text!r})"
        )
    return alpha


def _min_labels_arg(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (got {text!r})")
    return int(text)


def _since_arg(text: str) -> str:
    if _PROMQL_DURATION.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"expected a PromQL duration such as 30d, 12h or 1h30m (got {text!r})"
        )
    return text


def _verdicts_arg(text: str) -> list[str]:
    verdicts = [word.strip().lower() for word in text.split(",") if word.strip()]
    for verdict in verdicts:
        if verdict not in _VERDICTS:
            raise argparse.ArgumentTypeError(
                f"unknown verdict {verdict!r} (choose from {', '.join(_VERDICTS)})"
            )
    if not verdicts:
        raise argparse.ArgumentTypeError(f"name at least one of {', '.join(_VERDICTS)}")
    return verdicts


# What --url cannot take: the proxy computes its report with its own settings.
_PROMETHEUS_ONLY: Final = {
    "alpha": "--alpha applies with --prometheus only: with --url the proxy decides with its own"
    " verdict.alpha (the `verdict:` section of its config; the report's JSON shows it)",
    "min_labels": "--min-labels applies with --prometheus only: with --url the proxy decides with"
    " its own verdict.min_labels (the `verdict:` section of its config)",
    "since": "--since applies with --prometheus only: with --url the proxy counts everything since"
    " it started",
}


class _NotAReport(Exception):
    """An answer of another shape than a shadow-proxy report: where, in a few words."""


def run_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run `shadow-proxy report` as parsed by `add_report_parser`; its exit status."""
    if args.url:
        for option, message in _PROMETHEUS_ONLY.items():
            if getattr(args, option) is not None:
                parser.error(message)
    from proxy.report.cli import (
        ReportSourceError,
        fetch_report,
        format_table,
        report_from_prometheus,
    )

    source = f"{args.url}/report" if args.url else args.prometheus
    try:
        if args.url:
            doc = fetch_report(args.url)
        else:
            defaults = VerdictConfig()
            settings = replace(
                defaults,
                alpha=defaults.alpha if args.alpha is None else args.alpha,
                min_labels=defaults.min_labels if args.min_labels is None else args.min_labels,
            )
            doc = report_from_prometheus(args.prometheus, settings, args.since or "30d")
    except (ReportSourceError, ValueError, KeyError, TypeError, IndexError) as exc:
        print(f"shadow-proxy report: {exc}", file=sys.stderr)
        return 1
    except RecursionError:  # JSON nested deeper than Python reads
        print(
            f"shadow-proxy report: cannot read the report from {source}: its JSON is nested too"
            " deeply to read",
            file=sys.stderr,
        )
        return 1
    fail_on = {verdict for verdicts in args.fail_on or () for verdict in verdicts}
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    # fetch_report checks no more than 'routes': the rest of an answer of another shape (another
    # server on that port, another version) fails here, as it is read, before anything is printed.
    try:
        failing = [
            f"shadow-proxy report: {shadow['shadow']} on {route['route']} is {shadow['verdict']}"
            f" (--fail-on {','.join(sorted(fail_on))})"
            for route in _routes(doc)
            for shadow in route["shadows"]
            if shadow["verdict"] in fail_on
        ]
        text = json.dumps(doc, indent=2) if args.json else format_table(doc, color=color)
    except (
        _NotAReport,
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        RecursionError,
    ) as exc:
        print(
            f"shadow-proxy report: cannot read the report from {source}: not a shadow-proxy"
            f" report ({_shape_problem(exc)})",
            file=sys.stderr,
        )
        return 1
    code = emit(f"{text}\n", FAILED_VERDICT if failing else 0)
    for line in failing:
        print(line, file=sys.stderr)
    return code


def _routes(doc: Any) -> list[Any]:
    """The report's routes, their shadows checked as --fail-on reads them: _NotAReport naming
    the first route or shadow that is not an object with those keys."""
    routes: list[Any] = doc["routes"]
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            raise _NotAReport(f"routes[{i}] is not an object")
        _has(route, "route", str, f"routes[{i}]")
        _has(route, "shadows", list, f"routes[{i}]")
        for j, shadow in enumerate(route["shadows"]):
            if not isinstance(shadow, dict):
                raise _NotAReport(f"routes[{i}].shadows[{j}] is not an object")
            _has(shadow, "shadow", str, f"routes[{i}].shadows[{j}]")
            _has(shadow, "verdict", str, f"routes[{i}].shadows[{j}]")
    return routes


def _has(item: dict[str, Any], key: str, kind: type, where: str) -> None:
    if key not in item:
        raise _NotAReport(f"{where} has no {key!r}")
    if not isinstance(item[key], kind):
        what = "a string" if kind is str else "a list"
        raise _NotAReport(f"{where}.{key} is not {what}")


def _shape_problem(exc: Exception) -> str:
    """What an answer of another shape lacks, from what reading it raised."""
    if isinstance(exc, _NotAReport):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"a value of another type: {exc}"


_REPORT_EPILOG = f"""\
exit status:
  0  the report was printed
  1  it could not be had (one line on stderr names the URL fetched and why)
  2  a usage error
  {FAILED_VERDICT}  a shadow's verdict is one of --fail-on's (the report is printed first)

examples:
  shadow-proxy report --url 127.0.0.1:8080
  shadow-proxy report --url http://proxy:8080 --fail-on worse
  shadow-proxy report --prometheus http://prom:9090 --since 7d --fail-on worse,inconclusive
"""


def add_report_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `report` to the subcommands `commands` (argparse's add_subparsers())."""
    report: argparse.ArgumentParser = commands.add_parser(
        "report",
        help="print the verdicts: from a proxy, or fleet-wide from Prometheus",
        description="Print each route's verdicts as a table: from a proxy's /report (--url),\n"
        "or computed from Prometheus over every replica (--prometheus).\n"
        "Advantages are the shadow's over production: + = shadow better.",
        epilog=_REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--url",
        type=_url_arg,
        help="a proxy's base URL, e.g. http://proxy:8080 (http:// when no scheme is given)",
    )
    source.add_argument(
        "--prometheus",
        type=_url_arg,
        help="Prometheus's base URL: sums every replica, e.g. http://prom:9090",
    )
    report.add_argument("--json", action="store_true", help="print the JSON instead of a table")
    defaults = VerdictConfig()
    report.add_argument(
        "--alpha",
        type=_alpha_arg,
        help=f"with --prometheus: verdict.alpha, like 0.05 or 5%% (default {defaults.alpha});"
        " with --url the proxy's own applies",
    )
    report.add_argument(
        "--min-labels",
        type=_min_labels_arg,
        help=f"with --prometheus: verdict.min_labels (default {defaults.min_labels})",
    )
    report.add_argument(
        "--since",
        type=_since_arg,
        help="with --prometheus: the window counted, as a PromQL range (default 30d); restarts"
        " within it are counted across",
    )
    report.add_argument(
        "--fail-on",
        metavar="VERDICTS",
        type=_verdicts_arg,
        action="append",
        help=f"exit {FAILED_VERDICT} (after printing) when any shadow's verdict is one of these:"
        f" {', '.join(_VERDICTS)}; comma-separated or repeated, e.g. --fail-on worse or"
        " --fail-on worse,inconclusive",
    )
    return report

"""The command line: `shadow-proxy run`, `check-config` and `report`. Process concerns only:
argv, loading the config, logging, the event loop, signals."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Final

import uvloop
import yaml

from proxy import __version__
from proxy.config import (
    Config,
    ConfigError,
    VerdictConfig,
    config_hash,
    config_to_dict,
    config_warnings,
    load_config,
    parse_fraction,
)
from proxy.core.outcomes import Verdict
from proxy.logs import configure_logging
from proxy.processes.runtime import RuntimePaths
from proxy.supervisor import Supervisor
from proxy.validation import load_pickled, validate_in_child

log = logging.getLogger("proxy")

DEFAULT_CONFIG = "/etc/shadow-proxy/config.yaml"
CONFIG_ENV = "SHADOW_PROXY_CONFIG"


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"invalid config {path}:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return None


def _quiet_stdout() -> None:
    """The reader of stdout went away (`| head -1`): send what is left to /dev/null, so that
    neither this write nor the flush at exit ends in a BrokenPipeError traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _emit(text: str, code: int) -> int:
    """Print `text` and return `code`, the command's exit status, also when the reader stops
    early: `check-config ok.yaml | head -1` still says 0 (valid), even under `set -o pipefail`,
    where a SIGPIPE death (141) would fail the pipeline for a valid config."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    return code


def _check_config(path: str) -> int:
    config = _load(path)
    if config is None:
        return 1
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    dumped = yaml.safe_dump(config_to_dict(config, redact=True), sort_keys=False)
    return _emit(f"# {path}: valid, hash {config_hash(config)}\n{dumped}", 0)


def _check(path: str, out: str, workers: int) -> list[str]:
    """The supervisor's check at start-up, in a child process under time and memory limits:
    the errors of the config at `path`, or none and the validated config left at `out`."""
    try:
        config = validate_in_child(path, out)
    except ConfigError as exc:
        return list(exc.errors)
    configure_logging(config.log_level)
    for warning in config_warnings(config):
        log.warning(warning)
    errors = []
    if workers > 1:
        for key, port in (
            ("listen", config.listen_port),
            ("admin.listen", config.admin.listen and config.admin.listen[1]),
            ("metrics.listen", config.metrics.listen and config.metrics.listen[1]),
        ):
            if port == 0:
                errors.append(f"{path}: {key}: --workers needs a fixed port, not 0")
    return errors


def _run(path: str, workers: int) -> int:
    """The supervisor: validates the config, then runs the analysis process and the fronts."""
    return Supervisor(path, workers, partial(_check, workers=workers)).run()


def _run_role(role: str, runtime_dir: str) -> int:
    """One of the supervisor's processes, from the config it validated (never from YAML)."""
    config = load_pickled(RuntimePaths(runtime_dir).config)
    configure_logging(config.log_level)
    # Imported by role: a front never loads aiohttp, the stores or the report (memory).
    if role == "front":
        from proxy.processes.front import serve_front

        uvloop.run(serve_front(config, runtime_dir, reuse_port=True))
    else:
        from proxy.processes.analysis import serve_analysis

        uvloop.run(serve_analysis(config, runtime_dir))
    return 0


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


def _report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
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
    fail_on = {verdict for verdicts in args.fail_on or () for verdict in verdicts}
    failing = [
        f"shadow-proxy report: {shadow['shadow']} on {route['route']} is {shadow['verdict']}"
        f" (--fail-on {','.join(sorted(fail_on))})"
        for route in doc["routes"]
        for shadow in route["shadows"]
        if shadow["verdict"] in fail_on
    ]
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    text = json.dumps(doc, indent=2) if args.json else format_table(doc, color=color)
    code = _emit(f"{text}\n", FAILED_VERDICT if failing else 0)
    for line in failing:
        print(line, file=sys.stderr)
    return code


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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # --help, or a usage message, into `| head`: nothing left to say
        _quiet_stdout()
        return 0


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="shadow-proxy",
        description="Tee prediction traffic to shadow models and measure them against production.",
    )
    parser.add_argument("--version", action="version", version=f"shadow-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the proxy")
    run.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV, DEFAULT_CONFIG),
        help=f"YAML config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SHADOW_PROXY_WORKERS", "1")),
        help="worker processes sharing the port (SO_REUSEPORT); default 1 or $SHADOW_PROXY_WORKERS",
    )
    run.add_argument(
        "--reuse-port",
        action="store_true",
        help="accepted for compatibility: the front processes always bind with SO_REUSEPORT",
    )
    # The supervisor's own: which process to be, and where the validated config is.
    run.add_argument("--role", choices=("front", "analysis"), help=argparse.SUPPRESS)
    run.add_argument("--runtime-dir", help=argparse.SUPPRESS)
    check = commands.add_parser(
        "check-config", help="validate a config file and print the effective config"
    )
    check.add_argument("config", help="YAML config file")
    report = commands.add_parser(
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
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "report":
        return _report(args, report)
    if args.role is not None:
        if args.runtime_dir is None:
            parser.error("--role needs --runtime-dir")
        return _run_role(args.role, args.runtime_dir)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1 (got {args.workers})")
    return _run(args.config, args.workers)


if __name__ == "__main__":
    sys.exit(main())

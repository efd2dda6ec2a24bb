"""The command line: `shadow-proxy run`, `check-config` and `report`. Process concerns only:
argv, loading the config, logging, the event loop, signals."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial

import uvloop
import yaml

from proxy import __version__
from proxy.capture.export import add_capture_parser, run_capture
from proxy.capture.replay import add_replay_parser, run_replay
from proxy.config import (
    Config,
    ConfigError,
    config_hash,
    config_to_dict,
    config_warnings,
    load_config,
)
from proxy.console import emit, quiet_stdout
from proxy.logs import configure_logging
from proxy.processes.runtime import RuntimePaths
from proxy.report.command import add_report_parser, run_report
from proxy.supervisor import Supervisor
from proxy.validation import load_pickled, validate_in_child

log = logging.getLogger("proxy")

DEFAULT_CONFIG = "/etc/shadow-proxy/config.yaml"
CONFIG_ENV = "SHADOW_PROXY_CONFIG"
WORKERS_ENV = "SHADOW_PROXY_WORKERS"


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"invalid config {path}:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return None


def _check_config(path: str) -> int:
    config = _load(path)
    if config is None:
        return 1
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    dumped = yaml.safe_dump(config_to_dict(config, redact=True), sort_keys=False)
    return emit(f"# {path}: valid, hash {config_hash(config)}\n{dumped}", 0)


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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # --help, or a usage message, into `| head`: nothing left to say
        quiet_stdout()
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
    # No default here: $SHADOW_PROXY_WORKERS is read by `run` alone (_workers), so that a bad
    # value is `run`'s usage error, not every subcommand's traceback while the parser is built.
    run.add_argument(
        "--workers",
        type=int,
        help=f"worker processes sharing the port (SO_REUSEPORT); default ${WORKERS_ENV}, else 1",
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
    report = add_report_parser(commands)
    capture = add_capture_parser(commands)
    add_replay_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "report":
        return run_report(args, report)
    if args.command == "capture":
        return run_capture(args, capture)
    if args.command == "replay":
        return run_replay(args)
    if args.role is not None:
        if args.runtime_dir is None:
            parser.error("--role needs --runtime-dir")
        return _run_role(args.role, args.runtime_dir)
    return _run(args.config, _workers(args.workers, run))


def _workers(given: int | None, run: argparse.ArgumentParser) -> int:
    """--workers, else $SHADOW_PROXY_WORKERS, else 1; a usage error (exit 2) naming the option
    or the variable when it is not a whole number of at least 1."""
    if given is not None:
        if given < 1:
            run.error(f"--workers must be at least 1 (got {given})")
        return given
    text = os.environ.get(WORKERS_ENV)
    if text is None:
        return 1
    try:
        workers = int(text)
    except ValueError:
        workers = 0
    if workers < 1:
        run.error(f"${WORKERS_ENV} must be a whole number of at least 1 (got {text!r})")
    return workers


if __name__ == "__main__":
    sys.exit(main())

"""The command line: `shadow-proxy run`, `check-config` and `report`. Process concerns only:
argv, loading the config, logging, the event loop, signals."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

import uvloop
import yaml

from proxy import __version__
from proxy.analysis.app import build_app, start_listeners
from proxy.analysis.reload import reload_config, reload_overrides
from proxy.analysis.state import STATE, ProxyState
from proxy.config import (
    Config,
    ConfigError,
    VerdictConfig,
    config_hash,
    config_to_dict,
    config_warnings,
    load_config,
)
from proxy.logs import configure_logging
from proxy.report.cli import fetch_report, format_table, report_from_prometheus
from proxy.supervisor import Supervisor

log = logging.getLogger("proxy")

DEFAULT_CONFIG = "/etc/shadow-proxy/config.yaml"
CONFIG_ENV = "SHADOW_PROXY_CONFIG"


async def serve(config: Config, *, reuse_port: bool = False) -> None:
    """Serve `config` until SIGTERM or SIGINT, then shut down gracefully: stop accepting,
    finish in-flight production requests (shutdown_timeout), drain shadows (shadow_drain_timeout).
    SIGHUP reloads the config file.
    """
    app = build_app(config)
    serving = await start_listeners(app, reuse_port=reuse_port)
    state = app[STATE]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[object]] = set()

    def run(job: Callable[[ProxyState], Coroutine[Any, Any, object]]) -> None:
        task = asyncio.create_task(job(state), name=job.__name__)
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, run, reload_config)
    # --workers: another worker's admin API changed the shared overrides.
    loop.add_signal_handler(signal.SIGUSR1, run, reload_overrides)
    # A worker starts with them blocked (supervisor.py): what came meanwhile is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP, signal.SIGUSR1})
    log.info(
        "listening",
        extra={
            # The proxy's own; then every listener by name (metrics, admin when apart).
            "addresses": serving.addresses["proxy"],
            "listeners": serving.addresses,
            "config": config.source,
            "config_hash": config_hash(config),
            "version": __version__,
            "pid": os.getpid(),
        },
    )
    await stop.wait()
    log.info("shutting down", extra={"shutdown_timeout": config.shutdown_timeout})
    await asyncio.gather(*reloads)
    await serving.stop()
    log.info("stopped")


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
    print(f"# {path}: valid, hash {config_hash(config)}")
    print(yaml.safe_dump(config_to_dict(config, redact=True), sort_keys=False), end="")
    return 0


def _run(path: str, workers: int, reuse_port: bool) -> int:
    config = _load(path)
    if config is None:
        return 1
    configure_logging(config.log_level)
    for warning in config_warnings(config):
        log.warning(warning)
    if workers > 1:
        for key, port in (
            ("listen", config.listen_port),
            ("admin.listen", config.admin.listen and config.admin.listen[1]),
            ("metrics.listen", config.metrics.listen and config.metrics.listen[1]),
        ):
            if port == 0:
                print(f"{path}: {key}: --workers needs a fixed port, not 0", file=sys.stderr)
                return 1
        return Supervisor(path, workers).run()
    uvloop.run(serve(config, reuse_port=reuse_port))
    return 0


def _report(args: argparse.Namespace) -> int:
    try:
        if args.url:
            doc = fetch_report(args.url)
        else:
            settings = replace(VerdictConfig(), alpha=args.alpha, min_labels=args.min_labels)
            doc = report_from_prometheus(args.prometheus, settings)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"cannot get the report: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else format_table(doc))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
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
        help="bind with SO_REUSEPORT, so that several processes can share the port",
    )
    check = commands.add_parser(
        "check-config", help="validate a config file and print the effective config"
    )
    check.add_argument("config", help="YAML config file")
    report = commands.add_parser(
        "report", help="print the verdicts: from a proxy, or fleet-wide from Prometheus"
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="a proxy's base URL, e.g. http://proxy:8080")
    source.add_argument(
        "--prometheus", help="Prometheus's base URL: sums every replica, e.g. http://prom:9090"
    )
    report.add_argument("--json", action="store_true", help="print the JSON instead of a table")
    defaults = VerdictConfig()
    report.add_argument("--alpha", type=float, default=defaults.alpha, help="with --prometheus")
    report.add_argument(
        "--min-labels", type=int, default=defaults.min_labels, help="with --prometheus"
    )
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "report":
        return _report(args)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1 (got {args.workers})")
    return _run(args.config, args.workers, args.reuse_port)


if __name__ == "__main__":
    sys.exit(main())

"""The operations artifacts: the Prometheus alerts (checked and unit-tested by promtool) and the
compose stack, held to the metric names the proxy exports. The Grafana dashboard's tests are in
test_dashboard.py; the helpers here (promtool, the metric-name check) serve both."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, ProcessCollector

from proxy.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / "configs" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yaml"
COMPOSE = REPO / "configs" / "compose"

METRIC_NAME = re.compile(r"shadowproxy_[a-z_]+")
# The standard process collector's series (process_cpu_seconds_total, ...) of the process that
# serves /metrics, and Prometheus's own `up`: the only other names a query may use.
OTHER_NAME = re.compile(r"(?<![\w:])process_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, (
        "promtool is not on PATH: the test command (bash .ci/test) installs Debian's prometheus"
        " package, which provides it (apt-get install prometheus)"
    )
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )


def exported_names() -> tuple[set[str], set[str]]:
    """The names a query may use (counters as `<name>_total`, gauges and histogram families by
    their name), and the histogram families, whose `_bucket`, `_sum` and `_count` series a query
    uses instead."""
    names: set[str] = set()
    histograms: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        # Labelled families have no samples until bound; unlabelled ones show their series.
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
        if family.type == "histogram":
            histograms.add(family.name)
    return names, histograms


def process_names() -> set[str]:
    """The standard process collector's sample names (process_cpu_seconds_total, ...)."""
    collector = ProcessCollector(registry=None)
    return {sample.name for family in collector.collect() for sample in family.samples}


def unknown_metric_names(text: str) -> set[str]:
    """The names in a query (or a file of them) that nothing exports: `shadowproxy_*` ones
    against the proxy's registry, `process_*` ones against the process collector's."""
    names, histograms = exported_names()
    unknown = set()
    for used in METRIC_NAME.findall(text):
        for suffix in HISTOGRAM_SUFFIXES:
            if used.endswith(suffix) and used.removesuffix(suffix) in histograms:
                used = used.removesuffix(suffix)
                break
        if used not in names:
            unknown.add(used)
    return unknown | (set(OTHER_NAME.findall(text)) - process_names())


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    (group,) = load_yaml(ALERTS)["groups"]
    assert group["name"] == "shadow-proxy"
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def promtool_output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, promtool_output(done)
    assert "SUCCESS" in promtool_output(done)


def test_promtool_accepts_the_prometheus_config_and_its_rule_files() -> None:
    done = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0, promtool_output(done)
    assert "SUCCESS: 1 rule files found" in promtool_output(done)


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = promtool("test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, promtool_output(done)
    assert "SUCCESS" in promtool_output(done)


def test_the_name_check_tells_exported_names_from_others() -> None:
    exported = [
        "shadowproxy_upstream_requests_total",
        "shadowproxy_verdict",
        "shadowproxy_labels_received_total",
        "shadowproxy_upstream_request_duration_seconds_bucket",
        "shadowproxy_absolute_error_sum",
        "shadowproxy_http_request_duration_seconds_bucket",
        "shadowproxy_process_cpu_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ]
    assert unknown_metric_names(" ".join(exported)) == set()
    # A counter is only ever its _total series, and only histograms have buckets.
    others = {
        "shadowproxy_upstream_requests",
        "shadowproxy_verdict_bucket",
        "shadowproxy_no_such_thing",
        "shadowproxy_store_max_bytes_total",
        "process_cpu_seconds",
        "process_no_such_thing",
    }
    assert unknown_metric_names(" ".join(sorted(others))) == others


def test_alerts_use_only_exported_metric_names() -> None:
    text = ALERTS.read_text()
    assert len(set(METRIC_NAME.findall(text))) >= 10
    assert unknown_metric_names(text) == set()


def scrape_job() -> str:
    (job,) = load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]
    name: str = job["job_name"]
    return name


def test_the_scrape_alerts_select_the_scrape_job_of_prometheus_yml() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    selector = f'up{{job="{scrape_job()}"}}'
    assert rules["ShadowProxyDown"]["expr"].strip() == f"{selector} == 0"
    assert rules["ShadowProxyNotScraped"]["expr"].strip() == f"absent({selector})"
    # And the tests feed them that job's targets.
    assert f'up{{job="{scrape_job()}", instance=' in ALERTS_TEST.read_text()


def test_every_alert_has_a_window_a_severity_and_annotations() -> None:
    for rule in alert_rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert "$value" in rule["annotations"]["description"], rule["alert"]


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in load_yaml(ALERTS_TEST)["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(names) <= firing, "alerts with no test where they fire"
    assert set(names) <= quiet, "alerts with no test where they must not fire"
    assert firing | quiet <= set(names), "tests of alerts that do not exist"


def test_compose_proxy_config_is_valid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(COMPOSE / "proxy.yaml")],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LABEL_TOKEN": "test-token"},
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "backend: redis" in done.stdout


@pytest.mark.parametrize("service", ["proxy", "prometheus", "grafana"])
def test_compose_mounts_files_that_exist(service: str) -> None:
    volumes = load_yaml(COMPOSE / "docker-compose.yaml")["services"][service]["volumes"]
    sources = [v.split(":")[0] for v in volumes if v.startswith(".")]
    assert sources
    for source in sources:
        assert (COMPOSE / source).exists(), source


def test_compose_model_servers_build_the_dockerfile_models_stage() -> None:
    services = load_yaml(COMPOSE / "docker-compose.yaml")["services"]
    stages = re.findall(r"^FROM \S+(?: AS (\S+))?$", (REPO / "Dockerfile").read_text(), re.M)
    assert "models" in stages
    assert stages[-1] == "", "the last stage, the default target, must stay the proxy"
    assert "target" not in services["proxy"]["build"]
    for name in ("model-prod", "model-candidate"):
        build = services[name]["build"]
        assert build["target"] == "models"
        assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"
        assert services[name]["command"][:3] == ["python", "-m", "loadtest.model_server"]

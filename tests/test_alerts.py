"""The operations artifacts: the Prometheus alerts (checked and unit-tested by promtool), the
Grafana dashboard and the compose stack, each held to the metric names the proxy exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from proxy.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / "configs" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yaml"
DASHBOARD = REPO / "configs" / "grafana" / "shadow-proxy.json"
COMPOSE = REPO / "configs" / "compose"

METRIC_NAME = re.compile(r"shadowproxy_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


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


def unknown_metric_names(text: str) -> set[str]:
    names, histograms = exported_names()
    unknown = set()
    for used in METRIC_NAME.findall(text):
        for suffix in HISTOGRAM_SUFFIXES:
            if used.endswith(suffix) and used.removesuffix(suffix) in histograms:
                used = used.removesuffix(suffix)
                break
        if used not in names:
            unknown.add(used)
    return unknown


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
    ]
    assert unknown_metric_names(" ".join(exported)) == set()
    # A counter is only ever its _total series, and only histograms have buckets.
    others = {
        "shadowproxy_upstream_requests",
        "shadowproxy_verdict_bucket",
        "shadowproxy_no_such_thing",
    }
    assert unknown_metric_names(" ".join(sorted(others))) == others


def test_alerts_use_only_exported_metric_names() -> None:
    text = ALERTS.read_text()
    assert len(set(METRIC_NAME.findall(text))) >= 10
    assert unknown_metric_names(text) == set()


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


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_dashboard_queries_use_only_exported_metric_names() -> None:
    doc = dashboard()
    exprs = [obj["expr"] for obj in walk(doc["panels"]) if "expr" in obj]
    queries = [v["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) >= 20
    assert len(queries) == 2
    for expr in exprs + queries:
        assert METRIC_NAME.search(expr), expr
        assert unknown_metric_names(expr) == set(), expr


def test_dashboard_is_provisionable_and_every_panel_uses_the_datasource_variable() -> None:
    doc = dashboard()
    assert doc["uid"] == "shadow-proxy"
    assert doc["id"] is None
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, metric in (
        ("route", "shadowproxy_route_info"),
        ("shadow", "shadowproxy_shadow_enqueued"),
    ):
        assert variables[name]["type"] == "query"
        assert variables[name]["query"].startswith(f"label_values({metric}")
        assert variables[name]["multi"] is True
        assert variables[name]["includeAll"] is True
        assert variables[name]["datasource"] == DATASOURCE
    panels = doc["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == DATASOURCE, panel["title"]
    (verdict,) = [p for p in panels if p["title"] == "Verdict"]
    assert verdict["type"] == "stat"
    (mapping,) = verdict["fieldConfig"]["defaults"]["mappings"]
    texts = {value: option["text"] for value, option in mapping["options"].items()}
    # Every state of the verdict gauge (proxy.core.outcomes.Verdict.gauge), by its value.
    assert texts == {
        "1": "better",
        "0.5": "equivalent",
        "0": "inconclusive",
        "-0.5": "insufficient data",
        "-1": "worse",
    }
    from proxy.core.outcomes import Verdict

    assert {f"{v.gauge:g}" for v in Verdict} == set(texts)


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

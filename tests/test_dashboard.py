"""The Grafana dashboard (configs/grafana/shadow-proxy.json): provisionable as it is, every query
parsed by promtool, held to the metric names the proxy exports, scoped by the $job and
$namespace variables, one verdict expression with the alerts, one unit per panel, and its key
queries evaluated by promtool on the series a proxy exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from proxy.core.outcomes import Verdict
from tests.test_alerts import (
    METRIC_NAME,
    REPO,
    alert_rules,
    promtool,
    promtool_output,
    unknown_metric_names,
)

DASHBOARD = REPO / "configs" / "grafana" / "shadow-proxy.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# A series a query selects: a metric name, and its label matchers if it has any.
SERIES = re.compile(r"(?<![\w:\"])((?:shadowproxy|process)_[a-z_]+|up)\b(\s*\{[^}]*\})?")
SCOPE = ('job=~"$job"', 'namespace=~"$namespace"')
# The variables as Grafana fills them in: one job, and "All" (.*) for the rest.
FILLED = {
    "__rate_interval": "5m",
    "job": "shadow-proxy",
    "namespace": ".*",
    "route": ".*",
    "shadow": ".*",
}


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


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def panel(title: str) -> dict[str, Any]:
    (found,) = [p for p in panels() if p["title"] == title]
    return found


def exprs() -> list[str]:
    return [obj["expr"] for obj in walk(dashboard()["panels"]) if "expr" in obj]


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def filled(expr: str) -> str:
    """The query as Grafana sends it, its variables filled in (FILLED)."""
    done = re.sub(r"\$(\w+)", lambda m: FILLED[m.group(1)], expr)
    assert "$" not in done, done
    return done


def expr_of(title: str, ref: str = "A") -> str:
    (target,) = [t for t in panel(title)["targets"] if t["refId"] == ref]
    expr: str = target["expr"]
    return filled(expr)


def test_dashboard_is_provisionable_and_every_panel_uses_the_datasource_variable() -> None:
    doc = dashboard()
    assert doc["uid"] == "shadow-proxy"
    assert doc["id"] is None
    assert variables()["datasource"]["type"] == "datasource"
    assert variables()["datasource"]["query"] == "prometheus"
    every = doc["panels"]
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    for each in every:
        assert each["datasource"] == DATASOURCE, each["title"]
        for target in each.get("targets", []):
            assert target["datasource"] == DATASOURCE, each["title"]
    verdict = panel("Verdict")
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
    assert {f"{v.gauge:g}" for v in Verdict} == set(texts)


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for each in dashboard()["panels"]:
        pos = each["gridPos"]
        assert pos["x"] >= 0, each["title"]
        assert pos["x"] + pos["w"] <= 24, each["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, each["title"]
        taken |= cells


def test_the_variables_narrow_namespace_job_route_then_shadow() -> None:
    found = variables()
    assert list(found) == ["datasource", "namespace", "job", "route", "shadow"]
    # The namespace label may be absent (outside Kubernetes): All is .*, which matches that.
    namespace = found["namespace"]
    assert namespace["query"] == "label_values(shadowproxy_route_info, namespace)"
    assert namespace["includeAll"] is True
    assert namespace["allValue"] == ".*"
    # One deployment (scrape job) at a time: its routes and shadows are summed over replicas.
    job = found["job"]
    assert job["query"] == 'label_values(shadowproxy_route_info{namespace=~"$namespace"}, job)'
    assert job["multi"] is False
    assert job["includeAll"] is False
    for name, metric in (
        ("route", "shadowproxy_route_info"),
        ("shadow", "shadowproxy_shadow_info"),
    ):
        assert found[name]["query"].startswith(f"label_values({metric}{{"), name
        assert found[name]["multi"] is True
        assert found[name]["includeAll"] is True
        assert found[name]["allValue"] == ".*"
    assert 'route=~"$route"' in found["shadow"]["query"]
    for each in found.values():
        if each["type"] == "query":
            assert each["datasource"] == DATASOURCE, each["name"]
            assert each["definition"] == each["query"], each["name"]


def test_dashboard_queries_use_only_exported_metric_names() -> None:
    queries = [v["query"] for v in variables().values() if v["type"] == "query"]
    assert len(exprs()) >= 40
    assert len(queries) == 4
    for expr in exprs() + queries:
        assert SERIES.search(expr), expr
        assert unknown_metric_names(expr) == set(), expr


def test_every_query_selects_the_job_and_namespace() -> None:
    """Every series of every panel's query, and the route and shadow variables', is narrowed
    to the chosen scrape job and namespace."""
    scoped = exprs() + [variables()[name]["query"] for name in ("route", "shadow")]
    assert 'namespace=~"$namespace"' in variables()["job"]["query"]
    for expr in scoped:
        found = SERIES.findall(expr)
        assert found, expr
        for name, matchers in found:
            for matcher in SCOPE:
                assert matcher in matchers, f"{name} without {matcher} in: {expr}"


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    every = exprs()
    rules = [
        {"record": f"dashboard:query_{number}", "expr": filled(expr)}
        for number, expr in enumerate(every)
    ]
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, promtool_output(done)
    assert f"SUCCESS: {len(every)} rules found" in promtool_output(done)


def without_selectors(expr: str) -> str:
    return re.sub(r"\s+", "", re.sub(r"\{[^}]*\}", "", expr))


def test_the_verdict_panel_and_the_alert_use_one_expression() -> None:
    (target,) = panel("Verdict")["targets"]
    (worse,) = [r for r in alert_rules() if r["alert"] == "ShadowProxyShadowWorse"]
    verdict = without_selectors(target["expr"])
    assert without_selectors(worse["expr"]) == f"({verdict})==-1"
    assert verdict.startswith("maxby(job,route,shadow)(shadowproxy_fleet_verdict)or")


def test_units_are_one_per_panel_points_for_accuracy_and_target_units_for_regression() -> None:
    """Accuracy differences in percentage points, regression advantages in the target's units,
    never both in one panel; every advantage positive when the shadow is better."""
    advantage = [p for p in panels() if "verdict_difference" in json.dumps(p["targets"])]
    assert len(advantage) == 2
    for each in advantage:
        text = " ".join(t["expr"] for t in each["targets"])
        assert "> 0: shadow better" in each["title"]
        classification = 'kind!="regression"' in text
        regression = 'kind="regression"' in text
        assert classification != regression, each["title"]
        unit = each["fieldConfig"]["defaults"]["unit"]
        if classification:
            assert unit == "suffix: pp"
            assert all(t["expr"].startswith("100 * (") for t in each["targets"])
        else:
            assert unit == "none"
            assert "100 *" not in text
    for each in panels():
        if each["fieldConfig"]["defaults"].get("unit") == "percentunit":
            assert "100 *" not in json.dumps(each["targets"]), each["title"]
    # Accuracy means nothing on regression routes: they are left out.
    accuracy = panel("Accuracy per model, classification (last hour)")
    assert 'kind!="regression"' in accuracy["targets"][0]["expr"]


# What two replicas (a, b) of job shadow-proxy export, one line a series (job="shadow-proxy"
# unless it says otherwise), one sample a minute for 80 minutes.
EXPORTED = """
# Three live routes, one of each kind; /gone was removed by a reload (0).
shadowproxy_route_info{instance="a", route="/cls", kind="classification", production="p"} 1x80
shadowproxy_route_info{instance="b", route="/cls", kind="classification", production="p"} 1x80
shadowproxy_route_info{instance="a", route="/prob", kind="probabilities", production="p"} 1x80
shadowproxy_route_info{instance="a", route="/reg", kind="regression", production="p"} 1x80
shadowproxy_route_info{instance="a", route="/gone", kind="classification", production="p"} 0x80

# The verdict: /cls s1's fleet verdict (better) outranks both replicas' own (worse); s2's
# replicas agree (equivalent); s3's do not (inconclusive); /reg s1 has one replica (worse).
# Another job's verdict does not count.
shadowproxy_fleet_verdict{instance="a", route="/cls", shadow="s1"} 1x80
shadowproxy_fleet_verdict{instance="b", route="/cls", shadow="s1"} 1x80
shadowproxy_verdict{instance="a", route="/cls", shadow="s1"} -1x80
shadowproxy_verdict{instance="b", route="/cls", shadow="s1"} -1x80
shadowproxy_verdict{instance="a", route="/cls", shadow="s2"} 0.5x80
shadowproxy_verdict{instance="b", route="/cls", shadow="s2"} 0.5x80
shadowproxy_verdict{instance="a", route="/cls", shadow="s3"} 1x80
shadowproxy_verdict{instance="b", route="/cls", shadow="s3"} -0.5x80
shadowproxy_verdict{instance="a", route="/reg", shadow="s1"} -1x80
shadowproxy_verdict{job="other", instance="c", route="/cls", shadow="s4"} 1x80

# The advantage's interval: the fleet's for /cls s1 (accuracy, as a fraction), none yet for
# s2 (infinite), the replicas' own for /reg s1 (the target's units); /gone is gone.
shadowproxy_fleet_verdict_difference_lower{instance="a", route="/cls", shadow="s1"} 0.125x80
shadowproxy_fleet_verdict_difference_upper{instance="a", route="/cls", shadow="s1"} 0.25x80
shadowproxy_verdict_difference_lower{instance="a", route="/cls", shadow="s1"} -0.5x80
shadowproxy_verdict_difference_lower{instance="a", route="/cls", shadow="s2"} -Infx80
shadowproxy_verdict_difference_upper{instance="a", route="/cls", shadow="s2"} +Infx80
shadowproxy_verdict_difference_lower{instance="a", route="/reg", shadow="s1"} -0.5x80
shadowproxy_verdict_difference_lower{instance="b", route="/reg", shadow="s1"} -0.25x80
shadowproxy_verdict_difference_upper{instance="a", route="/reg", shadow="s1"} 0.25x80
shadowproxy_verdict_difference_upper{instance="b", route="/reg", shadow="s1"} 0.125x80
shadowproxy_verdict_difference_lower{instance="a", route="/gone", shadow="s1"} 0.125x80

# Accuracy, per minute correct of labelled: 3/4, 1/2 and 7/8. The regression route counts no
# correct instance (0%, which the panel must not show), and /gone is gone.
shadowproxy_correct_instances_total{route="/cls", model="p", role="production"} 0+3x80
shadowproxy_labelled_instances_total{route="/cls", model="p", role="production"} 0+4x80
shadowproxy_correct_instances_total{route="/cls", model="s1", role="shadow"} 0+1x80
shadowproxy_labelled_instances_total{route="/cls", model="s1", role="shadow"} 0+2x80
shadowproxy_correct_instances_total{route="/prob", model="p", role="production"} 0+7x80
shadowproxy_labelled_instances_total{route="/prob", model="p", role="production"} 0+8x80
shadowproxy_correct_instances_total{route="/reg", model="p", role="production"} 0x80
shadowproxy_labelled_instances_total{route="/reg", model="p", role="production"} 0+4x80
shadowproxy_correct_instances_total{route="/gone", model="p", role="production"} 0+1x80
shadowproxy_labelled_instances_total{route="/gone", model="p", role="production"} 0+1x80

# Regression errors, only on /reg: per minute, the absolute errors' sum and count, and the
# squared errors' sum. p: MAE 20/8, RMSE sqrt(72/8); s1: MAE 1, RMSE 1.
shadowproxy_absolute_error_sum{route="/reg", model="p", role="production"} 0+20x80
shadowproxy_absolute_error_count{route="/reg", model="p", role="production"} 0+8x80
shadowproxy_squared_error_total{route="/reg", model="p", role="production"} 0+72x80
shadowproxy_absolute_error_sum{route="/reg", model="s1", role="shadow"} 0+8x80
shadowproxy_absolute_error_count{route="/reg", model="s1", role="shadow"} 0+8x80
shadowproxy_squared_error_total{route="/reg", model="s1", role="shadow"} 0+8x80

# Client requests: 1/s matched no route (404), 2/s answered 200 on /cls; another job's.
shadowproxy_http_requests_total{instance="a", route="", code="404"} 0+60x80
shadowproxy_http_requests_total{instance="a", route="/cls", code="200"} 0+120x80
shadowproxy_http_requests_total{job="other", instance="c", route="/cls", code="500"} 0+60x80

# The store: a at 75% of max_disk and 50% of max_records; b has neither bound (0).
shadowproxy_store_file_bytes{instance="a", file="database"} 750x80
shadowproxy_store_file_bytes{instance="a", file="wal"} 100x80
shadowproxy_store_max_bytes{instance="a"} 1000x80
shadowproxy_store_records{instance="a"} 500x80
shadowproxy_store_max_records{instance="a"} 1000x80
shadowproxy_store_file_bytes{instance="b", file="database"} 5000x80
shadowproxy_store_max_bytes{instance="b"} 0x80
shadowproxy_store_records{instance="b"} 10x80
shadowproxy_store_max_records{instance="b"} 0x80

# Scrapes: both replicas up; another job's target down.
up{instance="a"} 1x80
up{instance="b"} 1x80
up{job="other", instance="c"} 0x80
"""


def exported() -> list[dict[str, str]]:
    """EXPORTED as promtool's input series."""
    found = []
    for line in EXPORTED.splitlines():
        if not line or line.startswith("#"):
            continue
        selector, values = line.rsplit(" ", 1)
        if "job=" not in selector:
            selector = selector.replace("{", '{job="shadow-proxy", ', 1)
        infinite = re.fullmatch(r"([+-]Inf)x(\d+)", values)  # promtool has no "Infx80"
        if infinite:
            values = " ".join([infinite.group(1)] * (int(infinite.group(2)) + 1))
        found.append({"series": selector, "values": values})
    return found


def sample(value: float, **labels: str) -> dict[str, Any]:
    text = ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return {"labels": f"{{{text}}}", "value": value}


def test_the_key_queries_give_what_their_panels_say(tmp_path: Path) -> None:
    """promtool evaluates the panels' queries on EXPORTED, the variables filled in as Grafana
    does with job shadow-proxy chosen and All for the rest."""
    job = "shadow-proxy"
    cases: list[tuple[str, str, list[dict[str, Any]]]] = [
        (
            "Verdict",
            "A",
            [
                sample(1, job=job, route="/cls", shadow="s1"),
                sample(0.5, job=job, route="/cls", shadow="s2"),
                sample(0, job=job, route="/cls", shadow="s3"),
                sample(-1, job=job, route="/reg", shadow="s1"),
            ],
        ),
        (
            "Shadow's accuracy advantage, in points (> 0: shadow better)",
            "A",
            [sample(12.5, route="/cls", shadow="s1")],
        ),
        (
            "Shadow's accuracy advantage, in points (> 0: shadow better)",
            "B",
            [sample(25, route="/cls", shadow="s1")],
        ),
        (
            "Shadow's MAE advantage, regression, in the target's units (> 0: shadow better)",
            "A",
            [sample(-0.5, route="/reg", shadow="s1")],
        ),
        (
            "Shadow's MAE advantage, regression, in the target's units (> 0: shadow better)",
            "B",
            [sample(0.25, route="/reg", shadow="s1")],
        ),
        (
            "Accuracy per model, classification (last hour)",
            "A",
            [
                sample(0.75, route="/cls", model="p", role="production"),
                sample(0.5, route="/cls", model="s1", role="shadow"),
                sample(0.875, route="/prob", model="p", role="production"),
            ],
        ),
        (
            "Error per model, regression (last hour; lower is better)",
            "A",
            [
                sample(2.5, route="/reg", model="p", role="production"),
                sample(1, route="/reg", model="s1", role="shadow"),
            ],
        ),
        (
            "Error per model, regression (last hour; lower is better)",
            "B",
            [
                sample(3, route="/reg", model="p", role="production"),
                sample(1, route="/reg", model="s1", role="shadow"),
            ],
        ),
        (
            "Client requests by status code",
            "A",
            [sample(1, route="(no route)", code="404"), sample(2, route="/cls", code="200")],
        ),
        (
            "Store fill: database vs store.max_disk, records vs store.max_records",
            "A",
            [sample(0.75, instance="a")],
        ),
        (
            "Store fill: database vs store.max_disk, records vs store.max_records",
            "B",
            [sample(0.5, instance="a")],
        ),
        (
            "Scrape up",
            "A",
            [
                sample(1, __name__="up", job=job, instance="a"),
                sample(1, __name__="up", job=job, instance="b"),
            ],
        ),
    ]
    tests = [
        {"expr": expr_of(title, ref), "eval_time": "70m", "exp_samples": expected}
        for title, ref, expected in cases
    ]
    (tmp_path / "test.yaml").write_text(
        yaml.safe_dump(
            {
                "evaluation_interval": "1m",
                "tests": [
                    {"interval": "1m", "input_series": exported(), "promql_expr_test": tests}
                ],
            },
            width=1000,
        )
    )
    done = promtool("test", "rules", str(tmp_path / "test.yaml"))
    assert done.returncode == 0, promtool_output(done)
    assert "SUCCESS" in promtool_output(done)


def test_the_metric_name_pattern_sees_every_series() -> None:
    """SERIES finds what METRIC_NAME finds, and the other names (process_*, up) besides."""
    for expr in exprs():
        names = {name for name, _ in SERIES.findall(expr)}
        assert set(METRIC_NAME.findall(re.sub(r'"[^"]*"', '""', expr))) <= names, expr

"""The rollout templates (configs/rollouts): every query they hold, run by promtool on the series
two replicas export in each of the five verdict states, and each gate's condition read on the
result: promote on better or equivalent, fail on worse, wait otherwise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from proxy.core.outcomes import Verdict
from tests.test_alerts import promtool, promtool_output

ROLLOUTS = Path(__file__).resolve().parents[1] / "configs" / "rollouts"
ROUTE, SHADOW = "/v2/models/iris/infer", "iris-rf"

# Per state, one minute each: (the verdict gauge, the upper end of the advantage's sequence,
# the p-value), as every replica exports them.
STATES: list[tuple[Verdict, float, str, str]] = [
    (Verdict.BETTER, Verdict.BETTER.gauge, "0.05", "0.001"),
    (Verdict.EQUIVALENT, Verdict.EQUIVALENT.gauge, "0.004", "0.3"),
    (Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE.gauge, "0.02", "0.4"),
    (Verdict.INSUFFICIENT_DATA, Verdict.INSUFFICIENT_DATA.gauge, "+Inf", "1"),
    (Verdict.WORSE, Verdict.WORSE.gauge, "-0.01", "0.001"),
]


def _queries() -> dict[str, str]:
    """record name -> the template's query, its variables filled in."""
    found: dict[str, str] = {}
    for doc in yaml.safe_load_all((ROLLOUTS / "flagger-metric-template.yaml").read_text()):
        found[f"flagger:{doc['metadata']['name']}"] = doc["spec"]["query"]
    for doc in yaml.safe_load_all((ROLLOUTS / "argo-analysis-template.yaml").read_text()):
        for metric in doc["spec"]["metrics"]:
            found[f"argo:{metric['name']}"] = metric["provider"]["prometheus"]["query"]
    filled = {}
    for name, query in found.items():
        query = re.sub(r"\{\{\s*(variables|args)\.route\s*\}\}", ROUTE, query)
        query = re.sub(r"\{\{\s*(variables|args)\.shadow\s*\}\}", SHADOW, query)
        assert "{{" not in query, query
        filled[name.replace("-", "_")] = query
    return filled


def _series(name: str, values: list[str]) -> list[dict[str, str]]:
    """The same values from two replicas, and another shadow's series that must not count."""
    return [
        {
            "series": f'{name}{{route="{ROUTE}", shadow="{SHADOW}", instance="{instance}"}}',
            "values": " ".join(values),
        }
        for instance in ("10.0.0.1:8080", "10.0.0.2:8080")
    ] + [
        {
            "series": f'{name}{{route="{ROUTE}", shadow="other", instance="10.0.0.1:8080"}}',
            "values": " ".join(["9"] * len(values)),
        }
    ]


def test_every_template_query_gives_each_state_and_each_gate_reads_it(tmp_path: Path) -> None:
    queries = _queries()
    assert set(queries) == {
        "flagger:shadow_proxy_verdict",
        "flagger:shadow_proxy_not_worse",
        "argo:shadow_verdict",
        "argo:shadow_sequential_p",
    }
    rules = {"groups": [{"name": "templates", "rules": [
        {"record": name, "expr": query} for name, query in queries.items()
    ]}]}  # fmt: skip
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    series = (
        _series("shadowproxy_fleet_verdict", [f"{g:g}" for _, g, _, _ in STATES])
        + _series("shadowproxy_fleet_verdict_difference_upper", [u for _, _, u, _ in STATES])
        + _series("shadowproxy_fleet_verdict_sequential_p_value", [p for _, _, _, p in STATES])
    )
    expected: dict[str, list[Any]] = {
        "flagger:shadow_proxy_verdict": [g for _, g, _, _ in STATES],
        "flagger:shadow_proxy_not_worse": [u for _, _, u, _ in STATES],
        "argo:shadow_verdict": [g for _, g, _, _ in STATES],
        "argo:shadow_sequential_p": [p for _, _, _, p in STATES],
    }
    tests = [
        {
            "expr": name,
            "eval_time": f"{minute}m",
            "exp_samples": [{"labels": name, "value": float(value)}],
        }
        for name, values in expected.items()
        for minute, value in enumerate(values)
    ]
    (tmp_path / "test.yaml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yaml"],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
            }
        )
    )
    done = promtool("test", "rules", str(tmp_path / "test.yaml"))
    assert done.returncode == 0, promtool_output(done)

    # The gates, as the templates (and their comments) state them.
    argo = yaml.safe_load((ROLLOUTS / "argo-analysis-template.yaml").read_text())
    [verdict_metric] = [m for m in argo["spec"]["metrics"] if m["name"] == "shadow-verdict"]
    assert verdict_metric["successCondition"] == "result[0] >= 0.5"
    assert verdict_metric["failureCondition"] == "result[0] <= -1"
    flagger = (ROLLOUTS / "flagger-metric-template.yaml").read_text()
    assert "thresholdRange: {min: 0.5}" in flagger
    assert "thresholdRange: {min: 0}" in flagger
    gates = {
        state: (
            gauge >= 0.5,  # Flagger's verdict gate, and Argo's success
            float(upper) >= 0,  # Flagger's not-worse gate
            gauge <= -1,  # Argo's failure
        )
        for state, gauge, upper, _ in STATES
    }
    assert gates == {
        Verdict.BETTER: (True, True, False),
        Verdict.EQUIVALENT: (True, True, False),
        Verdict.INCONCLUSIVE: (False, True, False),
        Verdict.INSUFFICIENT_DATA: (False, True, False),
        Verdict.WORSE: (False, False, True),
    }


def test_the_gauge_orders_the_states_from_worse_to_better() -> None:
    assert {v: v.gauge for v in Verdict} == {
        Verdict.WORSE: -1.0,
        Verdict.INSUFFICIENT_DATA: -0.5,
        Verdict.INCONCLUSIVE: 0.0,
        Verdict.EQUIVALENT: 0.5,
        Verdict.BETTER: 1.0,
    }

"""The demo's /metrics page under the supervisor: at most half the lines it had when issue 14 was
filed (992), with every family a dashboard panel, an alert or a rollout template reads that the
demo's traffic produces; families of another kind of route not exported; the client-facing
request counter and the process collector there."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Answer, FakeModelFactory, Received, free_port

REPO = Path(__file__).resolve().parents[1]
LINES_WHEN_FILED = 992  # the demo's /metrics when issue 14 was filed (2 routes, 3 shadows)
REQUESTS = 60  # per route


def _classes(rows: list[float], seed: int) -> list[int]:
    return [int(abs(v * 7 + seed)) % 3 if seed else int(abs(v * 7)) % 3 for v in rows]


def _script(seed: int) -> Any:
    def answer(request: Received) -> Answer:
        doc = request.json()
        if "inputs" in doc:  # Open Inference v2
            rows = doc["inputs"][0]["data"]
            classes = _classes(rows, seed)
            body = {
                "model_name": "m",
                "outputs": [
                    {"name": "predict", "shape": [len(rows)], "datatype": "INT64", "data": classes}
                ],
            }
        else:
            body = {"predictions": _classes(doc["instances"], seed)}
        return Answer(body=orjson.dumps(body))

    return answer


def _families(path: Path) -> set[str]:
    """The shadowproxy_ family names a dashboard, rule file or template refers to."""
    text = path.read_text()
    return set(re.findall(r"\b(shadowproxy_[a-z_]+)", text))


async def test_the_demo_metrics_page_is_half_its_size_with_everything_panels_and_rules_use(
    fake_model: FakeModelFactory, tmp_path: Path
) -> None:
    models = [await fake_model(_script(seed)) for seed in (0, 7, 3)]
    port = free_port()
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["listen"] = f"127.0.0.1:{port}"
    config["store"]["path"] = str(tmp_path / "predictions.db")
    config["capture"]["path"] = str(tmp_path / "capture.db")
    for route in config["routes"]:
        path = route["production"]["url"].split("/", 3)[3]
        route["production"]["url"] = f"{models[0].url}/{path}"
        for shadow, model in zip(route["shadows"], models[1:], strict=False):
            shadow["url"] = f"{model.url}/{shadow['url'].split('/', 3)[3]}"
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(json.dumps(config))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "--config", str(cfg),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )  # fmt: skip
    assert proc.stderr is not None
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # until the front logs that it listens
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "the proxy ended early"
            if orjson.loads(line)["msg"] == "listening":
                break
        async with aiohttp.ClientSession() as session:

            async def samples() -> tuple[str, dict[tuple[str, tuple[Any, ...]], float]]:
                async with session.get(url + "/metrics") as resp:
                    text = await resp.text()
                return text, {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                }

            async def until(name: str, value: float, **labels: str) -> str:
                """Poll /metrics until the sum of `name` over `labels` reaches `value`."""
                total = 0.0
                for _ in range(400):
                    text, found = await samples()
                    total = sum(
                        v
                        for (n, have), v in found.items()
                        if n == name and set(labels.items()) <= set(have)
                    )
                    if total >= value:
                        return text
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{name} {labels}: {total}, not {value}")

            truths = []
            for i in range(REQUESTS):
                rows = [float(i), float(i) / 3]
                v2 = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": rows}]}
                for path, body in (
                    ("/v2/models/demo/infer", v2),
                    ("/v1/models/demo:predict", {"instances": rows}),
                ):
                    async with session.post(url + path, json=body) as resp:
                        assert resp.status == 200
                        truths.append((resp.headers["X-Request-ID"], _classes(rows, 3)))
            await until("shadowproxy_recorded_total", 2 * REQUESTS, kind="record")
            await until("shadowproxy_comparisons_total", 3 * REQUESTS)
            for request_id, truth in truths:
                label = {"request_id": request_id, "label": truth}
                async with session.post(url + "/labels", json=label) as resp:
                    assert resp.status == 200, await resp.text()
            text = await until("shadowproxy_labels_total", 2 * REQUESTS, result="joined")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)

    lines = text.splitlines()
    assert len(lines) <= LINES_WHEN_FILED // 2, len(lines)
    print(f"the demo's /metrics: {len(lines)} lines")
    exported = {f.name for f in text_string_to_metric_families(text)}
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples} | exported
    # Nothing a dashboard, a rule or a rollout template reads is gone: every family they name
    # that a demo like this one produces is on the page. Those it cannot produce: another kind
    # of route, failures the demo has none of, the fleet verdict (verdict.fleet_prometheus).
    not_in_demo = {
        # regression and probabilities routes only
        "shadowproxy_absolute_error", "shadowproxy_absolute_error_sum",
        "shadowproxy_absolute_error_count", "shadowproxy_absolute_error_bucket",
        "shadowproxy_squared_error_total", "shadowproxy_squared_error",
        "shadowproxy_log_loss_total", "shadowproxy_brier_score_total",
        "shadowproxy_calibration_instances_total", "shadowproxy_calibration_correct_total",
        "shadowproxy_probability_distance_bucket", "shadowproxy_probability_distance",
        "shadowproxy_paired_error_instances_total",
        # failures and events that appear with their first count
        "shadowproxy_upstream_errors_total", "shadowproxy_upstream_errors",
        "shadowproxy_shadow_skipped_total", "shadowproxy_recording_dropped_total",
        "shadowproxy_store_removed_total", "shadowproxy_rejected_requests_total",
        "shadowproxy_label_requests_rejected_total", "shadowproxy_client_faults_total",
        "shadowproxy_process_restarts_total", "shadowproxy_config_reloads_total",
        "shadowproxy_admin_requests_total", "shadowproxy_capture_removed_total",
        # verdict.fleet_prometheus only
        "shadowproxy_fleet_verdict", "shadowproxy_fleet_verdict_sequential_p_value",
        "shadowproxy_fleet_verdict_difference_lower", "shadowproxy_fleet_verdict_difference_upper",
        "shadowproxy_fleet_verdict_updated_timestamp_seconds",
    }  # fmt: skip
    used = set()
    for path in (
        REPO / "configs" / "grafana" / "shadow-proxy.json",
        REPO / "configs" / "prometheus" / "alerts.yaml",
        *sorted((REPO / "configs" / "rollouts").glob("*.yaml")),
    ):
        used |= _families(path)
    missing = {
        name
        for name in used - not_in_demo
        if name not in names and f"{name}_total" not in names and f"{name}_bucket" not in names
    }
    assert missing == set()
    # Kind-specific families are not exported on the demo's classification routes.
    assert not any(n.startswith("shadowproxy_absolute_error") for n in names)
    assert not any(n.startswith("shadowproxy_calibration") for n in names)
    assert "shadowproxy_paired_log_loss_sums_total" not in names
    # What operators expect of a server: its own request counts and latency, and its process.
    assert "shadowproxy_http_requests_total" in names
    assert "shadowproxy_http_request_duration_seconds_bucket" in names
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= (
        names
    )
    assert not any(n.endswith("_created") for n in names)

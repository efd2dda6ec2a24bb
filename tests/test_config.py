"""Tests for proxy.config: exact objects, exact defaults, exact error lines."""

from __future__ import annotations

import pickle
import re
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import proxy.config
from proxy.config import (
    CaptureConfig,
    Config,
    ConfigError,
    LabelsConfig,
    Route,
    Shadow,
    StoreConfig,
    Target,
    config_hash,
    config_to_dict,
    config_warnings,
    load_config,
    parse_config,
    parse_duration,
    parse_fraction,
    parse_size,
    redact_url,
)
from proxy.config import load as loader
from proxy.core.comparison import Comparator, CompareKind, Distance
from proxy.core.extraction import Extractor, Protocol

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# The reference YAML from the README, minus `prediction_path` (that key is for protocol custom).
REFERENCE = """\
listen: 0.0.0.0:8080
request_id_header: X-Request-ID
max_body: 10MiB
shadow_max_body: 1MiB
shadow_max_response: 4MiB
shadow_strip_headers: [Authorization, Cookie]
shutdown_timeout: 10s
shadow_drain_timeout: 5s
access_log: false
log_level: info
routes:
  - name: iris
    match: /v2/models/iris/infer
    methods: [POST]
    protocol: open-inference-v2
    output: predict
    production:
      name: iris-lr
      url: http://iris-lr.models.svc:8080/v2/models/iris-lr/infer
      timeout: 2s
      connect_timeout: 1s
      max_connections: 256
    shadows:
      - name: iris-rf
        url: http://iris-rf.models.svc:8080/v2/models/iris-rf/infer
        sample: 100%
        timeout: 5s
        connect_timeout: 1s
        max_in_flight: 64
        max_queue: 1000
    compare:
      kind: classification
      tolerance: 0.0
      relative_tolerance: 0.0
      distance: total_variation
"""

MINIMAL = """\
routes:
  - match: /predict
    protocol: kserve-v1
    production: {name: prod, url: "http://prod:8080"}
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), source="c.yaml", env=env or {})
    assert str(info.value) == "\n".join(info.value.errors)
    return list(info.value.errors)


def test_reference_parses_to_exact_objects() -> None:
    config = parse_config(REFERENCE, source="ref.yaml", env={})

    assert config == Config(
        source="ref.yaml",
        listen_host="0.0.0.0",
        listen_port=8080,
        request_id_header="X-Request-ID",
        max_body=10 * 1024 * 1024,
        shadow_max_body=1024 * 1024,
        shadow_max_response=4 * 1024 * 1024,
        shadow_strip_headers=("Authorization", "Cookie"),
        shutdown_timeout=10.0,
        shadow_drain_timeout=5.0,
        access_log=False,
        log_level="info",
        routes=(
            Route(
                name="iris",
                match="/v2/models/iris/infer",
                methods=frozenset({"POST"}),
                extractor=Extractor(Protocol.OPEN_INFERENCE_V2, output="predict"),
                comparator=Comparator(CompareKind.CLASSIFICATION),
                production=Target(
                    name="iris-lr",
                    url="http://iris-lr.models.svc:8080/v2/models/iris-lr/infer",
                    origin="http://iris-lr.models.svc:8080",
                    path="/v2/models/iris-lr/infer",
                    timeout=2.0,
                    connect_timeout=1.0,
                    max_connections=256,
                ),
                shadows=(
                    Shadow(
                        name="iris-rf",
                        url="http://iris-rf.models.svc:8080/v2/models/iris-rf/infer",
                        origin="http://iris-rf.models.svc:8080",
                        path="/v2/models/iris-rf/infer",
                        sample=1.0,
                        timeout=5.0,
                        connect_timeout=1.0,
                        max_in_flight=64,
                        max_queue=1000,
                    ),
                ),
            ),
        ),
    )


def test_reference_with_prediction_path_for_a_non_custom_protocol_is_rejected() -> None:
    text = REFERENCE.replace(
        "    output: predict\n", "    output: predict\n    prediction_path: result.scores\n"
    )
    assert errors_of(text) == [
        "c.yaml:17: routes[0].prediction_path: only allowed with protocol 'custom' "
        "(protocol is 'open-inference-v2') (got 'result.scores')"
    ]


def test_defaults() -> None:
    config = parse_config(
        MINIMAL + "    shadows:\n      - name: cand\n        url: https://cand.example:8443/\n",
        env={},
    )

    assert config.source == "<string>"
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8080)
    assert config.request_id_header == "X-Request-ID"
    assert (config.max_body, config.shadow_max_body) == (10_485_760, 1_048_576)
    assert config.shadow_max_response == 4_194_304
    assert config.shadow_strip_headers == ("Authorization", "Cookie")
    assert (config.shutdown_timeout, config.shadow_drain_timeout) == (10.0, 5.0)
    assert (config.access_log, config.log_level) == (False, "info")
    (route,) = config.routes
    assert route == Route(
        name="/predict",
        match="/predict",
        methods=None,
        extractor=Extractor(Protocol.KSERVE_V1),
        comparator=Comparator(CompareKind.CLASSIFICATION),
        production=Target("prod", "http://prod:8080", "http://prod:8080", "", 30.0, 1.0, 256),
        shadows=(
            Shadow(
                "cand",
                "https://cand.example:8443/",
                "https://cand.example:8443",
                "",
                1.0,
                5.0,
                1.0,
                16,
                1000,
            ),
        ),
    )


def test_null_means_default() -> None:
    config = parse_config(
        "log_level:\nshadow_strip_headers: ~\n" + MINIMAL + "    shadows:\n    methods: null\n",
        env={},
    )
    assert config.log_level == "info"
    assert config.shadow_strip_headers == ("Authorization", "Cookie")
    assert config.routes[0].shadows == ()
    assert config.routes[0].methods is None


def test_top_level_values() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            listen: "[::]:9000"
            request_id_header: X-Trace
            max_body: 512KiB
            shadow_max_body: 0
            shadow_max_response: 100MB
            shadow_strip_headers: []
            shutdown_timeout: 1m
            shadow_drain_timeout: 250ms
            access_log: true
            log_level: WARNING
            """
        )
        + MINIMAL,
        env={},
    )
    assert (config.listen_host, config.listen_port) == ("::", 9000)
    assert config.request_id_header == "X-Trace"
    assert (config.max_body, config.shadow_max_body) == (524_288, 0)
    assert config.shadow_max_response == 100_000_000
    assert config.shadow_strip_headers == ()
    assert (config.shutdown_timeout, config.shadow_drain_timeout) == (60.0, 0.25)
    assert (config.access_log, config.log_level) == (True, "warning")


def test_methods_are_upper_cased() -> None:
    config = parse_config(MINIMAL + "    methods: [post, Get]\n", env={})
    assert config.routes[0].methods == frozenset({"POST", "GET"})


def test_custom_protocol_and_comparators() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            routes:
              - match: /a
                protocol: custom
                prediction_path: result.0.scores
                production: {name: a, url: "http://a"}
                compare: {kind: regression, tolerance: 1, relative_tolerance: 0.01}
              - match: /b
                protocol: tfserving
                output: probs
                production: {name: b, url: "http://b"}
                compare: {kind: probabilities, distance: jensen_shannon}
            """
        ),
        env={},
    )
    a, b = config.routes
    assert a.extractor == Extractor(Protocol.CUSTOM, path=("result", "0", "scores"))
    assert a.comparator == Comparator(CompareKind.REGRESSION, 1.0, 0.01)
    assert b.extractor == Extractor(Protocol.TFSERVING, output="probs")
    assert b.comparator == Comparator(CompareKind.PROBABILITIES, distance=Distance.JENSEN_SHANNON)


@pytest.mark.parametrize(
    ("written", "share"),
    [("1%", 0.01), ("0.5 %", 0.005), ("150%", 1.5), ("0.01", 0.01), (0.01, 0.01), (2, 2.0)],
)
def test_relative_tolerance_is_a_fraction_and_takes_percent(written: object, share: float) -> None:
    config = parse_config(
        MINIMAL + f"    compare: {{kind: regression, relative_tolerance: {written}}}\n", env={}
    )
    assert config.routes[0].comparator == Comparator(CompareKind.REGRESSION, 0.0, share)
    # The effective config reads back to the same share.
    dumped = config_to_dict(config)["routes"][0]["compare"]["relative_tolerance"]
    assert dumped == share


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (
            "-1%",
            "expected a share of production's value like '1%' or 0.01; it must be >= 0",
        ),
        (
            "-0.1",
            "expected a share of production's value like '1%' or 0.01; must be a finite number"
            " >= 0",
        ),
        ("lots", "expected a share of production's value like '1%' or 0.01; expected a number"),
    ],
)
def test_relative_tolerance_refuses_what_is_not_a_share(written: str, message: str) -> None:
    assert errors_of(
        MINIMAL + f"    compare: {{kind: regression, relative_tolerance: '{written}'}}\n"
    ) == [f"c.yaml:5: routes[0].compare.relative_tolerance: {message} (got '{written}')"]


def test_an_absolute_tolerance_in_percent_points_to_relative_tolerance() -> None:
    # `tolerance` is in the target's units (a price in dollars): a share has no meaning there.
    assert errors_of(MINIMAL + "    compare: {kind: regression, tolerance: 1%}\n") == [
        "c.yaml:5: routes[0].compare.tolerance: an absolute tolerance is a number in the "
        "target's units, not a share; for a share of production's value, set "
        "relative_tolerance (got '1%')"
    ]
    config = parse_config(MINIMAL + "    compare: {kind: regression, tolerance: 0.5}\n", env={})
    assert config.routes[0].comparator.tolerance == 0.5


def test_every_fraction_key_takes_percent() -> None:
    config = parse_config(
        MINIMAL.replace("    production:", "    record: 25%\n    production:")
        + "    shadows: [{name: s, url: 'http://s', sample: 12.5%}]\n"
        + "    compare: {kind: regression, relative_tolerance: 1%}\n"
        + "verdict: {alpha: 5%, margin: 2%, max_error_rate: 3%, latency_margin: 4%,"
        + " max_disagreement: 30%}\n",
        env={},
    )
    [route] = config.routes
    assert (route.record, route.shadows[0].sample, route.comparator.relative_tolerance) == (
        0.25,
        0.125,
        0.01,
    )
    v = config.verdict
    assert (v.alpha, v.margin, v.max_error_rate, v.latency_margin, v.max_disagreement) == (
        0.05,
        0.02,
        0.03,
        0.04,
        0.3,
    )


def test_compare_max_instances() -> None:
    config = parse_config(MINIMAL + "    compare: {kind: regression, max_instances: 3}\n", env={})
    assert config.routes[0].comparator == Comparator(CompareKind.REGRESSION, max_instances=3)
    assert errors_of(MINIMAL + "    compare: {max_instances: 0}\n") == [
        "c.yaml:5: routes[0].compare.max_instances: must be at least 1 (got 0)"
    ]


def test_shadow_max_response_is_at_least_a_byte() -> None:
    assert errors_of("shadow_max_response: 0\n" + MINIMAL) == [
        "c.yaml:1: shadow_max_response: must be at least 1 byte (got 0)"
    ]


def test_a_match_must_be_ascii() -> None:
    # With a URL of no path, the match is the start of the upstream request's path.
    assert errors_of(MINIMAL.replace("/predict", "/prédire")) == [
        "c.yaml:2: routes[0].match: must be ASCII: percent-encode it, as clients send it "
        "(got '/prédire')"
    ]


def test_compare_classes_become_distinct_string_labels() -> None:
    config = parse_config(
        MINIMAL
        + "    compare: {classes: [setosa, 1, 2.0, true, '3']}\n"
        + "  - match: /b\n    protocol: kserve-v1\n    production: {name: b, url: 'http://b'}\n"
        + "    compare: {kind: probabilities, classes: [neg, pos]}\n",
        env={},
    )
    assert {r.match: r.classes for r in config.routes} == {
        "/predict": ("setosa", "1", "2", "true", "3"),
        "/b": ("neg", "pos"),
    }
    assert config_to_dict(config)["routes"][0]["compare"]["classes"] == [
        "setosa", "1", "2", "true", "3",
    ]  # fmt: skip
    assert round_trip(config) == config
    assert parse_config(MINIMAL, env={}).routes[0].classes is None


def test_bad_compare_classes() -> None:
    assert errors_of(
        """\
        routes:
          - match: /a
            protocol: kserve-v1
            production: {name: a, url: "http://a"}
            compare:
              classes: [cat, dog, cat, 1, 1.0, other, "", null, [x], .nan]
          - match: /b
            protocol: kserve-v1
            production: {name: b, url: "http://b"}
            compare: {kind: regression, classes: [a, b]}
          - match: /c
            protocol: kserve-v1
            production: {name: c, url: "http://c"}
            compare: {classes: []}
          - match: /d
            protocol: kserve-v1
            production: {name: d, url: "http://d"}
            compare: {kind: probabilities, classes: neg}
        """
    ) == [
        "c.yaml:6: routes[0].compare.classes[2]: duplicate class 'cat' (also classes[0]) "
        "(got 'cat')",
        "c.yaml:6: routes[0].compare.classes[4]: duplicate class '1' (also classes[3]) (got 1.0)",
        "c.yaml:6: routes[0].compare.classes[5]: 'other' already names every class not listed; "
        "leave it out (got 'other')",
        *(
            f"c.yaml:6: routes[0].compare.classes[{index}]: expected a class: a string (1-100 "
            f"characters), a finite number or a boolean (got {shown})"
            for index, shown in ((6, "''"), (7, "None"), (8, "['x']"), (9, "nan"))
        ),
        "c.yaml:10: routes[1].compare.classes: only applies to kinds 'classification' and "
        "'probabilities' (kind is 'regression') (got ['a', 'b'])",
        "c.yaml:14: routes[2].compare.classes: must not be empty; leave it out to name the first "
        "20 classes seen (got [])",
        "c.yaml:18: routes[3].compare.classes: expected a list, not a string (got 'neg')",
    ]


def test_url_origin_and_path() -> None:
    text = MINIMAL.replace("http://prod:8080", "HTTPS://Prod.example/a/b/")
    target = parse_config(text, env={}).routes[0].production
    assert (target.url, target.origin, target.path) == (
        "HTTPS://Prod.example/a/b/",
        "https://Prod.example",
        "/a/b",
    )


def test_routes_sorted_longest_match_first() -> None:
    text = "routes:\n" + "".join(
        f"  - match: {match}\n    protocol: kserve-v1\n"
        f"    production: {{name: p, url: 'http://p'}}\n"
        for match in ["/", "/v1/models/a", "/v1", "/v1/models/b", "/v1/models/abc"]
    )
    config = parse_config(text, env={})
    assert [route.match for route in config.routes] == [
        "/v1/models/abc",
        "/v1/models/a",
        "/v1/models/b",
        "/v1",
        "/",
    ]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_every_example_loads(path: Path) -> None:
    config = load_config(path, env={})
    assert config.source == str(path)
    assert config.routes


def test_demo_example() -> None:
    config = load_config(CONFIGS / "demo.yaml", env={})
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
    v1, v2 = config.routes  # longest match first
    assert (v2.name, v2.extractor.protocol) == ("/v2/models/demo/infer", Protocol.OPEN_INFERENCE_V2)
    assert v2.production.name == "demo-prod"
    assert v2.production.origin == "http://127.0.0.1:9001"
    assert [(s.name, s.origin, s.path, s.sample) for s in v2.shadows] == [
        ("demo-candidate", "http://127.0.0.1:9002", "/v2/models/demo-candidate/infer", 1.0),
        ("demo-candidate-2", "http://127.0.0.1:9003", "/v2/models/demo-candidate-2/infer", 1.0),
    ]
    assert (v1.match, v1.extractor.protocol) == ("/v1/models/demo:predict", Protocol.KSERVE_V1)
    assert v1.production.url == "http://127.0.0.1:9001/v1/models/demo:predict"
    assert [s.url for s in v1.shadows] == ["http://127.0.0.1:9002/v1/models/demo:predict"]


def test_custom_example_takes_hosts_from_the_environment() -> None:
    env = {"CHURN_PROD_HOST": "churn.staging", "CHURN_TIMEOUT": "750ms", "CHURN_SAMPLE": "1"}
    route = load_config(CONFIGS / "custom.yaml", env=env).routes[0]
    assert route.production.origin == "http://churn.staging:8000"
    assert route.production.timeout == 0.75
    assert route.shadows[0].origin == "http://churn-candidate.ml.svc.cluster.local:8000"
    assert route.shadows[0].sample == 1.0


BROKEN = {
    "unknown-key.yaml": [
        "8: routes[0].production.timout: unknown key 'timout' (did you mean 'timeout'?); "
        "allowed: name, url, timeout, connect_timeout, max_connections"
    ],
    "bad-sample.yaml": [
        "11: routes[0].shadows[0].sample: must be between 0% and 100% (got '150%')"
    ],
    "bad-url.yaml": [
        "7: routes[0].production.url: URL must start with http:// or https:// "
        "(got 'iris-lr-predictor.models.svc.cluster.local/v1/models/iris-lr:predict')",
        "10: routes[0].shadows[0].url: upstream URL must not have a query or fragment "
        "(got 'http://iris-rf-predictor.models.svc.cluster.local/v1/models/iris-rf:predict"
        "?debug=1')",
    ],
    "missing-production.yaml": ["3: routes[0].production: required key missing"],
}


def test_every_broken_example_is_tested() -> None:
    assert sorted(path.name for path in (CONFIGS / "broken").glob("*.yaml")) == sorted(BROKEN)


@pytest.mark.parametrize(("name", "expected"), sorted(BROKEN.items()))
def test_broken_example(name: str, expected: list[str]) -> None:
    path = CONFIGS / "broken" / name
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.errors == tuple(f"{path}:{line}" for line in expected)


def test_all_errors_are_collected_in_line_order() -> None:
    assert errors_of(
        """\
        listen: "[::]:99999"
        max_body: true
        log_level: verbose
        routes:
          - match: v2/x
            protocol: kserve
            methods: ["PO ST"]
            production:
              name: a b
              url: ftp://x
              connect_timeout: 0s
            shadows:
              - {name: s1, url: "http://s:0/x", sample: -1, max_queue: 1.5}
        """
    ) == [
        "c.yaml:1: listen: port must be between 0 and 65535 (got '[::]:99999')",
        "c.yaml:2: max_body: expected a size like '10MiB', '512KiB', '1GiB', '10MB' or '100B', "
        "not a boolean (got True)",
        "c.yaml:3: log_level: expected one of debug, info, warning, error (got 'verbose')",
        "c.yaml:5: routes[0].match: must be a path prefix starting with '/' (got 'v2/x')",
        "c.yaml:6: routes[0].protocol: expected one of kserve-v1, open-inference-v2, mlflow, "
        "tfserving, custom (did you mean 'kserve-v1'?) (got 'kserve')",
        "c.yaml:7: routes[0].methods[0]: not a valid HTTP method (got 'PO ST')",
        "c.yaml:9: routes[0].production.name: must be 1-64 characters of letters, digits, "
        "'_', '.' and '-' (got 'a b')",
        "c.yaml:10: routes[0].production.url: URL must start with http:// or https:// "
        "(got 'ftp://x')",
        "c.yaml:11: routes[0].production.connect_timeout: must be greater than 0 (got '0s')",
        "c.yaml:13: routes[0].shadows[0].url: URL port must be between 1 and 65535 "
        "(got 'http://s:0/x')",
        "c.yaml:13: routes[0].shadows[0].sample: must be between 0 and 1 (or 0% and 100%) (got -1)",
        "c.yaml:13: routes[0].shadows[0].max_queue: expected an integer, not a number (got 1.5)",
    ]


def test_unknown_keys_at_every_level() -> None:
    assert errors_of(
        """\
        lsten: 0.0.0.0:1
        routes:
          - match: /a
            protocl: kserve-v1
            production: {name: a, url: "http://a", max_conections: 3}
            shadows: [{name: b, url: "http://b", sampel: 1}]
            compare: {knd: regression, zzz: 1}
        """
    ) == [
        "c.yaml:1: lsten: unknown key 'lsten' (did you mean 'listen'?); allowed: listen, "
        "request_id_header, max_body, shadow_max_body, shadow_max_response, shadow_strip_headers, "
        "shutdown_timeout, shadow_drain_timeout, access_log, log_level, routes, store, labels, "
        "verdict, admin, metrics, capture",
        "c.yaml:3: routes[0].protocol: required key missing",
        "c.yaml:4: routes[0].protocl: unknown key 'protocl' (did you mean 'protocol'?); "
        "allowed: name, match, methods, protocol, output, prediction_path, production, "
        "shadows, compare, record, segment",
        "c.yaml:5: routes[0].production.max_conections: unknown key 'max_conections' "
        "(did you mean 'max_connections'?); allowed: name, url, timeout, connect_timeout, "
        "max_connections",
        "c.yaml:6: routes[0].shadows[0].sampel: unknown key 'sampel' (did you mean 'sample'?); "
        "allowed: name, url, sample, timeout, connect_timeout, max_in_flight, max_queue, "
        "eject_after, eject_for, role",
        "c.yaml:7: routes[0].compare.knd: unknown key 'knd' (did you mean 'kind'?); "
        "allowed: kind, tolerance, relative_tolerance, distance, classes, max_instances",
        "c.yaml:7: routes[0].compare.zzz: unknown key 'zzz'; "
        "allowed: kind, tolerance, relative_tolerance, distance, classes, max_instances",
    ]


ROUTE_ALLOWED = (
    "allowed: name, match, methods, protocol, output, prediction_path, production, shadows, "
    "compare, record, segment"
)
PRODUCTION_ALLOWED = "allowed: name, url, timeout, connect_timeout, max_connections"


def test_a_key_under_the_wrong_section_is_pointed_to_its_own() -> None:
    assert errors_of(
        """\
        alpha: 0.01
        routes:
          - match: /a
            protocol: kserve-v1
            timeout: 2s
            production: {name: p, url: "http://p", sample: 5%, max_body: 1MiB}
            shadows: [{name: s, url: "http://s", record: 10%}]
            compare: {kind: classification, name: x}
        """
    ) == [
        "c.yaml:1: alpha: unknown key 'alpha' (did you mean verdict.alpha?); allowed: listen, "
        "request_id_header, max_body, shadow_max_body, shadow_max_response, "
        "shadow_strip_headers, shutdown_timeout, shadow_drain_timeout, access_log, log_level, "
        "routes, store, labels, verdict, admin, metrics, capture",
        "c.yaml:5: routes[0].timeout: unknown key 'timeout' (did you mean "
        f"routes[0].production.timeout or routes[0].shadows[].timeout?); {ROUTE_ALLOWED}",
        "c.yaml:6: routes[0].production.sample: unknown key 'sample' (did you mean "
        f"routes[0].shadows[].sample?); {PRODUCTION_ALLOWED}",
        "c.yaml:6: routes[0].production.max_body: unknown key 'max_body' (did you mean "
        f"max_body (at the top level), labels.max_body or capture.max_body?); {PRODUCTION_ALLOWED}",
        "c.yaml:7: routes[0].shadows[0].record: unknown key 'record' (did you mean "
        "routes[0].record?); allowed: name, url, sample, timeout, connect_timeout, "
        "max_in_flight, max_queue, eject_after, eject_for, role",
        "c.yaml:8: routes[0].compare.name: unknown key 'name' (did you mean routes[0].name, "
        "routes[0].production.name or routes[0].shadows[].name?); allowed: kind, tolerance, "
        "relative_tolerance, distance, classes, max_instances",
    ]


def test_a_misplaced_key_keeps_the_index_of_its_route() -> None:
    second = "  - {match: /b, protocol: kserve-v1, production: {name: p, url: 'http://p'}}\n"
    third = "  - {match: /c, protocol: mlflow, production: {name: p, url: 'http://p'}, ttl: 1d}\n"
    [error] = errors_of(MINIMAL + second + third)
    assert error.startswith(
        "c.yaml:6: routes[2].ttl: unknown key 'ttl' (did you mean store.ttl?); allowed: "
    )


def test_a_flow_key_without_a_space_after_its_colon_says_so() -> None:
    assert errors_of(
        "routes:\n  - match: /a\n    protocol: kserve-v1\n    production: {name: p, url:http://p}\n"
    ) == [
        "c.yaml:4: routes[0].production.url:http://p: unknown key 'url:http://p' (did you mean"
        f" 'url: http://p'? a key needs ': ', with a space); {PRODUCTION_ALLOWED}",
        "c.yaml:4: routes[0].production.url: required key missing",
    ]


def test_yaml_boolean_key_is_unknown() -> None:
    # YAML 1.1 reads a bare `on` as the boolean true; the error still shows what was written.
    assert errors_of("on: 1\n" + MINIMAL)[0].startswith("c.yaml:1: on: unknown key 'on'; ")


def test_duplicate_yaml_keys() -> None:
    assert errors_of(
        """\
        log_level: info
        routes:
          - match: /a
            protocol: kserve-v1
            production:
              name: a
              url: http://a
              name: b
        log_level: debug
        """
    ) == [
        "c.yaml:8: routes[0].production.name: duplicate key 'name' (first on line 6; "
        "YAML would silently keep only this one)",
        "c.yaml:9: log_level: duplicate key 'log_level' (first on line 1; "
        "YAML would silently keep only this one)",
    ]


def test_merge_keys_are_not_duplicates() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            routes:
              - match: /a
                protocol: kserve-v1
                production: &prod
                  name: a
                  url: http://a
                  timeout: 9s
                shadows:
                  - <<: *prod
                    name: b
                    timeout: 3s
            """
        ),
        env={},
    )
    shadow = config.routes[0].shadows[0]
    assert (shadow.name, shadow.url, shadow.timeout) == ("b", "http://a", 3.0)


def test_bool_is_not_a_number() -> None:
    assert errors_of(
        MINIMAL.replace('url: "http://prod:8080"}', 'url: "http://p", max_connections: true}')
        + "    shadows: [{name: s, url: 'http://s', sample: yes, timeout: false}]\n"
        + "    compare: {kind: regression, tolerance: true}\n"
    ) == [
        "c.yaml:4: routes[0].production.max_connections: expected an integer, not a boolean "
        "(got True)",
        "c.yaml:5: routes[0].shadows[0].sample: expected a percentage like '30%' or a number "
        "between 0 and 1, not a boolean (got True)",
        "c.yaml:5: routes[0].shadows[0].timeout: expected a duration like '2s', '500ms', "
        "'1.5s', '1m', '7d' or '250us', not a boolean (got False)",
        "c.yaml:6: routes[0].compare.tolerance: expected a number, not a boolean (got True)",
    ]


def test_wrong_container_types_and_missing_keys() -> None:
    assert errors_of("routes: {match: /a}\n") == [
        "c.yaml:1: routes: expected a list, not a mapping (got {'match': '/a'})"
    ]
    assert errors_of("routes: []\n") == ["c.yaml:1: routes: must be a non-empty list (got [])"]
    assert errors_of("log_level: info\n") == ["c.yaml:1: routes: required key missing"]
    assert errors_of("- a\n") == [
        "c.yaml:1: (top level): expected a mapping, not a list (got ['a'])"
    ]
    assert errors_of(
        """\
        routes:
          - match: /a
            protocol: kserve-v1
            production: [http://a]
          - match: /b
            protocol: custom
            production:
            shadows: {name: s}
            methods: []
        """
    ) == [
        "c.yaml:4: routes[0].production: expected a mapping, not a list (got ['http://a'])",
        "c.yaml:5: routes[1].prediction_path: required key missing",
        "c.yaml:7: routes[1].production: required key has no value (got None)",
        "c.yaml:8: routes[1].shadows: expected a list, not a mapping (got {'name': 's'})",
        "c.yaml:9: routes[1].methods: must not be empty; leave it out to allow any method (got [])",
    ]


def test_cross_route_and_shadow_name_rules() -> None:
    assert errors_of(
        """\
        routes:
          - match: /a
            methods: [POST, GET]
            protocol: kserve-v1
            production: {name: p, url: "http://p"}
            shadows:
              - {name: s, url: "http://s"}
              - {name: s, url: "http://s2"}
              - {name: p, url: "http://s3"}
          - match: /a
            methods: [PUT]
            protocol: kserve-v1
            production: {name: p, url: "http://p"}
          - match: /a
            methods: [get]
            protocol: kserve-v1
            production: {name: p, url: "http://p"}
          - name: /a
            match: /b
            protocol: mlflow
            production: {name: p, url: "http://p"}
        """
    ) == [
        "c.yaml:8: routes[0].shadows[1].name: duplicate shadow name (also shadows[0]) (got 's')",
        "c.yaml:9: routes[0].shadows[2].name: same name as the production target (got 'p')",
        "c.yaml:10: routes[1].name: duplicate route name '/a' (also routes[0]); routes sharing "
        "a match need distinct names",
        "c.yaml:14: routes[2].match: same match and overlapping methods as routes[0] (got '/a')",
        "c.yaml:14: routes[2].name: duplicate route name '/a' (also routes[0]); routes sharing "
        "a match need distinct names",
        "c.yaml:18: routes[3].name: duplicate route name '/a' (also routes[0]); routes sharing "
        "a match need distinct names",
    ]


def test_same_match_with_disjoint_methods_and_names_is_fine() -> None:
    config = parse_config(
        MINIMAL
        + "    methods: [POST]\n"
        + "  - {name: b, match: /predict, methods: [GET], protocol: mlflow,"
        + " production: {name: p, url: 'http://p'}}\n",
        env={},
    )
    assert [(route.name, route.methods) for route in config.routes] == [
        ("/predict", frozenset({"POST"})),
        ("b", frozenset({"GET"})),
    ]


def test_protocol_specific_keys() -> None:
    assert errors_of(
        """\
        routes:
          - match: /a
            protocol: kserve-v1
            output: y
            production: {name: a, url: "http://a"}
            compare: {kind: classification, relative_tolerance: 0.1, distance: jensen_shannon}
          - match: /b
            protocol: custom
            prediction_path: a..b
            production: {name: b, url: "http://b"}
            compare: {kind: probabilities, tolerance: -1}
        """
    ) == [
        "c.yaml:4: routes[0].output: not used by protocol 'kserve-v1' (got 'y')",
        "c.yaml:6: routes[0].compare.relative_tolerance: only applies to kind 'regression' "
        "(kind is 'classification') (got 0.1)",
        "c.yaml:6: routes[0].compare.distance: only applies to kind 'probabilities' "
        "(kind is 'classification') (got 'jensen_shannon')",
        "c.yaml:9: routes[1].prediction_path: expected dot-separated keys like 'result.scores' "
        "(got 'a..b')",
        "c.yaml:11: routes[1].compare.tolerance: must be a finite number >= 0 (got -1)",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://", "URL has no host"),
        ("http://a b", "URL must not contain whitespace"),
        ("http://user:pw@a", "URL must not contain credentials"),
        ("http://a/#frag", "upstream URL must not have a query or fragment"),
        ("http://a/?", "upstream URL must not have a query or fragment"),
        ("http://a:0/x", "URL port must be between 1 and 65535"),
        ("http://a:99999", "not a valid URL: Port out of range 0-65535"),
        ("http://a:x", "not a valid URL: Port could not be cast to integer value as 'x'"),
        ("http://[::1", "not a valid URL: Invalid IPv6 URL"),
        (
            "http://a/modèle",
            "URL must be ASCII: percent-encode its path, and write a non-ASCII host in its "
            "IDNA (xn--) form",
        ),
        (
            "http://bücher.example",
            "URL must be ASCII: percent-encode its path, and write a non-ASCII host in its "
            "IDNA (xn--) form",
        ),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    text = MINIMAL.replace('"http://prod:8080"', repr(url))
    assert errors_of(text) == [f"c.yaml:4: routes[0].production.url: {message} (got {url!r})"]


def test_listen_forms() -> None:
    for text, expected in [("localhost:0", ("localhost", 0)), ("[::1]:80", ("::1", 80))]:
        config = parse_config(f"listen: '{text}'\n" + MINIMAL, env={})
        assert (config.listen_host, config.listen_port) == expected
    hint = "expected 'host:port', like '0.0.0.0:8080' or '[::]:8080'"
    assert errors_of("listen: 8080\n" + MINIMAL) == [
        f"c.yaml:1: listen: {hint}, not an integer (got 8080)"
    ]
    assert errors_of("listen: ':::8080'\n" + MINIMAL) == [
        f"c.yaml:1: listen: {hint} (got ':::8080')"
    ]


def test_yaml_syntax_error_and_empty_file() -> None:
    assert errors_of("routes:\n  - match: [/a\n") == [
        "c.yaml:2:12: invalid YAML: while parsing a flow sequence, expected ',' or ']', "
        "but got '<stream end>'; hint: the '[' opened here is never closed with ']'"
    ]
    assert errors_of("a: 1\n---\nb: 2\n") == [
        "c.yaml:2:1: invalid YAML: expected a single document in the stream, "
        "but found another document; hint: a config is one YAML document: remove the '---' "
        "and what follows it"
    ]
    assert errors_of("a: !!python/name:os.system x\n") == [
        "c.yaml:1:4: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'; hint: YAML tags such as '!!python/...' "
        "are not accepted: remove the tag"
    ]
    assert errors_of("# only a comment\n") == ["c.yaml:1: config is empty"]
    assert errors_of("") == ["c.yaml:1: config is empty"]


# Each broken line is line 4 of a route, under `production:` (indented 6) or a route key.
YAML_MISTAKES = {
    "a tab": (
        "      name: p\n\turl: http://p\n",
        "c.yaml:6:1: invalid YAML: while scanning for the next token, found character '\\t' "
        "that cannot start any token; hint: YAML indents with spaces, never tabs: replace the "
        "tab with spaces",
    ),
    "an unclosed quote": (
        '      name: p\n      url: "http://p\n',
        "c.yaml:6:12: invalid YAML: while scanning a quoted scalar, found unexpected end of "
        'stream; hint: the " quote opened here is never closed: end the value with a matching "',
    ),
    "no space after a colon": (
        "      name: p\n      url:http://p\n",
        "c.yaml:6:7: invalid YAML: while scanning a simple key, could not find expected ':'; "
        "hint: put a space after the colon: 'url: http://p', not 'url:http://p'",
    ),
    "a missing colon": (
        "      name: p\n      url http://p\n",
        "c.yaml:6:7: invalid YAML: while scanning a simple key, could not find expected ':'; "
        "hint: each line of a mapping is 'key: value': is the colon missing?",
    ),
    "a key indented too far": (
        "      name: p\n        url: http://p\n",
        "c.yaml:6:9: invalid YAML: mapping values are not allowed here; hint: this line is "
        "indented more than line 5, whose key already has a value: indent it as the other keys "
        "of its mapping",
    ),
    "a key indented too little": (
        "      name: p\n     url: http://p\n",
        "c.yaml:6:6: invalid YAML: while parsing a block mapping, expected <block end>, but "
        "found '<block mapping start>'; hint: check the indentation: this line starts in a "
        "column that matches none of the mappings or lists above it (the keys of one mapping, "
        "and the '-' of one list, line up)",
    ),
    "an unquoted ': ' in a value": (
        "      name: p: q\n      url: http://p\n",
        "c.yaml:5:14: invalid YAML: mapping values are not allowed here; hint: a value that "
        "contains ': ' must be quoted, as in key: 'a: b' (or a line break is missing before "
        "the next key)",
    ),
    "an unclosed bracket": (
        "      name: p\n      url: http://p\n    methods: [POST\n",
        "c.yaml:7:14: invalid YAML: while parsing a flow sequence, expected ',' or ']', but got "
        "'<stream end>'; hint: the '[' opened here is never closed with ']'",
    ),
    "a backslash in double quotes": (
        '      name: p\n      url: "http:\\p"\n',
        "c.yaml:6:19: invalid YAML: while scanning a double-quoted scalar, found unknown escape "
        "character 'p'; hint: in double quotes a backslash starts an escape such as \\n: use "
        "single quotes, or write \\\\ for a backslash",
    ),
}


@pytest.mark.parametrize(("mistake", "expected"), YAML_MISTAKES.values(), ids=YAML_MISTAKES)
def test_a_yaml_mistake_names_line_column_and_a_hint(mistake: str, expected: str) -> None:
    text = "routes:\n  - match: /a\n    protocol: kserve-v1\n    production:\n" + mistake
    assert errors_of(text) == [expected]


def test_a_line_without_its_colon_is_pointed_at_not_the_next_one() -> None:
    assert errors_of("listen 0.0.0.0:8080\nroutes: []\n") == [
        "c.yaml:1:1: invalid YAML: mapping values are not allowed here; hint: this line is not "
        "'key: value' (is its colon missing?), so YAML reads it as running on into line 2"
    ]


def test_a_control_character_is_located_by_line_and_column() -> None:
    assert errors_of("routes:\n  - match: /a\x1f\n") == [
        "c.yaml:2:14: invalid YAML: unacceptable character #x001f: special characters are not "
        "allowed; hint: remove it (control characters are not allowed in YAML, even quoted: in "
        "double quotes, write it as an escape such as \\x1f)"
    ]


def test_a_syntax_error_in_a_file_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text("routes:\n  - match: /a\n\tprotocol: kserve-v1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [error] = info.value.errors
    assert error.startswith(f"{path}:3:1: invalid YAML: ")
    assert error.endswith(
        "; hint: YAML indents with spaces, never tabs: replace the tab with spaces"
    )


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.errors == (f"{missing}: cannot read config: No such file or directory",)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"log_level: \xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(latin)
    assert info.value.errors == (f"{latin}: config is not UTF-8: invalid continuation byte",)


def test_config_error_pickles() -> None:
    error = ConfigError(["a:1: x: y", "a:2: z: w"])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.errors == error.errors
    assert str(copy) == "a:1: x: y\na:2: z: w"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        (" 3 s ", 3.0),
        ("0.1s", 0.1),
        ("100ms", 0.1),
        (".5s", 0.5),
        ("7", 7.0),
        (2, 2.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2 sec", "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us'"),
        ("s", "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us'"),
        ("1m30s", "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us'"),
        ("-1s", "must not be negative"),
        (-1, "must not be negative"),
        (
            float("inf"),
            "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us';"
            " it must be finite",
        ),
        (
            True,
            "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us', not a boolean",
        ),
        (None, "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us', not null"),
        ([1], "expected a duration like '2s', '500ms', '1.5s', '1m', '7d' or '250us', not a list"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("10MiB", 10_485_760),
        ("512KiB", 524_288),
        ("1GiB", 1_073_741_824),
        ("10MB", 10_000_000),
        ("1kb", 1000),
        ("100B", 100),
        ("1.5KiB", 1536),
        ("64", 64),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10 MiBs", "expected a size like '10MiB', '512KiB', '1GiB', '10MB' or '100B'"),
        ("1.5B", "must be a whole number of bytes"),
        ("-1MiB", "must not be negative"),
        (-5, "must not be negative"),
        (1.5, "expected a size like '10MiB', '512KiB', '1GiB', '10MB' or '100B', not a number"),
        (False, "expected a size like '10MiB', '512KiB', '1GiB', '10MB' or '100B', not a boolean"),
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "share"),
    [
        ("30%", 0.3),
        ("12.5%", 0.125),
        ("100%", 1.0),
        ("0%", 0.0),
        ("0.3", 0.3),
        (0.3, 0.3),
        (1, 1.0),
        (0, 0.0),
    ],
)
def test_parse_fraction(value: object, share: float) -> None:
    assert parse_fraction(value) == share


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("150%", "must be between 0% and 100%"),
        ("-5%", "must be between 0% and 100%"),
        ("30", "must be between 0 and 1 (write '30%' for a percentage)"),
        (1.5, "must be between 0 and 1 (or 0% and 100%)"),
        (float("nan"), "must be between 0 and 1 (or 0% and 100%)"),
        ("half", "expected a percentage like '30%' or a number between 0 and 1"),
        (True, "expected a percentage like '30%' or a number between 0 and 1, not a boolean"),
    ],
)
def test_parse_fraction_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_fraction(value)


ENV_CONFIG = """\
routes:
  - match: /a
    protocol: kserve-v1
    production:
      name: ${NAME:-prod}
      url: http://${HOST}:${PORT:-8080}/x
      timeout: ${T}
      max_connections: ${CONNS:-64}
    output: "$${not-a-var}"
"""


def test_env_substitution_set_default_and_typed() -> None:
    config = parse_config(
        ENV_CONFIG.replace("kserve-v1", "mlflow"), env={"HOST": "h.local", "T": "2s", "NAME": ""}
    )
    (route,) = config.routes
    # `:-` falls back on an empty variable too, as in the shell.
    assert route.production.name == "prod"
    assert route.production.url == "http://h.local:8080/x"
    assert route.production.timeout == 2.0
    # An unquoted value that was substituted is typed like plain YAML: "64" is an integer.
    assert route.production.max_connections == 64
    assert route.extractor.output == "${not-a-var}"


def test_env_substitution_missing_variables() -> None:
    assert errors_of(ENV_CONFIG.replace("kserve-v1", "mlflow"), env={"PORT": "1"}) == [
        "c.yaml:6: routes[0].production.url: environment variable 'HOST' is not set and "
        "has no default (got 'http://${HOST}:${PORT:-8080}/x')",
        "c.yaml:7: routes[0].production.timeout: environment variable 'T' is not set and "
        "has no default (got '${T}')",
    ]


def test_env_substitution_cannot_inject_yaml() -> None:
    config = parse_config(
        MINIMAL.replace("kserve-v1", "mlflow") + "    output: ${OUT}\n",
        env={"OUT": "x\n    prediction_path: [1]"},
    )
    assert config.routes[0].extractor.output == "x\n    prediction_path: [1]"


def test_env_substitution_quoted_stays_a_string_and_malformed_refs() -> None:
    assert errors_of(
        MINIMAL.replace('"http://prod:8080"}', '"http://p", max_connections: "${N}"}')
        + "    name: ${1BAD}\n    output: ${OPEN\n",
        env={"N": "5"},
    ) == [
        "c.yaml:4: routes[0].production.max_connections: expected an integer, not a string "
        "(got '5')",
        "c.yaml:5: routes[0].name: bad variable reference '${1BAD}' (got '${1BAD}')",
        "c.yaml:6: routes[0].output: unterminated '${' (write '$${' for a literal '${') "
        "(got '${OPEN')",
    ]


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHADOW_PROXY_TEST_HOST", "from-env")
    config = parse_config(MINIMAL.replace("prod:8080", "${SHADOW_PROXY_TEST_HOST}"))
    assert config.routes[0].production.origin == "http://from-env"


def round_trip(config: Config) -> Config:
    return parse_config(yaml.safe_dump(config_to_dict(config)), source=config.source, env={})


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_config_to_dict_round_trips_examples(path: Path) -> None:
    config = load_config(path, env={})
    assert round_trip(config) == config


def test_config_to_dict_fills_defaults_in_human_units() -> None:
    config = parse_config(
        MINIMAL
        + "    shadows: [{name: s, url: 'http://s', sample: 0.125, timeout: 1.5, "
        + "connect_timeout: 250ms}]\n",
        env={},
    )
    assert config_to_dict(config) == {
        "listen": "0.0.0.0:8080",
        "request_id_header": "X-Request-ID",
        "max_body": "10MiB",
        "shadow_max_body": "1MiB",
        "shadow_max_response": "4MiB",
        "shadow_strip_headers": ["Authorization", "Cookie"],
        "shutdown_timeout": "10s",
        "shadow_drain_timeout": "5s",
        "access_log": False,
        "log_level": "info",
        "routes": [
            {
                "name": "/predict",
                "match": "/predict",
                "methods": None,
                "protocol": "kserve-v1",
                "output": None,
                "prediction_path": None,
                "production": {
                    "name": "prod",
                    "url": "http://prod:8080",
                    "timeout": "30s",
                    "connect_timeout": "1s",
                    "max_connections": 256,
                },
                "shadows": [
                    {
                        "name": "s",
                        "url": "http://s",
                        "sample": "12.5%",
                        "timeout": "1.5s",
                        "connect_timeout": "250ms",
                        "max_in_flight": 16,
                        "max_queue": 1000,
                        "eject_after": 20,
                        "eject_for": "1s",
                        "role": "candidate",
                    }
                ],
                "compare": {
                    "kind": "classification",
                    "tolerance": 0.0,
                    "relative_tolerance": 0.0,
                    "distance": "total_variation",
                    "classes": None,
                    "max_instances": 10000,
                },
                "record": "0%",
                "segment": None,
            }
        ],
        "store": {
            "backend": "sqlite",
            "path": "shadow-proxy-predictions.db",
            "url": "redis://127.0.0.1:6379/0",
            "prefix": "shadowproxy:",
            "ttl": "7d",
            "tombstone_ttl": "1d",
            "max_records": 1000000,
            "max_disk": "10GiB",
            "timeout": "1s",
            "batch_size": 500,
            "flush_interval": "50ms",
            "queue": 10000,
            "sweep_interval": "1m",
        },
        "verdict": {
            "alpha": 0.05,
            "min_labels": 100,
            "min_requests": 100,
            "margin": "1%",
            "effect_size": 0.1,
            "max_error_rate": "1%",
            "latency_margin": "1%",
            "max_disagreement": None,
            "fleet_prometheus": None,
            "fleet_window": "30d",
            "history_interval": "1m",
            "history_points": 1440,
        },
        "labels": {"token": None, "max_body": "1MiB", "max_batch": 1000},
        "admin": {"token": None, "listen": None},
        "metrics": {"listen": None},
        "capture": {
            "enabled": False,
            "path": "shadow-proxy-capture.db",
            "max_per_second": 10.0,
            "agreements": "1%",
            "max_disk": "1GiB",
            "max_age": "7d",
            "max_body": "64KiB",
            "queue": 1000,
            "redact": {"headers": [], "fields": [], "patterns": []},
            "token": None,
        },
    }


def test_config_to_dict_round_trips_odd_values() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            listen: "[::]:0"
            max_body: 1500
            shadow_max_body: 10MB
            shutdown_timeout: 90s
            shadow_drain_timeout: 0.0003
            routes:
              - name: "cost $${x}"
                match: /a
                methods: [PUT, POST]
                protocol: custom
                prediction_path: a.0.b
                production: {name: a, url: "http://a", timeout: 2h}
                shadows: [{name: b, url: "http://b", sample: 0.1, timeout: 0.1}]
                compare: {kind: regression, tolerance: 0.1, relative_tolerance: 1e-3}
            """
        ),
        env={},
    )
    data = config_to_dict(config)
    assert data["listen"] == "[::]:0"
    assert (data["max_body"], data["shadow_max_body"]) == ("1500B", "10MB")
    assert (data["shutdown_timeout"], data["shadow_drain_timeout"]) == ("90s", "300us")
    assert data["routes"][0]["name"] == "cost $${x}"
    assert data["routes"][0]["production"]["timeout"] == "2h"
    assert data["routes"][0]["shadows"][0]["timeout"] == "100ms"
    assert data["routes"][0]["shadows"][0]["sample"] == "10%"
    assert round_trip(config) == config


def test_config_hash() -> None:
    config = parse_config(REFERENCE, source="a.yaml", env={})
    digest = config_hash(config)
    assert len(digest) == 12
    assert int(digest, 16) >= 0
    assert config_hash(parse_config(REFERENCE, source="elsewhere.yaml", env={})) == digest
    assert config_hash(replace(config, source="other")) == digest
    assert config_hash(replace(config, max_body=config.max_body + 1)) != digest
    assert config_hash(replace(config, access_log=True)) != digest


# --- labels and the prediction store ------------------------------------------------------------


def test_store_and_labels_sections_parse_to_typed_values() -> None:
    config = parse_config(
        MINIMAL
        + "    record: 25%\n"
        + "store: {backend: redis, url: 'redis://cache:6379/2', ttl: 3d, tombstone_ttl: 12h,\n"
        + "        max_records: 5000, timeout: 200ms, flush_interval: 10ms, queue: 64}\n"
        + "labels: {token: '${LABEL_TOKEN}', max_body: 64KiB, max_batch: 10}\n",
        env={"LABEL_TOKEN": "s3cret"},
    )
    assert config.routes[0].record == 0.25
    assert config.records
    assert config.store == StoreConfig(
        backend="redis",
        url="redis://cache:6379/2",
        ttl=3 * 86400.0,
        tombstone_ttl=12 * 3600.0,
        max_records=5000,
        timeout=0.2,
        flush_interval=0.01,
        queue=64,
    )
    assert config.labels == LabelsConfig(token="s3cret", max_body=64 * 1024, max_batch=10)
    assert config_to_dict(config, redact=True)["labels"]["token"] == "<redacted>"
    assert parse_config(yaml.safe_dump(config_to_dict(config)), env={}) == replace(
        config, source="<string>"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:s3cret@redis:6379/0", "redis://app:<redacted>@redis:6379/0"),
        ("redis://:s3cret@redis:6379/0", "redis://:<redacted>@redis:6379/0"),
        ("redis://redis:6379/0?password=s3cret", "redis://redis:6379/0?password=<redacted>"),
        (
            "rediss://app:s3cret@[::1]:6380/0?db=1&Password=s3cret&ssl_cert_reqs=none",
            "rediss://app:<redacted>@[::1]:6380/0?db=1&Password=<redacted>&ssl_cert_reqs=none",
        ),
        (
            "unix:///run/redis.sock?password=s3cret&db=2",
            "unix:///run/redis.sock?password=<redacted>&db=2",
        ),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis://app@redis:6379/0?db=1&&x", "redis://app@redis:6379/0?db=1&&x"),
    ],
)
def test_redact_url_hides_passwords_and_keeps_the_rest_as_written(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_no_recording_by_default_and_an_empty_token_means_none() -> None:
    config = parse_config(MINIMAL + "labels: {token: '${T:-}'}\n", env={})
    assert not config.records
    assert config.routes[0].record == 0.0
    assert config.labels.token is None
    assert config.store == StoreConfig()


def test_store_and_labels_errors_name_key_and_value() -> None:
    assert errors_of(
        MINIMAL + "store: {backend: mysql, url: 'http://x', ttl: 0}\nlabels: {max_batch: 0}\n"
    ) == [
        "c.yaml:5: store.backend: expected one of sqlite, redis (got 'mysql')",
        "c.yaml:5: store.url: expected a URL like 'redis://host:6379/0', 'rediss://…' or "
        "'unix://…' (got 'http://x')",
        "c.yaml:5: store.ttl: must be greater than 0 (got 0)",
        "c.yaml:6: labels.max_batch: must be at least 1 (got 0)",
    ]


def test_warns_when_labels_are_exposed_without_a_token() -> None:
    exposed = parse_config(MINIMAL + "    record: 100%\n", source="p.yaml", env={})
    assert config_warnings(exposed) == [
        "p.yaml: labels.token: POST /labels is exposed on 0.0.0.0:8080 without a token; anyone "
        "who can reach the proxy can post labels (set labels.token, e.g. to ${LABEL_TOKEN})"
    ]
    local = parse_config("listen: 127.0.0.1:8080\n" + MINIMAL + "    record: 1\n", env={})
    assert config_warnings(local) == []
    with_token = parse_config(MINIMAL + "    record: 1\nlabels: {token: t}\n", env={})
    assert config_warnings(with_token) == []
    assert config_warnings(parse_config(MINIMAL, env={})) == []


def docstring_defaults() -> dict[str, str]:
    """{key: default} from the key table in proxy.config's docstring."""
    lines = (proxy.config.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"=+  =+  =+", line)]
    assert len(rules) == 3
    (_, key_end), (default_start, default_end), _ = (
        found.span() for found in re.finditer("=+", lines[rules[0]])
    )
    return {
        line[:key_end].strip(): line[default_start:default_end].strip()
        for line in lines[rules[1] + 1 : rules[2]]
        if line[:key_end].strip()
    }


def test_the_docstring_lists_every_key_the_loader_accepts() -> None:
    # The schema the loaders check keys against, which also points misplaced keys home.
    sections = {section: keys for section, keys in loader._SCHEMA.items() if section}
    assert loader._SCHEMA[""] is loader._TOP_KEYS
    accepted = set(loader._TOP_KEYS) | {
        f"{section}.{key}" for section, keys in sections.items() for key in keys
    }
    documented = set(docstring_defaults())
    assert documented - accepted == set()
    # Only the sections themselves go without a row: each of their keys has one.
    assert accepted - documented == {
        "store",
        "labels",
        "verdict",
        "admin",
        "metrics",
        "capture",
        "capture.redact",
        "routes[].production",
        "routes[].compare",
    }


def test_the_docstring_defaults_are_the_real_ones() -> None:
    config = parse_config(MINIMAL + "    shadows: [{name: s, url: 'http://s:8080'}]\n", env={})

    def flat(value: object, path: str = "") -> Iterator[tuple[str, object]]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from flat(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            yield from flat(value[0], f"{path}[]")
        else:
            yield path, value

    def shown(value: object) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list):
            return f"[{', '.join(map(str, value))}]"
        return str(value)

    prose = {
        "(required)",
        "(custom: required)",
        "the match string",
        "any method",
        "the main listener",
        "true (with capture:)",
    }
    documented = {
        key: default
        for key, default in docstring_defaults().items()
        # The config under test has a shadow, so that the shadow's defaults are dumped.
        if default not in prose and key != "routes[].shadows"
    }
    dumped = dict(flat(config_to_dict(config)))
    assert {key: shown(dumped.get(key)) for key in documented} == documented


def test_the_replaced_latency_ratio_is_refused_saying_what_replaced_it() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            """
verdict: {max_latency_ratio: 1.5}
routes:
  - match: /m
    protocol: kserve-v1
    production: {name: p, url: "http://127.0.0.1:9001"}
"""
        )
    [message] = raised.value.errors
    assert "verdict.max_latency_ratio" in message
    assert "was replaced by verdict.latency_margin" in message


@pytest.mark.parametrize(
    ("where", "key", "value", "limit"),
    [
        ("shadow", "max_in_flight", 10_000_000, "10,000 (requests in flight to one shadow)"),
        ("shadow", "max_queue", 100_000_000_000, "1,000,000 (requests waiting in memory)"),
        ("production", "max_connections", 1_000_000, "10,000 (connections to one upstream)"),
    ],
)
def test_absurd_bounds_are_refused(where: str, key: str, value: int, limit: str) -> None:
    shadow = f", {key}: {value}" if where == "shadow" else ""
    production = f", {key}: {value}" if where == "production" else ""
    with pytest.raises(ConfigError) as raised:
        parse_config(
            f"""
routes:
  - match: /m
    protocol: kserve-v1
    production: {{name: p, url: "http://127.0.0.1:9001"{production}}}
    shadows: [{{name: s, url: "http://127.0.0.1:9002"{shadow}}}]
"""
        )
    [message] = raised.value.errors
    assert message.endswith(f".{key}: must be at most {limit} (got {value})")


def test_the_capture_needs_a_file_of_its_own() -> None:
    # Its max_disk counts the whole file's pages: sharing the store's, it would remove them.
    assert errors_of(
        MINIMAL + "store: {path: data/p.db}\ncapture:\n  path: ./data/../data/p.db\n"
    ) == [
        "c.yaml:7: capture.path: must not be store.path's file: give the capture a file of its"
        " own (got './data/../data/p.db')"
    ]
    # Another file, a Redis store, or the capture off: no clash.
    parse_config(MINIMAL + "store: {path: p.db}\ncapture: {path: c.db}\n", env={})
    parse_config(MINIMAL + "store: {backend: redis, path: p.db}\ncapture: {path: p.db}\n", env={})
    parse_config(MINIMAL + "store: {path: p.db}\ncapture: {path: p.db, enabled: false}\n", env={})


def test_a_bare_capture_section_turns_the_capture_on_with_its_defaults() -> None:
    # `capture:` with nothing under it is YAML's null: as much a section as `capture: {}`.
    for text in ("capture:\n", "capture: {}\n"):
        config = parse_config(MINIMAL + text, env={})
        assert config.capture == CaptureConfig(enabled=True)
    assert parse_config(MINIMAL, env={}).capture == CaptureConfig(enabled=False)

"""Hostile configs (an alias bomb, 10 MB, 5,000 levels of nesting) are refused by the loader's
caps, by the validation child and by check-config, each naming the file, the line and the cap;
the child's time and memory limits; and the validated Config's round trip through its pickle."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import proxy.config.limits
from loadtest.hostile_configs import bomb_classes, padded_config
from proxy.config import (
    MAX_CONFIG_BYTES,
    MAX_YAML_ALIASES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from proxy.validation import (
    EXIT_USAGE,
    load_pickled,
    validate_in_child,
    validate_in_child_async,
)

ROUTE = """\
routes:
  - match: /v1/models/m:predict
    protocol: kserve-v1
    production: {name: prod, url: "http://127.0.0.1:9001/v1/models/m:predict"}
"""

# Every kind of value a config holds: enums, frozensets, tuples, None, durations, the sections.
FULL = """\
listen: 127.0.0.1:8080
shadow_strip_headers: [Authorization]
log_level: debug
routes:
  - name: iris
    match: /v2/models/iris/infer
    methods: [POST, PUT]
    protocol: open-inference-v2
    output: predict
    production: {name: iris-lr, url: "http://iris-lr:8080/v2/models/iris-lr/infer", timeout: 2s}
    shadows:
      - {name: iris-rf, url: "http://iris-rf:8080/v2/infer", sample: 25%, timeout: 500ms}
    compare: {kind: probabilities, distance: jensen_shannon, classes: [setosa, 1, true]}
    record: 10%
  - match: /custom
    protocol: custom
    prediction_path: result.0.scores
    production: {name: c, url: "https://c.example/score"}
    compare: {kind: regression, tolerance: 0.5, relative_tolerance: 0.01}
store: {backend: redis, url: "redis://127.0.0.1:6379/1", ttl: 1d}
labels: {token: label-token, max_batch: 10}
verdict: {alpha: 0.1, max_disagreement: 5%}
admin: {token: admin-token, listen: "127.0.0.1:9901"}
metrics: {listen: "127.0.0.1:9464"}
"""


def bomb() -> str:
    """A billion laughs in compare.classes (line 6): 9**9 leaves once expanded, 300 bytes."""
    compare = f"    compare: {{kind: classification, classes: {bomb_classes(9, 9)}}}\n"
    return ROUTE + "    shadows: []\n" + compare


HOSTILE: dict[str, tuple[Callable[[], str], Callable[[str], str]]] = {
    "alias-bomb": (
        bomb,
        lambda source: (
            f"{source}:6: the config has more than 100000 YAML nodes once its aliases are "
            "expanded; at most 100000 are accepted"
        ),
    ),
    "10MB": (
        lambda: padded_config(ROUTE, 10 * 2**20),
        lambda source: f"{source}: the config is 10485760 bytes; at most 1048576 are accepted",
    ),
    "deep-nesting": (
        lambda: "routes: " + "[" * 5000 + "]" * 5000 + "\n",
        lambda source: (
            f"{source}:1: the config nests more than 64 levels deep; at most 64 are accepted"
        ),
    ),
}


@pytest.fixture(params=sorted(HOSTILE))
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """A hostile config file, and the one error it must be refused with."""
    text, error = HOSTILE[request.param]
    path = tmp_path / f"{request.param}.yaml"
    path.write_text(text())
    return path, error(str(path))


# -- the caps, in the loader ----------------------------------------------------------------------


def test_the_caps() -> None:
    assert (MAX_CONFIG_BYTES, MAX_YAML_ALIASES, MAX_YAML_NODES, MAX_YAML_DEPTH) == (
        1048576,
        100,
        100000,
        64,
    )


def test_load_config_refuses_a_hostile_file(hostile: tuple[Path, str]) -> None:
    path, error = hostile
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.errors == (error,)


def test_a_billion_laughs_is_refused_before_it_expands() -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError):
        parse_config(bomb(), "bomb.yaml", env={})
    assert time.perf_counter() - started < 0.5  # about 3 ms; unguarded, 45 s and 2 GB


def test_parse_config_refuses_the_same_text(hostile: tuple[Path, str]) -> None:
    path, error = hostile
    with pytest.raises(ConfigError) as caught:
        parse_config(path.read_text(), "hostile.yaml", env={})
    assert caught.value.errors == (error.replace(str(path), "hostile.yaml"),)


def test_a_file_of_exactly_the_cap_loads_and_one_byte_more_does_not(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(padded_config(ROUTE, MAX_CONFIG_BYTES))
    assert load_config(path, env={}) == parse_config(ROUTE, str(path), env={})
    path.write_text(padded_config(ROUTE, MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.errors == (
        f"{path}: the config is 1048577 bytes; at most 1048576 are accepted",
    )


def test_a_stream_over_the_cap_is_refused_without_a_size(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(  # a FIFO reports no size: the cap is met while reading
        [sys.executable, "-c", f"open({str(fifo)!r}, 'w').write('#' * {2 * MAX_CONFIG_BYTES})"]
    )
    try:
        with pytest.raises(ConfigError) as caught:
            load_config(fifo, env={})
    finally:
        writer.kill()
        writer.wait()
    assert caught.value.errors == (
        f"{fifo}: the config is more than 1048576 bytes; at most 1048576 are accepted",
    )


def test_the_size_cap_counts_bytes_not_characters() -> None:
    text = padded_config(ROUTE, MAX_CONFIG_BYTES - 3) + "#é\n"  # 3 characters, 4 bytes
    assert len(text) == MAX_CONFIG_BYTES
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env={})
    assert caught.value.errors == (
        "c.yaml: the config is 1048577 bytes; at most 1048576 are accepted",
    )


def test_a_hundred_aliases_are_accepted_and_one_more_is_not() -> None:
    def shadows(aliases: int) -> str:
        first = '&s {name: s0, url: "http://127.0.0.1:9002/p"}'
        merged = "".join(f"      - {{<<: *s, name: s{i}}}\n" for i in range(1, aliases + 1))
        return f"{ROUTE}    shadows:\n      - {first}\n{merged}"

    config = parse_config(shadows(100), "c.yaml", env={})
    assert [s.name for s in config.routes[0].shadows] == [f"s{i}" for i in range(101)]
    with pytest.raises(ConfigError) as caught:
        parse_config(shadows(101), "c.yaml", env={})
    assert caught.value.errors == (
        "c.yaml:107: the config has more than 100 YAML aliases; at most 100 are accepted",
    )


def test_nodes_are_counted_without_any_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy.config.limits, "MAX_YAML_NODES", 20)
    with pytest.raises(ConfigError) as caught:
        parse_config(f"{ROUTE}    compare: {{classes: [a, b, c, d, e, f]}}\n", "c.yaml", env={})
    assert caught.value.errors == (
        "c.yaml:5: the config has more than 20 YAML nodes once its aliases are expanded; "
        "at most 20 are accepted",
    )


def test_sixty_four_levels_reach_the_schema_and_sixty_five_do_not() -> None:
    # The top-level mapping is the first level, `routes` the second.
    with pytest.raises(ConfigError) as caught:
        parse_config("routes: " + "[" * 62 + "[x]" + "]" * 62, "c.yaml", env={})
    (error,) = caught.value.errors
    assert error.startswith("c.yaml:1: routes[0]: expected a mapping, not a list (got [[[")
    with pytest.raises(ConfigError) as caught:
        parse_config("routes: " + "[" * 63 + "[x]" + "]" * 63, "c.yaml", env={})
    assert caught.value.errors == (
        "c.yaml:1: the config nests more than 64 levels deep; at most 64 are accepted",
    )


def test_deep_block_nesting_is_refused_on_its_line() -> None:
    text = (
        ROUTE
        + "    compare:\n"
        + "".join(f"{'  ' * (level + 3)}k{level}:\n" for level in range(200))
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env={})
    assert caught.value.errors == (
        "c.yaml:67: the config nests more than 64 levels deep; at most 64 are accepted",
    )


def test_a_recursive_alias_is_an_ordinary_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"{ROUTE}    shadows: &s [*s]\n", "c.yaml", env={})
    assert caught.value.errors == (
        "c.yaml:5: routes[0].shadows[0]: expected a mapping, not a list (got [[...]])",
    )


def test_a_small_bomb_is_still_reported_by_key() -> None:
    text = f"{ROUTE}    compare: {{classes: {bomb_classes(3, 3)}}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env={})
    assert caught.value.errors[0] == (
        "c.yaml:5: routes[0].compare.classes[0]: expected a class: a string (1-100 characters), "
        "a finite number or a boolean (got ['x', 'x', 'x'])"
    )


def test_check_config_refuses_a_hostile_file_and_exits_1(hostile: tuple[Path, str]) -> None:
    path, error = hostile
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"invalid config {path}:\n  {error}\n"


# -- the pickle -----------------------------------------------------------------------------------


def test_a_config_with_every_kind_of_value_pickles_equal() -> None:
    config = parse_config(FULL, "full.yaml", env={})
    copy = pickle.loads(pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL))
    assert copy == config
    assert copy.routes == config.routes
    assert copy.routes[0].methods == frozenset({"POST", "PUT"})
    assert copy.routes[0].comparator.distance is config.routes[0].comparator.distance
    assert copy.routes[1].extractor.path == ("result", "0", "scores")


def test_load_pickled_refuses_what_is_not_a_config(tmp_path: Path) -> None:
    other = tmp_path / "other.pickle"
    other.write_bytes(pickle.dumps({"routes": []}))
    with pytest.raises(ConfigError) as caught:
        load_pickled(str(other))
    assert caught.value.errors == (f"{other}: holds a dict, not a validated config",)
    missing = tmp_path / "missing.pickle"
    with pytest.raises(ConfigError) as caught:
        load_pickled(str(missing))
    assert caught.value.errors == (
        f"{missing}: cannot load the validated config: [Errno 2] No such file or directory: "
        f"'{missing}'",
    )


# -- the child ------------------------------------------------------------------------------------


def test_a_valid_config_round_trips_through_the_child(tmp_path: Path) -> None:
    path, out = tmp_path / "full.yaml", tmp_path / "run" / "config.pickle"
    path.write_text(FULL)
    out.parent.mkdir()
    config = validate_in_child(str(path), str(out))
    assert config == load_config(path)
    assert isinstance(config, Config)
    assert load_pickled(str(out)) == config  # left in place for the processes that start from it
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["config.pickle"]


async def test_a_valid_config_round_trips_through_the_child_from_a_loop(tmp_path: Path) -> None:
    path, out = tmp_path / "full.yaml", tmp_path / "config.pickle"
    path.write_text(FULL)
    config = await validate_in_child_async(str(path), str(out))
    assert config == load_config(path)
    assert load_pickled(str(out)) == config


def test_the_child_refuses_a_hostile_file(hostile: tuple[Path, str], tmp_path: Path) -> None:
    path, error = hostile
    out = tmp_path / "config.pickle"
    with pytest.raises(ConfigError) as caught:
        validate_in_child(str(path), str(out))
    assert caught.value.errors == (error,)
    assert not out.exists()


async def test_the_child_refuses_a_bomb_from_a_loop(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    with pytest.raises(ConfigError) as caught:
        await validate_in_child_async(str(path), str(tmp_path / "config.pickle"))
    assert caught.value.errors == (HOSTILE["alias-bomb"][1](str(path)),)


def test_the_child_passes_every_error_back(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(ROUTE + "    record: 2\nmax_bodyy: 1\n")
    with pytest.raises(ConfigError) as caught:
        validate_in_child(str(path), str(tmp_path / "config.pickle"))
    assert caught.value.errors == tuple(_errors(lambda: load_config(path)))
    assert len(caught.value.errors) == 2


def _errors(load: Callable[[], object]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load()
    return caught.value.errors


def test_a_validation_over_its_time_limit_is_refused(tmp_path: Path) -> None:
    path, out = tmp_path / "c.yaml", tmp_path / "config.pickle"
    path.write_text(ROUTE)
    with pytest.raises(ConfigError) as caught:
        validate_in_child(str(path), str(out), time_limit=0.001)
    assert caught.value.errors == (
        f"{path}: validating the config took longer than 0.001 s; refused",
    )
    assert not out.exists()


async def test_a_validation_over_its_time_limit_is_refused_from_a_loop(tmp_path: Path) -> None:
    path, out = tmp_path / "c.yaml", tmp_path / "config.pickle"
    path.write_text(ROUTE)
    with pytest.raises(ConfigError) as caught:
        await validate_in_child_async(str(path), str(out), time_limit=0.001)
    assert caught.value.errors == (
        f"{path}: validating the config took longer than 0.001 s; refused",
    )
    assert not out.exists()


def test_a_validation_over_its_memory_limit_is_refused(tmp_path: Path) -> None:
    path, out = tmp_path / "c.yaml", tmp_path / "config.pickle"
    path.write_text(ROUTE)
    with pytest.raises(ConfigError) as caught:
        validate_in_child(str(path), str(out), memory_limit=16 * 2**20)
    assert caught.value.errors == (
        f"{path}: validating the config needed more than 16777216 bytes of memory (16 MiB); "
        "refused",
    )
    assert not out.exists()


async def test_a_validation_over_its_memory_limit_is_refused_from_a_loop(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ROUTE)
    with pytest.raises(ConfigError) as caught:
        await validate_in_child_async(
            str(path), str(tmp_path / "config.pickle"), memory_limit=16 * 2**20
        )
    assert caught.value.errors == (
        f"{path}: validating the config needed more than 16777216 bytes of memory (16 MiB); "
        "refused",
    )


def test_a_crashed_child_is_refused_naming_its_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(ROUTE)
    out = tmp_path / "missing" / "config.pickle"
    with pytest.raises(ConfigError) as caught:
        validate_in_child(str(path), str(out))
    assert caught.value.errors == (
        f"{path}: the config validator exited with status 1 (FileNotFoundError: [Errno 2] No "
        f"such file or directory: '{out}.partial'); refused",
    )


def test_the_child_speaks_json_and_its_own_exit_statuses(tmp_path: Path) -> None:
    path, out = tmp_path / "c.yaml", tmp_path / "config.pickle"
    path.write_text("routes: []\n")
    child = [sys.executable, "-m", "proxy.validation"]
    done = subprocess.run([*child, str(path), str(out)], capture_output=True, check=False)
    assert done.returncode == 2
    assert json.loads(done.stdout) == [f"{path}:1: routes: must be a non-empty list (got [])"]
    done = subprocess.run([*child, str(path)], capture_output=True, check=False)
    assert done.returncode == EXIT_USAGE
    path.write_text(ROUTE)
    done = subprocess.run([*child, str(path), str(out)], capture_output=True, check=False)
    assert (done.returncode, done.stdout) == (0, b"")
    assert load_pickled(str(out)) == load_config(path)

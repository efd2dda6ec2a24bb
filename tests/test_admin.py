"""The admin API: 401 without a token, 403 with a wrong one, off without one configured; the
effective config with secrets redacted; per-shadow pause, resume and sample rate taking effect on
the very next request; reload; and /metrics and /admin on listeners of their own."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.config import (
    ConfigError,
    config_hash,
    config_to_dict,
    config_warnings,
    load_config,
    parse_config,
)
from proxy.core.sampling import Sampler, bucket
from tests.conftest import FakeModel, FakeModelFactory, ProxyFactory, Received, RunningProxy, v1

ROUTE = "/v1/models/m:predict"
TOKEN = "admin-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def echo(r: Received) -> Any:
    return v1(r.json()["instances"])


def config(prod: str, shadows: list[dict[str, Any]], **top: Any) -> str:
    route = {
        "name": "r",
        "match": ROUTE,
        "protocol": "kserve-v1",
        "production": {"name": "prod", "url": prod + ROUTE},
        "shadows": shadows,
        "record": 1 if top.pop("routes_record", False) else 0,
    }
    top.setdefault("admin", {"token": TOKEN})
    return json.dumps({**top, "routes": [route]})


async def admin(
    p: RunningProxy,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = AUTH,
) -> tuple[int, Any, dict[str, str]]:
    data = body if body is None or isinstance(body, bytes) else orjson.dumps(body)
    url = p.admin_url + path
    async with p.session.request(method, url, data=data, headers=headers) as r:
        return r.status, orjson.loads(await r.read()), dict(r.headers)


async def send(p: RunningProxy, ids: list[str]) -> None:
    for request_id in ids:
        status, _, _ = await p.post(ROUTE, {"instances": [1]}, {"X-Request-ID": request_id})
        assert status == 200
    await p.settled()


def skipped(p: RunningProxy, reason: str, shadow: str = "s") -> float:
    labels = {"route": "r", "shadow": shadow, "reason": reason}
    return p.value("shadowproxy_shadow_skipped_total", **labels)


def admin_count(p: RunningProxy, action: str, result: str) -> float:
    return p.value("shadowproxy_admin_requests_total", action=action, result=result)


@pytest.fixture
async def models(fake_model: FakeModelFactory) -> tuple[FakeModel, FakeModel]:
    return await fake_model(echo), await fake_model(echo)


async def test_401_without_a_token_403_with_a_wrong_one_on_every_endpoint(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory
) -> None:
    prod, shadow = models
    p = await proxy(config(prod.url, [{"name": "s", "url": shadow.url + ROUTE}]))
    endpoints = [
        ("GET", "/admin/config"),
        ("GET", "/admin/shadows"),
        ("POST", "/admin/shadows/r/s/pause"),
        ("POST", "/admin/shadows/r/s/resume"),
        ("POST", "/admin/shadows/r/s/sample"),
        ("POST", "/admin/reload"),
        ("GET", "/admin/nothing-here"),
    ]
    for method, path in endpoints:
        status, doc, headers = await admin(p, method, path, headers=None)
        assert (status, doc) == (401, {"error": "a bearer token is required"}), path
        assert headers["WWW-Authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer admin-s3creT"}
        status, doc, _ = await admin(p, method, path, headers=wrong)
        assert (status, doc) == (403, {"error": "the bearer token is wrong"}), path
        status, doc, _ = await admin(p, method, path, headers={"Authorization": TOKEN})
        assert status == 403, path  # not a bearer credential
    assert admin_count(p, "pause", "unauthorized") == 1
    assert admin_count(p, "pause", "forbidden") == 2
    assert admin_count(p, "unknown", "forbidden") == 2
    # Nothing reached a model, and the shadow runs as configured.
    assert (prod.received, shadow.received) == ([], [])
    status, doc, _ = await admin(p, "GET", "/admin/shadows")
    assert doc["shadows"][0]["paused"] is False


async def test_without_a_token_the_admin_api_is_off_and_never_proxied(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory
) -> None:
    prod, shadow = models
    p = await proxy(config(prod.url, [{"name": "s", "url": shadow.url + ROUTE}], admin=None))
    for method, path in [("GET", "/admin/config"), ("POST", "/admin/reload"), ("GET", "/admin")]:
        status, doc, _ = await admin(p, method, path)
        expected = {"error": "the admin API is off: set admin.token or admin.token_file"}
        assert (status, doc) == (404, expected)
    assert prod.received == []
    assert admin_count(p, "config", "off") == 1


async def test_config_is_the_effective_one_with_secrets_redacted(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow = models
    (tmp_path / "label-token").write_text("label-s3cret\n")
    text = config(
        prod.url,
        [{"name": "s", "url": shadow.url + ROUTE, "sample": "25%"}],
        labels={"token_file": "label-token"},
    )
    p = await proxy(text, tmp_path / "proxy.json")
    status, doc, _ = await admin(p, "GET", "/admin/config")
    assert status == 200
    assert doc["source"] == str(tmp_path / "proxy.json")
    assert doc["config_hash"] == config_hash(p.state.config)
    assert doc["config"]["admin"] == {"token": "<redacted>", "listen": None}
    assert doc["config"]["labels"]["token_file"] == "label-token"
    assert "label-s3cret" not in json.dumps(doc)
    assert TOKEN not in json.dumps(doc)
    assert doc["config"]["routes"][0]["shadows"][0]["sample"] == "25%"
    assert doc["overrides"] == []


async def test_pause_and_resume_take_effect_on_the_next_request(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory
) -> None:
    prod, shadow = models
    p = await proxy(config(prod.url, [{"name": "s", "url": shadow.url + ROUTE}]))
    await send(p, ["a1", "a2"])
    status, doc, _ = await admin(p, "POST", "/admin/shadows/r/s/pause")
    assert (status, doc) == (
        200,
        {"route": "r", "shadow": "s", "paused": True, "sample": 1.0, "configured_sample": 1.0},
    )
    assert p.value("shadowproxy_shadow_paused", route="r", shadow="s") == 1
    await send(p, ["b1", "b2", "b3"])
    assert len(shadow.received) == 2
    assert len(prod.received) == 5
    assert skipped(p, "paused") == 3
    status, doc, _ = await admin(p, "POST", "/admin/shadows/r/s/resume")
    assert (status, doc["paused"]) == (200, False)
    await send(p, ["c1"])
    assert [r.headers["X-Request-ID"] for r in shadow.received] == ["a1", "a2", "c1"]
    assert p.value("shadowproxy_shadow_paused", route="r", shadow="s") == 0
    assert admin_count(p, "pause", "ok") == 1
    assert admin_count(p, "resume", "ok") == 1


async def test_sample_rate_changes_at_runtime_and_null_restores_the_config(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory
) -> None:
    prod, shadow = models
    p = await proxy(config(prod.url, [{"name": "s", "url": shadow.url + ROUTE, "sample": 1}]))
    ids = [f"req-{i}" for i in range(40)]
    status, doc, _ = await admin(p, "POST", "/admin/shadows/r/s/sample", {"sample": "30%"})
    assert (status, doc["sample"], doc["configured_sample"]) == (200, 0.3, 1.0)
    assert p.value("shadowproxy_shadow_sample_ratio", route="r", shadow="s") == 0.3
    await send(p, ids)
    admitted = [i for i in ids if Sampler(0.3).admits(bucket(i))]
    assert 0 < len(admitted) < len(ids)
    assert [r.headers["X-Request-ID"] for r in shadow.received] == admitted
    assert skipped(p, "sampled_out") == len(ids) - len(admitted)

    status, doc, _ = await admin(p, "POST", "/admin/shadows/r/s/sample", {"sample": None})
    assert (status, doc["sample"]) == (200, 1.0)
    await send(p, ["after"])
    assert shadow.received[-1].headers["X-Request-ID"] == "after"
    status, doc, _ = await admin(p, "GET", "/admin/config")
    assert doc["overrides"] == []


async def test_bad_admin_requests_say_what_was_wrong(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory
) -> None:
    prod, shadow = models
    p = await proxy(config(prod.url, [{"name": "s", "url": shadow.url + ROUTE}]))
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "/admin/shadows/r/s/sample", {"sample": 1.5}, 400,
         "sample: must be between 0 and 1 (or 0% and 100%) (got 1.5)"),
        ("POST", "/admin/shadows/r/s/sample", {"rate": 0.5}, 400,
         'body must be {"sample": <0..1, "N%", or null for the config\'s rate>}'),
        ("POST", "/admin/shadows/r/nope/pause", None, 404, "no shadow 'nope' on route 'r'"),
        ("POST", "/admin/shadows/x/s/sample", {"sample": 0}, 404, "no shadow 's' on route 'x'"),
        ("GET", "/admin/reload", None, 405, "/admin/reload takes POST, not GET"),
        ("DELETE", "/admin/config", None, 405, "/admin/config takes GET, not DELETE"),
        ("GET", "/admin/whatever", None, 404, "no admin endpoint GET /admin/whatever"),
    ]  # fmt: skip
    for method, path, body, code, message in cases:
        status, doc, _ = await admin(p, method, path, body)
        assert (status, doc) == (code, {"error": message}), path
    status, doc, _ = await admin(p, "POST", "/admin/shadows/r/s/sample", b"{not json")
    assert status == 400
    assert doc["error"].startswith("body is not JSON")
    assert prod.received == []
    assert p.state.routes[0].shadows.dispatchers[0].sample == 1.0


async def test_reload_through_the_admin_api(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, shadow = models
    path = tmp_path / "proxy.json"
    p = await proxy(config(prod.url, [{"name": "s", "url": shadow.url + ROUTE}]), path)
    await admin(p, "POST", "/admin/shadows/r/s/pause")

    # Invalid: 422 with the errors, the running config serves on.
    path.write_text(config(prod.url, [{"name": "s", "url": shadow.url + ROUTE, "sample": 2}]))
    status, doc, _ = await admin(p, "POST", "/admin/reload")
    assert status == 422
    assert doc == {
        "result": "failure",
        "errors": [
            f"{path}:1: routes[0].shadows[0].sample: must be between 0 and 1 "
            "(or 0% and 100%) (got 2)"
        ],
    }
    assert p.value("shadowproxy_config_reloads_total", result="failure") == 1
    await send(p, ["x"])

    # Valid: a second shadow; the paused one stays paused, the new one runs.
    both = [{"name": "s", "url": shadow.url + ROUTE}, {"name": "t", "url": shadow.url + ROUTE}]
    path.write_text(config(prod.url, both))
    status, doc, _ = await admin(p, "POST", "/admin/reload")
    assert (status, doc) == (
        200,
        {"result": "success", "config_hash": config_hash(load_config(path))},
    )
    await send(p, ["y"])
    assert [r.headers["X-Shadow-Request"] for r in shadow.received] == ["t"]
    assert skipped(p, "paused") == 2

    # The paused shadow removed: its override is forgotten, so it comes back running.
    path.write_text(config(prod.url, both[1:]))
    assert (await admin(p, "POST", "/admin/reload"))[0] == 200
    path.write_text(config(prod.url, both))
    assert (await admin(p, "POST", "/admin/reload"))[0] == 200
    status, doc, _ = await admin(p, "GET", "/admin/shadows")
    assert [(s["shadow"], s["paused"]) for s in doc["shadows"]] == [("s", False), ("t", False)]
    assert p.value("shadowproxy_config_reloads_total", result="success") == 3


async def test_a_reload_rotates_the_admin_token_from_its_file(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, _shadow = models
    secret = tmp_path / "admin-token"
    secret.write_text("first-token\n")
    text = config(prod.url, [], admin={"token_file": str(secret)})
    p = await proxy(text, tmp_path / "proxy.json")
    first = {"Authorization": "Bearer first-token"}
    assert (await admin(p, "GET", "/admin/config", headers=first))[0] == 200
    secret.write_text("second-token")
    assert (await admin(p, "POST", "/admin/reload", headers=first))[0] == 200
    assert (await admin(p, "GET", "/admin/config", headers=first))[0] == 403
    second = {"Authorization": "Bearer second-token"}
    assert (await admin(p, "GET", "/admin/config", headers=second))[0] == 200


async def test_metrics_and_admin_on_listeners_of_their_own(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory
) -> None:
    prod, shadow = models
    text = config(
        prod.url,
        [{"name": "s", "url": shadow.url + ROUTE}],
        admin={"token": TOKEN, "listen": "127.0.0.1:0"},
        metrics={"listen": "127.0.0.1:0"},
    )
    p = await proxy(text)
    assert len({p.url, p.admin_url, p.metrics_url}) == 3
    await send(p, ["m1"])
    async with p.session.get(p.metrics_url + "/metrics") as r:
        assert r.status == 200
        text = (await r.read()).decode()
    assert 'shadowproxy_requests_total{route="r"} 1.0' in text
    # On the proxied port both answer that they live elsewhere, and reach no model.
    for path, where in [("/metrics", "/metrics"), ("/admin/config", "the admin API")]:
        async with p.session.get(p.url + path, headers=AUTH) as r:
            assert r.status == 404
            assert await r.json() == {"error": f"{where} is served on its own listener " + (
                "(metrics.listen)" if path == "/metrics" else "(admin.listen)"
            )}  # fmt: skip
    assert len(prod.received) == 1
    status, doc, _ = await admin(p, "POST", "/admin/shadows/r/s/pause")
    assert (status, doc["paused"]) == (200, True)
    # The admin listener serves nothing but the admin API; the metrics one /metrics and
    # /healthz: anything else is a JSON 404 or 405 saying so.
    async with p.session.post(p.admin_url + ROUTE, data=b"{}") as r:
        assert r.status == 404
        assert await r.json() == {"error": f"no such endpoint: POST {ROUTE}"}
    async with p.session.post(p.metrics_url + "/metrics", data=b"") as r:
        assert (r.status, r.headers["Allow"]) == (405, "GET, HEAD")
        assert await r.json() == {"error": "POST /metrics: method not allowed; use GET, HEAD"}
    assert len(prod.received) == 1


def test_token_file_errors_name_the_file_key_and_value(tmp_path: Path) -> None:
    route = "routes: [{match: /p, protocol: kserve-v1, production: {name: a, url: 'http://a'}}]"
    cases = {
        "admin: {token: x, token_file: t}": "admin.token_file: set token or token_file, not "
        "both (got 't')",
        "admin: {token_file: missing}": "admin.token_file: cannot read the token file: No such "
        "file or directory (got 'missing')",
        "labels: {token_file: two-words}": "labels.token_file: the token file must hold one "
        "token (letters, digits, -._~+/) (got 'two-words')",
        "admin: {listen: '127.0.0.1:8080'}\nlisten: 0.0.0.0:8080": "admin.listen: same address "
        "as listen (got '127.0.0.1:8080')",
    }
    (tmp_path / "two-words").write_text("two words\n")
    for top, error in cases.items():
        path = tmp_path / "proxy.yaml"
        path.write_text(f"{top}\n{route}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        assert caught.value.errors == (f"{path}:1: {error}",)


def test_admin_listen_parses_and_a_token_turns_the_api_on() -> None:
    text = "routes: [{match: /p, protocol: kserve-v1, production: {name: a, url: 'http://a'}}]"
    config = parse_config(f"admin: {{token: t, listen: '127.0.0.1:9901'}}\n{text}", env={})
    assert config.admin.listen == ("127.0.0.1", 9901)
    assert config.admin.enabled
    assert parse_config(text, env={}).admin.enabled is False


def test_an_unset_token_variable_leaves_the_admin_api_off() -> None:
    text = "routes: [{match: /p, protocol: kserve-v1, production: {name: a, url: 'http://a'}}]"
    top = "admin: {listen: '127.0.0.1:9901', token: '${ADMIN_TOKEN:-}'}"
    config = parse_config(f"{top}\n{text}", "c.yaml", env={})
    assert config.admin.enabled is False
    assert config_warnings(config) == [
        "c.yaml: admin.listen: the admin API is off without admin.token or admin.token_file: it "
        "answers 404 on 127.0.0.1:9901 until one is set"
    ]
    assert parse_config(f"{top}\n{text}", env={"ADMIN_TOKEN": "t"}).admin.token == "t"


async def test_a_header_that_is_not_utf8_is_refused_not_an_error(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, _ = models
    store = {"path": str(tmp_path / "predictions.db")}
    p = await proxy(config(prod.url, [], labels={"token": "l"}, store=store, routes_record=True))
    host, port = p.url.removeprefix("http://").split(":")
    for method, path in [("GET", "/admin/config"), ("POST", "/labels")]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n".encode()
            + b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
        )
        assert await reader.readline() == b"HTTP/1.1 403 Forbidden\r\n", path
        writer.close()
        await writer.wait_closed()


async def test_reload_is_refused_while_shutting_down_and_for_a_new_admin_listen(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory, tmp_path: Path
) -> None:
    prod, _ = models
    path = tmp_path / "proxy.json"
    p = await proxy(config(prod.url, []), path)
    path.write_text(config(prod.url, [], admin={"token": TOKEN, "listen": "127.0.0.1:9901"}))
    status, doc, _ = await admin(p, "POST", "/admin/reload")
    assert (status, doc["errors"]) == (
        422,
        [f"{path}: admin.listen: changing it needs a restart (got '127.0.0.1:9901')"],
    )
    p.state.ready = False  # as the lifecycle sets it once shutdown has begun
    status, doc, _ = await admin(p, "POST", "/admin/reload")
    assert (status, doc["errors"]) == (503, ["the proxy is shutting down; nothing was reloaded"])
    assert p.value("shadowproxy_config_reloads_total", result="success") == 0


def test_tokens_are_checked_without_showing_them_and_never_hashed() -> None:
    route = "routes: [{match: /p, protocol: kserve-v1, production: {name: a, url: 'http://a'}}]"
    errors = {
        "admin: {token: 12345678}": "admin.token: expected a string, not an integer (value not "
        "shown)",
        "labels: {token: 'two words'}": "labels.token: must be one bearer token: letters, digits "
        "and -._~+/ (value not shown)",
    }
    for top, error in errors.items():
        with pytest.raises(ConfigError) as caught:
            parse_config(f"{top}\n{route}", "c.yaml", env={})
        assert caught.value.errors == (f"c.yaml:1: {error}",)
    padded = parse_config(f"admin: {{token: '${{T}}'}}\n{route}", env={"T": "abc\n"})
    assert padded.admin.token == "abc"
    # The hash is public (config_info, /report, logs): it must not depend on a token.
    other = parse_config(f"admin: {{token: xyz}}\n{route}", env={})
    assert config_hash(padded) == config_hash(other)


def test_store_credentials_are_redacted() -> None:
    route = "routes: [{match: /p, protocol: kserve-v1, production: {name: a, url: 'http://a'}, "
    text = (
        "store: {backend: redis, url: 'redis://user:pw@redis:6379/0?password=pw2&db=1'}\n"
        f"{route}record: 1}}]"
    )
    config = parse_config(text, env={})
    assert config_to_dict(config, redact=True)["store"]["url"] == (
        "redis://user:<redacted>@redis:6379/0?password=<redacted>&db=1"
    )
    assert config_to_dict(config)["store"]["url"] == config.store.url


def test_warnings_for_an_exposed_admin_api_and_routes_under_reserved_paths() -> None:
    text = (
        "listen: 0.0.0.0:8080\nadmin: {token: t}\nmetrics: {listen: '[::]:9464'}\n"
        "routes: [{match: /metrics, protocol: kserve-v1, production: {name: a, url: 'http://a'}}]"
    )
    assert config_warnings(parse_config(text, "c.yaml", env={})) == [
        "c.yaml: admin.listen: the admin API is served on the proxied port 0.0.0.0:8080; give "
        "it a listener of its own on loopback or a management network, e.g. admin.listen: "
        "127.0.0.1:9901",
        "c.yaml: routes[].match: /metrics (route '/metrics') is the proxy's own endpoint; "
        "requests to it never reach the route",
    ]
    clash = (
        "listen: '[::]:8080'\nadmin: {token: t, listen: '127.0.0.1:8080'}\n"
        + text.split("\n", 3)[3]
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(clash, "c.yaml", env={})
    assert caught.value.errors == (
        "c.yaml:2: admin.listen: same address as listen (got '127.0.0.1:8080')",
    )


async def test_every_admin_action_is_logged(
    models: tuple[FakeModel, FakeModel], proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    prod, shadow = models
    p = await proxy(config(prod.url, [{"name": "s", "url": shadow.url + ROUTE}]))
    caplog.set_level(logging.INFO, logger="proxy.analysis.admin")
    await admin(p, "POST", "/admin/shadows/r/s/sample", {"sample": "10%"})
    await admin(p, "GET", "/admin/config", headers=None)
    await admin(p, "POST", "/admin/reload")  # from a string: no file to read
    logged = [
        (r.levelname, r.action, r.result, r.status, getattr(r, "sample", None))  # type: ignore[attr-defined]
        for r in caplog.records
        if r.msg == "admin action"
    ]
    assert logged == [
        ("INFO", "sample", "ok", 200, 0.1),
        ("WARNING", "config", "unauthorized", 401, None),
        ("WARNING", "reload", "failure", 422, None),
    ]
    assert all(TOKEN not in r.getMessage() + str(r.__dict__) for r in caplog.records)

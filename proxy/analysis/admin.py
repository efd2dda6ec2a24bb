"""The admin API: bearer-protected runtime control of a running proxy. GET /admin/config and
/admin/shadows; POST /admin/shadows/{route}/{shadow}/pause, /resume and /sample; POST
/admin/reload. Every action is logged and counted; without a token the API is off."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from proxy.analysis.auth import CHALLENGE, BearerToken
from proxy.analysis.overrides import Key, Overrides, ShadowOverride
from proxy.analysis.reload import ReloadResult
from proxy.analysis.responses import json_response
from proxy.analysis.shadow import ShadowDispatcher
from proxy.analysis.state import ProxyState
from proxy.config import config_hash, config_to_dict, parse_fraction
from proxy.core.outcomes import AdminAction, AdminResult

log = logging.getLogger(__name__)

PREFIX = "/admin"

Reload = Callable[[], Awaitable[ReloadResult]]


class AdminAPI:
    """The /admin/ endpoints of one proxy, on the main listener or on admin.listen.

    >>> admin = AdminAPI(state, reload=lambda: reload_config(state))
    >>> admin.add_routes(app.router)
    """

    def __init__(self, state: ProxyState, reload: Reload) -> None:
        self._state = state
        self._reload = reload

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(f"{PREFIX}/config", self._config)
        router.add_get(f"{PREFIX}/shadows", self._shadows)
        router.add_post(f"{PREFIX}/shadows/{{route}}/{{shadow}}/pause", self._pause)
        router.add_post(f"{PREFIX}/shadows/{{route}}/{{shadow}}/resume", self._resume)
        router.add_post(f"{PREFIX}/shadows/{{route}}/{{shadow}}/sample", self._sample)
        router.add_post(f"{PREFIX}/reload", self._reload_handler)
        # Anything else under /admin/ is answered here, never proxied to production.
        router.add_route("*", PREFIX, self._unknown)
        router.add_route("*", f"{PREFIX}/{{tail:.*}}", self._unknown)

    # -- the gate ---------------------------------------------------------------------------------

    def _done(
        self,
        request: web.Request,
        action: AdminAction,
        result: AdminResult,
        status: int,
        doc: object,
        **extra: Any,
    ) -> web.Response:
        self._state.metrics.admin_requests.labels(action, result).inc()
        level = logging.INFO if result is AdminResult.OK else logging.WARNING
        fields = {"action": action, "result": result, "status": status, **extra}
        log.log(level, "admin action", extra={**fields, "remote": request.remote})
        return json_response(status, doc, CHALLENGE if status == 401 else None)

    def _refused(self, request: web.Request, action: AdminAction) -> web.Response | None:
        state = self._state
        if not state.config.admin.enabled:
            message = "the admin API is off: set admin.token or admin.token_file"
            return self._done(request, action, AdminResult.OFF, 404, {"error": message})
        refusal = BearerToken(state.config.admin.token).refusal(request)
        if refusal is None:
            return None
        return self._done(
            request, action, AdminResult(refusal.reason), refusal.status, {"error": refusal.message}
        )

    # -- reading ----------------------------------------------------------------------------------

    async def _config(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, AdminAction.CONFIG)) is not None:
            return refused
        config = self._state.config
        doc = {
            "source": config.source,
            "config_hash": config_hash(config),
            "config": config_to_dict(config, redact=True),
            "overrides": self._state.overrides.overrides.to_list(),
        }
        return self._done(request, AdminAction.CONFIG, AdminResult.OK, 200, doc)

    async def _shadows(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, AdminAction.SHADOWS)) is not None:
            return refused
        doc = {"shadows": [_describe(route, d) for route, d in self._state.shadow_dispatchers()]}
        return self._done(request, AdminAction.SHADOWS, AdminResult.OK, 200, doc)

    # -- per-shadow control -----------------------------------------------------------------------

    async def _pause(self, request: web.Request) -> web.Response:
        return await self._control(request, AdminAction.PAUSE, lambda o: o.paused_as(True))

    async def _resume(self, request: web.Request) -> web.Response:
        return await self._control(request, AdminAction.RESUME, lambda o: o.paused_as(False))

    async def _sample(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, AdminAction.SAMPLE)) is not None:
            return refused
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return self._invalid(request, f"body is not JSON: {exc}")
        if not isinstance(body, dict) or set(body) != {"sample"}:
            message = 'body must be {"sample": <0..1, "N%", or null for the config\'s rate>}'
            return self._invalid(request, message)
        sample = body["sample"]
        if sample is not None:
            try:
                sample = parse_fraction(sample)
            except ValueError as exc:
                return self._invalid(request, f"sample: {exc} (got {sample!r})")
        return await self._control(
            request, AdminAction.SAMPLE, lambda o: o.sampled_at(sample), checked=True
        )

    def _invalid(self, request: web.Request, message: str) -> web.Response:
        return self._done(request, AdminAction.SAMPLE, AdminResult.INVALID, 400, {"error": message})

    async def _control(
        self,
        request: web.Request,
        action: AdminAction,
        change: Callable[[ShadowOverride], ShadowOverride],
        checked: bool = False,
    ) -> web.Response:
        if not checked and (refused := self._refused(request, action)) is not None:
            return refused
        state = self._state
        key: Key = (request.match_info["route"], request.match_info["shadow"])
        async with state.reload_lock:  # a reload in progress applies the table it read
            dispatcher = state.dispatcher(key)
            if dispatcher is None:
                message = f"no shadow {key[1]!r} on route {key[0]!r}"
                return self._done(request, action, AdminResult.NOT_FOUND, 404, {"error": message})

            def edit(overrides: Overrides) -> None:
                overrides.set(key, change(overrides.get(key)))

            # Shared with the supervisor's runtime directory: a restarted analysis process
            # takes them up again.
            await state.overrides.change(edit)
            state.overrides.apply(state.shadow_dispatchers())
        doc = _describe(key[0], dispatcher)
        return self._done(
            request,
            action,
            AdminResult.OK,
            200,
            doc,
            route=key[0],
            shadow=key[1],
            paused=dispatcher.paused,
            sample=dispatcher.sample,
        )

    # -- reload -----------------------------------------------------------------------------------

    async def _reload_handler(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, AdminAction.RELOAD)) is not None:
            return refused
        result = await self._reload()
        if result.shutting_down:
            doc = {"result": "failure", "errors": list(result.errors)}
            return self._done(request, AdminAction.RELOAD, AdminResult.FAILURE, 503, doc)
        if not result.ok:
            doc = {"result": "failure", "errors": list(result.errors)}
            return self._done(
                request,
                AdminAction.RELOAD,
                AdminResult.FAILURE,
                422,
                doc,
                errors=list(result.errors),
            )
        doc = {"result": "success", "config_hash": result.config_hash}
        return self._done(request, AdminAction.RELOAD, AdminResult.OK, 200, doc)

    async def _unknown(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request, AdminAction.UNKNOWN)) is not None:
            return refused
        allowed = _allowed_method(request.path)
        if allowed is not None:
            message = f"{request.path} takes {allowed}, not {request.method}"
            response = self._done(
                request, AdminAction.UNKNOWN, AdminResult.INVALID, 405, {"error": message}
            )
            response.headers["Allow"] = allowed
            return response
        message = f"no admin endpoint {request.method} {request.path}"
        return self._done(
            request, AdminAction.UNKNOWN, AdminResult.NOT_FOUND, 404, {"error": message}
        )


_CONTROL = re.compile(rf"{PREFIX}/shadows/[^/]+/[^/]+/(pause|resume|sample)")


def _allowed_method(path: str) -> str | None:
    if path in (f"{PREFIX}/config", f"{PREFIX}/shadows"):
        return "GET"
    if path == f"{PREFIX}/reload" or _CONTROL.fullmatch(path):
        return "POST"
    return None


def _describe(route: str, dispatcher: ShadowDispatcher) -> dict[str, Any]:
    return {
        "route": route,
        "shadow": dispatcher.name,
        "paused": dispatcher.paused,
        "sample": dispatcher.sample,
        "configured_sample": dispatcher.configured_sample,
    }

"""The JSON answers the proxy's own endpoints give: one shape for every body and error."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    status: int, doc: object, headers: Mapping[str, str] | None = None
) -> web.Response:
    """`doc` as an application/json answer."""
    return web.Response(
        status=status, body=orjson.dumps(doc), content_type="application/json", headers=headers
    )


def moved(where: str, key: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A reserved path's handler on the main listener when it is served on a listener of its own."""

    async def handler(request: web.Request) -> web.Response:
        return json_response(404, {"error": f"{where} is served on its own listener ({key})"})

    return handler


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (no such endpoint, a method not allowed, a body too large) in the
    shape every endpoint answers, saying what was wrong; an unexpected failure as a JSON 500,
    logged with its traceback, never aiohttp's plain-text page."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        what = f"{request.method} {request.path[:200]}"
        headers = None
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"{what}: method not allowed; use {allowed}"
            headers = {"Allow": allowed}
        elif isinstance(exc, web.HTTPNotFound):
            message = f"no such endpoint: {what}"
        else:
            message = f"{what}: {exc.text or exc.reason}"
        return json_response(exc.status, {"error": message}, headers)
    except web.RequestPayloadError as exc:  # a body its Content-Encoding cannot decode
        cause = exc.__cause__ or exc
        message = f"{request.method} {request.path[:200]}: the body cannot be decoded: {cause}"
        return json_response(400, {"error": message})
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path[:200])
        return json_response(500, {"error": "internal error: the proxy logged it"})


def client_payload_errors(record: logging.LogRecord) -> bool:
    """A filter for aiohttp's server logger: after a handler has answered an undecodable body
    (a 400, above), aiohttp drains the rest of it, meets the same error and logs it as an
    "Unhandled exception" with a traceback. It is the client's; the answer said so."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, web.RequestPayloadError)

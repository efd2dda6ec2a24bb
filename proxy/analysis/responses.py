"""The JSON answers the proxy's own endpoints give: one shape for every body and error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web


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

"""The yardstick the benchmark compares against: a minimal aiohttp tee (production answer back,
one fire-and-forget shadow copy) with no metrics, no comparison, no limits and no error handling.

    python -m loadtest.tee_baseline --port 8080 --production URL --shadow URL
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import aiohttp
import uvloop
from aiohttp import web


async def _serve(port: int, production: str, shadow: str) -> None:
    prod_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    shadow_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    tasks: set[asyncio.Task[None]] = set()
    headers = {"Content-Type": "application/json"}

    async def copy(body: bytes) -> None:
        async with shadow_session.post(shadow, data=body, headers=headers) as resp:
            await resp.read()

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/readyz":
            return web.Response(text="ok")
        body = await request.read()
        async with prod_session.post(production, data=body, headers=headers) as resp:
            answer = await resp.read()
            status = resp.status
        task = asyncio.create_task(copy(body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.Response(body=answer, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (2, 15):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await prod_session.close()
    await shadow_session.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--production", required=True)
    parser.add_argument("--shadow", required=True)
    args = parser.parse_args(argv)
    uvloop.run(_serve(args.port, args.production, args.shadow))
    return 0


if __name__ == "__main__":
    sys.exit(main())

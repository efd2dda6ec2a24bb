"""The production hot path: match a route, forward the request to production, return its answer
exactly, and hand a copy to the route's shadows without ever awaiting them."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import Counter

from proxy.core.routing import Router
from proxy.core.sampling import WeightedSplit, bucket
from proxy.metrics import RouteMetrics, UpstreamMetrics
from proxy.server.recording import Recorder
from proxy.server.shadow import ShadowSet, Tee
from proxy.server.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout

log = logging.getLogger(__name__)

# RFC 9110 section 7.6.1, plus the legacy Proxy-Connection. Host and Content-Length are set
# anew for the upstream by aiohttp.
_HOP_BY_HOP = (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
    "TE", "Trailer", "Transfer-Encoding", "Upgrade",
)  # fmt: skip
_DROP_FROM_REQUEST = (*_HOP_BY_HOP, "Host", "Content-Length")
_DROP_FROM_RESPONSE = (*_HOP_BY_HOP, "Content-Length")


@dataclass(frozen=True, slots=True)
class ProductionTarget:
    name: str
    upstream: Upstream
    metrics: UpstreamMetrics


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    """What the hot path needs of a route, built once from the config.

    `production` is a hash-sticky weighted split so that canary and A/B releases slot in; today
    the config gives it exactly one target.
    """

    name: str
    production: WeightedSplit[ProductionTarget]
    shadows: ShadowSet
    metrics: RouteMetrics
    recorder: Recorder | None = None  # set when the route records predictions for labels
    record_threshold: int = 0  # buckets below this are recorded

    @property
    def tees(self) -> bool:
        """Whether requests on this route are copied anywhere (shadows or the store)."""
        return bool(self.shadows) or self.recorder is not None


def _strip(headers: CIMultiDictProxy[str], drop: tuple[str, ...]) -> CIMultiDict[str]:
    out = CIMultiDict(headers)
    connection = headers.get("Connection")
    if connection:
        # Headers named in Connection are hop-by-hop too (RFC 9110 section 7.6.1).
        for token in connection.split(","):
            out.popall(token.strip(), None)
    for name in drop:
        out.popall(name, None)
    return out


class Generation:
    """The routes of one config, and the requests still running on them: a reload retires a
    generation, which closes its pools once its last request is done.

    >>> generation = Generation(router)
    >>> await generation.retire()   # returns once no request uses it any more
    """

    def __init__(self, router: Router[RouteRuntime]) -> None:
        self.router = router
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._retired = False

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self._retired and not self.in_flight:
            self._idle.set()

    async def retire(self) -> None:
        self._retired = True
        if not self.in_flight:
            self._idle.set()
        await self._idle.wait()


class ProductionHandler:
    """The aiohttp handler for every proxied path.

    >>> handler = ProductionHandler(router, request_id_header="X-Request-ID", max_body=1 << 20,
    ...                             rejected=metrics.bind_rejections())
    >>> app.router.add_route("*", "/{tail:.*}", handler.handle)
    """

    def __init__(
        self,
        router: Router[RouteRuntime],
        *,
        request_id_header: str,
        max_body: int,
        rejected: dict[str, Counter],
    ) -> None:
        self.generation = Generation(router)  # replaced as a whole by a reload
        self._max_body = max_body
        self.request_id_header = request_id_header
        self._no_route = rejected["no_route"]
        self._too_large = rejected["body_too_large"]

    def _error(self, status: int, message: str, request_id: str) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps({"error": message, "request_id": request_id}),
            content_type="application/json",
            headers={self.request_id_header: request_id},
        )

    @staticmethod
    def _tee(route: RouteRuntime, tee: Tee) -> None:
        """Hand the exchange to the store and the shadows; queues only, never awaits."""
        b = bucket(tee.request_id)
        recorder = route.recorder
        if recorder is not None and b < route.record_threshold and tee.production is not None:
            tee.recorded = recorder.record(route.name, tee)
        route.shadows.offer(tee, b)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # The request runs to its end on the routes it started with, whatever a reload does.
        generation = self.generation
        generation.enter()
        try:
            return await self._handle(request, generation.router)
        finally:
            generation.leave()

    async def _handle(
        self, request: web.Request, router: Router[RouteRuntime]
    ) -> web.StreamResponse:
        request_id = request.headers.get(self.request_id_header) or str(uuid.uuid4())
        raw_path = request.raw_path
        found = router.match(raw_path, request.method)
        if found is None:
            self._no_route.inc()
            return self._error(404, f"no route matches {request.method} {request.path}", request_id)
        prefix, route = found
        route.metrics.requests.inc()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._too_large.inc()
            return self._error(
                413, f"request body is larger than max_body ({self._max_body} bytes)", request_id
            )

        headers = _strip(request.headers, _DROP_FROM_REQUEST)
        headers[self.request_id_header] = request_id
        forwarded_for = request.headers.get("X-Forwarded-For")
        remote = request.remote or ""
        headers["X-Forwarded-For"] = f"{forwarded_for}, {remote}" if forwarded_for else remote
        if "X-Forwarded-Proto" not in headers:
            headers["X-Forwarded-Proto"] = request.scheme
        if "X-Forwarded-Host" not in headers and request.host:
            headers["X-Forwarded-Host"] = request.host

        target = route.production.single or route.production.pick(bucket(request_id))
        suffix = raw_path[len(prefix) :]
        m = target.metrics
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer: UpstreamResponse | None = None
        try:
            answer = await target.upstream.send(request.method, suffix, headers, body)
        except UpstreamError as exc:
            m.outcomes[exc.outcome].inc()
            if route.tees:
                self._tee(route, Tee(request.method, suffix, headers, body, request_id, None))
            if isinstance(exc, UpstreamTimeout):
                return self._error(504, f"production target {target.name} timed out", request_id)
            return self._error(502, f"production target {target.name} is unreachable", request_id)
        m.duration.observe(loop.time() - started)
        m.outcomes["ok" if answer.status < 500 else "http_error"].inc()
        if route.tees:
            tee = Tee(request.method, suffix, headers, body, request_id, answer, time.time())
            self._tee(route, tee)

        out_headers = _strip(answer.headers, _DROP_FROM_RESPONSE)
        out_headers[self.request_id_header] = request_id
        return web.Response(
            status=answer.status, reason=answer.reason, headers=out_headers, body=answer.body
        )

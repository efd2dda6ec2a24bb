"""The production hot path: match a route, forward the request to production, return its answer
exactly, and hand a copy to the route's shadows without ever awaiting them."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import NamedTuple

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import Counter

from proxy.analysis.recording import Recorder
from proxy.analysis.responses import json_response
from proxy.analysis.shadow import ShadowSet, Tee
from proxy.analysis.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout
from proxy.core.outcomes import Outcome, RejectReason
from proxy.core.routing import Router
from proxy.core.sampling import Sampler, WeightedSplit, bucket
from proxy.front import client
from proxy.metrics import RouteMetrics, UpstreamMetrics

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
    record: Sampler  # which requests are recorded (none without a recorder)
    recorder: Recorder | None = None  # set when the route records predictions for labels

    @property
    def tees(self) -> bool:
        """Whether requests on this route are copied anywhere (shadows or the store)."""
        return bool(self.shadows) or self.recorder is not None


def _error(status: int, message: str, request_id: str, id_header: str) -> web.Response:
    doc = {"error": message, "request_id": request_id}
    return json_response(status, doc, {id_header: request_id})


class _Forwarded(NamedTuple):
    """The request as it went to production, the leading fields of its Tee."""

    method: str
    suffix: str
    headers: CIMultiDict[str]
    body: bytes
    request_id: str


def _raw(headers: CIMultiDict[str] | CIMultiDictProxy[str]) -> list[tuple[bytes, bytes]]:
    """aiohttp's headers as the bytes they came as (it decodes them utf-8, surrogateescape)."""
    return [
        (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
        for name, value in headers.items()
    ]


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
    """The routes of one config and its request id header, and the requests still running on
    them: a reload retires a generation, which closes its pools once its last request is done.

    >>> generation = Generation(router, "X-Request-ID")
    >>> await generation.retire()   # returns once no request uses it any more
    """

    def __init__(self, router: Router[RouteRuntime], request_id_header: str) -> None:
        self.router = router
        self.request_id_header = request_id_header
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

    >>> handler = ProductionHandler(Generation(router, "X-Request-ID"), max_body=1 << 20,
    ...                             rejected=metrics.bind_rejections())
    >>> app.router.add_route("*", "/{tail:.*}", handler.handle)
    """

    def __init__(
        self,
        generation: Generation,
        *,
        max_body: int,
        rejected: dict[RejectReason, Counter],
    ) -> None:
        self.generation = generation  # replaced as a whole by a reload
        self._max_body = max_body
        self._no_route = rejected[RejectReason.NO_ROUTE]
        self._too_large = rejected[RejectReason.BODY_TOO_LARGE]

    @staticmethod
    def _tee(
        route: RouteRuntime,
        request: _Forwarded,
        production: UpstreamResponse | None,
        created: float = 0.0,
    ) -> None:
        """Hand the exchange to the store and the shadows; queues only, never awaits. The Tee
        holds what the front process will hand over: headers and production's answer as bytes."""
        b = bucket(request.request_id)
        recorder = route.recorder
        recorded = (
            recorder is not None
            and production is not None
            and route.record.admits(b)
            and recorder.has_room(route.name)  # a full queue is counted there
        )
        answer = None
        if production is not None:
            answer = client.UpstreamResponse(
                production.status, production.reason, _raw(production.headers), production.body
            )
        tee = Tee(
            request.method,
            request.suffix,
            _raw(request.headers),
            request.body,
            request.request_id,
            answer,
            created=created,
            recorded=recorded,
        )
        if recorded:
            assert recorder is not None
            recorder.record(route.name, tee)
        route.shadows.offer(tee, b)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # The request runs to its end on the routes and the request id header it started with,
        # whatever a reload does.
        generation = self.generation
        generation.enter()
        try:
            return await self._handle(request, generation)
        finally:
            generation.leave()

    async def _handle(self, request: web.Request, generation: Generation) -> web.StreamResponse:
        router = generation.router
        id_header = generation.request_id_header
        request_id = request.headers.get(id_header) or str(uuid.uuid4())
        raw_path = request.raw_path
        found = router.match(raw_path, request.method)
        if found is None:
            self._no_route.inc()
            return _error(
                404, f"no route matches {request.method} {request.path}", request_id, id_header
            )
        prefix, route = found
        route.metrics.requests.inc()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._too_large.inc()
            return _error(
                413,
                f"request body is larger than max_body ({self._max_body} bytes)",
                request_id,
                id_header,
            )

        headers = _strip(request.headers, _DROP_FROM_REQUEST)
        headers[id_header] = request_id
        forwarded_for = request.headers.get("X-Forwarded-For")
        remote = request.remote or ""
        headers["X-Forwarded-For"] = f"{forwarded_for}, {remote}" if forwarded_for else remote
        if "X-Forwarded-Proto" not in headers:
            headers["X-Forwarded-Proto"] = request.scheme
        if "X-Forwarded-Host" not in headers and request.host:
            headers["X-Forwarded-Host"] = request.host

        suffix = raw_path[len(prefix) :]
        forwarded = _Forwarded(request.method, suffix, headers, body, request_id)
        target = route.production.single or route.production.pick(bucket(request_id))
        m = target.metrics
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer: UpstreamResponse | None = None
        try:
            answer = await target.upstream.send(request.method, suffix, headers, body)
        except UpstreamError as exc:
            m.outcomes[exc.outcome].inc()
            if route.tees:
                self._tee(route, forwarded, None)
            if isinstance(exc, UpstreamTimeout):
                return _error(
                    504, f"production target {target.name} timed out", request_id, id_header
                )
            return _error(
                502, f"production target {target.name} is unreachable", request_id, id_header
            )
        m.duration.observe(loop.time() - started)
        m.outcomes[Outcome.of_status(answer.status)].inc()
        if route.tees:
            self._tee(route, forwarded, answer, time.time())

        out_headers = _strip(answer.headers, _DROP_FROM_RESPONSE)
        out_headers[id_header] = request_id
        return web.Response(
            status=answer.status, reason=answer.reason, headers=out_headers, body=answer.body
        )

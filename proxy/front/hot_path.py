"""The production hot path, as the front process runs it: match a route, forward the request to
production through the lean client, answer the client exactly as production did, and hand a copy
of the exchange to the analysis process without ever waiting for it. Must not parse JSON, read a
config file, touch a metrics library or know what happens to a copy.

The proxy's own endpoints are answered here (/healthz, /readyz) or passed whole to the analysis
process's control plane (/labels, /report, /metrics, /admin), so every URL of the main port works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

from proxy.core.exchange import Exchange, encode, join_headers
from proxy.core.outcomes import MAX_REQUEST_ID, Cause, Handoff, Outcome, RejectReason
from proxy.core.routing import Router
from proxy.core.sampling import WeightedSplit, bucket
from proxy.front.client import Upstream, UpstreamError, UpstreamResponse, UpstreamTimeout
from proxy.front.handoff import Counts
from proxy.front.server import Request, Respond, Response
from proxy.logs import Throttled

log = logging.getLogger("proxy.front.hot_path")
access_log = logging.getLogger("proxy.access")
throttled = Throttled(log)  # production failures: one line per route, target, cause and 10 s


class _NotCounted:
    def inc(self, amount: float = 1) -> None:
        pass

    def count(self, route: str, status: int, seconds: float) -> None:
        pass


_NOT_COUNTED = _NotCounted()


class Observes(Protocol):
    """What the hot path needs of a histogram."""

    def observe(self, amount: float) -> None: ...


class CountsAnswers(Protocol):
    """What the hot path needs to count client requests: by route ("" when none matched) and
    status, with the time from the request to its answer (proxy.metrics.ClientMetrics)."""

    def count(self, route: str, status: int, seconds: float) -> None: ...


# RFC 9110 section 7.6.1, plus the legacy Proxy-Connection. Host, Content-Length and
# Transfer-Encoding are the client's to set (it frames the body and names the origin).
_HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
        b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    }
)  # fmt: skip
_DROP_FROM_REQUEST = _HOP_BY_HOP | {b"host", b"content-length"}
_DROP_FROM_RESPONSE = _HOP_BY_HOP | {b"content-length"}
_XFF = b"X-Forwarded-For"
_XFP = b"X-Forwarded-Proto"
_XFH = b"X-Forwarded-Host"

CONTROL_PATHS = frozenset(
    {"/labels", "/report", "/report.html", "/metrics", "/admin", "/disagreements"}
)
"""Paths of the main port served by the analysis process's control plane (and /admin/... and
/exchanges/...)."""
_JSON = (b"Content-Type", b"application/json")
_DECODED = frozenset({b"", b"identity", b"gzip", b"deflate"})
"""The request Content-Encodings the control plane reads (/labels, the admin API)."""


@dataclass(frozen=True, slots=True)
class FrontTarget:
    """One production target: its pool and its counters."""

    name: str
    upstream: Upstream
    outcomes: Mapping[Outcome, Counts]
    duration: Observes
    errors: Callable[[Cause], Counts] = lambda cause: _NOT_COUNTED  # failures by cause


@dataclass(frozen=True, slots=True)
class FrontRoute:
    """What the front needs of a route, built once from the config.

    `production` is a hash-sticky weighted split so that canary and A/B releases slot in; today
    the config gives it exactly one target. `tees` is true when the analysis process wants a
    copy of its exchanges (the route has shadows or records predictions).
    """

    name: str
    production: WeightedSplit[FrontTarget]
    requests: Counts
    tees: bool


class Generation:
    """The routes of one config, its request id header and body limit, and the requests still
    running on them: a reload retires a generation, which closes its pools once its last
    request is done.

    >>> generation = Generation([("/v1/models/iris", None, iris)], "X-Request-ID", max_body=1 << 20)
    >>> await generation.retire()   # returns once no request uses it any more
    """

    def __init__(
        self,
        routes: Sequence[tuple[str, frozenset[str] | None, FrontRoute]],
        request_id_header: str,
        *,
        max_body: int,
    ) -> None:
        self.routes = tuple(route for _, _, route in routes)
        self.router = Router(routes)
        self.id_header = request_id_header.encode("ascii")
        self.id_header_lower = self.id_header.lower()
        self.max_body = max_body
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._retired = False

    def leave(self) -> None:
        self.in_flight -= 1
        if self._retired and not self.in_flight:
            self._idle.set()

    async def retire(self) -> None:
        self._retired = True
        if not self.in_flight:
            self._idle.set()
        await self._idle.wait()

    async def close(self) -> None:
        for route in self.routes:
            for target in route.production.targets:
                await target.upstream.close()


class HotPath:
    """The front's application: one `begin` per request (proxy.front.server's
    CallbackApplication).

    >>> hot_path = HotPath(generation, handoff=channel.offer, control=control_pool,
    ...                    rejected=rejections, handoff_counts=counts, max_frame=64 << 20)
    >>> server = Server(hot_path, limits)
    """

    def __init__(
        self,
        generation: Generation,
        *,
        handoff: Callable[[bytes], None] | None,
        control: Upstream | None,
        rejected: Mapping[RejectReason, Counts],
        handoff_counts: Mapping[Handoff, Counts],
        max_frame: int,
        access_log: bool = False,
        answers: CountsAnswers = _NOT_COUNTED,
    ) -> None:
        self.generation = generation  # replaced as a whole by a reload
        self._handoff = handoff
        self._control = control
        self._no_route = rejected[RejectReason.NO_ROUTE]
        self._too_large = rejected[RejectReason.BODY_TOO_LARGE]
        self._bad_id = rejected[RejectReason.BAD_REQUEST_ID]
        self._bad_path = rejected[RejectReason.BAD_PATH]
        self._handoff_too_large = handoff_counts[Handoff.TOO_LARGE]
        self._max_frame = max_frame
        self._ids = RequestIds()
        self.ready = False  # /readyz: set once serving, cleared when shutting down
        self.access_log = access_log  # a reload may turn it on or off
        self._answers = answers
        self._loop = asyncio.get_running_loop()  # once: Python 3.11 asks the kernel for its
        # pid on every get_running_loop()

    def begin(self, request: Request, respond: Respond) -> None:
        """Answer `request` through `respond` (proxy.front.server's CallbackApplication): no
        task and no future per request, only the client's callback when production answers."""
        target = request.target
        query_at = target.find(b"?")
        raw_path = (target if query_at < 0 else target[:query_at]).decode("latin-1")
        method = request.method
        # The proxy's own paths come first, as they did when one aiohttp app served them all.
        if raw_path in CONTROL_PATHS or raw_path.startswith(("/admin/", "/exchanges/")):
            self._to_control(request, respond)
            return
        if raw_path in ("/healthz", "/readyz"):
            if method not in ("GET", "HEAD"):  # never proxied: these paths are the proxy's
                refusal = {"error": f"{raw_path} takes GET or HEAD, not {method[:20]}"}
                allow = (b"Allow", b"GET, HEAD")
                answer = Response(405, [_JSON, allow], json.dumps(refusal).encode())
                self._answer(request, respond, answer)
                return
            if query_at >= 0 and b"verbose" in target[query_at:] and self.ready:
                # The details (what keeps routes from being measured) are the analysis
                # process's: production's readiness itself is answered here.
                self._to_control(request, respond)
                return
            self._answer(request, respond, self._health(raw_path))
            return
        # Latency by the monotonic clock: uvloop's loop.time() is libuv's, cached once per loop
        # iteration at millisecond resolution.
        started = perf_counter()
        if ("." in raw_path or "%" in raw_path) and (why := unsafe_path(raw_path)):
            self._bad_path.inc()
            body = json.dumps({"error": f"path {raw_path[:200]!r} {why}"}).encode("ascii")
            self._reply(request, respond, Response(400, [_JSON], body), "", started)
            return
        # The request runs to its end on the generation it started with, whatever a reload does.
        generation = self.generation
        found = generation.router.match(raw_path, method)
        id_header = generation.id_header
        request_id_bytes = b""
        for name, value in request.headers:
            if name.lower() == generation.id_header_lower:
                request_id_bytes = value
                break
        if not request_id_bytes:
            request_id_bytes = self._ids.next()
        elif len(request_id_bytes) > MAX_REQUEST_ID:
            self._bad_id.inc()
            header = id_header.decode("ascii")
            message = (
                f"{header} is {len(request_id_bytes)} bytes long; at most {MAX_REQUEST_ID} are"
                " accepted (a longer id could never be labelled)"
            )
            body = json.dumps({"error": message}).encode("ascii")
            route_name = found[1].name if found is not None else ""
            self._reply(request, respond, Response(400, [_JSON], body), route_name, started)
            return
        # Bytes that are not UTF-8 go on to production and back to the client as they came; the
        # analysis process, the stores and /labels know the id by its text with those bytes
        # written \xNN (a label can name it so: JSON cannot carry the raw bytes).
        request_id = request_id_bytes.decode("utf-8", "backslashreplace")
        if found is None:
            self._no_route.inc()
            message = f"no route matches {method} {raw_path}"
            error = _error(404, message, request_id, id_header, request_id_bytes)
            self._reply(request, respond, error, "", started)
            return
        prefix, route = found
        route.requests.inc()
        if len(request.body) > generation.max_body:
            self._too_large.inc()
            message = f"request body is larger than max_body ({generation.max_body} bytes)"
            error = _error(413, message, request_id, id_header, request_id_bytes)
            self._reply(request, respond, error, route.name, started)
            return
        headers = _forwarded_headers(request, generation.id_header_lower)
        headers.append((id_header, request_id_bytes))
        suffix = target[len(prefix) :]
        production = route.production.single or route.production.pick(bucket(request_id))

        def answered(answer: UpstreamResponse | UpstreamError) -> None:
            try:
                response = self._answered(
                    answer, route, production, started, method, suffix, request_id,
                    request_id_bytes, headers, request.body, generation,
                )  # fmt: skip
            except Exception as exc:  # a bug here must still answer, and not hang the client
                log.exception("front: answering %s %r failed", method, target[:200])
                response = _error(500, f"internal error: {type(exc).__name__}", request_id,
                                  id_header, request_id_bytes)  # fmt: skip
            generation.leave()
            self._reply(request, respond, response, route.name, started)

        generation.in_flight += 1
        try:
            production.upstream.begin(method, suffix, headers, request.body, answered)
        except BaseException:
            generation.leave()
            raise

    def _answered(
        self,
        answer: UpstreamResponse | UpstreamError,
        route: FrontRoute,
        production: FrontTarget,
        started: float,
        method: str,
        suffix: bytes,
        request_id: str,
        request_id_bytes: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        generation: Generation,
    ) -> Response:
        """What the client gets for production's `answer`, the copy handed off on the way."""
        id_header = generation.id_header
        if isinstance(answer, UpstreamError):
            production.outcomes[answer.outcome].inc()
            production.errors(answer.cause).inc()
            throttled.warning(
                (route.name, production.name, answer.cause),
                "production target %s failed (%s): %s",
                production.name,
                answer.cause,
                answer,
                extra={"route": route.name, "target": production.name, "cause": answer.cause},
            )
            if route.tees:
                self._hand_off(route, method, suffix, request_id, headers, body)
            if isinstance(answer, UpstreamTimeout):
                message = f"production target {production.name} timed out"
                return _error(504, message, request_id, id_header, request_id_bytes)
            message = f"production target {production.name} is unreachable"
            return _error(502, message, request_id, id_header, request_id_bytes)
        elapsed = perf_counter() - started
        production.duration.observe(elapsed)
        production.outcomes[Outcome.of_status(answer.status)].inc()
        out = _answer_headers(answer.headers, generation.id_header_lower, method == "HEAD")
        out.append((id_header, request_id_bytes))
        if route.tees:
            self._hand_off(
                route,
                method,
                suffix,
                request_id,
                headers,
                body,
                answer.status,
                answer.headers,
                answer.body,
                elapsed,
            )
        reason = answer.reason.encode("latin-1") if answer.reason else b""
        return Response(answer.status, out, answer.body, reason)

    def _reply(
        self, request: Request, respond: Respond, response: Response, route: str, started: float
    ) -> None:
        """Answer a request for a route ("" when none matched), counted."""
        self._answers.count(route, response.status, perf_counter() - started)
        self._answer(request, respond, response)

    def _answer(self, request: Request, respond: Respond, response: Response) -> None:
        if self.access_log:
            access_log.info(
                "%s %s %d",
                request.method,
                request.target.decode("latin-1"),
                response.status,
                extra={"remote": request.peer, "status": response.status},
            )
        respond(response)

    def _hand_off(
        self,
        route: FrontRoute,
        method: str,
        suffix: bytes,
        request_id: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        status: int = 0,
        response_headers: Sequence[tuple[bytes, bytes]] = (),
        response_body: bytes = b"",
        elapsed: float = 0.0,
    ) -> None:
        """Queue a copy for the analysis process; never waits, never raises."""
        if self._handoff is None:
            return
        if len(body) + len(response_body) > self._max_frame:
            self._handoff_too_large.inc()
            return
        exchange = Exchange(
            route=route.name,
            method=method,
            suffix=suffix.decode("utf-8", "surrogateescape"),
            request_id=request_id,
            headers=headers,
            body=body,
            status=status,
            response_headers=response_headers,
            response_body=response_body,
            created=time.time() if status else 0.0,
            elapsed=elapsed,
        )
        self._handoff(encode(exchange, join_headers(headers)))

    def _health(self, path: str) -> Response:
        if path == "/healthz":
            return Response(200, [_JSON], b'{"status":"ok"}')
        if self.ready:
            return Response(200, [_JSON], b'{"status":"ready"}')
        return Response(503, [_JSON], b'{"status":"not ready"}')

    def _to_control(self, request: Request, respond: Respond) -> None:
        """Pass a control-plane request to the analysis process as it came."""
        control = self._control
        if control is None:
            doc = b'{"error":"the control plane is not served in this process"}'
            self._answer(request, respond, Response(503, [_JSON], doc))
            return
        for name, value in request.headers:
            # What the control plane (aiohttp) decodes; it answers others in plain text.
            if name.lower() == b"content-encoding" and value.strip().lower() not in _DECODED:
                what = value.decode("latin-1")[:40]
                refusal = {"error": f"Content-Encoding {what!r} is not accepted: use gzip, deflate"}
                answer = Response(415, [_JSON], json.dumps(refusal).encode())
                self._answer(request, respond, answer)
                return
        headers = _forwarded_headers(request, b"")

        def answered(answer: UpstreamResponse | UpstreamError) -> None:
            if isinstance(answer, UpstreamError):
                log.warning("control plane unreachable: %s", answer)
                status = 504 if isinstance(answer, UpstreamTimeout) else 503
                doc = {"error": "the analysis process is not answering; production is unaffected"}
                response = Response(status, [_JSON], json.dumps(doc).encode("ascii"))
            else:
                out = _answer_headers(answer.headers, b"", request.method == "HEAD")
                reason = answer.reason.encode("latin-1")
                response = Response(answer.status, out, answer.body, reason)
            self._answer(request, respond, response)

        control.begin(request.method, request.target, headers, request.body, answered)


_DOT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})


def unsafe_path(path: str) -> str | None:
    """Why a request path is refused, or None. Paths are forwarded as the client sent them, so
    what could make a route prefix mean something else is refused instead of rewritten: dot
    segments ("." and "..", raw or percent-encoded, which a server behind may resolve past the
    prefix matched here), and encoded slashes or backslashes (%2F, %5C), which split segments
    differently for different servers. Envoy's normalize_path and nginx's URI normalisation
    rewrite these; a model API never needs them, and a 400 shows the client what happened.

        >>> unsafe_path("/v1/models/iris/../../admin")
        'has a dot segment (. or ..)'
        >>> unsafe_path("/v2/models/iris/versions/1.0/infer") is None
        True
    """
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered:
        return "has an encoded slash (%2F or %5C)"
    if any(segment in _DOT_SEGMENTS for segment in lowered.split("/")):
        return "has a dot segment (. or ..)"
    return None


class RequestIds:
    """Request ids for requests that came without one, shaped as UUIDs (version 4): 62 random
    bits drawn once per process, then a counter. Unique like uuid4() and without its read of
    the kernel's random source per request.

    >>> RequestIds().next()
    b'5f0c2a9e-3b1d-4c7e-9a2f-000000000001'
    """

    def __init__(self) -> None:
        head = uuid.uuid4().hex
        self._prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-{head[16:20]}-".encode("ascii")
        self._count = 0

    def next(self) -> bytes:
        self._count += 1
        return self._prefix + b"%012x" % self._count


def _answer_headers(
    headers: Sequence[tuple[bytes, bytes]], id_header_lower: bytes, head: bool
) -> list[tuple[bytes, bytes]]:
    """Production's answer headers as they go back: hop-by-hop ones (and those Connection
    names), its Content-Length (the server frames the body; kept for HEAD, which has none to
    count) and its request id header (ours is added; b"": none) dropped. One pass: it runs
    per request."""
    out = []
    connection = None
    for name, value in headers:
        lname = name.lower()
        if lname in _DROP_FROM_RESPONSE:
            if lname == b"connection":
                connection = _connection_tokens(headers)
            elif head and lname == b"content-length":
                out.append((name, value))
            continue
        if lname != id_header_lower:
            out.append((name, value))
    if connection:
        out = [(n, v) for n, v in out if n.lower() not in connection]
    return out


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in Connection: hop-by-hop too (RFC 9110 section 7.6.1)."""
    found: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            found.update(t.strip().lower() for t in value.split(b","))
    return found


def _forwarded_headers(request: Request, id_header_lower: bytes) -> list[tuple[bytes, bytes]]:
    """The request's headers as they go upstream: hop-by-hop ones and the request id dropped
    (the caller sets it), X-Forwarded-For extended, -Proto and -Host set when absent."""
    out: list[tuple[bytes, bytes]] = []
    forwarded_for = b""
    host = b""
    has_proto = has_host = False
    connection: set[bytes] | None = None
    for name, value in request.headers:
        lname = name.lower()
        if lname in _DROP_FROM_REQUEST:
            if lname == b"host":
                host = value
            elif lname == b"connection":
                connection = _connection_tokens(request.headers)
            continue
        if lname == id_header_lower:
            continue
        if lname == b"x-forwarded-for":
            forwarded_for = value if not forwarded_for else forwarded_for + b", " + value
            continue
        if lname == b"x-forwarded-proto":
            has_proto = True
        elif lname == b"x-forwarded-host":
            has_host = True
        out.append((name, value))
    if connection:
        out = [(n, v) for n, v in out if n.lower() not in connection]
    peer = request.peer.encode("ascii", "replace")
    out.append((_XFF, forwarded_for + b", " + peer if forwarded_for else peer))
    if not has_proto:
        out.append((_XFP, b"http"))
    if not has_host and host:
        out.append((_XFH, host))
    return out


def _error(
    status: int, message: str, request_id: str, id_header: bytes, request_id_bytes: bytes
) -> Response:
    doc = {"error": message, "request_id": request_id}
    body = json.dumps(doc, ensure_ascii=True).encode("ascii")
    return Response(status, [_JSON, (id_header, request_id_bytes)], body)

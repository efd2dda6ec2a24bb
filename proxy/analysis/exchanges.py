"""Exchanges from the front processes, as the analysis process takes them in: each becomes a Tee
for its route's recorder and shadows. Queues only, never awaits; knows nothing of sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from proxy.analysis.recording import Recorder
from proxy.analysis.shadow import ShadowSet, Tee
from proxy.core.exchange import Exchange
from proxy.core.sampling import Sampler, bucket
from proxy.front.client import UpstreamResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    """What the analysis process runs for a route, built once from the config."""

    name: str
    shadows: ShadowSet
    record: Sampler  # which requests are recorded (none without a recorder)
    recorder: Recorder | None = None  # set when the route records predictions for labels


def tee_of(exchange: Exchange) -> Tee:
    """The exchange as the recorder and the shadows take it."""
    production = None
    if exchange.answered:
        production = UpstreamResponse(
            exchange.status, "", list(exchange.response_headers), exchange.response_body
        )
    return Tee(
        exchange.method,
        exchange.suffix,
        exchange.headers,
        exchange.body,
        exchange.request_id,
        production,
        created=exchange.created,
        elapsed=exchange.elapsed,
    )


class ExchangeHandler:
    """Called by the intake with every exchange a front hands off.

    >>> handler = ExchangeHandler({r.name: r for r in routes}, unknown=counter)
    >>> intake = Intake(path, handler, max_frame=MAX_FRAME)
    """

    def __init__(self, routes: Mapping[str, RouteRuntime], *, unknown: Counter) -> None:
        self.routes = routes  # replaced as a whole by a reload
        self.received = 0
        self._unknown = unknown
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def wait_received(self, count: int) -> None:
        """Until `count` exchanges have been received over this handler's life."""
        if self.received >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        await waiter

    def __call__(self, exchange: Exchange) -> None:
        self.received += 1
        if self._waiters:
            for count, waiter in [w for w in self._waiters if w[0] <= self.received]:
                self._waiters.remove((count, waiter))
                if not waiter.done():
                    waiter.set_result(None)
        route = self.routes.get(exchange.route)
        if route is None:
            # A front still on a config this process has reloaded away from.
            self._unknown.inc()
            log.debug("exchange for an unknown route", extra={"route": exchange.route})
            return
        tee = tee_of(exchange)
        # Hashed only when a rate below 100% needs it: bucket 0 is admitted by any rate above 0.
        b = 0
        if route.shadows.sampled or (route.recorder is not None and not route.record.everything):
            b = bucket(tee.request_id)
        recorder = route.recorder
        recorded = (
            recorder is not None
            and tee.production is not None
            and route.record.admits(b)
            and recorder.has_room(route.name)  # a full queue is counted there
        )
        if recorded:
            assert recorder is not None
            tee.recorded = True
            recorder.record(route.name, tee)
        route.shadows.offer(tee, b)

"""One config's routes as the analysis process runs them: shadow dispatchers, scorers and
recordings, bound to their metrics; started, published and retired together. Used by the wiring
at start-up and by a reload; serves nothing itself."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.analysis.capture import Capture
from proxy.analysis.exchanges import RouteRuntime
from proxy.analysis.problems import Problems
from proxy.analysis.recording import Recorder, RouteRecording
from proxy.analysis.scoring import RouteScorer
from proxy.analysis.shadow import PredictionsCallback, ShadowDispatcher, ShadowSet, Tee
from proxy.config import Config, Route, config_hash
from proxy.core.outcomes import Role
from proxy.core.sampling import Sampler
from proxy.front import client
from proxy.metrics import Metrics


def scorers(config: Config, metrics: Metrics) -> dict[str, RouteScorer]:
    """Per route name: how its labels are scored and counted."""
    return {route.name: _scorer(route, metrics) for route in config.routes}


def _scorer(route: Route, metrics: Metrics) -> RouteScorer:
    kind = route.comparator.kind
    return RouteScorer(
        kind=kind,
        production=metrics.bind_model(route.name, route.production.name, Role.PRODUCTION, kind),
        shadows={
            s.name: metrics.bind_model(route.name, s.name, Role.SHADOW, kind) for s in route.shadows
        },
        pairs={s.name: metrics.bind_pair(route.name, s.name, kind) for s in route.shadows},
        recording=metrics.bind_recording(route.name),
        production_classes=metrics.bind_labelled_classes(
            route.name, route.production.name, route.comparator.kind, route.classes
        ),
    )


def recordings(config: Config, scored: dict[str, RouteScorer]) -> dict[str, RouteRecording]:
    """Per route name: what the recorder needs to store and join its predictions."""
    return {
        r.name: RouteRecording(r.production.name, r.extractor, scored[r.name])
        for r in config.routes
    }


def build_routes(
    config: Config,
    metrics: Metrics,
    recorder: Recorder | None,
    problems: Problems | None = None,
    capture: Capture | None = None,
) -> tuple[RouteRuntime, ...]:
    """Every route of `config`, its shadow dispatchers built but not started; answers they
    cannot measure are reported to `problems`, and every compared one offered to `capture`."""
    runtimes = []
    for route in config.routes:
        records = recorder is not None and route.record > 0
        on_predictions = _shadow_writer(recorder, route.name) if records else None
        prod = route.production
        kind, classes = route.comparator.kind, route.classes
        production_classes = metrics.bind_classes(
            route.name, prod.name, Role.PRODUCTION, kind, classes
        )
        dispatchers, shadow_metrics = [], []
        for shadow in route.shadows:
            sm = metrics.bind_shadow(route.name, shadow.name, kind)
            dispatcher = ShadowDispatcher(
                shadow.name,
                sample=shadow.sample,
                max_in_flight=shadow.max_in_flight,
                max_queue=shadow.max_queue,
                strip_headers=config.shadow_strip_headers,
                upstream=client.Upstream(
                    shadow.origin,  # scheme://host[:port], as the config checked it
                    # A URL without a path forwards the request's own path.
                    shadow.path or route.match,
                    timeout=shadow.timeout,
                    connect_timeout=shadow.connect_timeout,
                    # One connection per worker: a shadow can never open more than it uses.
                    max_connections=shadow.max_in_flight,
                    max_response=config.shadow_max_response,
                ),
                extractor=route.extractor,
                comparator=route.comparator,
                metrics=sm,
                on_predictions=on_predictions,
                production_classes=production_classes,
                shadow_classes=metrics.bind_classes(
                    route.name, shadow.name, Role.SHADOW, kind, classes
                ),
                eject_after=shadow.eject_after,
                eject_for=shadow.eject_for,
                route=route.name,
                production=prod.name,
                problems=problems,
                segments=None
                if route.segment is None
                else (route.segment, metrics.bind_segments(route.name, shadow.name)),
                capture=capture,
                role=shadow.role,
                match=route.match,
            )
            dispatchers.append(dispatcher)
            shadow_metrics.append(sm)
        runtimes.append(
            RouteRuntime(
                name=route.name,
                shadows=ShadowSet(dispatchers, shadow_metrics, config.shadow_max_body),
                recorder=recorder if records else None,
                record=Sampler(route.record if records else 0.0),
            )
        )
    return tuple(runtimes)


def _shadow_writer(recorder: Recorder | None, route: str) -> PredictionsCallback:
    """Adds a recorded request's shadow predictions to its record."""
    assert recorder is not None

    def write(tee: Tee, shadow: str, predictions: list[Any]) -> None:
        recorder.shadow(route, tee.request_id, shadow, predictions)

    return write


def publish(metrics: Metrics, config: Config, value: float = 1.0) -> None:
    """The info series of `config` set to `value`: 1 for the running config, 0 for the one a
    reload replaced (prometheus-client cannot remove series in multiprocess mode)."""
    for route in config.routes:
        kind = route.comparator.kind.value
        metrics.route_info.labels(route.name, kind, route.production.name).set(value)
        for shadow in route.shadows:
            metrics.shadow_info.labels(route.name, shadow.name, shadow.role).set(value)
    metrics.set_config_info(
        config_hash(config),
        config.source,
        routes=len(config.routes),
        shadows=sum(len(r.shadows) for r in config.routes),
        value=value,
    )


async def start(routes: tuple[RouteRuntime, ...]) -> None:
    """Start every shadow's workers."""
    for route in routes:
        await route.shadows.start()


async def retire(routes: tuple[RouteRuntime, ...], grace: float) -> None:
    """The routes of a config a reload replaced: drain their shadows, close their pools."""
    await asyncio.gather(*(r.shadows.drain(grace) for r in routes))

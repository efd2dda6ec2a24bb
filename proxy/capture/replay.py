"""`shadow-proxy replay`: the requests of a capture export (read by proxy.capture.reading) sent
again, to a candidate model that is not shadowed yet, its answers compared with production's
captured ones by the proxy's own rules (proxy.core), and counted into a registry of its own as
the proxy counts a shadow, so that the report (proxy.report) is the one the live proxy would
give. Owns sending (paced, bounded), the progress line, the summary and the command line; not
reading the export, the comparison, the scoring rules, the metrics' names nor the report.

Imported by the command line of every process, so it imports aiohttp, the metrics and the report
only when a replay runs: a front process never loads them.

    $ shadow-proxy replay --config proxy.yaml --from export.jsonl \\
        --target http://candidate:8080/v1/models/iris:predict --report replay.html
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import re
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from proxy.capture.reading import (
    Captured,
    Export,
    ExportError,
    Plan,
    ReplayError,
    plan,
    requests_of,
)
from proxy.config import Config, ConfigError, Route, config_hash, load_config, parse_duration
from proxy.console import emit
from proxy.core.comparison import CompareKind, ShapeMismatch, classify
from proxy.core.extraction import ExtractionError
from proxy.core.joining import InvalidLabel, label_values, pair, score
from proxy.core.outcomes import (
    Cause,
    ComparisonResult,
    LabelResult,
    Outcome,
    RecordDrop,
    RecordKind,
    Role,
)

if TYPE_CHECKING:
    import aiohttp

    from proxy.metrics import LabelMetrics, Metrics
    from proxy.report.model import Report, RouteReport

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_NAME",
    "DEFAULT_TIMEOUT",
    "Captured",
    "Export",
    "ExportError",
    "Options",
    "Plan",
    "Progress",
    "ReplayError",
    "RouteCounts",
    "TargetError",
    "add_replay_parser",
    "plan",
    "replay",
    "run_replay",
    "summary",
]

DEFAULT_CONCURRENCY: Final = 8
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_NAME: Final = "replay"
"""The candidate's name in the metrics and the report, and in its X-Shadow-Request header."""

SHADOW_MARKER: Final = "X-Shadow-Request"  # as the proxy marks the copies it sends a shadow
# Hop-by-hop headers (RFC 9110 7.6.1), and the framing the client sets itself.
_NOT_SENT: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host",
        "content-length", "accept-encoding", SHADOW_MARKER.lower(),
    }
)  # fmt: skip
# A failure to connect at all, on the first request: the target is not there.
_UNREACHABLE: Final = frozenset(
    {Cause.DNS, Cause.REFUSED, Cause.TLS, Cause.UNREACHABLE, Cause.CONNECT_TIMEOUT}
)
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PROGRESS_STEPS: Final = 10  # without a terminal: a line at every tenth
_BATCH: Final = 64  # rows read from the export per hand-off from the reading thread


class TargetError(ReplayError):
    """The target cannot be reached at all: one line naming it and why."""


# -- counting, as the proxy counts ----------------------------------------------------------------


@dataclass(slots=True)
class _Answer:
    status: int
    body: bytes
    seconds: float


class _Failed(Exception):
    """The candidate gave no usable answer: `outcome` and `cause` as the proxy's client says."""

    def __init__(self, outcome: Outcome, cause: Cause, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.cause = cause


class RouteCounts:
    """One route's metrics, bound as the proxy binds them for production and one shadow (the
    candidate), and counted as it counts them: the front's production requests, the shadow
    dispatcher's comparison (proxy.analysis.shadow), the recorder's records and the label
    endpoint's joins (proxy.analysis.scoring's RouteScorer). The running proxy's modules are
    imported by no other part (tests/test_architecture.py), so their counting is followed here;
    tests/test_replay.py checks that a replay's report is the live proxy's.

    >>> counts = RouteCounts(Metrics(CollectorRegistry()), route, "replay", labels)
    >>> counts.production(captured)
    >>> counts.answered(captured, answer)  # or counts.failed(captured, failure)
    """

    def __init__(self, metrics: Metrics, route: Route, name: str, labels: LabelMetrics) -> None:
        self.route = route
        self.name = name
        kind = self.kind = route.comparator.kind
        production = route.production.name
        metrics.route_info.labels(route.name, kind.value, production).set(1)
        metrics.shadow_info.labels(route.name, name, "candidate").set(1)
        self._front = metrics.bind_route(route.name, production)
        self._shadow = metrics.bind_shadow(route.name, name, kind)
        self._shadow.sample.set(1.0)  # the candidate is sent every captured request
        self._production_classes = metrics.bind_classes(
            route.name, production, Role.PRODUCTION, kind, route.classes
        )
        self._shadow_classes = metrics.bind_classes(
            route.name, name, Role.SHADOW, kind, route.classes
        )
        self._production_model = metrics.bind_model(route.name, production, Role.PRODUCTION, kind)
        self._shadow_model = metrics.bind_model(route.name, name, Role.SHADOW, kind)
        self._pair = metrics.bind_pair(route.name, name, kind)
        self._recording = metrics.bind_recording(route.name)
        self._labelled_classes = metrics.bind_labelled_classes(
            route.name, production, kind, route.classes
        )
        self._labels = labels
        # For the summary: what the report does not say, or says through histogram buckets.
        self.replayed = 0
        self.production_errors = 0
        self.production_seconds: list[float] = []
        self.candidate_seconds: list[float] = []
        self.results: Counter[ComparisonResult] = Counter()
        self.labels: Counter[LabelResult] = Counter()
        self.problems: dict[tuple[str, str], tuple[str, int]] = {}  # (model, what) -> latest

    def production(self, captured: Captured) -> None:
        """Production's side, as the front counted it, and the copy queued for the shadow."""
        self.replayed += 1
        self._front.requests.inc()
        status, ms = captured.production_status, captured.production_ms
        upstream = self._front.production
        if status is None:
            timeout = self.route.production.timeout
            timed_out = ms is not None and ms >= 1000 * timeout * 0.99
            upstream.outcomes[Outcome.TIMEOUT if timed_out else Outcome.CONNECT_ERROR].inc()
            self.production_errors += 1
        else:
            upstream.outcomes[Outcome.of_status(status)].inc()
            self.production_errors += status >= 500
            if ms is not None:
                upstream.duration.observe(ms / 1000)
                self.production_seconds.append(ms / 1000)
        self._shadow.enqueued.inc()
        if self._production_classes is not None and status is not None and 200 <= status < 300:
            # Counted whatever the shadow answers, as the dispatcher does; an answer without
            # predictions is counted as production_unparseable when compared.
            with contextlib.suppress(ExtractionError):
                self._production_classes.count(captured.predictions(self.route.extractor))

    def failed(self, captured: Captured, failure: _Failed) -> None:
        m = self._shadow
        m.upstream.outcomes[failure.outcome].inc()
        m.errors(failure.cause).inc()
        self._result(ComparisonResult.SHADOW_FAILED)
        self._record(captured, None)

    def answered(self, captured: Captured, answer: _Answer) -> None:
        """The candidate's answer compared with production's (proxy.core.comparison.classify),
        and counted as the shadow dispatcher counts it."""
        m = self._shadow
        m.upstream.duration.observe(answer.seconds)
        m.upstream.outcomes[Outcome.of_status(answer.status)].inc()
        self.candidate_seconds.append(answer.seconds)
        extractor = self.route.extractor
        found = classify(
            captured.production_status,
            answer.status,
            lambda: captured.predictions(extractor),
            lambda: extractor.extract(answer.body),
            self.route.comparator,
        )
        got = found.shadow_predictions
        if got is not None and self._shadow_classes is not None:
            self._shadow_classes.count(got)
        self._result(found.result)
        comparison = found.comparison
        if comparison is None:
            if found.detail:
                production = found.result is ComparisonResult.PRODUCTION_UNPARSEABLE
                model = self.route.production.name if production else self.name
                self._saw(model, found.result, found.detail)
        else:
            m.count_comparison(comparison)
        self._record(captured, got)

    def _result(self, result: ComparisonResult) -> None:
        self._shadow.results[result].inc()
        self.results[result] += 1

    def _saw(self, model: str, what: str, detail: str) -> None:
        _, count = self.problems.get((model, what), ("", 0))
        self.problems[(model, what)] = (detail[:300], count + 1)

    def _record(self, captured: Captured, got: list[Any] | None) -> None:
        """The recorder's part (every replayed request is recorded), then the label's, as
        /labels joins it: production's predictions and the candidate's, if it gave some."""
        status = captured.production_status
        written, dropped = self._recording.written, self._recording.dropped
        if status is None or not 200 <= status < 300:
            dropped[(RecordKind.RECORD, RecordDrop.NO_PREDICTIONS)].inc()
            predictions = None
        else:
            try:
                predictions = captured.predictions(self.route.extractor)
            except ExtractionError as exc:
                dropped[(RecordKind.RECORD, RecordDrop.UNREADABLE)].inc()
                self._saw(self.route.production.name, RecordDrop.UNREADABLE, str(exc))
                predictions = None
        if predictions is not None:
            written[RecordKind.RECORD].inc()
            if got is not None:
                written[RecordKind.SHADOW].inc()
        if not captured.labelled:
            return
        self._labels.received.inc()
        if predictions is None:
            result = LabelResult.UNKNOWN_ID  # no record: the proxy would not know the id
        else:
            try:
                self._join(captured, predictions, got)
                result = LabelResult.JOINED
            except InvalidLabel:
                result = LabelResult.INVALID
        self._labels.results[result].inc()
        self.labels[result] += 1

    def _join(self, captured: Captured, predictions: list[Any], got: list[Any] | None) -> None:
        """RouteScorer.join: InvalidLabel, before anything is counted, when the label does not
        fit production's predictions."""
        labels = label_values(captured.label, len(predictions))
        production_score = score(self.kind, predictions, labels)
        self._production_model.count(production_score)
        if self._labelled_classes is not None:
            self._labelled_classes.count(predictions)
        labelled_at = captured.captured_at if captured.labelled_at is None else captured.labelled_at
        self._recording.delay.observe(max(0.0, labelled_at - captured.captured_at))
        if got is None:
            return
        try:
            self._shadow_model.count(score(self.kind, got, labels))
            paired = pair(self.kind, predictions, got, labels)
        except (InvalidLabel, ShapeMismatch):
            self._shadow_model.unscorable.inc(len(labels))
            return
        self._pair.count(paired)

    def details(self) -> list[str]:
        """The latest reason of each kind of answer not measured, as the report's problems."""
        return [
            f"{model}: {detail} ({what}, {count} in the replay)"
            for (model, what), (detail, count) in self.problems.items()
        ]


# -- sending --------------------------------------------------------------------------------------


class _Pace:
    """Starts at most `rate` requests a second, evenly spaced (no bursts); None: no limit."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


def _failure(exc: BaseException, timeout: float) -> _Failed:
    """An aiohttp client error as the proxy's client names it (proxy.front.client)."""
    import aiohttp

    from proxy.front.client import connect_cause

    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _Failed(
            Outcome.TIMEOUT, Cause.CONNECT_TIMEOUT, f"no connection within {timeout:g} s"
        )
    if isinstance(exc, TimeoutError):
        return _Failed(Outcome.TIMEOUT, Cause.TIMEOUT, f"no answer within {timeout:g} s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = connect_cause(exc.os_error)
        if cause is Cause.REFUSED:
            why = "connection refused (is it running, and on that port?)"
        elif cause is Cause.DNS:
            why = f"cannot resolve the host ({exc.os_error.strerror or exc.os_error})"
        else:
            why = str(exc.os_error.strerror or exc.os_error or exc)
        return _Failed(Outcome.CONNECT_ERROR, cause, why)
    if isinstance(exc, aiohttp.ClientResponseError):
        return _Failed(Outcome.CONNECT_ERROR, Cause.BAD_RESPONSE, f"not a valid HTTP answer: {exc}")
    return _Failed(Outcome.CONNECT_ERROR, Cause.RESET, str(exc) or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class _Sender:
    """Sends a captured request to the target, as the proxy sends a shadow its copy: the
    captured headers (the redacted ones as the capture wrote them) minus hop-by-hop ones, Host,
    Content-Length, Accept-Encoding (an uncompressed answer, as the proxy asks) and the config's
    shadow_strip_headers, plus `X-Shadow-Request: <name>`; answers are read up to the config's
    shadow_max_response."""

    session: aiohttp.ClientSession
    target: str
    name: str
    strip: frozenset[str]
    max_response: int
    timeout: float

    def url(self, captured: Captured) -> str:
        if not captured.query:
            return self.target
        return f"{self.target}{'&' if '?' in self.target else '?'}{captured.query}"

    def headers(self, captured: Captured) -> list[tuple[str, str]]:
        listed = {
            token.strip().lower()
            for name, value in captured.headers
            if name == "connection"
            for token in value.split(",")
        }
        drop = _NOT_SENT | self.strip | listed
        sent = [(name, value) for name, value in captured.headers if name not in drop]
        sent.append((SHADOW_MARKER, self.name))
        return sent

    async def send(self, captured: Captured) -> _Answer:
        """The candidate's answer; _Failed when there is no usable one."""
        import aiohttp
        from yarl import URL

        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            try:
                response = await self.session.request(
                    captured.method,
                    URL(self.url(captured), encoded=True),  # the query as the client sent it
                    headers=self.headers(captured),
                    data=captured.body or None,
                    allow_redirects=False,
                )
            except aiohttp.ClientError:  # InvalidURL is a ValueError too: the target's
                raise
            except ValueError as exc:
                # What aiohttp refuses to send (a method or header it finds unsafe): the row's
                # fault, not the candidate's. reading.py's checks leave none it is known to.
                raise ExportError(f"{captured.where}: cannot be sent: {exc}") from None
            async with response:
                status = response.status
                declared = response.content_length
                if declared is not None and declared > self.max_response:
                    raise _too_large(self.max_response)
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > self.max_response:
                        raise _too_large(self.max_response)
                    chunks.append(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _failure(exc, self.timeout) from exc
        return _Answer(status, b"".join(chunks), loop.time() - started)


def _too_large(limit: int) -> _Failed:
    return _Failed(Outcome.TOO_LARGE, Cause.TOO_LARGE, f"answer over shadow_max_response ({limit})")


# -- progress -------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """`4s`, `2m05s`, `1h02m`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Requests done of `total` on `stream`: on a terminal a bar redrawn in place (at most ten
    times a second) with the rate and the time left; else a line at every tenth.

    >>> progress = Progress(200, sys.stderr)
    >>> progress.advance()  # one more request done
    >>> progress.close()
    """

    def __init__(
        self,
        total: int,
        stream: TextIO,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._clock = clock
        self._started = clock()
        self._drawn = -math.inf
        marks = {
            math.ceil(total * step / _PROGRESS_STEPS) for step in range(1, _PROGRESS_STEPS + 1)
        }
        self._marks = marks - {0}

    def start(self) -> None:
        """Count the time from now: when the first request is sent."""
        self._started = self._clock()

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def text(self) -> str:
        elapsed = self.elapsed
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = self.done / self.total if self.total else 1.0
        left = (self.total - self.done) / rate if rate else math.inf
        eta = _duration(left) if math.isfinite(left) else "-"
        return f"{self.done}/{self.total} ({share:.0%}), {rate:.1f} requests/s, ETA {eta}"

    def advance(self) -> None:
        self.done += 1
        if self._tty:
            now = self._clock()
            if now - self._drawn >= 0.1 or self.done == self.total:
                self._drawn = now
                width = 30
                filled = width * self.done // self.total if self.total else width
                bar = "#" * filled + "." * (width - filled)
                self._write(f"\r[{bar}] {self.text()}\x1b[K")
        elif self.done in self._marks:
            self._write(f"replay: {self.text()}\n")

    def close(self) -> None:
        if self._tty and self.done:
            self._write("\n")

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (BrokenPipeError, ValueError):  # stderr gone: the replay goes on
            pass


# -- the replay -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    target: str
    name: str = DEFAULT_NAME
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None  # requests a second; None: as fast as the concurrency allows
    timeout: float = DEFAULT_TIMEOUT


async def replay(
    export: Export,
    found: Plan,
    config: Config,
    options: Options,
    counts: dict[str, RouteCounts],
    progress: Progress,
) -> None:
    """Send every request of the plan to the target, `options.concurrency` at a time, started
    at most `options.rate` a second, and count each into its route's counts. The first request
    goes alone: if it cannot connect at all, TargetError, and nothing else is sent. ExportError
    when a row of the second pass cannot be read."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=options.concurrency, limit_per_host=options.concurrency)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=options.timeout),
        skip_auto_headers=("Accept-Encoding",),
    ) as session:
        sender = _Sender(
            session,
            options.target,
            options.name,
            frozenset(h.lower() for h in config.shadow_strip_headers),
            config.shadow_max_response,
            options.timeout,
        )
        pace = _Pace(options.rate)
        rows = requests_of(export, found)

        async def one(captured: Captured) -> _Failed | None:
            await pace.wait()
            route = counts[captured.route]
            route.production(captured)
            try:
                answer = await sender.send(captured)
            except _Failed as failure:
                route.failed(captured, failure)
                return failure
            finally:
                progress.advance()
            route.answered(captured, answer)
            return None

        batch = await asyncio.to_thread(_take, rows, _BATCH)
        if not batch:
            return
        progress.start()
        first = await one(batch[0])
        if first is not None and first.cause in _UNREACHABLE:
            raise TargetError(f"cannot reach {options.target}: {first}")
        queue: asyncio.Queue[Captured | None] = asyncio.Queue(2 * options.concurrency)

        async def read() -> None:
            pending = batch[1:]
            while pending:
                for captured in pending:
                    await queue.put(captured)
                pending = await asyncio.to_thread(_take, rows, _BATCH)
            for _ in range(options.concurrency):
                await queue.put(None)

        async def work() -> None:
            while (captured := await queue.get()) is not None:
                await one(captured)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(read(), name="replay:read")
                for number in range(options.concurrency):
                    group.create_task(work(), name=f"replay:send:{number}")
        except* ExportError as failed:
            raise failed.exceptions[0] from None


def _take(rows: Iterator[Captured], count: int) -> list[Captured]:
    """Up to `count` more requests (read in a thread: parsing bodies would stall the sends)."""
    taken = []
    for captured in rows:
        taken.append(captured)
        if len(taken) == count:
            break
    return taken


# -- the summary ----------------------------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile of what was measured (exact, not read off buckets)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _errors(errors: int, requests: int) -> str:
    return f"{errors} ({errors / requests:.1%})" if errors and requests else str(errors)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _route_summary(route: RouteReport, counts: RouteCounts) -> list[str]:
    kind = route["kind"]
    regression = kind == CompareKind.REGRESSION.value
    lines = [f"{route['route']}  ({kind}: {counts.replayed} requests replayed)"]
    header = ["model", "requests", "errors", "disagreement (instances)"]
    header += ["MAE", "labelled instances"] if regression else ["accuracy", "labelled instances"]
    rows = [[*header, "p50 ms", "p99 ms"]]

    def quality(accuracy: Any, error: Any) -> list[str]:
        if regression:
            mae = error["mae"]
            return ["-" if mae is None else f"{mae:.4g}", str(error["labelled"])]
        return [_pct(accuracy["value"]), str(accuracy["labelled"])]

    production_seconds = counts.production_seconds
    rows.append(
        [
            f"production {route['production']}",
            str(counts.replayed),
            _errors(counts.production_errors, counts.replayed),
            "-",
            *quality(route["production_accuracy"], route["production_error"]),
            _ms(_quantile(production_seconds, 0.5)),
            _ms(_quantile(production_seconds, 0.99)),
        ]
    )
    for shadow in route["shadows"]:
        d = shadow["disagreement"]
        disagreement = (
            f"{_pct(d['value'])} ({d['disagreed']} of {d['compared']})" if d["compared"] else "-"
        )
        rows.append(
            [
                f"candidate {shadow['shadow']}",
                str(shadow["requests"]),
                _errors(shadow["errors"], shadow["requests"]),
                disagreement,
                *quality(shadow["accuracy"], shadow["error"]),
                _ms(_quantile(counts.candidate_seconds, 0.5)),
                _ms(_quantile(counts.candidate_seconds, 0.99)),
            ]
        )
    lines += _table(rows)
    answers = ", ".join(
        f"{count} {result.value.replace('_', ' ')}"
        for result in ComparisonResult
        if (count := counts.results[result])
    )
    lines.append(f"  answers: {answers or 'none'}")
    if counts.labels:
        labels = ", ".join(
            f"{count} {result.value}" for result in LabelResult if (count := counts.labels[result])
        )
        lines.append(f"  labels: {labels}")
    lines.append(
        "  latency: the candidate's measured from here, production's as captured live; not judged"
    )
    lines += [f"  PROBLEM: {problem}" for problem in route["problems"]]
    for shadow in route["shadows"]:
        lines.append(f"  verdict: {shadow['verdict']}: {shadow['reason']}")
    lines += [f"  warning: {warning}" for warning in route["diagnostics"]["warnings"]]
    return lines


def summary(
    report: Report,
    counts: dict[str, RouteCounts],
    found: Plan,
    source: str,
    target: str,
    seconds: float,
) -> str:
    """The table printed at the end: what was replayed and left out, then per route production
    and the candidate side by side (latencies: exact quantiles of the times measured; the
    report's come from the histogram buckets, as the proxy's), the answers by result, and the
    verdict in words."""
    total = sum(c.replayed for c in counts.values())
    rate = f", {total / seconds:.1f} requests/s" if seconds > 0 else ""
    lines = [f"replayed {total} requests of {source} to {target} in {seconds:.1f} s{rate}"]
    skipped = []
    if found.unknown:
        routes = ", ".join(f"{name} {count}" for name, count in sorted(found.unknown.items()))
        rows = _plural(sum(found.unknown.values()), "row")
        skipped.append(f"{rows} of routes not in the config ({routes})")
    if found.not_asked:
        skipped.append(
            f"{_plural(found.not_asked, 'row')} of other routes or shadows than asked for"
        )
    if found.truncated:
        cut = _plural(found.truncated, "request")
        skipped.append(f"{cut} whose body the capture cut (capture.max_body)")
    if skipped:
        lines.append(f"skipped: {'; '.join(skipped)}")
    for route in report["routes"]:
        lines += ["", *_route_summary(route, counts[route["route"]])]
    return "\n".join(lines) + "\n"


# -- the command line -----------------------------------------------------------------------------


def _url_arg(text: str) -> str:
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected the candidate's full http:// or https:// URL, e.g."
            f" http://candidate:8080/v1/models/iris:predict (got {text!r})"
        )
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a valid URL: {text!r} ({exc})") from None
    if parts.fragment:
        raise argparse.ArgumentTypeError(f"a target URL has no fragment: {text!r}")
    return text.strip()


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (got {text!r})")
    return int(text)


def _rate_arg(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise argparse.ArgumentTypeError(
            f"must be a number of requests a second above 0 (got {text!r})"
        )
    return rate


def _timeout_arg(text: str) -> float:
    try:
        seconds = parse_duration(text if not _is_number(text) else float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0 (got {text!r})")
    return seconds


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _name_arg(text: str) -> str:
    if _NAME.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"a name is letters, digits, '_', '.' or '-', at most 64 (got {text!r})"
        )
    return text


_EPILOG = """\
Each request of the export is sent once (rows of several shadows of one request share it), with
its captured headers as the proxy sends a shadow its copy: the values the capture redacted are
sent as it wrote them (<redacted>), and the config's shadow_strip_headers are left out. Requests
whose body the capture cut (capture.max_body) are not sent. The candidate's answers are compared
with production's captured ones, and labels joined, by the proxy's own rules and metrics: the
report is the one the live proxy would give had the candidate been its shadow then.

exit status:
  0  replayed (whatever the verdict)
  1  the config, the export or the target could not be read (one line says why)
  2  a usage error

examples:
  shadow-proxy replay --config proxy.yaml --from export.jsonl \\
      --target http://candidate:8080/v1/models/iris:predict
  shadow-proxy replay --config proxy.yaml --from export.parquet --route iris --rate 50 \\
      --target http://127.0.0.1:8000/invocations --report replay.html --json replay.json
"""


def add_replay_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `replay` to the subcommands `commands` (argparse's add_subparsers())."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "replay",
        help="send captured requests to a candidate model and report it as a shadow",
        description="Send the requests of a capture export (shadow-proxy capture export) to a\n"
        "candidate model, compare its answers with production's captured ones, join the\n"
        "labels, and print the verdict the proxy would give it as a shadow.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="the proxy's YAML config (its routes)")
    parser.add_argument(
        "--from",
        dest="export",
        metavar="EXPORT",
        required=True,
        help="the export: JSON lines (.jsonl) or Parquet (.parquet, needs pyarrow)",
    )
    parser.add_argument(
        "--target",
        type=_url_arg,
        required=True,
        help="the candidate's full URL, e.g. http://candidate:8080/v1/models/iris:predict; a"
        " captured query string is appended",
    )
    parser.add_argument("--route", help="replay this route's requests only (a routes[].name)")
    parser.add_argument("--shadow", help="replay the requests captured for this shadow only")
    parser.add_argument(
        "--name",
        type=_name_arg,
        default=DEFAULT_NAME,
        help=f"the candidate's name in the report (default {DEFAULT_NAME})",
    )
    parser.add_argument(
        "--rate",
        type=_rate_arg,
        help="requests started a second, at most (default: as fast as --concurrency allows)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight at once, at most (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout_arg,
        default=DEFAULT_TIMEOUT,
        help=f"time for each answer, like 2.5 or 500ms (default {DEFAULT_TIMEOUT:g} s)",
    )
    parser.add_argument("--report", metavar="FILE.html", help="write the report page there")
    parser.add_argument("--json", metavar="FILE.json", help="write the report's JSON there")
    parser.set_defaults(replay_parser=parser)
    return parser


def run_replay(args: argparse.Namespace) -> int:
    """Run `shadow-proxy replay` as parsed by `add_replay_parser`; its exit status."""
    parser: argparse.ArgumentParser = args.replay_parser
    for option in ("report", "json"):
        out = getattr(args, option)
        if out is not None and not Path(out).resolve().parent.is_dir():
            parser.error(f"--{option}: no directory {str(Path(out).parent)!r} to write {out!r} in")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"shadow-proxy replay: invalid config {args.config}:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    names = [route.name for route in config.routes]
    if args.route is not None and args.route not in names:
        parser.error(
            f"--route: no route {args.route!r} in {args.config} (its routes: {', '.join(names)})"
        )
    options = Options(args.target, args.name, args.concurrency, args.rate, args.timeout)
    try:
        return _run(args, config, options)
    except ReplayError as exc:
        print(f"shadow-proxy replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nshadow-proxy replay: interrupted", file=sys.stderr)
        return 130


def _nothing(found: Plan, args: argparse.Namespace) -> str:
    what = f"nothing to replay in {args.export}: {_plural(found.rows, 'row')}"
    if found.unknown:
        what += f", {sum(found.unknown.values())} of routes not in {args.config}"
        what += f" ({', '.join(sorted(found.unknown))})"
    if args.shadow is not None and args.shadow not in found.shadows:
        what += (
            f"; no rows of shadow {args.shadow!r} (its shadows: {', '.join(sorted(found.shadows))})"
        )
    elif found.not_asked:
        what += f", {found.not_asked} of other routes or shadows than asked for"
    if found.truncated:
        what += f", {_plural(found.truncated, 'request')} whose body the capture cut"
    return what


def _run(args: argparse.Namespace, config: Config, options: Options) -> int:
    from prometheus_client import CollectorRegistry

    from proxy.metrics import Metrics
    from proxy.report.build import build_report, samples_of

    export = Export(args.export)
    found = plan(export, config, args.route, args.shadow)
    if not found.total:
        raise ExportError(_nothing(found, args))
    metrics = Metrics(CollectorRegistry())
    labels = metrics.bind_labels()
    routes = {r.name: r for r in config.routes}
    counts = {
        name: RouteCounts(metrics, routes[name], options.name, labels) for name in found.requests
    }
    progress = Progress(found.total, sys.stderr)
    try:
        asyncio.run(replay(export, found, config, options, counts, progress))
    finally:
        progress.close()
    seconds = progress.elapsed  # from the first request sent
    # The candidate's latency is measured from here, production's was measured live at the
    # proxy: shown side by side, never judged against each other.
    report = build_report(
        samples_of(metrics.registry.collect()),
        dataclasses.replace(config.verdict, latency_margin=None),
        generated_at=time.time(),
        config_hash=config_hash(config),
        problems={name: c.details() for name, c in counts.items()},
    )
    emit(summary(report, counts, found, args.export, options.target, seconds), 0)
    # After the summary: a file that cannot be written loses nothing else.
    written = _write(args, report)
    return emit(f"\nwrote {', '.join(written)}\n", 0) if written else 0


def _write(args: argparse.Namespace, report: Report) -> list[str]:
    """Write --report and --json, and say what was; ReplayError naming a file that could not
    be."""
    import orjson

    from proxy.report.html import render_html

    written = []
    # Named here: an error on writing or closing (/dev/full: no space) has no filename of its own.
    file = None
    try:
        if args.report is not None:
            file = args.report
            Path(file).write_text(render_html(report), encoding="utf-8")
            written.append(f"the report page to {file}")
        if args.json is not None:
            file = args.json
            body = orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2)
            Path(file).write_bytes(body + b"\n")
            written.append(f"its JSON to {file}")
    except OSError as exc:
        raise ReplayError(f"cannot write {file}: {exc.strerror or exc}") from None
    return written

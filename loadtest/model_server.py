"""A fast model-server stand-in for the demo and the benchmark: deterministic predictions
from the input and a seed, with scripted latency, errors and blackholing.

Owns the fake model's prediction rule (pure functions), the parsing of KServe v1, Open
Inference v2 and MLflow request bodies into instances, and a small aiohttp low-level HTTP
server around them. Uses only ``proxy.config``'s duration parser, so that latencies read like
the proxy's timeouts (``proxy/`` never imports this).

Prediction rule
---------------
A request is split into *instances*, one per row (see "Protocols"). Each instance is hashed
as its canonical JSON, ``orjson.dumps(instance, option=orjson.OPT_SORT_KEYS)``, so key order
inside objects does not matter but ``1`` and ``1.0`` are different instances::

    h    = int.from_bytes(blake2b(canonical, digest_size=8).digest(), "big")
    g    = int.from_bytes(blake2b(canonical, digest_size=8,
                                  key=str(seed).encode()).digest(), "big")
    u    = (g >> 11) / 2**53                  # uniform in [0, 1), independent of h
    flip = seed != 0 and u < disagree

    classification:  class = (h % classes + flip) % classes
    regression:      value = (h % 1000) / 10 + (1.0 if flip else 0.0)

The server with ``seed=0`` is the reference ("truth"): it never flips. A server with seed
``s != 0`` flips on the instances whose ``u`` falls below ``disagree``: about that fraction
of them, and always the same ones for the same ``(s, disagree)``. So a production server on
``--seed 0`` and a shadow on ``--seed 7 --disagree 0.2`` disagree on ~20% of instances, and
``disagrees(instance, 7, 0.2)`` says exactly which. Since ``disagree`` is a threshold on
``u``, raising it for the same seed only adds instances to the disagreeing set.

``predict_proba`` gives a probability vector whose strict argmax is ``predict_class``; the
other classes get weights drawn from the instance's hash, independent of the seed.

Protocols (any host; the protocol is chosen by the path)
---------------------------------------------------------
- KServe v1, ``POST /v1/models/{name}:predict``: ``{"instances": [...]}`` ->
  ``{"predictions": [...]}``; each element of ``instances`` is an instance.
- Open Inference v2, ``POST /v2/models/{name}/infer`` or
  ``/v2/models/{name}/versions/{version}/infer``: each input's flat row-major ``data`` is cut
  into ``shape[0]`` rows of ``prod(shape[1:])`` values (a 1-D input gives scalar rows). With
  one input the instance is its row, so v2 ``shape [N, F]`` rows predict exactly like the same
  rows sent as v1 ``instances``; with several inputs it is ``{input name: row}``. The answer
  mirrors MLServer's (``model_name`` is ``--name``, ``model_version`` the path's version or
  ``"v1"``, a fresh uuid4 ``id``); ``"outputs": [{"name": "predict_proba"}]`` asks for
  ``predict_proba`` (shape ``[N, classes]``, FP64, flat) instead of ``predict`` (shape
  ``[N, 1]``, INT64, or FP64 for regression); both may be asked for, in either order.
- MLflow, ``POST /invocations``: ``{"instances": rows}``, ``{"inputs": rows}`` (or either as a
  dict of equal-length columns, read as records), ``{"dataframe_records": records}`` or
  ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}``, whose rows become
  ``{column: value}`` records (plain row lists without ``columns``), so the same frame sent as
  records or as a split predicts alike. Answer: ``{"predictions": [...]}``.
- ``GET /v2/health/ready``, ``/v2/health/live``, ``/healthz``: 200. Other paths: 404; other
  methods on a prediction path: 405; a body that is not JSON or not the protocol's shape: 400.
  Errors are ``{"error": "message"}``.

Scripted behaviour applies to prediction requests only, in this order: blackhole (read the
request, never answer, until the server stops), latency, error rate (500). Health endpoints
always answer at once, so a parent process can wait for readiness.

Command line (from the repository root)::

    python -m loadtest.model_server --port 9001 --seed 1 --disagree 0.2 \\
        --latency exp:20ms --error-rate 0.01

prints ``listening on http://HOST:PORT`` once it is bound (useful with ``--port 0``) and
serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from aiohttp import web

from proxy.config import parse_duration

__all__ = [
    "NO_LATENCY",
    "BadRequest",
    "Latency",
    "ModelServer",
    "ServerOptions",
    "build_parser",
    "canonical",
    "disagrees",
    "main",
    "mlflow_instances",
    "predict_class",
    "predict_proba",
    "predict_value",
    "start_server",
    "v1_instances",
    "v2_instances",
    "v2_requested_outputs",
]

Kind = Literal["classification", "regression"]
Distribution = Literal["fixed", "uniform", "exp", "normal"]
_Protocol = Literal["v1", "v2", "mlflow"]

_KINDS: Final[tuple[Kind, ...]] = ("classification", "regression")
_V2_OUTPUTS: Final = ("predict", "predict_proba")
_HEALTH_PATHS: Final = frozenset({"/v2/health/ready", "/v2/health/live", "/healthz"})
_V1_PREFIX: Final = "/v1/models/"
_V1_SUFFIX: Final = ":predict"
_V2_PREFIX: Final = "/v2/models/"
_V2_SUFFIX: Final = "/infer"
_JSON: Final = "application/json"
_U53: Final = 2.0**-53
_PROBA_PERSON: Final = b"proba"


# --------------------------------------------------------------------------- prediction rule


def canonical(instance: Any) -> bytes:
    """The bytes an instance is hashed as: its JSON with sorted object keys."""
    return orjson.dumps(instance, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class _Rule:
    """The prediction rule with its per-server constants computed once."""

    key: bytes | None  # None: this server never flips (seed 0, or disagree 0)
    disagree: float
    classes: int

    @classmethod
    def of(cls, seed: int, disagree: float, classes: int) -> _Rule:
        flips = seed != 0 and disagree > 0.0
        return cls(str(seed).encode("ascii") if flips else None, disagree, classes)

    def flip(self, canon: bytes) -> bool:
        if self.key is None:
            return False
        g = int.from_bytes(hashlib.blake2b(canon, digest_size=8, key=self.key).digest(), "big")
        return (g >> 11) * _U53 < self.disagree

    def cls(self, canon: bytes) -> int:
        h = int.from_bytes(hashlib.blake2b(canon, digest_size=8).digest(), "big")
        base = h % self.classes
        return (base + 1) % self.classes if self.flip(canon) else base

    def value(self, canon: bytes) -> float:
        h = int.from_bytes(hashlib.blake2b(canon, digest_size=8).digest(), "big")
        return (h % 1000) / 10 + (1.0 if self.flip(canon) else 0.0)

    def proba(self, canon: bytes) -> list[float]:
        weights = hashlib.blake2b(canon, digest_size=64, person=_PROBA_PERSON).digest()
        # Other classes weigh (0, 1), the predicted one (1, 2): its argmax is strict, and
        # no probability is exactly 0 (log loss stays finite).
        w = [(weights[j % 64] + 0.5) / 256.0 for j in range(self.classes)]
        w[self.cls(canon)] += 1.0
        total = math.fsum(w)
        return [x / total for x in w]


def disagrees(instance: Any, seed: int, disagree: float) -> bool:
    """Whether a server with this seed departs from the seed-0 reference on ``instance``."""
    return _Rule.of(seed, disagree, 2).flip(canonical(instance))


def predict_class(instance: Any, seed: int, disagree: float, classes: int) -> int:
    """The class a classification server with these options answers for ``instance``."""
    return _Rule.of(seed, disagree, classes).cls(canonical(instance))


def predict_value(instance: Any, seed: int, disagree: float) -> float:
    """The value a regression server with these options answers for ``instance``."""
    return _Rule.of(seed, disagree, 2).value(canonical(instance))


def predict_proba(instance: Any, seed: int, disagree: float, classes: int) -> list[float]:
    """Class probabilities whose strict argmax is ``predict_class`` with the same arguments."""
    return _Rule.of(seed, disagree, classes).proba(canonical(instance))


# --------------------------------------------------------------------------- options


def _duration(text: str) -> float:
    """Seconds from a duration as the proxy's config writes it ("200ms", "0.2", "1.5s", "500us")."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"bad duration {text!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Latency:
    """Added latency per prediction request, in seconds.

    ``a`` and ``b`` by distribution: ``fixed`` a; ``uniform`` low a, high b; ``exp`` mean a;
    ``normal`` mean a, standard deviation b (samples clipped at 0).

    >>> Latency.parse("uniform:10ms:50ms")
    Latency(distribution='uniform', a=0.01, b=0.05)
    >>> Latency.parse("200ms").sample(random.Random(0))
    0.2
    """

    distribution: Distribution = "fixed"
    a: float = 0.0
    b: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError(f"latency {self}: parameters must be finite")
        if self.a < 0.0 or self.b < 0.0:
            raise ValueError(f"latency {self}: parameters must not be negative")
        if self.distribution == "uniform" and self.b < self.a:
            raise ValueError(f"latency {self}: uniform high is below low")
        if self.distribution not in ("fixed", "uniform", "exp", "normal"):
            raise ValueError(f"latency {self}: unknown distribution")

    @classmethod
    def parse(cls, spec: str) -> Latency:
        """Read ``"200ms"``, ``"0.2"``, ``"uniform:10ms:50ms"``, ``"exp:20ms"`` or
        ``"normal:50ms:10ms"``; a bare duration is fixed latency."""
        name, *params = spec.strip().split(":")
        arity = {"uniform": 2, "exp": 1, "normal": 2}
        if not params:
            return cls("fixed", _duration(name))
        if name not in arity:
            raise ValueError(
                f"bad latency {spec!r}: expected a duration, 'uniform:LOW:HIGH', "
                "'exp:MEAN' or 'normal:MEAN:STDDEV'"
            )
        if len(params) != arity[name]:
            raise ValueError(f"bad latency {spec!r}: {name} takes {arity[name]} duration(s)")
        values = [_duration(p) for p in params]
        if name == "uniform":
            return cls("uniform", values[0], values[1])
        if name == "exp":
            return cls("exp", values[0])
        return cls("normal", values[0], values[1])

    @property
    def is_zero(self) -> bool:
        """True when every sample is 0: the server then never sleeps."""
        if self.distribution in ("fixed", "exp"):
            return self.a == 0.0
        if self.distribution == "uniform":
            return self.b == 0.0
        return self.a == 0.0 and self.b == 0.0

    def sample(self, rng: random.Random) -> float:
        if self.distribution == "fixed":
            return self.a
        if self.distribution == "uniform":
            return rng.uniform(self.a, self.b)
        if self.distribution == "exp":
            return rng.expovariate(1.0 / self.a) if self.a > 0.0 else 0.0
        return max(0.0, rng.gauss(self.a, self.b))


NO_LATENCY: Final = Latency()


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What a stand-in server predicts and how it misbehaves.

    >>> ServerOptions(seed=7, disagree=0.25, latency=Latency.parse("exp:20ms")).classes
    3
    """

    seed: int = 0
    disagree: float = 0.1
    classes: int = 3
    kind: Kind = "classification"
    name: str = "model"
    latency: Latency = NO_LATENCY
    error_rate: float = 0.0
    blackhole: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 0.0 <= self.disagree <= 1.0:
            raise ValueError(f"disagree must be in [0, 1], got {self.disagree!r}")
        if isinstance(self.classes, bool) or not isinstance(self.classes, int):
            raise ValueError(f"classes must be an integer, got {self.classes!r}")
        if self.classes < 2:
            raise ValueError(f"classes must be at least 2, got {self.classes!r}")
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if not self.name:
            raise ValueError("name must not be empty")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate!r}")


# --------------------------------------------------------------------------- request parsing


class BadRequest(ValueError):
    """A request body the stand-in cannot read; answered with 400."""


def _object(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    return doc


def _records(value: Any, key: str) -> list[Any]:
    """Rows as given, or a dict of equal-length columns turned into records."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and all(isinstance(col, list) for col in value.values()):
        lengths = {len(col) for col in value.values()}
        if len(lengths) > 1:
            raise BadRequest(f'"{key}" columns have different lengths: {sorted(lengths)}')
        n = lengths.pop() if lengths else 0
        return [{name: col[i] for name, col in value.items()} for i in range(n)]
    raise BadRequest(f'"{key}" must be a list of rows or an object of equal-length columns')


def v1_instances(doc: Any) -> list[Any]:
    """The instances of a KServe v1 ``{"instances": [...]}`` body."""
    instances = _object(doc).get("instances")
    if not isinstance(instances, list):
        raise BadRequest('KServe v1 request needs "instances": [...]')
    return instances


def mlflow_instances(doc: Any) -> list[Any]:
    """The instances of an MLflow scoring body (split, records, instances or inputs)."""
    body = _object(doc)
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise BadRequest('"dataframe_split" needs "data": [[...], ...]')
        rows: list[Any] = split["data"]
        columns = split.get("columns")
        if columns is None:
            return rows
        if not isinstance(columns, list):
            raise BadRequest('"dataframe_split" "columns" must be a list')
        width = len(columns)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                raise BadRequest(f'"dataframe_split" row {i} does not have {width} values')
        return [dict(zip(columns, row, strict=True)) for row in rows]
    if "dataframe_records" in body:
        records = body["dataframe_records"]
        if not isinstance(records, list):
            raise BadRequest('"dataframe_records" must be a list')
        return records
    for key in ("instances", "inputs"):
        if key in body:
            return _records(body[key], key)
    raise BadRequest(
        'MLflow request needs "dataframe_split", "dataframe_records", "instances" or "inputs"'
    )


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def v2_instances(doc: Any) -> list[Any]:
    """The rows of an Open Inference v2 body: one input's rows, or ``{name: row}`` records."""
    inputs = _object(doc).get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('Open Inference v2 request needs a non-empty "inputs": [...]')
    tensors: dict[str, list[Any]] = {}
    count = -1
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise BadRequest(f"input {i} must be an object")
        name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
        if not isinstance(name, str) or name in tensors:
            raise BadRequest(f"input {i} needs a unique string name")
        if not isinstance(shape, list) or not shape:
            raise BadRequest(f"input {name!r}: shape must be a non-empty list of sizes")
        for size in shape:
            if type(size) is not int or size < 0:
                raise BadRequest(f"input {name!r}: shape must be a non-empty list of sizes")
        if not isinstance(data, list):
            raise BadRequest(f"input {name!r}: data must be a list")
        if data and isinstance(data[0], list):
            data = _flatten(data)
        n, width = shape[0], math.prod(shape[1:])
        if len(data) != n * width:
            raise BadRequest(
                f"input {name!r}: shape {shape} needs {n * width} values, got {len(data)}"
            )
        if count not in (-1, n):
            raise BadRequest(f"input {name!r} has {n} rows, the first input has {count}")
        count = n
        if len(shape) == 1:
            tensors[name] = data
        else:
            tensors[name] = [data[r * width : (r + 1) * width] for r in range(n)]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    return [{name: rows[r] for name, rows in tensors.items()} for r in range(count)]


def v2_requested_outputs(doc: Any) -> list[str]:
    """Output names an Open Inference v2 body asks for; ``["predict"]`` when it does not say."""
    outputs = _object(doc).get("outputs")
    if outputs is None:
        return ["predict"]
    if not isinstance(outputs, list) or not outputs:
        raise BadRequest('"outputs" must be a non-empty list of {"name": ...}')
    names: list[str] = []
    for out in outputs:
        name = out.get("name") if isinstance(out, dict) else None
        if name not in _V2_OUTPUTS:
            raise BadRequest(f"unknown output {name!r}: expected one of {', '.join(_V2_OUTPUTS)}")
        names.append(name)
    return names


def _route(path: str) -> tuple[_Protocol, str] | None:
    """(protocol, model version) for a prediction path, else None."""
    if path == "/invocations":
        return "mlflow", ""
    if (
        path.startswith(_V1_PREFIX)
        and path.endswith(_V1_SUFFIX)
        and len(path) > len(_V1_PREFIX) + len(_V1_SUFFIX)
    ):
        return "v1", ""
    if path.startswith(_V2_PREFIX) and path.endswith(_V2_SUFFIX):
        parts = path[len(_V2_PREFIX) : -len(_V2_SUFFIX)].split("/")
        if len(parts) == 1 and parts[0]:
            return "v2", "v1"
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return "v2", parts[2]
    return None


# --------------------------------------------------------------------------- server


def _uuid4() -> str:
    """``str(uuid.uuid4())`` at a fifth of the cost: it is on the v2 hot path."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": message}), content_type=_JSON)


class ModelServer:
    """One stand-in model server on one port.

    >>> async def demo() -> None:
    ...     async with ModelServer(ServerOptions(seed=7, disagree=0.2)) as server:
    ...         print(server.url)  # POST f"{server.url}/v1/models/m:predict"
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.host = ""
        self.port = 0
        # Counters for tests and the benchmark: plain ints, read after the fact.
        self.predict_requests = 0
        self.scripted_errors = 0
        self._rule = _Rule.of(options.seed, options.disagree, options.classes)
        self._regression = options.kind == "regression"
        self._latency = None if options.latency.is_zero else options.latency
        # Separate streams, so the latency setting never changes which requests fail.
        self._latency_rng = random.Random(f"latency/{options.seed}")
        self._error_rng = random.Random(f"errors/{options.seed}")
        self._hanging: set[asyncio.Future[None]] = set()
        self._hang_changed = asyncio.Condition()
        self._runner: web.ServerRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def hanging(self) -> int:
        """Blackholed requests waiting for the server to stop."""
        return len(self._hanging)

    async def wait_hanging(self, count: int = 1) -> None:
        """Return once at least ``count`` blackholed requests are hanging (for tests)."""
        async with self._hang_changed:
            await self._hang_changed.wait_for(lambda: len(self._hanging) >= count)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and serve; returns the bound port (useful with ``port=0``)."""
        if self._runner is not None:
            raise RuntimeError("server already started")
        # handler_cancellation: a client that gives up frees its blackholed handler.
        low_level = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(low_level, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        self.host, self.port = bound[0], int(bound[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening, drop blackholed requests unanswered, finish the others."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for future in list(self._hanging):
            future.cancel()
        await runner.cleanup()

    async def __aenter__(self) -> ModelServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        route = _route(path)
        if route is None:
            if path in _HEALTH_PATHS and request.method in ("GET", "HEAD"):
                return web.Response(body=b'{"status":"ok"}', content_type=_JSON)
            return _error(404, f"no route for {request.method} {path}")
        if request.method != "POST":
            response = _error(405, f"{path} takes POST, not {request.method}")
            response.headers["Allow"] = "POST"
            return response
        body = await request.read()
        self.predict_requests += 1
        if self.options.blackhole:
            await self._hang()
        if self._latency is not None:
            delay = self._latency.sample(self._latency_rng)
            if delay > 0.0:
                await asyncio.sleep(delay)
        error_rate = self.options.error_rate
        if error_rate > 0.0 and self._error_rng.random() < error_rate:
            self.scripted_errors += 1
            return _error(500, "scripted error (--error-rate)")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"request body is not JSON: {exc}")
        protocol, version = route
        try:
            if protocol == "v2":
                answer = self._answer_v2(doc, version)
            elif protocol == "v1":
                answer = {"predictions": self._predict(v1_instances(doc))}
            else:
                answer = {"predictions": self._predict(mlflow_instances(doc))}
        except BadRequest as exc:
            return _error(400, str(exc))
        return web.Response(body=orjson.dumps(answer), content_type=_JSON)

    async def _hang(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hanging.add(future)
        try:
            async with self._hang_changed:
                self._hang_changed.notify_all()
            # Ends only by cancellation: the server stopping, or the client leaving.
            await future
        finally:
            self._hanging.discard(future)

    def _predict(self, instances: list[Any]) -> list[Any]:
        rule = self._rule
        if self._regression:
            return [rule.value(canonical(x)) for x in instances]
        return [rule.cls(canonical(x)) for x in instances]

    def _answer_v2(self, doc: Any, version: str) -> dict[str, Any]:
        canons = [canonical(x) for x in v2_instances(doc)]
        n = len(canons)
        rule = self._rule
        outputs: list[dict[str, Any]] = []
        for name in v2_requested_outputs(doc):
            if name == "predict":
                if self._regression:
                    data: list[Any] = [rule.value(c) for c in canons]
                    datatype = "FP64"
                else:
                    data = [rule.cls(c) for c in canons]
                    datatype = "INT64"
                shape = [n, 1]
            else:
                if self._regression:
                    raise BadRequest("a regression model has no predict_proba output")
                data = [p for c in canons for p in rule.proba(c)]
                datatype = "FP64"
                shape = [n, rule.classes]
            outputs.append(
                {
                    "name": name,
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"content_type": "np"},
                    "data": data,
                }
            )
        return {
            "model_name": self.options.name,
            "model_version": version,
            "id": _uuid4(),
            "parameters": {},
            "outputs": outputs,
        }


async def start_server(
    options: ServerOptions, host: str = "127.0.0.1", port: int = 0
) -> tuple[ModelServer, int]:
    """Start a stand-in; returns it and its bound port. Stop it with ``await server.stop()``."""
    server = ModelServer(options)
    bound = await server.start(host, port)
    return server, bound


# --------------------------------------------------------------------------- command line


def _arg(parse: Any) -> Any:
    """Wrap a parser so argparse shows its ValueError message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.model_server",
        description="Deterministic model-server stand-in (KServe v1, Open Inference v2, "
        "MLflow) with scripted latency, errors and blackholing.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="0 is the reference model")
    parser.add_argument(
        "--disagree",
        type=float,
        default=0.1,
        help="fraction of instances where a nonzero seed departs from seed 0",
    )
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--kind", choices=_KINDS, default="classification")
    parser.add_argument("--name", default="model", help="model name in v2 answers")
    parser.add_argument(
        "--latency",
        type=_arg(Latency.parse),
        default=NO_LATENCY,
        help="'200ms', '0.2', 'uniform:10ms:50ms', 'exp:20ms' or 'normal:50ms:10ms'",
    )
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of requests answered 500"
    )
    parser.add_argument(
        "--blackhole", action="store_true", help="read prediction requests, never answer"
    )
    return parser


async def _serve(options: ServerOptions, host: str, port: int) -> None:
    server, _ = await start_server(options, host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        print(f"listening on {server.url}", flush=True)
        await stopping.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = ServerOptions(
            seed=args.seed,
            disagree=args.disagree,
            classes=args.classes,
            kind=args.kind,
            name=args.name,
            latency=args.latency,
            error_rate=args.error_rate,
            blackhole=args.blackhole,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(options, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

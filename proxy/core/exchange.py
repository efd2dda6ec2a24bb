"""The hand-off: one production exchange as the front process passes it to the analysis process,
and its wire frame. Pure, in the manner of h11: values in, bytes out, and bytes in, values out;
no sockets, no loop, no metrics.

A frame is a length-prefixed record, cheap to build on the hot path (one `struct.pack` and one
`bytes.join`, no JSON): a fixed header, then eight length-prefixed fields. Headers travel as the
raw `name:value` lines they were forwarded with, so bytes that are not UTF-8 pass unchanged.

>>> frame = encode(exchange)
>>> reader = FrameReader(max_frame=64 << 20)
>>> reader.feed(frame)
[Exchange(route='iris', ...)]
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Exchange", "FrameError", "FrameReader", "Headers", "encode", "join_headers"]

Headers = Sequence[tuple[bytes, bytes]]
"""Header fields as (name, value) bytes, in the order they were sent."""

VERSION = 2  # 2: production's elapsed time
_PRODUCTION_ANSWERED = 1  # flag: production answered (status, headers and body are its answer)

# length (of what follows it), version, flags, status, created, elapsed, then the eight field
# lengths.
_HEAD = struct.Struct("!IBBHdd8I")
_FIELDS = 8
_LENGTH = struct.Struct("!I")


class FrameError(ValueError):
    """A frame that cannot be read: the channel is out of step and must be reset."""


# Built per request: not frozen (5x cheaper to build); read-only by convention.
@dataclass(slots=True)
class Exchange:
    """One production exchange. `status` is 0 and the answer empty when production gave none.

    `suffix` is the request target after the route's matched prefix; `headers` are the request's
    as they were forwarded to production (request id and X-Forwarded-* included).
    """

    route: str
    method: str
    suffix: str
    request_id: str
    headers: Headers
    body: bytes
    status: int = 0
    response_headers: Headers = ()
    response_body: bytes = b""
    created: float = 0.0  # unix seconds when production answered
    elapsed: float = 0.0  # seconds production took, as the front measured it

    @property
    def answered(self) -> bool:
        return self.status != 0


def join_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Header fields as one block of `name:value\\r\\n` lines (neither may hold CR or LF: the
    HTTP parser has refused those already)."""
    return b"".join([name + b":" + value + b"\r\n" for name, value in headers])


def _split_headers(block: bytes) -> list[tuple[bytes, bytes]]:
    fields = []
    for line in block.split(b"\r\n")[:-1]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise FrameError(f"a header line without a colon: {line[:40]!r}")
        fields.append((name, value))
    return fields


def encode(exchange: Exchange, request_headers: bytes | None = None) -> bytes:
    """The frame of `exchange`. `request_headers`, when given, is its header block already
    joined (the front joins it once and reuses it)."""
    parts = (
        exchange.route.encode(),
        exchange.method.encode(),
        exchange.suffix.encode("utf-8", "surrogateescape"),
        exchange.request_id.encode("utf-8", "surrogateescape"),
        join_headers(exchange.headers) if request_headers is None else request_headers,
        exchange.body,
        join_headers(exchange.response_headers),
        exchange.response_body,
    )
    lengths = [len(p) for p in parts]
    flags = _PRODUCTION_ANSWERED if exchange.status else 0
    head = _HEAD.pack(
        _HEAD.size - 4 + sum(lengths),
        VERSION,
        flags,
        exchange.status,
        exchange.created,
        exchange.elapsed,
        *lengths,
    )
    return head + b"".join(parts)


def _decode(data: bytes, start: int, end: int) -> Exchange:
    """The frame at data[start:end]. Unrolled: this runs once per exchange."""
    _, version, flags, status, created, elapsed, l0, l1, l2, l3, l4, l5, l6, l7 = _HEAD.unpack_from(
        data, start
    )
    if version != VERSION:
        raise FrameError(f"frame version {version}, expected {VERSION}")
    a = start + _HEAD.size
    b = a + l0
    c = b + l1
    d = c + l2
    e = d + l3
    f = e + l4
    g = f + l5
    h = g + l6
    if h + l7 != end:
        raise FrameError(f"frame of {end - start} bytes holds {h + l7 - start}")
    answered = flags & _PRODUCTION_ANSWERED
    return Exchange(
        data[a:b].decode(),
        data[b:c].decode(),
        data[c:d].decode("utf-8", "surrogateescape"),
        data[d:e].decode("utf-8", "surrogateescape"),
        _split_headers(data[e:f]),
        data[f:g],
        status if answered else 0,
        _split_headers(data[g:h]) if answered else (),
        data[h:end] if answered else b"",
        created,
        elapsed,
    )


class FrameReader:
    """Frames out of a byte stream, however it was cut into reads.

    >>> reader = FrameReader(max_frame=64 << 20)
    >>> for exchange in reader.feed(data): ...
    """

    def __init__(self, max_frame: int) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Exchange]:
        """The frames `data` completes; FrameError when the stream cannot be a stream of
        frames (the reader is then unusable)."""
        buffer = self._buffer
        if buffer:
            buffer += data
            data = bytes(buffer)  # one copy per read, then fields are sliced out of it
        found = []
        start = 0
        size = len(data)
        unpack = _LENGTH.unpack_from
        while size - start >= 4:
            (length,) = unpack(data, start)
            if length < _HEAD.size - 4 or length > self._max_frame:
                raise FrameError(f"frame length {length} is out of bounds")
            end = start + 4 + length
            if end > size:
                break
            found.append(_decode(data, start, end))
            start = end
        if buffer:
            del buffer[:start]
        elif start < size:
            buffer += data[start:]
        return found

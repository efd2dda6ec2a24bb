"""Tests for proxy.core.exchange: the hand-off's frames, byte for byte and cut anyhow."""

from __future__ import annotations

import struct

import pytest

from proxy.core.exchange import Exchange, FrameError, FrameReader, encode, join_headers

ANSWERED = Exchange(
    route="iris",
    method="POST",
    suffix="?explain=1",
    request_id="req-1",
    headers=[(b"Content-Type", b"application/json"), (b"X-Odd", b"caf\xe9 \xff")],
    body=b'{"instances": [[1, 2]]}',
    status=200,
    response_headers=[(b"content-type", b"application/json"), (b"x-a", b"b: c")],
    response_body=b'{"predictions": [1]}',
    created=1_700_000_000.25,
    elapsed=0.0125,
)
UNANSWERED = Exchange("wine", "GET", "", "r\udcff", [], b"", created=3.5)


def test_a_frame_reads_back_as_the_exchange_it_was_made_of() -> None:
    assert FrameReader(1 << 20).feed(encode(ANSWERED)) == [ANSWERED]


def test_an_exchange_without_an_answer_reads_back_without_one() -> None:
    (read,) = FrameReader(1 << 20).feed(encode(UNANSWERED))
    assert read == UNANSWERED
    assert not read.answered


def test_the_frame_layout_is_fixed() -> None:
    frame = encode(UNANSWERED)
    # length, version 2, no flags, status 0, created, elapsed, then the eight field lengths.
    assert frame[:4] == struct.pack("!I", len(frame) - 4)
    assert frame[4:8] == b"\x02\x00\x00\x00"
    assert struct.unpack("!d", frame[8:16]) == (3.5,)
    assert struct.unpack("!d", frame[16:24]) == (0.0,)
    assert struct.unpack("!8I", frame[24:56]) == (4, 3, 0, 2, 0, 0, 0, 0)
    assert frame[56:] == b"wineGETr\xff"


def test_a_joined_header_block_is_reused_as_given() -> None:
    block = join_headers(ANSWERED.headers)
    assert block == b"Content-Type:application/json\r\nX-Odd:caf\xe9 \xff\r\n"
    assert encode(ANSWERED, block) == encode(ANSWERED)


def test_frames_cut_at_every_byte_and_run_together_read_back_in_order() -> None:
    stream = encode(ANSWERED) + encode(UNANSWERED) + encode(ANSWERED)
    reader = FrameReader(1 << 20)
    found = []
    for i in range(len(stream)):
        found.extend(reader.feed(stream[i : i + 1]))
    assert found == [ANSWERED, UNANSWERED, ANSWERED]
    assert reader.buffered == 0
    assert FrameReader(1 << 20).feed(stream) == [ANSWERED, UNANSWERED, ANSWERED]


def test_a_frame_over_the_limit_is_refused() -> None:
    frame = encode(ANSWERED)
    with pytest.raises(FrameError, match=r"^frame length \d+ is out of bounds$"):
        FrameReader(max_frame=len(frame) - 5).feed(frame)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (struct.pack("!I", 3) + b"abc", r"^frame length 3 is out of bounds$"),
        (
            encode(UNANSWERED)[:4] + b"\x01" + encode(UNANSWERED)[5:],
            r"^frame version 1, expected 2$",
        ),
    ],
)
def test_a_stream_out_of_step_is_an_error(frame: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        FrameReader(1 << 20).feed(frame)


def test_lengths_that_do_not_add_up_are_an_error() -> None:
    frame = bytearray(encode(UNANSWERED))
    frame[:4] = struct.pack("!I", len(frame) - 4 + 1)
    frame += b"x"
    with pytest.raises(FrameError, match=r"^frame of 66 bytes holds 65$"):
        FrameReader(1 << 20).feed(bytes(frame))

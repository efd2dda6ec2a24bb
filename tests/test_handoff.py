"""The hand-off between a front process and the analysis process, over a real Unix socket: every
frame offered is either received or counted as dropped, and the front never waits."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from proxy.analysis.intake import Intake
from proxy.core.exchange import Exchange, encode
from proxy.core.outcomes import Handoff
from proxy.front.handoff import HandoffChannel

WAIT = 10.0


def exchange(i: int) -> Exchange:
    return Exchange("iris", "POST", "", f"req-{i}", [(b"a", b"b")], b"{}", 200, [], b"[1]", 1.0)


class Received:
    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._changed = asyncio.Condition()

    def __call__(self, ex: Exchange) -> None:
        self.exchanges.append(ex)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(self.exchanges) >= count)


class Rig:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.registry = CollectorRegistry()
        family = Counter("handoff", "test", ["result"], registry=self.registry)
        self.counts = {h: family.labels(h) for h in Handoff}

    def count(self, result: Handoff) -> float:
        return self.registry.get_sample_value("handoff_total", {"result": result}) or 0.0

    def channel(self, max_buffer: int = 1 << 20) -> HandoffChannel:
        return HandoffChannel(self.path, max_buffer=max_buffer, counts=self.counts, retry=0.01)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "intake.sock")


async def test_every_frame_offered_arrives_in_order(rig: Rig) -> None:
    received = Received()
    intake = Intake(rig.path, received, max_frame=1 << 20)
    await intake.start()
    channel = rig.channel()
    channel.start()
    async with asyncio.timeout(WAIT):
        await channel.connected.wait()
    for i in range(500):
        channel.offer(encode(exchange(i)))
    await received.until(500)
    assert [e.request_id for e in received.exchanges] == [f"req-{i}" for i in range(500)]
    assert received.exchanges[7] == exchange(7)
    assert rig.count(Handoff.SENT) == 500
    await channel.close()
    await intake.close()


async def test_without_an_analysis_process_frames_are_dropped_and_counted(rig: Rig) -> None:
    channel = rig.channel()
    channel.start()
    for i in range(3):
        channel.offer(encode(exchange(i)))
    assert rig.count(Handoff.ANALYSIS_DOWN) == 3
    assert rig.count(Handoff.SENT) == 0
    await channel.close()


async def test_the_channel_connects_once_the_analysis_process_is_there(rig: Rig) -> None:
    channel = rig.channel()
    channel.start()
    channel.offer(encode(exchange(0)))  # nobody there yet
    received = Received()
    intake = Intake(rig.path, received, max_frame=1 << 20)
    await intake.start()
    async with asyncio.timeout(WAIT):
        await channel.connected.wait()
    channel.offer(encode(exchange(1)))
    await received.until(1)
    assert [e.request_id for e in received.exchanges] == ["req-1"]
    assert (rig.count(Handoff.ANALYSIS_DOWN), rig.count(Handoff.SENT)) == (1, 1)
    await channel.close()
    await intake.close()


async def test_a_restarted_analysis_process_is_reconnected(rig: Rig) -> None:
    received = Received()
    intake = Intake(rig.path, received, max_frame=1 << 20)
    await intake.start()
    channel = rig.channel()
    channel.start()
    async with asyncio.timeout(WAIT):
        await channel.connected.wait()
        await intake.accepted.wait()
    await intake.close()  # the analysis process dies
    async with asyncio.timeout(WAIT):
        await channel.disconnected.wait()  # the front sees the connection go
    channel.offer(encode(exchange(0)))
    assert rig.count(Handoff.ANALYSIS_DOWN) == 1
    intake = Intake(rig.path, received, max_frame=1 << 20)
    await intake.start()
    async with asyncio.timeout(WAIT):
        await channel.connected.wait()
    channel.offer(encode(exchange(1)))
    await received.until(1)
    assert [e.request_id for e in received.exchanges] == ["req-1"]
    await channel.close()
    await intake.close()


async def test_an_analysis_process_that_does_not_read_fills_the_channel(rig: Rig) -> None:
    # A listener that accepts and never reads: the kernel's buffers, then ours, fill up.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(rig.path)
    listener.listen(1)
    listener.setblocking(False)
    channel = rig.channel(max_buffer=256 * 1024)
    channel.start()
    async with asyncio.timeout(WAIT):
        await channel.connected.wait()
    frame = encode(exchange(0))
    offered = 0
    while rig.count(Handoff.CHANNEL_FULL) == 0:
        channel.offer(frame)
        offered += 1
        if offered % 100 == 0:
            await asyncio.sleep(0)  # let the flushes run: the kernel's buffer fills first
        assert offered < 1_000_000
    assert rig.count(Handoff.CHANNEL_FULL) == 1
    # Every frame is either on its way or counted, and the front's buffer stays bounded.
    assert rig.count(Handoff.SENT) + 1 + len(channel._pending) == offered
    await channel.close()
    listener.close()


async def test_a_stream_out_of_step_is_counted_and_reset(rig: Rig) -> None:
    received = Received()
    errors: list[int] = []
    intake = Intake(rig.path, received, max_frame=1 << 20, on_error=lambda: errors.append(1))
    await intake.start()
    reader, writer = await asyncio.open_unix_connection(rig.path)
    writer.write(b"\x00\x00\x00\x03abc")
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""  # closed by the intake
    writer.close()
    await writer.wait_closed()
    assert errors == [1]
    assert received.exchanges == []
    await intake.close()

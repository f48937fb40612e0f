"""An outbox counts as queued exactly the bytes the socket has not taken.

Over a real socket pair with small buffers: a write the socket takes only
part of leaves the rest in flight, and only the rest counts in
``queued_bytes`` (the slow-consumer limit and the metrics read it).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from tornado.iostream import IOStream

from torchannels.transports.outbox import DirectWriter, Outbox, direct_writer
from torchannels.write_batch import current_batch


class Owner:
    """Records what the outbox tells its connection."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.idle = asyncio.Event()

    def outbox_slow(self) -> None:
        self.events.append("slow")

    def outbox_closed(self) -> None:
        self.events.append("closed")

    def outbox_written(self) -> None:
        self.events.append("written")

    def outbox_idle(self) -> None:
        self.events.append("idle")
        self.idle.set()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    for sock in (ours, peer):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.setblocking(False)
    yield ours, peer
    ours.close()
    peer.close()


def drain(peer: socket.socket) -> bytes:
    """Everything the peer can read now, without waiting."""
    got = b""
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        got += chunk


async def test_a_partial_direct_send_counts_only_the_rest(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    stream = IOStream(ours)
    write = direct_writer(stream)
    assert isinstance(write, DirectWriter)
    owner = Owner()
    outbox = Outbox(write, limit=10 << 20, owner=owner)
    data = bytes(range(256)) * 4096  # 1 MiB: far more than the buffers take
    outbox.queue(data)
    outbox.pump()
    assert outbox.busy
    taken = drain(peer)  # what the socket took at once (a socket pair: all readable)
    assert 0 < len(taken) < len(data)
    assert outbox.queued_bytes == len(data) - len(taken)
    # The peer reads the rest: the write completes and nothing is counted.
    outbox.notify_idle = True
    received = bytearray(taken)
    for _ in range(10_000):  # bounded: a hang fails instead
        if owner.idle.is_set():
            break
        received += drain(peer)
        await asyncio.sleep(0.001)
    received += drain(peer)
    assert bytes(received) == data
    assert outbox.queued_bytes == 0 and not outbox.busy
    assert owner.events[-2:] == ["written", "idle"]
    stream.close()


async def test_a_write_the_socket_takes_whole_leaves_nothing_in_flight(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    stream = IOStream(ours)
    owner = Owner()
    outbox = Outbox(direct_writer(stream), limit=1 << 20, owner=owner)
    outbox.queue(b"x" * 100)
    outbox.pump()
    assert not outbox.busy and outbox.queued_bytes == 0
    assert owner.events == ["written"]
    assert drain(peer) == b"x" * 100
    stream.close()


async def test_the_fan_out_writes_at_once_then_queues_behind_a_write_in_flight(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    stream = IOStream(ours)
    owner = Owner()
    outbox = Outbox(direct_writer(stream), limit=10 << 20, owner=owner)
    # Nothing queued or in flight: written during the put, no pass, no callback.
    outbox.put(b"a" * 100, live=True, batch=current_batch())
    assert drain(peer) == b"a" * 100
    assert not outbox.scheduled and not outbox.busy and owner.events == []
    await asyncio.sleep(0)  # the next loop iteration, its own batch
    big = bytes(range(256)) * 4096  # 1 MiB: far more than the buffers take
    batch = current_batch()
    outbox.put(big, live=True, batch=batch)
    assert outbox.busy and not outbox.scheduled
    taken = drain(peer)
    assert 0 < len(taken) < len(big)
    # A write is in flight: the next frame waits behind it, counted.
    outbox.put(b"z" * 10, live=True, batch=batch)
    assert outbox.queued_bytes == len(big) - len(taken) + 10
    outbox.notify_idle = True
    received = bytearray(taken)
    for _ in range(10_000):  # bounded: a hang fails instead
        if owner.idle.is_set():
            break
        received += drain(peer)
        await asyncio.sleep(0.001)
    received += drain(peer)
    assert bytes(received) == big + b"z" * 10
    assert outbox.queued_bytes == 0 and owner.events[-1] == "idle"
    stream.close()

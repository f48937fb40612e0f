"""A streaming client that stops reading is cut off, loses nothing, and
costs bounded memory; other subscribers never wait for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from support import Server, eventually
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


async def read_response(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = await reader.read(1 << 20)
        assert chunk, "connection closed before the response ended"
        data += chunk
    return bytes(data)


class Bystander:
    """A stream subscriber that reads as fast as it can into one buffer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.data = bytearray()

    async def start(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            b"GET /channels?transport=stream&channel=flood HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(1 << 20):
            self.data += chunk

    async def numbers(self, last: int) -> list[int]:
        marker = f'"n":{last},'.encode()
        await eventually(lambda: marker in self.data, timeout=20)
        self.task.cancel()
        self.writer.close()
        body = dechunk(bytes(self.data).partition(b"\r\n\r\n")[2])
        lines = [json.loads(line) for line in body.split(b"\n") if line.strip()]
        return [f["data"]["n"] for f in lines if f["type"] == "message"]


@pytest.mark.parametrize("transport", ["stream", "sse"])
async def test_stalled_reader_is_dropped_then_resumes_without_loss(
    make_server: Callable[..., Server], transport: str
) -> None:
    broker = MemoryBroker()
    hub = Hub(
        broker,
        Settings(max_pending_bytes=128 * 1024, ping_interval=30, stream_max_bytes=1 << 30),
    )
    server = make_server(hub_=hub)
    bystander = Bystander(server.port)
    await bystander.start()
    # The default limit matters: asyncio stops reading the socket once it
    # holds 2 x limit bytes, which is what makes this client stall.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"GET /channels?transport={transport}&channel=flood HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\n\r\n".encode()
    )
    await writer.drain()
    await eventually(lambda: hub.local_subscribers("flood") == 2)
    blob = "x" * 65536
    sent = 0
    while not hub.stats.slow_dropped and sent < 5000:
        sent += 1
        hub.channel("flood").send({"n": sent, "blob": blob})
        await asyncio.sleep(0)
    assert hub.stats.slow_dropped == 1, "the stalled reader was never dropped"
    await eventually(lambda: hub.local_subscribers("flood") == 1)  # the bystander stays
    # The bystander, reading normally, got everything in order.
    assert await bystander.numbers(sent) == list(range(1, sent + 1))
    # The stalled client now reads what was already on its way: a prefix of
    # the messages, then reconnect(slow_consumer), then the end of the
    # chunked response (the connection itself stays open for keep-alive).
    raw = await asyncio.wait_for(read_response(reader), 20)
    writer.close()
    body = dechunk(raw.partition(b"\r\n\r\n")[2])
    if transport == "stream":
        frames = [json.loads(line) for line in body.split(b"\n") if line]
        got = [f["data"]["n"] for f in frames if f["type"] == "message"]
    else:
        events = [e for e in body.split(b"\n\n") if e]
        frames = []
        got = []
        for event in events:
            data = [line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")]
            name = [line[7:] for line in event.split(b"\n") if line.startswith(b"event: ")]
            if not data:
                continue
            decoded = json.loads(data[0])
            if not name:
                got.append(decoded["n"])
            else:
                frames.append(decoded)
    assert frames[-1] == {"type": "reconnect", "reason": "slow_consumer"}
    assert got == list(range(1, len(got) + 1))
    assert len(got) < sent
    # Resuming from the last message it got yields exactly the rest.
    epoch = broker.epoch
    doc = await server.poll("poll", channel="flood", cursor=f"flood={epoch}:{len(got)}")
    rest = [f["data"]["n"] for f in doc["frames"] if f["type"] == "message"]
    assert rest == list(range(len(got) + 1, sent + 1))


@pytest.mark.parametrize("transport", ["stream", "sse", "websocket"])
async def test_catch_up_larger_than_the_pending_limit_is_delivered(
    make_server: Callable[..., Server], transport: str
) -> None:
    """Catch-up is history the client asked for, not a sign of slowness: a
    backlog bigger than max_pending_bytes must still arrive whole."""
    from tornado.websocket import websocket_connect

    hub = Hub(
        MemoryBroker(),
        Settings(max_pending_bytes=64 * 1024, stream_max_bytes=1 << 30, ping_interval=30),
    )
    handler: type[ChannelMixin] = type("H", (ChannelMixin,), {"hub": hub})
    server = make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])
    for n in range(1, 201):
        hub.channel("big").send({"n": n, "pad": "y" * 2500})  # ~0.5 MB of history

    # Live messages published during the catch-up follow it, in order.
    async def publish_live() -> None:
        await eventually(lambda: hub.local_subscribers("big") == 1)
        for n in range(201, 251):
            hub.channel("big").send({"n": n, "pad": "y" * 2500})
            await asyncio.sleep(0)

    live = asyncio.ensure_future(publish_live())
    if transport == "websocket":
        conn = await websocket_connect(f"ws://127.0.0.1:{server.port}/channels/ws?channel=big")
        got: list[int] = []
        while len(got) < 250:
            raw = await asyncio.wait_for(conn.read_message(), 10)
            assert raw is not None, f"closed after {len(got)} messages"
            frame = json.loads(raw)
            if frame["type"] == "message":
                got.append(frame["data"]["n"])
        conn.close()
    else:
        stream = server.stream(transport, channel="big")
        frames = await stream.wait_frames(
            lambda fs: sum(f["type"] == "message" for f in fs) >= 250, timeout=20
        )
        got = [f["data"]["n"] for f in frames if f["type"] == "message"]
    await live
    assert got == list(range(1, 251))
    assert hub.stats.slow_dropped == 0

"""The one connection model of long-lived transports (transports/connection.py),
observed on the wire with raw sockets: the keep-alive tick, dead peers, the
order of ``reconnect`` and close, and the cut of a client that cannot take
its ``reconnect`` frame."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
import tornado.web

from support import PING, PONG, TEXT, RawSocket, Server, ended_slow, eventually, frame_type
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings, Subscription
from torchannels.errors import CLOSE_GOING_AWAY


class SlowGate(ChannelMixin, tornado.web.RequestHandler):
    """``can_access`` waits on the hub's gate for channels named ``slow:*``."""

    gate: asyncio.Event

    async def can_access(self, sub: Subscription) -> bool:
        if sub.channel.startswith("slow:"):
            await self.gate.wait()
        return True


@pytest.fixture
async def ws(make_server: Callable[..., Server]) -> AsyncIterator[Callable[..., Server]]:
    """``ws(settings)`` -> a server with a WebSocket route on a fresh hub."""

    def make(settings: Settings, base: type[ChannelMixin] = ChannelMixin, **attrs: Any) -> Server:
        hub = Hub(MemoryBroker(), settings)
        handler = cast(type[ChannelMixin], type("Handler", (base,), {"hub": hub, **attrs}))
        return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])

    yield make


async def test_keepalive_tick_writes_a_json_ping_and_a_protocol_ping(ws: Any) -> None:
    server = ws(Settings(ping_interval=0.2))
    sock = await RawSocket.connect(server.port, "channel=k")
    seen = [frame_type(await sock.frame()) for _ in range(3)]
    assert seen == ["connected", "subscribed", "ping"]
    assert frame_type(await sock.frame()) == "PING"  # in the same tick, right after
    assert frame_type(await sock.frame()) == "ping"  # and again one interval later
    sock.close()


async def test_a_peer_that_answers_pings_stays_connected(ws: Any) -> None:
    server = ws(Settings(ping_interval=0.2))
    sock = await RawSocket.connect(server.port, "channel=k")
    pings = 0
    while pings < 6:  # 6 intervals: three times the dead-peer limit
        frame = await sock.frame()
        assert frame is not None, "the server cut a live peer"
        if frame[0] == PING:
            pings += 1
            sock.send(PONG, frame[1])
    assert len(server.hub.connections) == 1
    sock.close()


async def test_a_peer_that_never_answers_is_cut_after_two_intervals(ws: Any) -> None:
    server = ws(Settings(ping_interval=0.2))
    sock = await RawSocket.connect(server.port, "channel=k")
    start = asyncio.get_running_loop().time()
    kinds = []
    while (kind := frame_type(await sock.frame())) != "EOF":
        kinds.append(kind)
    took = asyncio.get_running_loop().time() - start
    assert "CLOSE" not in kinds  # a dead peer gets no close handshake
    assert kinds.count("PING") >= 2
    assert 0.4 <= took < 5, took
    await eventually(lambda: not server.hub.connections)
    await eventually(lambda: server.hub.local_subscribers("k") == 0)


async def test_a_slow_can_access_does_not_make_the_peer_look_dead(ws: Any) -> None:
    gate = asyncio.Event()
    server = ws(Settings(ping_interval=0.2), SlowGate, gate=gate)
    sock = await RawSocket.connect(server.port, "")
    assert frame_type(await sock.frame()) == "connected"
    sock.send(TEXT, json.dumps({"type": "subscribe", "channels": ["slow:x"]}).encode())
    # While can_access waits, Tornado reads nothing, so our PONGs go unread.
    pings = 0
    while pings < 4:  # two intervals past the dead-peer limit
        frame = await sock.frame()
        assert frame is not None, "cut while its command was being handled"
        if frame[0] == PING:
            pings += 1
            sock.send(PONG, frame[1])
    gate.set()
    while (kind := frame_type(await sock.frame())) != "subscribed":
        assert kind in ("ping", "PING"), kind
    sock.close()


async def test_slow_websocket_gets_reconnect_then_4001_and_nothing_after(ws: Any) -> None:
    hub_settings = Settings(ping_interval=5, max_pending_bytes=64 * 1024)
    server = ws(hub_settings)
    sock = await RawSocket.connect(server.port, "channel=flood", rcvbuf=4096)
    await eventually(lambda: server.hub.local_subscribers("flood") == 1)
    blob = "x" * 16384
    for n in range(2000):
        server.hub.channel("flood").send({"n": n, "blob": blob})
        if server.hub.stats.slow_dropped:
            break
        await asyncio.sleep(0)
    assert server.hub.stats.slow_dropped == 1
    # Now read everything: what was in flight, then reconnect, then the close.
    offsets = ended_slow(await sock.until_end())
    assert offsets == list(range(len(offsets)))  # a prefix, in order: the rest resumes
    await eventually(lambda: not server.hub.connections)


async def test_close_never_overtakes_the_reconnect_frame(ws: Any) -> None:
    """Shutdown while a large write is still in flight: the close frame waits
    until ``reconnect`` (and everything queued before it) is written."""
    server = ws(Settings(ping_interval=5))
    for n in range(48):  # 12 MiB: more than loopback socket buffers hold
        server.hub.channel("big").send({"n": n, "blob": "y" * 262144})
    sock = await RawSocket.connect(server.port, "channel=big", rcvbuf=4096)
    await eventually(lambda: server.hub.stats.delivered == 48)  # the catch-up is under way
    shutdown = asyncio.ensure_future(server.hub.shutdown(10))
    frames = await sock.until_end()
    kinds = [frame_type(f) for f in frames]
    # What was framed goes out, in order, before reconnect; the catch-up
    # still waiting unframed is dropped (the client resumes from there).
    numbers = [json.loads(p)["data"]["n"] for op, p in frames if frame_type((op, p)) == "message"]
    assert numbers and numbers == list(range(len(numbers)))
    assert kinds[-2:] == ["reconnect", "CLOSE"], kinds[-5:]
    assert struct.unpack("!H", frames[-1][1][:2])[0] == CLOSE_GOING_AWAY
    assert await shutdown


@pytest.mark.parametrize("transport", ["stream", "sse", "websocket"])
async def test_a_client_that_cannot_take_its_reconnect_is_cut(ws: Any, transport: str) -> None:
    """Shutdown ends every connection within about one ping interval, even
    one whose client stopped reading with a write in flight."""
    server = ws(Settings(ping_interval=0.5, stream_max_bytes=1 << 30))
    for n in range(48):  # 12 MiB: more than loopback socket buffers hold
        server.hub.channel("stuck").send({"n": n, "blob": "z" * 262144})
    if transport == "websocket":
        sock = await RawSocket.connect(server.port, "channel=stuck", rcvbuf=4096)
        writer = sock.writer
    else:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", server.port))
        _, writer = await asyncio.open_connection(sock=raw)
        writer.write(
            f"GET /channels?transport={transport}&channel=stuck HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n\r\n".encode()
        )
    await eventually(lambda: server.hub.local_subscribers("stuck") == 1)
    assert len(server.hub.connections) == 1
    # Never read: the catch-up stays in flight, so the reconnect cannot go out.
    assert await server.hub.shutdown(5)
    assert not server.hub.connections
    writer.close()

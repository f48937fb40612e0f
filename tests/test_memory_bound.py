"""Issue 9, finding 1: a client that never reads costs bounded hub memory and
is dropped. Every byte framed for a client counts against
``max_pending_bytes`` (catch-up goes out a slice at a time as the client
takes it; replies to commands count too), a write that makes no progress
for ``write_timeout`` ends the client, and a WebSocket that is not reading
gets no more of its commands read.

The clients are raw sockets with a small receive buffer that never read, so
the server's writes stall the way they would behind a stuck peer."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import cast

from support import PONG, TEXT, RawSocket, Server, ended_slow, eventually
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings
from torchannels.transports.connection import LiveConnection

#: Channel ``hist``: 200 messages of 2.5 KB, 0.5 MB per catch-up.
SMALL = "h" * 2500
#: Channel ``big``: 400 messages of 25 KB, 10 MB: more than loopback socket
#: buffers take, so a client that never reads stalls the server's writes.
LARGE = "b" * 25000
#: One history frame on any transport, with room for its framing.
FRAME = len(LARGE) + 200


def serve(make_server: Callable[..., Server], settings: Settings) -> Server:
    hub = Hub(MemoryBroker(), settings)
    handler = cast(type[ChannelMixin], type("Handler", (ChannelMixin,), {"hub": hub}))
    server = make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])
    for n in range(1, 201):
        hub.channel("hist").send({"n": n, "pad": SMALL})
    for n in range(1, 401):
        hub.channel("big").send({"n": n, "pad": LARGE})
    return server


def live_connections(hub: Hub) -> list[LiveConnection]:
    return [c for c in hub.connections if isinstance(c, LiveConnection)]


class Peak:
    """Samples the largest ``queued_bytes`` of any connection of a hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.bytes = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            for connection in live_connections(self.hub):
                self.bytes = max(self.bytes, connection.queued_bytes)
            await asyncio.sleep(0.001)

    def stop(self) -> None:
        self.task.cancel()


async def idle_socket(server: Server) -> tuple[RawSocket, LiveConnection, Peak]:
    """A WebSocket subscribed to nothing that never reads, its connection on
    the hub, and the peak of what the hub queues for it."""
    sock = await RawSocket.connect(server.port, "", rcvbuf=4096)
    await eventually(lambda: len(server.hub.connections) == 1)
    (connection,) = live_connections(server.hub)
    return sock, connection, Peak(server.hub)


async def raw_http(port: int, transport: str) -> socket.socket:
    """A streaming GET of ``big`` from a client that never reads."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, ("127.0.0.1", port))
    request = f"GET /channels?transport={transport}&channel=big HTTP/1.1\r\nHost: x\r\n\r\n"
    await loop.sock_sendall(raw, request.encode())
    return raw


async def test_a_websocket_that_never_reads_costs_bounded_memory_and_is_dropped(
    make_server: Callable[..., Server],
) -> None:
    """The reproduction of the issue: subscribe and unsubscribe a channel
    with history over and over, with unsolicited PONGs, never reading. It
    grew the hub by 167 MiB for 43 KiB sent, and stayed open."""
    settings = Settings(max_pending_bytes=64 * 1024, write_timeout=1.0, ping_interval=0.5)
    server = serve(make_server, settings)
    hub = server.hub
    sock, connection, peak = await idle_socket(server)
    subscribe = json.dumps({"type": "subscribe", "channels": ["hist"]}).encode()
    unsubscribe = json.dumps({"type": "unsubscribe", "channels": ["hist"]}).encode()
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    # Write as the server reads: once it stops reading our commands, our
    # own send buffer fills and drain() blocks; that is the throttle.
    while not connection.stopped and loop.time() - start < 8:
        for payload, opcode in ((subscribe, TEXT), (unsubscribe, TEXT), (b"", PONG)):
            sock.send(opcode, payload)
            sent += len(payload) + 6
        try:
            await asyncio.wait_for(sock.writer.drain(), 0.05)
        except (TimeoutError, ConnectionError):
            await asyncio.sleep(0.05)
    dropped = loop.time()
    peak.stop()
    # Everything the hub framed for the client stayed within the bound
    # (plus one frame), however much it asked for: the catch-ups it
    # requested add up to many times that.
    assert peak.bytes <= settings.max_pending_bytes + FRAME, (peak.bytes, sent)
    assert connection.stopped, "still open despite write_timeout"
    stalled_since = connection.outbox.write_started
    sock.close()
    assert hub.stats.slow_dropped == 1
    # Dropped within write_timeout (no write progress) + ping_interval (the
    # reconnect could not be written either, so it is cut), despite PONGs.
    # (Slack for a loaded machine: what matters is that it is dropped at all, and soon.)
    assert dropped - stalled_since <= settings.write_timeout + settings.ping_interval + 1.5
    assert not hub.connections
    await eventually(lambda: hub.local_subscribers("hist") == 0)


async def test_twenty_http_streams_that_never_read_stay_within_the_bound(
    make_server: Callable[..., Server],
) -> None:
    """20 stream and SSE subscribers of one channel with a large history, none
    reading: each holds at most max_pending_bytes + one frame, where each used
    to hold the whole catch-up; all are dropped after write_timeout."""
    settings = Settings(
        max_pending_bytes=64 * 1024,
        write_timeout=1.0,
        ping_interval=0.5,
        stream_max_bytes=1 << 30,
    )
    server = serve(make_server, settings)
    hub = server.hub
    peak = Peak(hub)
    clients = [await raw_http(server.port, ("stream", "sse")[i % 2]) for i in range(20)]
    # All 20 attached; on a loaded machine the first may already have been
    # dropped (write_timeout) before the last attached, so count those too.
    await eventually(lambda: hub.local_subscribers("big") + hub.stats.slow_dropped == 20)
    connections = live_connections(hub)
    # Every one of them stalls with its first slices in flight or queued.
    await eventually(lambda: all(c.outbox.busy for c in connections))
    for connection in connections:
        assert connection.queued_bytes <= settings.max_pending_bytes + FRAME
    await eventually(lambda: not hub.connections, timeout=settings.write_timeout + 4)
    peak.stop()
    assert peak.bytes <= settings.max_pending_bytes + FRAME, peak.bytes
    assert hub.stats.slow_dropped == 20
    for client in clients:
        client.close()


async def test_a_stalled_write_ends_the_client_with_slow_consumer_after_write_timeout(
    make_server: Callable[..., Server],
) -> None:
    """write_timeout, apart from ping_interval: a WebSocket that stops reading
    gets reconnect(slow_consumer) then 4001 once it reads again."""
    settings = Settings(max_pending_bytes=64 * 1024, write_timeout=0.5, ping_interval=3)
    server = serve(make_server, settings)
    hub = server.hub
    loop = asyncio.get_running_loop()
    sock = await RawSocket.connect(server.port, "channel=big", rcvbuf=4096)
    await eventually(lambda: hub.local_subscribers("big") == 1)
    start = loop.time()
    await eventually(lambda: hub.stats.slow_dropped == 1, timeout=5)
    took = loop.time() - start
    # Long before the dead-peer cut (two ping intervals) could happen.
    assert settings.write_timeout * 0.8 <= took < settings.write_timeout + 1, took
    numbers = ended_slow(await sock.until_end())
    assert numbers == list(range(1, len(numbers) + 1))  # a prefix: it resumes from there
    await eventually(lambda: not hub.connections)


async def test_replies_to_commands_count_and_throttle_the_client(
    make_server: Callable[..., Server],
) -> None:
    """3.3 MiB of plain unsubscribe commands used to add 30 MiB: replies to a
    client that does not read now count, and its commands stop being read."""
    settings = Settings(max_pending_bytes=16 * 1024, write_timeout=60, ping_interval=30)
    server = serve(make_server, settings)
    sock, connection, peak = await idle_socket(server)
    names = [f"c{i}" for i in range(10)]
    command = json.dumps({"type": "unsubscribe", "channels": names}).encode()
    sent = 0
    loop = asyncio.get_running_loop()
    # Bounded by time, not bytes: the server's socket send buffer (up to
    # tcp_wmem's maximum, 4 MiB here) takes replies before its queue grows,
    # which a loaded machine fills slowly.
    deadline = loop.time() + 30
    while loop.time() < deadline:
        sock.send(TEXT, command)
        sent += len(command)
        if not connection.listening:
            break  # the server stopped reading our commands
        try:
            await asyncio.wait_for(sock.writer.drain(), 0.05)
        except TimeoutError:
            break  # the kernel's buffers are full too
    else:
        raise AssertionError(f"the server kept reading a client that does not read ({sent} B)")
    # It waits for the client to take what it was sent before reading more.
    await eventually(lambda: not connection.listening)
    held = connection.queued_bytes
    peak.stop()
    reply = len(json.dumps({"type": "unsubscribed", "channel": "c0"})) + 4
    assert peak.bytes <= settings.max_pending_bytes + len(names) * reply, peak.bytes
    assert held <= settings.max_pending_bytes + len(names) * reply
    assert not connection.stopped
    sock.close()

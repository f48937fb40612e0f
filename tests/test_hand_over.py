"""Live HTTP streams hand their socket over once subscribed
(transports/detached.py): Tornado's handler, request and connection are
released, and the response goes on, byte for byte, until it ends; a TLS
stream stays on Tornado's path. (The bytes on the wire against Tornado's
own write path: tests/test_write_path.py.)"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import ssl
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import tornado.testing
import tornado.web

from support import Server, eventually, self_signed_tls
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings
from torchannels.forwarded import TrustedProxies
from torchannels.server.address_limit import PerAddressLimit
from torchannels.server.listener import HubHTTPServer
from torchannels.tornado_compat import request_stream
from torchannels.transports.sse import SSETransport
from torchannels.transports.stream import StreamTransport


class Tracked(ChannelMixin):
    """Keeps a weak reference to every handler made, and counts on_finish."""

    made: ClassVar[list[weakref.ref[tornado.web.RequestHandler]]] = []
    finished = 0

    def initialize(self, **kwargs: Any) -> None:
        super().initialize(**kwargs)
        Tracked.made.append(weakref.ref(self))

    def on_finish(self) -> None:
        Tracked.finished += 1


@pytest.fixture
def tracked(make_server: Callable[..., Server], hub: Hub) -> Server:
    Tracked.made, Tracked.finished = [], 0
    handler = type("Handler", (Tracked,), {"hub": hub})
    return make_server(handler)


def handlers_alive() -> int:
    gc.collect()
    return sum(ref() is not None for ref in Tracked.made)


class Raw:
    """One GET on a bare socket (optionally a small receive buffer, or TLS):
    every byte it gets, and whether the server closed the connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.data = b""
        self.eof = asyncio.Event()
        self.reading = asyncio.Event()
        self.reading.set()
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def get(
        cls,
        port: int,
        query: str,
        *,
        version: str = "1.1",
        rcvbuf: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Raw:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        kwargs: dict[str, Any] = {"ssl": tls, "server_hostname": "127.0.0.1"} if tls else {}
        reader, writer = await asyncio.open_connection(sock=sock, **kwargs)
        writer.write(f"GET /channels?{query} HTTP/{version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while True:
                await self.reading.wait()
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                self.data += chunk
        except ConnectionError:
            pass
        self.eof.set()

    @property
    def head(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[0]

    def close(self) -> None:
        self._task.cancel()
        self.writer.close()


@pytest.mark.parametrize("transport", ["stream", "sse"])
async def test_a_subscribed_stream_lets_tornado_go_and_serves_on(
    tracked: Server, hub: Hub, transport: str
) -> None:
    client = await Raw.get(tracked.port, f"transport={transport}&channel=a")
    await eventually(lambda: b'"subscribed"' in client.data)
    assert handlers_alive() == 0  # handler, request, connection: released
    assert Tracked.finished == 1  # on_finish ran at the hand-over
    assert b"\r\nConnection: close\r\n" in client.head  # the connection's last response
    hub.channel("a").send({"n": 1})
    await eventually(lambda: b'"n":1' in client.data)
    assert len(hub.connections) == 1
    client.close()  # the client leaves: noticed by the detached socket
    await eventually(lambda: not hub.connections and hub.local_subscribers("a") == 0)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_a_handed_over_stream_ends_and_the_server_closes(
    tracked: Server, hub: Hub, version: str
) -> None:
    client = await Raw.get(tracked.port, "transport=stream&channel=a", version=version)
    await eventually(lambda: b'"subscribed"' in client.data and handlers_alive() == 0)
    assert await hub.shutdown(5)
    await asyncio.wait_for(client.eof.wait(), 5)  # closed by the server
    body = client.data.partition(b"\r\n\r\n")[2]
    assert b'"reconnect"' in body
    if version == "1.1":
        assert body.endswith(b"\r\n0\r\n\r\n")  # the chunked body's end
        assert b"\r\nConnection: close\r\n" in client.head
    else:  # an HTTP/1.0 body ends with the connection
        assert body.endswith(b"\n") and b"Transfer-Encoding" not in client.head
    client.close()


async def test_the_request_is_logged_at_the_hand_over(
    tracked: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tornado.access"):
        client = await Raw.get(tracked.port, "transport=sse&channel=a")
        await eventually(lambda: b'"subscribed"' in client.data and handlers_alive() == 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert len(lines) == 1 and lines[0].startswith("200 GET /channels?transport=sse"), lines
    client.close()


async def test_a_slow_reader_gets_everything_in_order_after_the_hand_over(
    make_server: Callable[..., Server],
) -> None:
    roomy = Settings(max_pending_bytes=1 << 26, stream_max_bytes=1 << 30, ping_interval=5)
    hub = Hub(MemoryBroker(), roomy)
    Tracked.made, Tracked.finished = [], 0
    server = make_server(type("Handler", (Tracked,), {"hub": hub}), hub_=hub)
    client = await Raw.get(server.port, "transport=stream&channel=big", rcvbuf=4096)
    await eventually(lambda: b'"subscribed"' in client.data and handlers_alive() == 0)
    client.reading.clear()  # stop reading: the socket fills, writes wait for it
    for n in range(24):  # 6 MiB: more than loopback socket buffers hold
        hub.channel("big").send({"n": n, "blob": "x" * 262144})
    (connection,) = hub.connections
    await eventually(lambda: connection.outbox.busy)  # type: ignore[attr-defined]
    client.reading.set()

    def numbers() -> list[int]:
        body = dechunk(client.data.partition(b"\r\n\r\n")[2])
        lines = [json.loads(line) for line in body.split(b"\n") if line]
        return [line["data"]["n"] for line in lines if line["type"] == "message"]

    await eventually(lambda: len(numbers()) == 24, timeout=30)
    assert numbers() == list(range(24))
    client.close()
    await eventually(lambda: not hub.connections)


async def test_a_long_catch_up_goes_on_after_the_hand_over(
    make_server: Callable[..., Server],
) -> None:
    hub = Hub(MemoryBroker(), Settings(stream_max_bytes=1 << 30, ping_interval=5))
    Tracked.made, Tracked.finished = [], 0
    server = make_server(type("Handler", (Tracked,), {"hub": hub}), hub_=hub)
    epochs = {hub.channel("hist").send({"n": n, "blob": "y" * 262144})["epoch"] for n in range(12)}
    (epoch,) = epochs  # 3 MiB of history: more than max_pending_bytes at once
    query = f"transport=stream&channel=hist&cursor=hist={epoch}:0"
    client = await Raw.get(server.port, query, rcvbuf=4096)
    client.reading.clear()
    await eventually(lambda: hub.stats.delivered == 12 and handlers_alive() == 0)
    client.reading.set()
    await eventually(lambda: b'"n":11,' in client.data, timeout=20)
    hub.channel("hist").send({"n": 12})
    await eventually(lambda: b'"n":12,' in client.data)
    body = dechunk(client.data.partition(b"\r\n\r\n")[2])
    lines = [json.loads(line) for line in body.split(b"\n") if line]
    assert [x["data"]["n"] for x in lines if x["type"] == "message"] == list(range(13))
    client.close()


async def test_a_tls_stream_stays_on_tornados_path(
    make_server: Callable[..., Server], hub: Hub
) -> None:
    Tracked.made, Tracked.finished = [], 0
    server_tls, client_tls = self_signed_tls()
    handler = type("Handler", (Tracked,), {"hub": hub})
    server = make_server(handler, tls=server_tls)
    client = await Raw.get(server.port, "transport=sse&channel=a", tls=client_tls)
    await eventually(lambda: b"event: subscribed" in client.data)
    hub.channel("a").send({"n": 1})
    await eventually(lambda: b'"n":1' in client.data)
    # A message delivered after the subscribe: a hand-over would have come first.
    assert handlers_alive() == 1 and Tracked.finished == 0  # still Tornado's
    assert b"Connection: close" not in client.head
    assert await hub.shutdown(5)
    await eventually(lambda: client.data.endswith(b"\r\n0\r\n\r\n"))
    assert b"event: reconnect" in client.data
    client.close()


async def test_hand_over_may_be_turned_off(make_server: Callable[..., Server], hub: Hub) -> None:
    class Kept(StreamTransport):
        hand_over = False

    Tracked.made, Tracked.finished = [], 0
    handler = type("Handler", (Tracked,), {"hub": hub, "transports": {Kept.name: Kept}})
    server = make_server(handler)
    client = await Raw.get(server.port, f"transport={Kept.name}&channel=a")
    await eventually(lambda: b'"subscribed"' in client.data)
    hub.channel("a").send({"n": 1})
    await eventually(lambda: b'"n":1' in client.data)  # a hand-over would have come first
    assert handlers_alive() == 1 and b"Connection: close" not in client.head
    client.close()
    await eventually(lambda: not hub.connections)


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body, up to where it stops."""
    out = b""
    while body:
        size, sep, rest = body.partition(b"\r\n")
        if not sep:
            break
        n = int(size, 16)
        if n == 0 or len(rest) < n + 2:
            break
        out += rest[:n]
        body = rest[n + 2 :]
    return out


async def test_a_handed_over_stream_counts_against_the_servers_caps_until_it_closes(
    hub: Hub,
) -> None:
    Tracked.made, Tracked.finished = [], 0
    app = tornado.web.Application([(r"/channels", type("Handler", (Tracked,), {"hub": hub}))])
    server = HubHTTPServer(app)
    server.max_connections = 2
    server.limits = PerAddressLimit(2, TrustedProxies(()))
    sock, port = tornado.testing.bind_unused_port()
    server.add_sockets([sock])
    try:
        first = await Raw.get(port, "transport=stream&channel=a")
        second = await Raw.get(port, "transport=sse&channel=a")
        await eventually(lambda: handlers_alive() == 0 and len(hub.connections) == 2)
        assert server.open_connections == 2 and server.limits.count("127.0.0.1") == 2
        third = await Raw.get(port, "transport=stream&channel=a")
        await asyncio.wait_for(third.eof.wait(), 5)
        assert third.data.startswith(b"HTTP/1.1 503 ")
        first.close()  # the client leaves: its place is free again
        await eventually(lambda: server.open_connections == 1)
        assert server.limits.count("127.0.0.1") == 1
        fourth = await Raw.get(port, "transport=stream&channel=a")
        await eventually(lambda: b'"subscribed"' in fourth.data)
        assert await hub.shutdown(5)  # a clean end frees them too
        await eventually(lambda: server.open_connections == 0)
        assert server.limits.count("127.0.0.1") == 0
        for client in (second, third, fourth):
            client.close()
    finally:
        server.stop()


async def test_a_client_gone_just_before_the_hand_over_ends_quietly(
    make_server: Callable[..., Server], hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    class LeftJustNow(SSETransport):
        def _hand_over(self) -> bool:
            # The client left as the subscribe ended: Tornado closed the
            # stream and has not told the handler yet (a failed write).
            stream = request_stream(self.handler.request)
            assert stream is not None
            stream.close()
            return super()._hand_over()

    Tracked.made, Tracked.finished = [], 0
    transports = {"sse": LeftJustNow}
    server = make_server(type("Handler", (Tracked,), {"hub": hub, "transports": transports}))
    client = await Raw.get(server.port, "transport=sse&channel=a")
    await asyncio.wait_for(client.eof.wait(), 5)
    await eventually(lambda: not hub.connections and hub.local_subscribers("a") == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    client.close()

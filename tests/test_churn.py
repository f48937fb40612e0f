"""Connections that come and go at once leave nothing behind.

A client opens a subscription to one or several channels, reads up to
``connected`` (or just sends its request, on the polling transports), and
drops the connection at once with FIN or RST, over and over. The clients
run in a thread with blocking sockets, as another process would: their
closes reach the server while it is still attaching the channels. Once
they are gone, the hub counts no subscription (its own count and the
``torchannels_subscriptions`` metric), holds no channel, and the broker
holds no subscription either (on Redis: PUBSUB NUMSUB is back to 0).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing

from redis_servers import shared_redis
from support import upgrade_request
from torchannels import Hub, MemoryBroker, Settings
from torchannels.brokers.base import Broker
from torchannels.server.app import make_app
from torchannels.server.config import ServerConfig

TRANSPORTS = ("poll", "longpoll", "stream", "sse", "websocket")
CYCLES = 40


@dataclass
class Served:
    hub: Hub
    port: int
    http: tornado.httpserver.HTTPServer

    async def metric(self, name: str) -> float:
        client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        try:
            resp = await client.fetch(f"http://127.0.0.1:{self.port}/metrics")
        finally:
            client.close()
        found = re.search(rf"^{name} (\S+)$", resp.body.decode(), re.MULTILINE)
        assert found is not None, resp.body
        return float(found.group(1))


async def serve(broker: Broker) -> Served:
    hub = Hub(broker, Settings(unsubscribe_grace=0.0, ping_interval=5.0))
    config = ServerConfig(anonymous=("pub:*",), demo=False, metrics=True)
    sock, port = tornado.testing.bind_unused_port()
    http = tornado.httpserver.HTTPServer(make_app(config, hub))
    http.add_sockets([sock])
    return Served(hub, port, http)


async def stop(served: Served) -> None:
    served.http.stop()
    await served.http.close_all_connections()
    await served.hub.close()


@pytest.fixture
async def memory() -> AsyncIterator[Served]:
    served = await serve(MemoryBroker())
    yield served
    await stop(served)


def request(transport: str, channels: Sequence[str]) -> bytes:
    query = "&".join(f"channel={c}" for c in channels)
    if transport == "websocket":
        return upgrade_request(f"/channels/ws?{query}", {"Host": "127.0.0.1"})
    target = f"/channels?transport={transport}&{query}"
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def churn(port: int, transport: str, channels: Sequence[str], rst: bool, cycles: int) -> None:
    """Open, read up to ``connected`` (streams, WebSocket), drop; ``cycles`` times."""
    for _ in range(cycles):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(request(transport, channels))
            if transport not in ("poll", "longpoll"):
                seen = b""
                while b"connected" not in seen:
                    data = sock.recv(65536)
                    assert data, f"{transport} ended before connected: {seen!r}"
                    seen += data
            if rst:  # SO_LINGER 0: close() sends RST, not FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()


async def settled(served: Served) -> None:
    """Wait (bounded) until no connection and no subscriber is left, and
    the in-memory broker holds no listener."""
    hub, broker = served.hub, served.hub.broker
    # A fence: once a request made after every client's is answered, the
    # server has read theirs (a long-poll whose client left is still held).
    await served.metric("torchannels_subscriptions")
    for _ in range(500):
        listeners = isinstance(broker, MemoryBroker) and broker._listeners
        if not hub.connections and not hub.local_channels() and not listeners:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_churn_leaves_no_subscription(
    memory: Served, transport: str, count: int, rst: bool
) -> None:
    channels = ["pub:a", "pub:b", "pub:c"][:count]
    await asyncio.to_thread(churn, memory.port, transport, channels, rst, CYCLES)
    await settled(memory)
    hub = memory.hub
    assert hub.subscription_count() == 0
    assert await memory.metric("torchannels_subscriptions") == 0
    assert hub.local_channels() == {}
    broker = hub.broker
    assert isinstance(broker, MemoryBroker)
    assert broker._listeners == {}  # the broker subscriptions were released too


@pytest.mark.parametrize("transport", ["stream", "websocket"])
async def test_churn_on_redis_releases_every_pubsub_subscription(transport: str) -> None:
    from redis.asyncio import Redis

    from torchannels.brokers.redis import RedisBroker

    url = shared_redis()
    broker = RedisBroker.from_url(url, prefix="churn" + secrets.token_hex(4))
    served = await serve(broker)
    admin = Redis.from_url(url)
    channels = ["pub:a", "pub:b"]
    names = [f"{{{broker.prefix}:{c}}}:p" for c in channels]
    try:
        await asyncio.to_thread(churn, served.port, transport, channels, True, CYCLES)
        await asyncio.to_thread(churn, served.port, transport, channels, False, CYCLES)
        await settled(served)
        assert served.hub.subscription_count() == 0
        assert await served.metric("torchannels_subscriptions") == 0
        for _ in range(500):  # the last UNSUBSCRIBE may still be on its way
            numsub = dict(await admin.pubsub_numsub(*names))
            if not any(numsub.values()):
                break
            await asyncio.sleep(0.01)
        assert numsub == {n.encode(): 0 for n in names}
    finally:
        await stop(served)
        await admin.aclose()

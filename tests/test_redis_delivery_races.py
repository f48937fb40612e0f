"""The Redis broker's pub/sub subscriptions follow its listeners exactly,
whatever interrupts a subscribe or a reconnect (real Redis, real Cluster).

Each test stops at a known step (a SUBSCRIBE sent and not yet confirmed;
a reconnect that has not made every node's connection yet) and then
checks what Redis itself says: PUBSUB NUMSUB / SHARDNUMSUB.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from redis_servers import LocalCluster, running_cluster, shared_redis
from support import eventually
from torchannels.brokers.redis import RedisBroker


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as local:
        yield local


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker.from_url(url, prefix="race" + secrets.token_hex(4), reconnect_cap=0.2)
    try:
        yield broker
    finally:
        await broker.close()


def pubsub_name(broker: RedisBroker, channel: str) -> bytes:
    return f"{{{broker.prefix}:{channel}}}:p".encode()


async def test_a_cancelled_subscribe_takes_its_subscribe_back() -> None:
    url = shared_redis()
    async with opened(url) as broker:
        await cancel_a_subscribe(broker, url)


async def cancel_a_subscribe(broker: RedisBroker, url: str) -> None:
    from redis.asyncio import Redis

    got: list[Any] = []
    await broker.subscribe("other", got.append)  # the pub/sub connection is up
    feed = broker._delivery._feeds[""]
    name = pubsub_name(broker, "news")
    subscribing = asyncio.ensure_future(broker.subscribe("news", got.append))
    # One step of the loop: the SUBSCRIBE is sent, and its confirmation
    # cannot have been read yet (the reader runs after a later poll).
    await asyncio.sleep(0)
    assert name in feed._waiters
    subscribing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await subscribing
    admin = Redis.from_url(url)
    try:

        async def numsub() -> int:
            [(_, count)] = await admin.pubsub_numsub(name)
            return count

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (subscribed := await numsub()) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert subscribed == 0, "the cancelled SUBSCRIBE is still on Redis"
        # Subscribing again works, and only what is wanted is delivered.
        await broker.subscribe("news", got.append)
        assert await numsub() == 1
        await broker.publish("news", {"n": 1})
        await eventually(lambda: [p.channel for p in got] == ["news"])
    finally:
        await admin.aclose()


async def test_an_unsubscribe_during_a_cluster_reconnect_is_not_undone(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(cluster.url) as broker:
        await unsubscribe_during_a_reconnect(cluster, broker, monkeypatch)


async def unsubscribe_during_a_reconnect(
    cluster: LocalCluster, broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery = broker._delivery
    by_port: dict[int, str] = {}
    i = 0
    while len(by_port) < len(cluster.nodes):  # a channel on every node
        channel = f"room:{i}"
        by_port.setdefault(cluster.node_for(f"{{{broker.prefix}:{channel}}}").port, channel)
        i += 1
    got: dict[str, list[Any]] = {c: [] for c in by_port.values()}
    for channel in by_port.values():
        await broker.subscribe(channel, got[channel].append)
    resyncs: list[list[str]] = []
    broker.add_resync_listener(lambda channels: resyncs.append(list(channels)))
    gone: list[str] = []
    open_feed = delivery._open_feed

    async def open_feed_after_an_unsubscribe(node: str) -> object:
        # The reconnect makes its first node's connection: meanwhile a channel
        # of another node (whose connection is not made yet) is unsubscribed.
        if not gone and not delivery.ok:
            victim = next(
                c for c in by_port.values() if delivery._node_of(pubsub_name(broker, c)) != node
            )
            gone.append(victim)
            await broker.unsubscribe(victim, got[victim].append)
        return await open_feed(node)

    monkeypatch.setattr(delivery, "_open_feed", open_feed_after_an_unsubscribe)
    for node in cluster.nodes:
        node.cli("CLIENT", "KILL", "TYPE", "pubsub")
    await eventually(lambda: bool(resyncs) and delivery.ok, timeout=20)
    assert gone
    for port, channel in by_port.items():
        node = next(n for n in cluster.nodes if n.port == port)
        name = pubsub_name(broker, channel).decode()
        reply = node.cli("PUBSUB", "SHARDNUMSUB", name).split()
        assert reply == [name, "0" if channel in gone else "1"], channel

"""The Redis broker against Redis servers these tests own: killed, restarted,
their pub/sub connections killed, and a local 3-master Cluster.

The broker contract itself runs against Redis in test_broker_contract.py;
here is what only a network broker can get wrong.
"""

from __future__ import annotations

import json
import secrets
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from redis.crc import key_slot

from redis_servers import LocalCluster, RedisServer, shared_redis
from support import eventually
from torchannels.brokers import HistoryPolicy, RedisBroker
from torchannels.brokers.base import NO_EPOCH
from torchannels.errors import RESET_EPOCH, BrokerUnavailable, ChannelNameError
from torchannels.frames import Duplicate, Publication, tail
from torchannels.protocol import Position


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    own = RedisServer(tmp_path / "redis")
    own.start()
    yield own
    own.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        local.start()
        yield local
    finally:
        local.stop()


class Resyncs:
    """Records the channels each resync call named."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, channels: Sequence[str]) -> None:
        self.calls.append(list(channels))


@pytest.fixture
async def brokers() -> AsyncIterator[list[RedisBroker]]:
    """Brokers a test makes; closed after it."""
    made: list[RedisBroker] = []
    yield made
    for broker in made:
        await broker.close()


def make(made: list[RedisBroker], url: str, **options: Any) -> RedisBroker:
    options.setdefault("prefix", "t" + secrets.token_hex(4))
    options.setdefault("reconnect_cap", 0.2)
    broker = RedisBroker.from_url(url, **options)
    made.append(broker)
    return broker


async def listening(broker: RedisBroker, *channels: str) -> tuple[Resyncs, list[Publication]]:
    """Record ``broker``'s resyncs, and what it delivers from ``channels``."""
    resyncs = Resyncs()
    broker.add_resync_listener(resyncs)
    got: list[Any] = []
    for channel in channels:
        await broker.subscribe(channel, got.append)
    return resyncs, got


def offsets(pubs: Sequence[Publication]) -> list[int]:
    return [p.offset for p in pubs]


# -- keys and wire format ----------------------------------------------------------


async def test_keys_are_hash_tagged_and_expire_with_the_ttl(brokers: list[RedisBroker]) -> None:
    url = shared_redis()
    broker = make(brokers, url, history=HistoryPolicy(size=10, ttl=30, meta_ttl=300))
    admin = redis.asyncio.Redis.from_url(url)
    try:
        await broker.publish("chat:a/b@c", {"n": 1})
        await broker.set_state("chat:a/b@c", [{"s": 1}])
        tag = f"{{{broker.prefix}:chat:a/b@c}}"
        keys = sorted([k.decode() async for k in admin.scan_iter(match=f"{{{broker.prefix}:*")])
        assert keys == [tag + ":h", tag + ":m", tag + ":s"]
        for key in (tag + ":h", tag + ":s"):  # history and state: the history TTL
            assert 29_000 < await admin.pttl(key) <= 30_000
        assert 299_000 < await admin.pttl(tag + ":m") <= 300_000  # the position: meta_ttl
        assert len({key_slot(k.encode()) for k in keys}) == 1
        await admin.delete(*keys)
    finally:
        await admin.aclose()


async def test_reading_an_absent_channel_creates_nothing(brokers: list[RedisBroker]) -> None:
    """A subscriber of an empty channel holds ``NO_EPOCH:0``, which the first
    publication does not reset; no key is written for it."""
    url = shared_redis()
    broker = make(brokers, url, history=HistoryPolicy(size=10, ttl=30))
    admin = redis.asyncio.Redis.from_url(url)
    try:
        joined = await broker.read("quiet", None)
        assert joined.position == Position(NO_EPOCH, 0)
        assert [k async for k in admin.scan_iter(match=f"{{{broker.prefix}:*")] == []
        pub = await broker.publish("quiet", {"n": 1})
        resumed = await broker.read("quiet", joined.position)
        assert resumed.reset is None and offsets(resumed.publications) == [pub.offset]
        await admin.delete(*(f"{{{broker.prefix}:quiet}}:{k}" for k in "mhs"))
    finally:
        await admin.aclose()


@pytest.mark.parametrize("channel", ["a}b", "{x}", "x{"])
def test_a_channel_cannot_leave_its_hash_tag(channel: str) -> None:
    broker = RedisBroker.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(ChannelNameError):
        broker.publish_soon(channel, {"n": 1})


@pytest.mark.parametrize("prefix", ["", "a{b", "x}", "p*", "sp ace\n"])
def test_prefix_must_be_plain(prefix: str) -> None:
    with pytest.raises(ValueError):
        RedisBroker.from_url("redis://127.0.0.1:1/0", prefix=prefix)


async def test_pubsub_carries_the_position_beside_the_payload(
    brokers: list[RedisBroker],
) -> None:
    """Another process frames a publication without decoding its JSON."""
    url = shared_redis()
    broker = make(brokers, url)
    watcher = redis.asyncio.Redis.from_url(url, protocol=2)
    pubsub = watcher.pubsub()
    try:
        await pubsub.subscribe(f"{{{broker.prefix}:news}}:p")
        await pubsub.get_message(timeout=2)  # the subscribe confirmation
        pub = await broker.publish("news", {"text": "é:ok"})
        message = await pubsub.get_message(timeout=2)
        assert message is not None
        expected = b"%d:%s:%r:" % (pub.offset, pub.epoch.encode(), pub.ts) + pub.payload
        assert message["data"] == expected
        assert pub.payload.endswith(tail(pub.position))
        assert json.loads(pub.payload) == pub.data
        info = await broker.info("news")
        await watcher.delete(*(f"{{{broker.prefix}:news}}:{k}" for k in "mhs"))
        assert info.history_length == 1
    finally:
        await pubsub.aclose()
        await watcher.aclose()


# -- the queue ----------------------------------------------------------------------


async def test_ten_thousand_queued_publishes_keep_order_in_few_round_trips(
    server: RedisServer, brokers: list[RedisBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make(brokers, server.url, history=HistoryPolicy(size=10_000, ttl=600))
    batches: list[int] = []
    store = broker._queue._store

    async def counted(batch: Any) -> Any:
        batches.append(len(batch))
        return await store(batch)

    monkeypatch.setattr(broker._queue, "_store", counted)
    server.cli("CONFIG", "RESETSTAT")
    stamped = [broker.publish_soon("seq", {"n": n}) for n in range(10_000)]
    assert all(s["channel"] == "seq" and "offset" not in s for s in stamped)
    await broker.flush()
    stats = server.cli("INFO", "commandstats")
    evalsha = int(stats.split("cmdstat_evalsha:calls=")[1].split(",")[0])
    assert sum(batches) == 10_000 and len(batches) <= 2  # one pipelined round trip
    assert evalsha <= 2 * (10_000 // 256 + 1)  # 256 messages per script call
    result = await broker.read("seq", None)
    assert offsets(result.publications) == list(range(1, 10_001))
    assert [p.data["n"] for p in result.publications] == list(range(10_000))
    assert broker.failed_publishes == 0


async def test_a_batch_to_many_channels_takes_one_script_call_per_256(
    server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, server.url)
    channels = [f"room:{i}" for i in range(20)]
    _, got = await listening(broker, *channels)
    await broker.publish("room:0", {"n": -1})  # loads the scripts
    server.cli("CONFIG", "RESETSTAT")
    batch = [(channels[i % 20], {"n": i}) for i in range(500)]
    pubs = await broker.publish_many(batch)
    stats = server.cli("INFO", "commandstats")
    assert int(stats.split("cmdstat_evalsha:calls=")[1].split(",")[0]) == 2
    assert [p.offset for p in pubs if p.channel == "room:0"] == list(range(2, 27))
    assert [p.offset for p in pubs if p.channel == "room:19"] == list(range(1, 26))
    await eventually(lambda: len(got) == 501)
    # Pub/sub carries the batch in publishing order, across channels too.
    assert [p.payload for p in got[1:]] == [p.payload for p in pubs]


async def test_a_forgotten_channel_in_a_batch_starts_a_new_epoch(
    brokers: list[RedisBroker],
) -> None:
    url = shared_redis()
    broker = make(brokers, url)
    admin = redis.asyncio.Redis.from_url(url)
    try:
        first = await broker.publish_many([("a", {"n": 1}), ("b", {"n": 1})])
        await admin.delete(f"{{{broker.prefix}:a}}:m")  # evicted, say
        again = await broker.publish_many([("a", {"n": 2}), ("b", {"n": 2})])
        assert again[0].position.offset == 1 and again[0].epoch != first[0].epoch
        assert again[1].position == Position(first[1].epoch, 2)
        read = await broker.read("a", first[0].position)
        assert read.reset == RESET_EPOCH
        assert [p.data["n"] for p in read.publications] == [2]  # the old stream went
        await admin.delete(*(f"{{{broker.prefix}:{c}}}:{k}" for c in "ab" for k in "mhs"))
    finally:
        await admin.aclose()


async def test_a_failing_queued_publish_surfaces_through_flush(
    server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, server.url)
    await broker.publish("news", {"n": 1})
    server.kill()
    broker.publish_soon("news", {"n": 2})
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        await broker.flush()
    assert broker.failed_publishes == 1
    await broker.flush()  # raised once


# -- Redis going away -------------------------------------------------------------


async def test_empty_restart_mid_stream_changes_the_epoch(
    server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, server.url)
    resyncs, got = await listening(broker, "news")
    before = [await broker.publish("news", {"n": n}) for n in range(1, 6)]
    await eventually(lambda: len(got) == 5)
    assert broker.available
    server.kill()
    await eventually(lambda: not broker.available)
    with pytest.raises(BrokerUnavailable):
        await broker.publish("news", {"n": 6})
    with pytest.raises(BrokerUnavailable):
        await broker.read("news", before[-1].position)
    server.start()  # empty: no persistence
    await eventually(lambda: resyncs.calls == [["news"]], timeout=10)
    assert broker.available
    stale = await broker.read("news", before[-1].position)
    assert stale.reset == RESET_EPOCH and stale.position == Position(NO_EPOCH, 0)
    after = await broker.publish("news", {"n": 7})
    assert after.offset == 1 and after.epoch not in (before[0].epoch, NO_EPOCH)
    resumed = await broker.read("news", stale.position)  # it held nothing: no reset
    assert resumed.reset is None and offsets(resumed.publications) == [1]
    await eventually(lambda: len(got) == 6)  # resubscribed
    assert got[-1].position == after.position


async def test_restart_with_data_loses_nothing_in_the_window(
    server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, server.url)
    resyncs, got = await listening(broker, "news")
    before = [await broker.publish("news", {"n": n}) for n in range(1, 6)]
    await eventually(lambda: len(got) == 5)
    server.save_and_stop()
    with pytest.raises(BrokerUnavailable):
        await broker.publish("news", {"n": 0})
    server.start()
    await eventually(lambda: resyncs.calls == [["news"]], timeout=10)
    resumed = await broker.read("news", before[1].position)
    assert resumed.reset is None
    assert offsets(resumed.publications) == [3, 4, 5]
    after = await broker.publish("news", {"n": 6})
    assert after.position == Position(before[0].epoch, 6)
    await eventually(lambda: len(got) == 6)
    assert offsets(got) == [1, 2, 3, 4, 5, 6]


async def test_killed_pubsub_connection_resubscribes_and_loses_nothing(
    server: RedisServer, brokers: list[RedisBroker]
) -> None:
    subscriber = make(brokers, server.url)
    publisher = make(brokers, server.url, prefix=subscriber.prefix)  # another process
    resyncs, got = await listening(subscriber, "news", "other")
    first = await publisher.publish("news", {"n": 1})
    await eventually(lambda: len(got) == 1)
    assert "1" in server.cli("CLIENT", "KILL", "TYPE", "pubsub")
    during = [await publisher.publish("news", {"n": n}) for n in range(2, 6)]
    await eventually(lambda: resyncs.calls == [["news", "other"]], timeout=10)
    # What pub/sub dropped while it was down is read back from the history.
    heard = {p.offset for p in got}
    missed = await subscriber.read("news", first.position)
    assert missed.reset is None
    assert heard | {p.offset for p in missed.publications} == {1, 2, 3, 4, 5}
    assert offsets(missed.publications) == offsets(during)
    later = await publisher.publish("news", {"n": 6})
    await eventually(lambda: later.offset in {p.offset for p in got})
    assert subscriber.available


async def test_subscribe_while_redis_is_down_fails_clearly(
    server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, server.url)
    await broker.info("news")
    server.kill()
    await eventually(lambda: not broker.available)
    refused: list[Any] = []
    with pytest.raises(BrokerUnavailable, match="reconnecting"):
        await broker.subscribe("news", refused.append)
    server.start()
    await eventually(lambda: broker.available, timeout=10)
    got: list[Any] = []
    await broker.subscribe("news", got.append)
    await broker.publish("news", {"n": 1})
    await eventually(lambda: len(got) == 1)


# -- Redis Cluster ----------------------------------------------------------------


def spread(cluster: LocalCluster, prefix: str, per_node: int = 2) -> dict[int, list[str]]:
    """Channel names whose keys live on each node (by node port)."""
    found: dict[int, list[str]] = {n.port: [] for n in cluster.nodes}
    owners = {n.port: n for n in cluster.nodes}
    i = 0
    while any(len(v) < per_node for v in found.values()):
        name = f"room:{i}"
        port = cluster.node_for(f"{{{prefix}:{name}}}").port
        if len(found[port]) < per_node:
            found[port].append(name)
        i += 1
    assert set(found) == set(owners)
    return found


async def test_cluster_delivers_across_nodes_and_resumes(
    cluster: LocalCluster, brokers: list[RedisBroker]
) -> None:
    subscriber = make(brokers, cluster.url)
    publisher = make(brokers, cluster.url, prefix=subscriber.prefix)
    assert subscriber.cluster
    by_node = spread(cluster, subscriber.prefix)
    channels = [c for names in by_node.values() for c in names]
    got: dict[str, list[Any]] = {c: [] for c in channels}
    for channel in channels:
        await subscriber.subscribe(channel, got[channel].append)
    sent = {c: [await publisher.publish(c, {"n": n}) for n in range(3)] for c in channels}
    await eventually(lambda: all(len(got[c]) == 3 for c in channels))
    for channel in channels:
        assert [p.payload for p in got[channel]] == [p.payload for p in sent[channel]]
        resumed = await subscriber.read(channel, sent[channel][0].position)
        assert resumed.reset is None and offsets(resumed.publications) == [2, 3]
    positions = await subscriber.positions([*channels, "never"])
    assert positions == {c: sent[c][-1].position for c in channels}


async def test_cluster_publishes_a_batch_across_nodes(
    cluster: LocalCluster, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, cluster.url)
    channels = [c for names in spread(cluster, broker.prefix).values() for c in names]
    _, got = await listening(broker, *channels)
    batch = [(channels[i % len(channels)], {"n": i}) for i in range(60)]
    pubs = await broker.publish_many(batch)
    for channel in channels:
        assert [p.offset for p in pubs if p.channel == channel] == list(range(1, 11))
    await eventually(lambda: len(got) == 60)
    for channel in channels:  # per channel in order (nodes deliver independently)
        mine = [p.payload for p in pubs if p.channel == channel]
        assert [p.payload for p in got if p.channel == channel] == mine


async def test_cluster_publishes_a_keyed_batch_across_nodes(
    cluster: LocalCluster, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, cluster.url)
    other = make(brokers, cluster.url, prefix=broker.prefix)  # another process, say
    channels = [c for names in spread(cluster, broker.prefix).values() for c in names]
    _, got = await listening(broker, *channels)
    batch = [(channels[i % len(channels)], {"n": i}) for i in range(24)]
    keys = [None if i % 4 == 3 else f"k{i % 12}" for i in range(24)]  # repeats: i + 12
    first = await broker.publish_many(batch, keys=keys)
    again = await other.publish_many(batch, keys=keys)
    for results in (first, again):
        for i in range(12, 24):
            if keys[i] is not None:
                twin = first[i - 12]
                assert isinstance(twin, Publication)
                assert results[i] == Duplicate(twin.channel, twin.epoch, twin.offset, twin.ts)
    stored = [r for r in first + again if isinstance(r, Publication)]
    assert len(stored) == 9 + 6 + 6  # first: 9 keys, 6 without; again: those 6
    await eventually(lambda: len(got) == len(stored))
    for channel in channels:
        mine = sorted(p.offset for p in stored if p.channel == channel)
        assert mine == list(range(1, len(mine) + 1))


async def test_cluster_resets_after_a_channel_is_forgotten(
    cluster: LocalCluster, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, cluster.url)
    pubs = [await broker.publish("room:x", {"n": n}) for n in range(3)]
    admin = redis.asyncio.RedisCluster.from_url(cluster.url.replace("+cluster", ""))
    try:
        tag = f"{{{broker.prefix}:room:x}}"
        assert await admin.delete(tag + ":m", tag + ":h") == 2
    finally:
        await admin.aclose()
    result = await broker.read("room:x", pubs[-1].position)
    assert result.reset == RESET_EPOCH and result.position == Position(NO_EPOCH, 0)
    again = await broker.publish("room:x", {"n": 0})
    assert again.offset == 1 and again.epoch not in (pubs[0].epoch, NO_EPOCH)
    resumed = await broker.read("room:x", result.position)
    assert resumed.reset is None and offsets(resumed.publications) == [1]


async def test_cluster_node_restarted_empty_resyncs_and_resets(
    cluster: LocalCluster, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, cluster.url)
    resyncs = Resyncs()
    broker.add_resync_listener(resyncs)
    channel = spread(cluster, broker.prefix, per_node=1)[cluster.nodes[2].port][0]
    got: list[Any] = []
    await broker.subscribe(channel, got.append)
    pubs = [await broker.publish(channel, {"n": n}) for n in range(3)]
    await eventually(lambda: len(got) == 3)
    node = cluster.node_for(f"{{{broker.prefix}:{channel}}}")
    node.kill()
    node.start()  # keeps nodes.conf (its slots), not its data
    await eventually(lambda: resyncs.calls == [[channel]], timeout=15)
    await eventually(lambda: "cluster_state:ok" in node.cli("CLUSTER", "INFO"), timeout=15)
    result = await broker.read(channel, pubs[-1].position)
    assert result.reset == RESET_EPOCH and result.position == Position(NO_EPOCH, 0)
    after = await broker.publish(channel, {"n": 9})
    assert after.offset == 1 and after.epoch not in (pubs[0].epoch, NO_EPOCH)
    await eventually(lambda: len(got) == 4)


def test_from_url_reads_tls_password_and_cluster() -> None:
    broker = RedisBroker.from_url("rediss://:s3cret@cache.example:6380/2", prefix="app")
    client: Any = broker.client
    pool = client.connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 2)
    assert kwargs["password"] == "s3cret" and kwargs["protocol"] == 2
    assert not broker.cluster
    assert RedisBroker.from_url("redis+cluster://127.0.0.1:7000").cluster
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBroker(redis.asyncio.Redis(decode_responses=True))


async def test_a_silent_redis_is_noticed_by_ping(
    server: RedisServer, brokers: list[RedisBroker]
) -> None:
    """A Redis that stops answering without closing the connection (a
    partition, a frozen host) is noticed by the pub/sub PING."""
    broker = make(brokers, server.url, ping_interval=0.1)
    resyncs, got = await listening(broker, "news")
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        await eventually(lambda: not broker.available)
    finally:
        server.process.send_signal(signal.SIGCONT)
    await eventually(lambda: resyncs.calls == [["news"]], timeout=10)
    await broker.publish("news", {"n": 1})
    await eventually(lambda: len(got) == 1)

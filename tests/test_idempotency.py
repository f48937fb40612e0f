"""Idempotency keys (brokers/idempotency.py), for every broker of
test_broker_contract.py: a publish repeating a key in its channel within the
window stores and delivers nothing and answers the first one's position."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
import redis.asyncio

import test_broker_contract as contract
from redis_servers import shared_redis
from support import eventually
from test_broker_contract import Kit, MakeKit, offsets, texts
from torchannels import BadRequest, HistoryPolicy, Hub, MemoryBroker, Publication
from torchannels.brokers import RedisBroker
from torchannels.brokers.publish_queue import QueuedOp
from torchannels.errors import INVALID_IDEMPOTENCY_KEY, MessageError
from torchannels.frames import Duplicate
from torchannels.protocol import check_idempotency_key

# The contract's fixtures: every test here runs against every broker.
kit = contract.kit
make_kit = contract.make_kit


def duplicate_of(pub: Publication | Duplicate) -> Duplicate:
    """What a publish repeating the key of ``pub`` (stored) is answered."""
    assert isinstance(pub, Publication)
    return Duplicate(pub.channel, pub.epoch, pub.offset, pub.ts)


async def delivered(kit: Kit, channel: str, got: list[Any], before: int) -> list[Any]:
    """What ``channel``'s listener got after ``before`` items, once an
    unkeyed marker published now has arrived (so nothing else is on its way)."""
    marker = await kit.broker.publish(channel, {"marker": True})
    await eventually(lambda: any(p.payload == marker.payload for p in got))
    return got[before:-1]


# -- one publish --------------------------------------------------------------------


async def test_a_repeated_key_stores_and_delivers_nothing(kit: Kit) -> None:
    got: list[Any] = []
    await kit.broker.subscribe("a", got.append)
    first = await kit.broker.publish("a", {"n": 1}, idempotency_key="k-1")
    assert isinstance(first, Publication) and first.offset == 1
    again = await kit.broker.publish("a", {"n": 2}, idempotency_key="k-1")
    assert again == duplicate_of(first) and again.position == first.position
    assert isinstance(again, Duplicate) and again.ts == first.ts  # the first one's ts
    assert [p.payload for p in await delivered(kit, "a", got, 0)] == [first.payload]
    read = await kit.broker.read("a", None)
    assert texts(read.publications) == [1, None]  # the first, then the marker
    other = await kit.broker.publish("a", {"n": 3}, idempotency_key="k-2")
    assert isinstance(other, Publication) and other.offset == 3


async def test_a_key_is_scoped_to_its_channel(kit: Kit) -> None:
    a = await kit.broker.publish("a", {"n": 1}, idempotency_key="same")
    b = await kit.broker.publish("b", {"n": 1}, idempotency_key="same")
    assert isinstance(a, Publication) and isinstance(b, Publication)
    assert (a.channel, b.channel, b.offset) == ("a", "b", 1)
    assert await kit.broker.publish("b", {}, idempotency_key="same") == duplicate_of(b)
    assert await kit.broker.publish("a", {}, idempotency_key="same") == duplicate_of(a)


async def test_keyed_and_unkeyed_publishes_share_the_offsets(kit: Kit) -> None:
    plain = await kit.broker.publish("a", {"n": 0})
    keyed = await kit.broker.publish("a", {"n": 1}, idempotency_key="k")
    none = await kit.broker.publish("a", {"n": 2}, idempotency_key=None)
    assert isinstance(keyed, Publication) and isinstance(none, Publication)
    assert [plain.offset, keyed.offset, none.offset] == [1, 2, 3]
    assert await kit.broker.publish("a", {"n": 3}, idempotency_key="k") == duplicate_of(keyed)


@pytest.mark.parametrize("key", ["", "x" * 129, "caf\u00e9", "a\nb", "tab\there", None, 7])
async def test_a_bad_key_is_refused_and_stores_nothing(kit: Kit, key: Any) -> None:
    if key is None:  # None is no key, so publish the others' way
        with pytest.raises(BadRequest) as refused:
            check_idempotency_key(key)
    else:
        with pytest.raises(BadRequest) as refused:
            await kit.broker.publish("a", {"n": 1}, idempotency_key=key)
        assert (await kit.broker.info("a")).position.offset == 0
    assert refused.value.code == INVALID_IDEMPOTENCY_KEY
    assert "1-128 printable ASCII characters" in refused.value.message


async def test_the_longest_and_widest_keys_are_fine(kit: Kit) -> None:
    widest = "".join(chr(c) for c in range(0x20, 0x7F))  # space to ~, ':' included
    for key in ("x" * 128, widest, " ", "a:1:2.5"):
        first = await kit.broker.publish("a", {}, idempotency_key=key)
        assert isinstance(first, Publication)
        assert await kit.broker.publish("a", {}, idempotency_key=key) == duplicate_of(first)


# -- the window ---------------------------------------------------------------------


async def test_a_key_is_remembered_for_the_window_after_its_publish(make_kit: MakeKit) -> None:
    kit = await make_kit(idempotency_window=10.0)
    first = await kit.broker.publish("a", {"n": 1}, idempotency_key="k")
    assert isinstance(first, Publication)
    await kit.advance(9.0)
    assert await kit.broker.publish("a", {}, idempotency_key="k") == duplicate_of(first)
    # A duplicate does not renew the window; another key's publish renews
    # the records' keys in Redis, so the record itself must expire on time.
    other = await kit.broker.publish("a", {"n": 2}, idempotency_key="other")
    await kit.advance(1.5)
    again = await kit.broker.publish("a", {"n": 3}, idempotency_key="k")
    assert isinstance(again, Publication) and again.offset == 3
    assert await kit.broker.publish("a", {}, idempotency_key="other") == duplicate_of(other)
    assert await kit.broker.publish("a", {}, idempotency_key="k") == duplicate_of(again)
    await kit.advance(11.0)
    late = await kit.broker.publish("a", {"n": 4}, idempotency_key="other")
    assert isinstance(late, Publication) and late.offset == 4


async def test_a_forgotten_channel_forgets_its_keys(make_kit: MakeKit) -> None:
    kit = await make_kit(HistoryPolicy(ttl=5, meta_ttl=5), idempotency_window=100.0)
    first = await kit.broker.publish("a", {"n": 1}, idempotency_key="k")
    assert isinstance(first, Publication)
    await kit.advance(6.0)  # past meta_ttl: the channel (and its epoch) is gone
    again = await kit.broker.publish("a", {"n": 2}, idempotency_key="k")
    assert isinstance(again, Publication)  # a record of another epoch is no duplicate
    assert again.epoch != first.epoch and again.offset == 1
    assert await kit.broker.publish("a", {}, idempotency_key="k") == duplicate_of(again)


@pytest.mark.parametrize("window", [0, -1.0, float("nan"), float("inf")])
def test_the_window_must_be_positive(window: float) -> None:
    with pytest.raises(ValueError, match="idempotency_window"):
        MemoryBroker(idempotency_window=window)
    with pytest.raises(ValueError, match="idempotency_window"):
        RedisBroker.from_url(shared_redis(), idempotency_window=window)


# -- batches ------------------------------------------------------------------------


async def test_a_batch_repeating_a_key_stores_the_first(kit: Kit) -> None:
    got: list[Any] = []
    await kit.broker.subscribe("a", got.append)
    earlier = await kit.broker.publish("a", {"n": -1}, idempotency_key="old")
    batch = [("a", {"n": n}) for n in range(5)] + [("b", {"n": 5})]
    keys = ["k", "k", None, "old", "j", "k"]
    results = await kit.broker.publish_many(batch, keys=keys)
    assert isinstance(earlier, Publication)
    first = results[0]
    assert isinstance(first, Publication) and first.offset == 2
    assert results[1] == duplicate_of(first)  # the same key later in the batch
    assert results[3] == duplicate_of(earlier)  # a key of an earlier publish
    stored = [r for r in results if isinstance(r, Publication)]
    assert [(p.channel, p.offset, p.data["n"]) for p in stored] == [
        ("a", 2, 0), ("a", 3, 2), ("a", 4, 4), ("b", 1, 5),
    ]  # fmt: skip
    assert [p.data["n"] for p in await delivered(kit, "a", got, 1)] == [0, 2, 4]
    repeat = await kit.broker.publish_many(batch, keys=keys)
    assert all(isinstance(r, Duplicate) for r in repeat[:2] + repeat[3:])
    assert isinstance(repeat[2], Publication) and repeat[2].offset == 6  # after the marker
    assert offsets((await kit.broker.read("b", None)).publications) == [1]


async def test_a_batch_with_a_bad_key_or_a_key_count_stores_none(kit: Kit) -> None:
    batch: list[tuple[str, dict[str, Any]]] = [("a", {"n": 1}), ("b", {"n": 2})]
    with pytest.raises(BadRequest) as refused:
        await kit.broker.publish_many(batch, keys=["fine", "not\u00a0ascii"])
    assert refused.value.code == INVALID_IDEMPOTENCY_KEY
    with pytest.raises(ValueError, match="one key per message"):
        await kit.broker.publish_many(batch, keys=["one"])
    with pytest.raises(ValueError, match="one key per message"):
        await kit.broker.publish_many(batch, keys="ab")
    with pytest.raises(MessageError):
        await kit.broker.publish_many([*batch, ("c", {"bad": {1}})], keys=["x", "y", "z"])
    for channel in "abc":
        assert (await kit.broker.info(channel)).position.offset == 0
    assert await kit.broker.publish_many(batch, keys=[None, None]) != []
    assert await kit.broker.publish_many([], keys=[]) == []


async def test_a_batch_of_more_than_one_script_call(kit: Kit) -> None:
    batch = [("x" if n % 2 else "y", {"n": n}) for n in range(600)]
    keys = [f"k{n % 300}" for n in range(600)]  # the second half repeats the first
    results = await kit.broker.publish_many(batch, keys=keys)
    stored = [r for r in results if isinstance(r, Publication)]
    assert len(stored) == 300
    for n in range(300, 600):
        twin = results[n - 300]
        assert isinstance(twin, Publication)
        assert results[n] == duplicate_of(twin)
    for channel in "xy":
        assert offsets([p for p in stored if p.channel == channel]) == list(range(1, 151))


# -- the in-memory broker -----------------------------------------------------------


async def test_memory_keeps_at_most_its_bound_of_keys_oldest_dropped_first() -> None:
    broker = MemoryBroker(idempotency_max=3)
    firsts = [await broker.publish("a", {"n": n}, idempotency_key=f"k{n}") for n in range(5)]
    assert len(broker.idempotency) == 3
    assert await broker.publish("a", {}, idempotency_key="k4") == duplicate_of(firsts[4])
    assert await broker.publish("a", {}, idempotency_key="k2") == duplicate_of(firsts[2])
    again = await broker.publish("a", {}, idempotency_key="k0")  # dropped: stored again
    assert isinstance(again, Publication) and again.offset == 6
    assert len(broker.idempotency) == 3
    with pytest.raises(ValueError, match="idempotency_max"):
        MemoryBroker(idempotency_max=0)


async def test_memory_unkeyed_publishes_keep_no_records() -> None:
    broker = MemoryBroker()
    await broker.publish("a", {})
    await broker.publish_many([("a", {}), ("b", {})])
    broker.publish_soon("a", {})
    assert len(broker.idempotency) == 0


async def test_memory_forgets_a_forgotten_channels_keys() -> None:
    clock = contract.FakeClock()
    broker = MemoryBroker(HistoryPolicy(ttl=1, meta_ttl=1), clock=clock)
    await broker.publish_many([("a", {}), ("b", {}), ("c", {})], keys=["k", "k", None])
    assert len(broker.idempotency) == 2
    clock.now += 2
    await broker.publish("d", {})  # the next write sweeps: a, b and c are forgotten
    assert broker.channel_count == 1 and len(broker.idempotency) == 0


# -- Redis --------------------------------------------------------------------------


def queued(broker: RedisBroker, channel: str, key: str | None) -> QueuedOp:
    """A publish as the broker's queue makes it (not queued)."""
    op = broker._queue._op(channel, [{}], state=False)
    op.key = key
    return op


async def test_redis_runs_without_keys_use_the_scripts_they_always_did() -> None:
    from torchannels.brokers import redis_lua

    for cluster, unkeyed in ((False, redis_lua.PUBLISH_MANY), (True, redis_lua.PUBLISH)):
        broker = RedisBroker.from_url(shared_redis(), cluster=False)
        await broker.close()  # nothing is sent: the calls are only built
        broker._data._many = not cluster  # how a Cluster groups its runs
        plain = [queued(broker, "a", None), queued(broker, "a", None)]
        keyed = [queued(broker, "a", None), queued(broker, "a", "k")]
        assert [c[1] for c in broker._data._calls(plain)] == [unkeyed]
        calls = broker._data._calls(keyed)
        assert [c[1] for c in calls] == [redis_lua.PUBLISH_KEYED]  # still one call
        assert not any(str(a).endswith(":ik") for c in broker._data._calls(plain) for a in c[2])
        assert calls[0][2][4:6] == ["{torchannels:a}:ik", "{torchannels:a}:ikx"]


@pytest.fixture
async def redis_prefix() -> Any:
    """A fresh key prefix on the shared Redis, its keys deleted afterwards."""
    prefix = "test-ik-" + secrets.token_hex(6)
    yield prefix
    admin = redis.asyncio.Redis.from_url(shared_redis())
    keys = [k async for k in admin.scan_iter(match=f"{{{prefix}:*")]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()


async def redis_keys(prefix: str) -> set[str]:
    admin = redis.asyncio.Redis.from_url(shared_redis(), decode_responses=True)
    try:
        return {k async for k in admin.scan_iter(match=f"{{{prefix}:*")}
    finally:
        await admin.aclose()


async def test_redis_keys_of_the_records_and_only_of_keyed_channels(redis_prefix: str) -> None:
    broker = RedisBroker.from_url(shared_redis(), prefix=redis_prefix, idempotency_window=30)
    try:
        await broker.publish("plain", {})
        await broker.publish_many([("plain", {}), ("mixed", {}), ("keyed", {})],
                                  keys=[None, None, "k"])  # fmt: skip
        keys = await redis_keys(redis_prefix)
        assert {k for k in keys if k.endswith(("ik", "ikx"))} == {
            f"{{{redis_prefix}:keyed}}:ik", f"{{{redis_prefix}:keyed}}:ikx",
        }  # fmt: skip
        admin = redis.asyncio.Redis.from_url(shared_redis(), decode_responses=True)
        try:
            tag = f"{{{redis_prefix}:keyed}}"
            record = await admin.hget(tag + ":ik", "k")
            assert record is not None
            epoch, offset, ts = str(record).split(":")
            assert (epoch, int(offset)) == ((await broker.info("keyed")).position.epoch, 1)
            expiry = await admin.zscore(tag + ":ikx", "k")
            assert expiry is not None and -1 < expiry - (float(ts) + 30) * 1000 < 1000
            for key in (tag + ":ik", tag + ":ikx"):
                assert 28_000 < await admin.pttl(key) <= 30_000
        finally:
            await admin.aclose()
    finally:
        await broker.close()


async def test_redis_trims_expired_records(redis_prefix: str) -> None:
    clock = contract.FakeClock()
    broker = RedisBroker.from_url(
        shared_redis(), prefix=redis_prefix, clock=clock, idempotency_window=10
    )
    admin = redis.asyncio.Redis.from_url(shared_redis())
    try:
        await broker.publish_many([("a", {})] * 100, keys=[f"k{n}" for n in range(100)])
        clock.now += 11  # all expired, the keys themselves still alive (Redis's clock)
        # A bounded number (64) of expired records go per call, k0, k1, k10, ...
        # first (by expiry, then name), so k99 is left, and is no duplicate.
        again = await broker.publish("a", {}, idempotency_key="k99")
        assert isinstance(again, Publication) and again.offset == 101
        tag = f"{{{redis_prefix}:a}}"
        assert await admin.hlen(tag + ":ik") == 100 - 64
        assert await admin.zcard(tag + ":ikx") == 100 - 64
        await broker.publish("a", {}, idempotency_key="fresh")
        assert sorted(await admin.hkeys(tag + ":ik")) == [b"fresh", b"k99"]
        assert await admin.zcard(tag + ":ikx") == 2
    finally:
        await admin.aclose()
        await broker.close()


async def test_redis_a_lost_meta_makes_old_records_no_duplicates(redis_prefix: str) -> None:
    broker = RedisBroker.from_url(shared_redis(), prefix=redis_prefix)
    admin = redis.asyncio.Redis.from_url(shared_redis())
    try:
        first = await broker.publish("a", {"n": 1}, idempotency_key="k")
        assert isinstance(first, Publication)
        await admin.delete(f"{{{redis_prefix}:a}}:m")  # evicted, say
        await broker.publish("a", {"n": 2})  # an unkeyed publish remakes the meta
        again = await broker.publish("a", {"n": 3}, idempotency_key="k")
        assert isinstance(again, Publication) and again.epoch != first.epoch
        assert (await broker.publish("a", {}, idempotency_key="k")) == duplicate_of(again)
    finally:
        await admin.aclose()
        await broker.close()


async def test_redis_concurrent_retries_on_two_brokers_store_one_message(
    redis_prefix: str,
) -> None:
    url = shared_redis()
    one = RedisBroker.from_url(url, prefix=redis_prefix)
    two = RedisBroker.from_url(url, prefix=redis_prefix)
    try:
        got: list[Any] = []
        await one.subscribe("c", got.append)
        rounds = 30
        attempts = [
            broker.publish("c", {"n": n, "by": i}, idempotency_key=f"key-{n}")
            for n in range(rounds)
            for i, broker in enumerate((one, two, one, two))
        ]
        results = await asyncio.gather(*attempts)
        stored = [r for r in results if isinstance(r, Publication)]
        assert len(stored) == rounds
        for n in range(rounds):
            mine = results[4 * n : 4 * n + 4]
            [first] = [r for r in mine if isinstance(r, Publication)]
            assert all(r == duplicate_of(first) for r in mine if r is not first)
        assert sorted(p.offset for p in stored) == list(range(1, rounds + 1))
        batch = [("c", {"n": n}) for n in range(rounds)]
        keys = [f"key-{n}" for n in range(rounds)]
        again = await asyncio.gather(
            one.publish_many(batch, keys=keys), two.publish_many(batch, keys=keys)
        )
        assert all(isinstance(r, Duplicate) for r in again[0] + again[1])
        marker = await two.publish("c", {"marker": True})
        await eventually(lambda: any(p.payload == marker.payload for p in got))
        assert sorted(p.offset for p in got[:-1]) == list(range(1, rounds + 1))
        assert (await one.info("c")).position.offset == rounds + 1
    finally:
        await one.close()
        await two.close()


# -- Channel.asend --------------------------------------------------------------------


async def test_asend_answers_a_duplicate_and_counts_it() -> None:
    hub = Hub(MemoryBroker())
    news = hub.channel("news")
    first = await news.asend({"text": "hi"}, idempotency_key="msg-1")
    assert "duplicate" not in first
    again = await news.asend({"text": "hi again"}, idempotency_key="msg-1")
    assert again == {"text": "hi again", "channel": "news", "ts": first["ts"],
                     "epoch": first["epoch"], "offset": first["offset"],
                     "duplicate": True}  # fmt: skip
    assert (hub.stats.published, hub.stats.publish_duplicates) == (1, 1)
    plain = await news.asend({"text": "plain"})
    assert plain["offset"] == first["offset"] + 1 and "duplicate" not in plain
    assert (hub.stats.published, hub.stats.publish_duplicates) == (2, 1)
    with pytest.raises(BadRequest):
        await news.asend({}, idempotency_key="")
    assert (hub.stats.published, hub.stats.publish_duplicates) == (2, 1)

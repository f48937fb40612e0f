"""The lifecycle store contract, run against every broker's store.

Only :class:`~torchannels.brokers.lifecycle.LifecycleStore` is used: the
in-memory store, and the Redis one (a broker's, under a fresh key prefix)
on the shared Redis (its keys deleted afterwards) and on a local
three-node Redis Cluster (where a script's keys must share one slot).
Processes are plain ids, so one store stands for many processes; expiries
and sweep times are passed explicitly, so no test waits for them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio

from redis_servers import LocalCluster, running_cluster, shared_redis
from torchannels.brokers import RedisBroker
from torchannels.brokers.lifecycle import (
    EVENT_TYPES,
    LifecycleStore,
    Queued,
    QueuedEvent,
    channel_hold,
    member_hold,
    user_hold,
)
from torchannels.brokers.lifecycle_memory import MemoryLifecycle

Made = tuple[LifecycleStore, Callable[[], Awaitable[None]]]


async def memory_store() -> Made:
    async def nothing() -> None:
        return None

    return MemoryLifecycle(), nothing


async def redis_store(url: str | None = None) -> Made:
    """The lifecycle of a broker on the shared Redis (or at ``url``),
    under a fresh prefix."""
    url = url or shared_redis()
    prefix = "test-" + secrets.token_hex(6)
    broker = RedisBroker.from_url(url, prefix=prefix)
    if url.startswith("redis+cluster://"):
        return broker.lifecycle, broker.close  # the cluster goes with its data
    admin = redis.asyncio.Redis.from_url(url)

    async def cleanup() -> None:
        await broker.close()
        keys = [key async for key in admin.scan_iter(match=f"{{{prefix}}}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()

    return broker.lifecycle, cleanup


STORES: dict[str, Callable[[], Awaitable[Made]]] = {
    "memory": memory_store,
    "redis": redis_store,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as local:
        yield local


@pytest.fixture(params=[*sorted(STORES), "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LifecycleStore]:
    if request.param == "cluster":  # every key shares the prefix's slot
        made, cleanup = await redis_store(request.getfixturevalue("cluster").url)
    else:
        made, cleanup = await STORES[request.param]()
    made.configure(EVENT_TYPES)
    yield made
    await cleanup()


def later(seconds: float = 30.0) -> float:
    return time.time() + seconds


async def kinds(store: LifecycleStore) -> list[tuple[str, dict[str, object]]]:
    """Every queued event as (type, fields), oldest first."""
    return [(e.type, json.loads(e.fields)) for e in await store.head(1000)]


async def test_first_hold_and_last_release_queue_on_and_off(store: LifecycleStore) -> None:
    assert await store.hold("p1", [channel_hold("room"), user_hold("ann")], later()) == Queued(2)
    assert await store.release("p1", [channel_hold("room").key]) == Queued(1)
    assert await kinds(store) == [
        ("channel_occupied", {"channel": "room"}),
        ("user_online", {"user": "ann"}),
        ("channel_vacated", {"channel": "room"}),
    ]
    assert await store.length() == 3


async def test_member_events_carry_info_on_join_only(store: LifecycleStore) -> None:
    hold = member_hold("room", "ann", {"n": 1})
    await store.hold("p1", [hold], later())
    await store.release("p1", [hold.key])
    assert await kinds(store) == [
        ("member_joined", {"channel": "room", "user": "ann", "info": {"n": 1}}),
        ("member_left", {"channel": "room", "user": "ann"}),
    ]


async def test_only_configured_events_are_queued(store: LifecycleStore) -> None:
    store.configure(["user_offline", "channel_occupied"])
    done = await store.hold("p1", [channel_hold("room"), user_hold("ann")], later())
    assert done == Queued(1)
    done = await store.release("p1", [channel_hold("room").key, user_hold("ann").key])
    assert done == Queued(1)
    assert await kinds(store) == [
        ("channel_occupied", {"channel": "room"}),
        ("user_offline", {"user": "ann"}),
    ]


async def test_a_second_holder_makes_no_event(store: LifecycleStore) -> None:
    hold = user_hold("ann")
    assert await store.hold("p1", [hold], later()) == Queued(1)
    assert await store.hold("p2", [hold], later()) == Queued()
    assert await store.hold("p1", [hold], later()) == Queued()  # held already
    assert await store.release("p1", [hold.key]) == Queued()  # p2 still holds it
    assert await store.release("p2", [hold.key]) == Queued(1)
    assert [kind for kind, _ in await kinds(store)] == ["user_online", "user_offline"]


async def test_releasing_what_is_not_held_changes_nothing(store: LifecycleStore) -> None:
    hold = user_hold("ann")
    await store.hold("p1", [hold], later())
    assert await store.release("p2", [hold.key]) == Queued()  # p2 never held it
    assert await store.release("p3", [channel_hold("x").key]) == Queued()  # unknown process
    assert await store.release("p1", [hold.key]) == Queued(1)
    assert await store.release("p1", [hold.key]) == Queued()  # released already
    assert await store.length() == 2


async def test_heartbeat_says_whether_the_process_was_known(store: LifecycleStore) -> None:
    assert await store.heartbeat("p1", later()) is False  # never seen
    assert await store.heartbeat("p1", later()) is True
    await store.hold("p2", [user_hold("ann")], later())
    assert await store.heartbeat("p2", later()) is True
    await store.sweep(later(60))
    assert await store.heartbeat("p2", later()) is False  # swept: it holds nothing
    assert await store.hold("p2", [user_hold("ann")], later()) == Queued(1)


async def test_sweep_releases_the_keys_of_expired_processes(store: LifecycleStore) -> None:
    t = time.time()
    await store.hold("dead", [channel_hold("a"), user_hold("ann")], t + 10)
    await store.hold("alive", [channel_hold("a"), user_hold("bob")], t + 100)
    assert await store.sweep(t + 9) == Queued()  # nobody expired yet
    assert await store.sweep(t + 10) == Queued(1)  # at its expiry: ann's only holder
    assert await store.sweep(t + 10) == Queued()  # forgotten: nothing twice
    assert (await kinds(store))[-1] == ("user_offline", {"user": "ann"})
    assert await store.hold("alive", [], t + 20) == Queued()  # an earlier expiry now
    assert await store.sweep(t + 20) == Queued(2)
    swept = sorted(kind for kind, _ in (await kinds(store))[-2:])  # in no particular order
    assert swept == ["channel_vacated", "user_offline"]


async def test_head_is_oldest_first_with_increasing_ids(store: LifecycleStore) -> None:
    before = time.time()
    await store.hold("p1", [user_hold(f"u{i}") for i in range(5)], later())
    await store.hold("p1", [user_hold("z")], later())
    events = await store.head(10)
    assert [json.loads(e.fields)["user"] for e in events] == ["u0", "u1", "u2", "u3", "u4", "z"]
    stamps = [tuple(map(int, e.id.split("-"))) for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == 6
    for event, (ms, _) in zip(events, stamps, strict=True):
        assert event.time == ms / 1000
        assert before - 0.002 <= event.time <= time.time() + 0.002
    assert await store.head(2) == events[:2]


async def test_ack_needs_the_lease(store: LifecycleStore) -> None:
    await store.hold("p1", [user_hold("ann"), user_hold("bob"), user_hold("cy")], later())
    first = await store.head(2)
    assert await store.ack("sender", [e.id for e in first]) is False
    assert await store.length() == 3
    assert await store.lease("sender", 5.0) is True
    assert await store.ack("other", [e.id for e in first]) is False
    assert await store.ack("sender", [e.id for e in first]) is True
    assert await store.length() == 1
    rest: list[QueuedEvent] = await store.head(10)
    assert [json.loads(e.fields)["user"] for e in rest] == ["cy"]
    assert await store.ack("sender", [rest[0].id, first[0].id]) is True  # gone already: fine
    assert await store.length() == 0


async def test_the_lease_is_exclusive_renewable_and_expires(store: LifecycleStore) -> None:
    assert await store.lease("a", 0.3) is True
    assert await store.lease("b", 5.0) is False
    assert await store.lease("a", 0.3) is True  # renewed
    deadline = time.monotonic() + 3.0
    while not await store.lease("b", 5.0):  # a's lease runs out, b gets it
        assert time.monotonic() < deadline, "the lease never expired"
        await asyncio.sleep(0.05)
    assert await store.lease("a", 5.0) is False
    await store.unlease("a")  # not a's: no change
    assert await store.lease("a", 5.0) is False
    await store.unlease("b")
    assert await store.lease("a", 5.0) is True


async def test_the_queue_bound_drops_and_counts(store: LifecycleStore) -> None:
    store.configure(EVENT_TYPES, queue_max=3)
    done = await store.hold("p1", [user_hold(f"u{i}") for i in range(5)], later())
    assert done == Queued(3, 2)
    assert await store.length() == 3
    assert await store.dropped() == 2
    assert await store.release("p1", [user_hold("u0").key]) == Queued(0, 1)
    assert await store.dropped() == 3
    await store.lease("s", 5.0)
    await store.ack("s", [(await store.head(1))[0].id])
    assert await store.release("p1", [user_hold("u1").key]) == Queued(1)
    assert await store.dropped() == 3


async def test_wait_returns_promptly_after_a_queueing(store: LifecycleStore) -> None:
    await store.head(10)
    waiting = asyncio.create_task(store.wait(5.0))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    start = time.monotonic()
    await store.hold("p1", [user_hold("ann")], later())
    await asyncio.wait_for(waiting, 1.0)
    assert time.monotonic() - start < 0.25
    start = time.monotonic()
    await store.wait(5.0)  # head() has not seen it yet: at once
    assert time.monotonic() - start < 0.25


async def test_wait_times_out_when_nothing_is_queued(store: LifecycleStore) -> None:
    await store.hold("p1", [user_hold("ann")], later())
    assert len(await store.head(10)) == 1
    start = time.monotonic()
    await store.wait(0.3)
    assert 0.25 <= time.monotonic() - start < 2.0


async def test_a_partial_head_leaves_wait_returning_at_once(store: LifecycleStore) -> None:
    await store.hold("p1", [user_hold("ann"), user_hold("bob")], later())
    assert len(await store.head(1)) == 1
    start = time.monotonic()
    await store.wait(5.0)
    assert time.monotonic() - start < 0.25

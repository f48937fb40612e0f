"""What only the Redis lifecycle store has: many processes on one Redis.

Each "process" is a broker of its own, with its own Redis client, on the
shared Redis under one fresh key prefix (deleted afterwards): concurrent
sweeps, keys shared between processes, the queue and the lease seen from
another process, a restart, and what is left in Redis afterwards.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio

from redis_servers import shared_redis
from torchannels.brokers import RedisBroker
from torchannels.brokers import lifecycle_lua as lua
from torchannels.brokers.lifecycle import EVENT_TYPES, Queued, channel_hold, user_hold
from torchannels.brokers.lifecycle_redis import RedisLifecycle


@dataclass
class Cluster:
    """Brokers on one prefix (processes), and a client to look at the keys."""

    prefix: str
    admin: redis.asyncio.Redis
    brokers: list[RedisBroker]

    def process(self) -> RedisLifecycle:
        """A new process's store: a broker of its own, with its own client."""
        broker = RedisBroker.from_url(shared_redis(), prefix=self.prefix)
        self.brokers.append(broker)
        broker.lifecycle.configure(EVENT_TYPES)
        return broker.lifecycle

    async def keys(self) -> set[str]:
        found = self.admin.scan_iter(match=f"{{{self.prefix}}}:*")
        return {key.decode() async for key in found}


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    url = shared_redis()
    made = Cluster("test-" + secrets.token_hex(6), redis.asyncio.Redis.from_url(url), [])
    yield made
    for broker in made.brokers:
        await broker.close()
    keys = await made.keys()
    if keys:
        await made.admin.delete(*keys)
    await made.admin.aclose()


def types_of(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [kind for kind, _ in events]


async def queued(store: RedisLifecycle) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, json.loads(e.fields)) for e in await store.head(100_000)]


async def test_concurrent_sweeps_queue_each_off_event_once(cluster: Cluster) -> None:
    one, two = cluster.process(), cluster.process()
    for round_ in range(8):
        t = time.time()
        expected: set[str] = set()
        # more processes than a sweep call looks at, one with more keys than it releases
        for p in range(12):
            n = 1200 if p == 0 else 20
            holds = [channel_hold(f"r{round_}:c{i}") for i in range(n)]
            holds.append(user_hold(f"r{round_}:p{p}"))
            await (one if p % 2 else two).hold(f"r{round_}:p{p}", holds, t + 10)
            expected.update(hold.key.replace("\t", " ") for hold in holds)
        sweeps = [s.sweep(t + 10) for _ in range(3) for s in (one, two)]
        done = sum(await asyncio.gather(*sweeps), Queued())
        events = await one.head(100_000)
        off = Counter(
            f"{e.type} {e.fields}" for e in events if e.type in ("channel_vacated", "user_offline")
        )
        assert off == Counter(expected), f"round {round_}"  # each exactly once
        assert done == Queued(len(off))
        await one.lease("s", 5.0)
        assert await one.ack("s", [e.id for e in events])
        await one.unlease("s")
        assert await cluster.keys() == {f"{{{cluster.prefix}}}:lc:q"}  # nothing left behind


async def test_a_key_two_processes_hold_survives_one_being_swept(cluster: Cluster) -> None:
    one, two = cluster.process(), cluster.process()
    t = time.time()
    await one.hold("p1", [user_hold("ann"), channel_hold("room")], t + 10)
    await two.hold("p2", [user_hold("ann")], t + 100)
    assert await two.sweep(t + 10) == Queued(1)  # the room only
    assert types_of(await queued(two)) == ["user_online", "channel_occupied", "channel_vacated"]
    assert await one.heartbeat("p1", t + 100) is False  # swept: it must hold again
    assert await one.hold("p1", [user_hold("ann")], t + 100) == Queued()  # p2 holds ann
    assert await two.release("p2", [user_hold("ann").key]) == Queued()
    assert await one.release("p1", [user_hold("ann").key]) == Queued(1)
    assert types_of(await queued(one))[-1] == "user_offline"


async def test_a_process_held_again_while_its_sweep_is_unfinished(cluster: Cluster) -> None:
    """A sweep releases a budget of keys per script call; between two calls
    the swept process heartbeats, holds again, and expires again: every
    count stays right, and nothing is left behind."""
    store = cluster.process()
    t = time.time()
    await store.hold("p1", [user_hold(u) for u in "abcd"], t + 10)
    tag = f"{{{cluster.prefix}}}"
    keys = [f"{tag}:lc:n", f"{tag}:lc:q", f"{tag}:lc:dropped", f"{tag}:lc:procs", f"{tag}:lc:swept"]
    keys += [f"{tag}:lc:p:p1", f"{tag}:lc:s:p1"]
    run = cluster.brokers[0]._data._run

    async def sweep_one_key(now: float) -> list[bytes]:
        args = [100, ",".join(EVENT_TYPES), str(round(now * 1000)), 1, 10, "p1"]
        _, _, more = await run(lua.SWEEP, keys, args, "test")
        return list(more)

    assert await sweep_one_key(t + 10) == [b"p1"]  # one key released of four
    [gone] = [f["user"] for k, f in await queued(store) if k == "user_offline"]
    kept = next(u for u in "abcd" if u != gone)
    assert await store.heartbeat("p1", t + 20) is False
    again = [user_hold(gone), user_hold(kept)]
    assert await store.hold("p1", again, t + 20) == Queued(1)  # the one released came back
    assert await sweep_one_key(t + 20) == [b"p1"]  # expired again, two keys still to release
    await store.sweep(t + 20)
    offline = [f["user"] for k, f in await queued(store) if k == "user_offline"]
    assert sorted(offline) == sorted(["a", "b", "c", "d", gone])
    assert types_of(await queued(store)).count("user_online") == 5
    assert await cluster.keys() == {f"{tag}:lc:q"}


async def test_the_queue_bound_holds_across_processes(cluster: Cluster) -> None:
    one, two = cluster.process(), cluster.process()
    one.configure(EVENT_TYPES, queue_max=4)
    two.configure(EVENT_TYPES, queue_max=4)
    t = time.time()
    assert await one.hold("p1", [user_hold(f"u{i}") for i in range(3)], t + 30) == Queued(3)
    assert await two.hold("p2", [user_hold(f"v{i}") for i in range(3)], t + 30) == Queued(1, 2)
    assert await one.dropped() == await two.dropped() == 2
    assert await two.length() == 4


async def test_the_lease_is_one_for_all_processes(cluster: Cluster) -> None:
    one, two = cluster.process(), cluster.process()
    await one.hold("p1", [user_hold("ann")], time.time() + 30)
    ids = [e.id for e in await two.head(10)]
    assert await one.lease("one", 0.3) is True
    assert await two.lease("two", 5.0) is False
    assert await two.ack("two", ids) is False  # refused without the lease
    assert await two.length() == 1
    assert await one.lease("one", 0.3) is True  # renewed
    deadline = time.monotonic() + 3.0
    while not await two.lease("two", 5.0):
        assert time.monotonic() < deadline, "the lease never expired"
        await asyncio.sleep(0.05)
    assert await one.ack("one", ids) is False  # expired
    assert await two.ack("two", ids) is True
    assert await one.length() == 0


async def test_wait_wakes_for_an_event_another_process_queued(cluster: Cluster) -> None:
    one, two = cluster.process(), cluster.process()
    assert await one.head(50) == []
    waiting = asyncio.create_task(one.wait(5.0))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    start = time.monotonic()
    await two.hold("p2", [user_hold("ann")], time.time() + 30)
    await asyncio.wait_for(waiting, 1.0)
    assert time.monotonic() - start < 0.05 + 0.1  # the spec's 50 ms, and slack for a busy box


async def test_the_queue_and_holdings_outlive_a_restart(cluster: Cluster) -> None:
    one = cluster.process()
    t = time.time()
    one.configure(EVENT_TYPES, queue_max=2)
    await one.hold("p1", [user_hold("ann"), user_hold("bob"), user_hold("cy")], t + 10)
    for broker in cluster.brokers:
        await broker.close()
    again = cluster.process()  # a new process, the same Redis and prefix
    again.configure(EVENT_TYPES, queue_max=2)
    assert await again.length() == 2
    assert await again.dropped() == 1
    assert types_of(await queued(again)) == ["user_online", "user_online"]
    await again.lease("s", 5.0)
    await again.ack("s", [e.id for e in await again.head(10)])
    assert await again.sweep(t + 10) == Queued(2, 1)  # the dead process's users go offline
    assert await again.heartbeat("p1", t + 100) is False

"""Presence writes in batches, snapshot reads shared (issue 18: a join storm
ran the Redis broker's connection pool dry with one store call per attach
and one page read per snapshot)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from presence_support import Member, joined, presence_hub, serve, snapshot_users
from redis_servers import RedisServer, shared_redis
from support import Server
from torchannels import Hub
from torchannels.brokers import RedisBroker
from torchannels.errors import BrokerUnavailable
from torchannels.identity import Identity, User

#: The store methods that make a round trip for an attach or a snapshot.
CALLS = ("add", "release", "apply", "page")


def count_calls(store: Any) -> dict[str, int]:
    """Count the calls of the store's write and page methods (they still run)."""
    counts = dict.fromkeys(CALLS, 0)
    for name in CALLS:
        method = getattr(store, name, None)
        if method is None:
            continue

        def counted(*args: Any, _name: str = name, _method: Any = method) -> Any:
            counts[_name] += 1
            return _method(*args)

        setattr(store, name, counted)
    return counts


@pytest.fixture
async def redis_hub() -> AsyncIterator[Hub]:
    broker = RedisBroker.from_url(shared_redis(), prefix="b" + secrets.token_hex(4))
    hub = presence_hub(broker)
    yield hub
    await hub.close()


async def test_concurrent_attaches_make_a_bounded_number_of_store_calls(redis_hub: Hub) -> None:
    hub, n = redis_hub, 300
    calls = count_calls(hub.broker.presence)
    announced: list[str] = []
    publish = hub.broker.publish_presence

    def record(event: Any) -> None:
        announced.extend(m.user for m in event.joins)
        publish(event)

    hub.broker.publish_presence = record  # type: ignore[method-assign]
    tracker = hub.presence_tracker
    people = [Identity(f"c{i}", User(f"u{i:03}"), "websocket", 0) for i in range(n)]
    people.append(Identity("c-again", User("u000"), "websocket", 0))  # a second client
    await asyncio.gather(*(tracker.add("room:1", me, live=True) for me in people))
    assert calls["add"] + calls["apply"] <= 2, calls
    assert sorted(announced) == [f"u{i:03}" for i in range(n)]  # each join once
    snapshots = await asyncio.gather(*(tracker.snapshot("room:1") for _ in range(n)))
    assert calls["page"] <= 2, calls
    assert {(s["clients"], s["users"], len(s["members"])) for s in snapshots} == {(n + 1, n, 100)}
    for me in people:
        tracker.release("room:1", me.client)
    await tracker.batches.drain()
    assert calls["release"] + calls["apply"] <= 4, calls
    counts = await hub.presence_counts("room:1")
    assert counts == (n + 1, n)  # released: present for the grace


async def test_a_storm_of_members_each_sees_itself_and_is_announced_once(
    make_server: Callable[..., Server],
) -> None:
    url, prefix = shared_redis(), "b" + secrets.token_hex(4)
    one = presence_hub(RedisBroker.from_url(url, prefix=prefix), client_id_secret=b"s")
    two = presence_hub(RedisBroker.from_url(url, prefix=prefix), client_id_secret=b"s")
    servers = [serve(make_server, one), serve(make_server, two)]
    watcher = await Member.connect(servers[0], "user=watcher&channel=room:1")
    await watcher.wait(lambda fs: bool(watcher.of("subscribed")))
    names = [f"m{i:02}" for i in range(40)]
    members = await asyncio.gather(
        *(
            Member.connect(servers[i % 2], f"user={name}&channel=room:1")
            for i, name in enumerate(names)
        )
    )
    for name, member in zip(names, members, strict=True):
        first = await member.nth("subscribed", 0)
        assert name in snapshot_users(first)  # its own add is in its snapshot
    await watcher.wait(lambda fs: set(names) <= set(joined(fs)))
    assert sorted(joined(watcher.frames)) == [*names, "watcher"]  # once each
    for member in [*members, watcher]:
        await member.close()
    await one.close()
    await two.close()


async def test_a_failed_batch_fails_every_add_in_it_and_a_retry_joins(tmp_path: Path) -> None:
    """No join is lost silently: when the store is unreachable every caller
    of the batch gets the broker's error (its connection is told to
    reconnect), and the add made again on reconnect announces the join."""
    redis = RedisServer(tmp_path)
    redis.start()
    hub = presence_hub(RedisBroker.from_url(redis.url, prefix="f", reconnect_cap=0.2))
    announced: list[str] = []
    publish = hub.broker.publish_presence

    def record(event: Any) -> None:
        announced.extend(m.user for m in event.joins)
        publish(event)

    hub.broker.publish_presence = record  # type: ignore[method-assign]
    tracker = hub.presence_tracker
    people = [Identity(f"c{i}", User(f"u{i}"), "websocket", 0) for i in range(5)]
    try:
        await tracker.add("room:1", people[0], live=True)  # the scripts are loaded
        redis.kill()
        outcomes = await asyncio.gather(
            *(tracker.add("room:1", me, live=True) for me in people[1:]), return_exceptions=True
        )
        assert all(isinstance(o, BrokerUnavailable) for o in outcomes), outcomes
        assert announced == ["u0"]
        redis.start()  # empty: u0 is gone with the data
        again = people[1:]  # the connections reconnected
        for me in again:
            tracker.release("room:1", me.client)  # the failed subscribes' clean-up
        await asyncio.gather(*(tracker.add("room:1", me, live=True) for me in again))
        assert sorted(announced) == ["u0", "u1", "u2", "u3", "u4"]
        assert await hub.presence_counts("room:1") == (4, 4)
    finally:
        await hub.close()
        redis.kill()

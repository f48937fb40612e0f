"""The presence store contract, run against every broker's store.

Only :class:`~torchannels.brokers.presence.PresenceStore` and the broker's
``publish_presence``/``subscribe`` are used. A kit has two brokers that
share presence: on Redis (and on a local three-node Redis Cluster) two
broker instances (two processes' worth of connections) on one key prefix;
in memory the same broker twice.

Times are real unix times (the Redis store sets its keys' expiry from
them); the tests pass ``now`` explicitly, so no test waits for time.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio

from redis_servers import LocalCluster, running_cluster, shared_redis
from support import eventually
from torchannels import MemoryBroker, Publication
from torchannels.brokers import Broker, Member, PresenceEvent, PresenceStore, RedisBroker
from torchannels.brokers.presence import PresenceAdd, PresenceRelease
from torchannels.identity import Identity, User


@dataclass
class Kit:
    """Two brokers sharing one presence (the same one twice in memory)."""

    one: Broker
    two: Broker
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def store(self) -> PresenceStore:
        return self.one.presence


async def memory_kit() -> Kit:
    broker = MemoryBroker()
    return Kit(broker, broker, [broker.close])


async def redis_kit(url: str | None = None) -> Kit:
    """Two broker instances on one Redis (the shared one unless ``url``
    says) under a fresh key prefix."""
    url = url or shared_redis()
    prefix = "test-" + secrets.token_hex(6)
    one = RedisBroker.from_url(url, prefix=prefix)
    two = RedisBroker.from_url(url, prefix=prefix)
    if url.startswith("redis+cluster://"):
        return Kit(one, two, [one.close, two.close])  # the cluster goes with its data
    admin = redis.asyncio.Redis.from_url(url)

    async def cleanup() -> None:
        keys = [key async for key in admin.scan_iter(match=f"{{{prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()

    return Kit(one, two, [one.close, two.close, cleanup])


KITS: dict[str, Callable[[], Awaitable[Kit]]] = {"memory": memory_kit, "redis": redis_kit}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as local:
        yield local


@pytest.fixture(params=[*sorted(KITS), "cluster"])
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    if request.param == "cluster":  # all of a channel's keys share its slot
        made = await redis_kit(request.getfixturevalue("cluster").url)
    else:
        made = await KITS[request.param]()
    yield made
    for close in made.closers:
        await close()


def who(client: str, user: str | None = None, info: dict[str, Any] | None = None) -> Identity:
    return Identity(client, User(user, info) if user is not None else None, "websocket", 0.0)


def channel() -> str:
    return "room:" + secrets.token_hex(4)


async def test_a_user_joins_once_however_many_clients(kit: Kit) -> None:
    ch, t = channel(), time.time()
    assert await kit.store.add(ch, who("c1", "ann"), t + 30) is True
    assert await kit.store.add(ch, who("c2", "ann"), t + 30) is False
    assert await kit.store.add(ch, who("c1", "ann"), t + 30) is False  # a refresh
    assert await kit.store.add(ch, who("c3", "bob"), t + 30) is True
    assert await kit.two.presence.counts(ch, t) == (3, 2)
    page = await kit.two.presence.page(ch, None, 10, t)
    assert page.members == [Member("ann", None, 2), Member("bob", None, 1)]
    assert (page.next, page.clients, page.users) == (None, 3, 2)


async def test_anonymous_clients_count_as_clients_only(kit: Kit) -> None:
    ch, t = channel(), time.time()
    assert await kit.store.add(ch, who("a1"), t + 30) is False
    assert await kit.store.add(ch, who("a2"), t + 30) is False
    assert await kit.store.add(ch, who("c1", "ann"), t + 30) is True
    assert await kit.store.counts(ch, t) == (3, 1)
    assert (await kit.store.page(ch, None, 10, t)).members == [Member("ann", None, 1)]
    assert await kit.store.remove(ch, ["a1"]) == []
    assert await kit.store.sweep(ch, t + 31) == ["ann"]  # a2 expired too, no leave for it
    assert await kit.store.counts(ch, t + 31) == (0, 0)


async def test_reconnect_within_grace_makes_no_join_and_no_leave(kit: Kit) -> None:
    ch, t = channel(), time.time()
    assert await kit.store.add(ch, who("c1", "ann"), t + 30)
    await kit.store.release(ch, "c1", t + 5)  # a page reload: the old connection went
    assert await kit.two.presence.add(ch, who("c2", "ann"), t + 2 + 30) is False
    assert await kit.two.presence.sweep(ch, t + 6) == []  # c1 swept, ann still here
    assert await kit.store.counts(ch, t + 6) == (1, 1)
    # A polling client keeps its id: released between requests, back in time.
    await kit.store.release(ch, "c2", t + 10)
    assert await kit.store.add(ch, who("c2", "ann"), t + 9 + 5) is False
    assert await kit.store.sweep(ch, t + 12) == []
    assert await kit.store.counts(ch, t + 12) == (1, 1)


async def test_a_release_leaves_after_the_grace_exactly_once(kit: Kit) -> None:
    ch, t = channel(), time.time()
    await kit.store.add(ch, who("c1", "ann"), t + 30)
    await kit.store.add(ch, who("c2", "bob"), t + 30)
    await kit.store.release(ch, "c1", t + 5)
    await kit.store.release(ch, "unknown", t + 5)  # ignored
    assert await kit.store.sweep(ch, t + 4.999) == []
    assert await kit.store.counts(ch, t + 4.999) == (2, 2)
    assert await kit.two.presence.sweep(ch, t + 5) == ["ann"]
    assert await kit.store.sweep(ch, t + 6) == []
    assert await kit.store.counts(ch, t + 6) == (1, 1)
    assert await kit.store.counts(ch, t + 6) == (1, 1)


async def test_a_client_never_released_expires_at_its_expiry(kit: Kit) -> None:
    """A SIGKILLed process releases nothing: its clients go at their expiry,
    and reads see them gone at once, though nobody swept yet; the leave is
    then returned by the next sweep, once."""
    ch, t = channel(), time.time()
    await kit.store.add(ch, who("c1", "ann"), t + 30)
    await kit.store.add(ch, who("c2", "bob"), t + 60)
    assert await kit.store.sweep(ch, t + 29.9) == []
    assert await kit.two.presence.counts(ch, t + 30) == (1, 1)
    page = await kit.two.presence.page(ch, None, 10, t + 30)
    assert page.members == [Member("bob", None, 1)]
    assert await kit.store.sweep(ch, t + 30) == ["ann"]
    assert await kit.two.presence.sweep(ch, t + 31) == []


async def test_heartbeats_extend_only_present_clients(kit: Kit) -> None:
    ch, other, t = channel(), channel(), time.time()
    await kit.store.add(ch, who("c1", "ann"), t + 30)
    await kit.store.add(ch, who("c2", "bob"), t + 30)
    await kit.store.add(other, who("c3", "cy"), t + 30)
    await kit.store.remove(ch, ["c2"])
    await kit.store.heartbeat({ch: ["c1", "c2"], other: ["c3"], channel(): ["c9"]}, t + 60)
    assert await kit.store.sweep(ch, t + 45) == []
    assert await kit.store.sweep(other, t + 45) == []
    assert await kit.store.counts(ch, t + 45) == (1, 1)  # c2 stayed gone
    await kit.store.heartbeat({ch: ["c1"]}, t + 40)  # never shortens
    assert await kit.store.sweep(ch, t + 50) == []
    assert await kit.store.sweep(ch, t + 60) == ["ann"]
    assert await kit.store.sweep(other, t + 60) == ["cy"]


async def test_a_leave_found_by_a_read_is_cancelled_by_a_return(kit: Kit) -> None:
    ch, t = channel(), time.time()
    await kit.store.add(ch, who("c1", "ann"), t + 5)
    assert await kit.store.counts(ch, t + 6) == (0, 0)  # ann is gone for readers
    assert await kit.store.add(ch, who("c2", "ann"), t + 30) is False  # nobody saw her leave
    assert await kit.store.sweep(ch, t + 7) == []
    assert await kit.store.counts(ch, t + 7) == (1, 1)


async def test_a_client_that_changes_user_makes_the_old_user_leave(kit: Kit) -> None:
    ch, t = channel(), time.time()
    await kit.store.add(ch, who("c1", "ann"), t + 30)
    assert await kit.store.add(ch, who("c1", "bob"), t + 30) is True
    assert await kit.store.counts(ch, t) == (1, 1)
    assert await kit.store.sweep(ch, t) == ["ann"]
    assert await kit.store.add(ch, who("c1"), t + 30) is False  # now anonymous
    assert await kit.store.counts(ch, t) == (1, 0)
    assert await kit.store.sweep(ch, t) == ["bob"]


async def test_concurrent_sweepers_never_return_a_leave_twice(kit: Kit) -> None:
    ch, t = channel(), time.time()
    for round_ in range(40):
        users = [f"u{round_}-{n}" for n in range(25)]
        await asyncio.gather(
            *(kit.store.add(ch, who(f"c-{u}-{k}", u), t + 1 + k) for u in users for k in (0, 1))
        )
        # Both processes sweep (and read) at once, in steps, as their sweepers would.
        got = await asyncio.gather(
            *(
                store.sweep(ch, t + step) if n % 3 else store.counts(ch, t + step)
                for step in (1, 1.5, 2, 2, 3)
                for n, store in enumerate((kit.one.presence, kit.two.presence, kit.store))
            )
        )
        leaves = [user for answer in got if isinstance(answer, list) for user in answer]
        leaves += await kit.two.presence.sweep(ch, t + 3)
        assert sorted(leaves) == sorted(users)


async def test_remove_for_shutdown_leaves_at_once(kit: Kit) -> None:
    ch, t = channel(), time.time()
    await kit.store.add(ch, who("c1", "ann"), t + 30)
    await kit.store.add(ch, who("c2", "ann"), t + 30)
    await kit.store.add(ch, who("c3", "bob"), t + 30)
    await kit.store.add(ch, who("c4"), t + 30)
    assert await kit.store.remove(ch, ["c1", "c3", "c4", "nobody"]) == ["bob"]
    assert await kit.two.presence.counts(ch, t) == (1, 1)
    assert await kit.two.presence.remove(ch, ["c2"]) == ["ann"]
    assert await kit.store.counts(ch, t) == (0, 0)
    assert await kit.store.remove(ch, ["c2"]) == []
    assert await kit.store.sweep(ch, t + 31) == []


async def test_info_is_stored_and_returned(kit: Kit) -> None:
    ch, t = channel(), time.time()
    info = {"name": "Ann", "tags": ["a", "b"], "age": 3, "ok": True, "x": None, "é": "✓"}
    await kit.store.add(ch, who("c1", "ann", info), t + 30)
    await kit.store.add(ch, who("c2", "bob", {}), t + 30)
    await kit.store.add(ch, who("c3", "cy"), t + 30)
    page = await kit.two.presence.page(ch, None, 10, t)
    assert page.members == [Member("ann", info, 1), Member("bob", {}, 1), Member("cy", None, 1)]
    await kit.store.add(ch, who("c4", "ann", {"name": "Ann B."}), t + 30)  # the latest wins
    page = await kit.two.presence.page(ch, None, 1, t)
    assert page.members == [Member("ann", {"name": "Ann B."}, 2)]
    assert page.next == "ann"


async def test_paging_ten_thousand_users(kit: Kit) -> None:
    ch, t = channel(), time.time()
    users = [f"user{n:05d}" for n in range(9_996)] + ["Zed", "é", "Ω", "😀"]
    for start in range(0, len(users), 50):
        await asyncio.gather(
            *(kit.store.add(ch, who("c-" + u, u), t + 30) for u in users[start : start + 50])
        )
    await kit.store.add(ch, who("c-extra", "user00007"), t + 30)
    assert await kit.two.presence.counts(ch, t) == (10_001, 10_000)
    seen: list[Member] = []
    after: str | None = None
    for _ in range(11):
        page = await kit.two.presence.page(ch, after, 1000, t)
        assert (page.clients, page.users) == (10_001, 10_000)
        assert len(page.members) == 1000
        seen += page.members
        after = page.next
        if after is None:
            break
        assert after == page.members[-1].user
    assert [m.user for m in seen] == sorted(users)  # code point order, no duplicates
    assert {m.user: m.clients for m in seen}["user00007"] == 2
    assert (await kit.store.page(ch, "😀", 5, t)).members == []


async def test_presence_events_arrive_in_order_with_publications(kit: Kit) -> None:
    ch = channel()
    got: list[Publication | PresenceEvent] = []
    await kit.two.subscribe(ch, got.append)
    event = PresenceEvent(ch, (Member("ann", {"name": "Ann"}, 1), Member("bo", None, 1)), ("cy",))
    kit.one.publish_soon(ch, {"n": 1})  # queued, not yet stored on Redis
    kit.one.publish_presence(event)
    kit.one.publish_presence(PresenceEvent(ch, (), ("ann",)))
    await kit.one.publish(ch, {"n": 2})
    await eventually(lambda: len(got) >= 4, timeout=5)
    assert [type(x) for x in got] == [Publication, PresenceEvent, PresenceEvent, Publication]
    assert got[1] == event
    assert got[2] == PresenceEvent(ch, (), ("ann",))
    first, last = got[0], got[3]
    assert isinstance(first, Publication) and isinstance(last, Publication)
    assert (first.offset, last.offset) == (1, 2)
    await kit.two.unsubscribe(ch, got.append)


async def test_thousands_expiring_at_once_are_all_swept_once(kit: Kit) -> None:
    """A killed process's 2,500 clients: Redis removes at most 1,000 per
    script call, and reads and sweeps call again until none is left."""
    ch, t = channel(), time.time()
    users = [f"u{n:04d}" for n in range(3_000)]
    for start in range(0, len(users), 50):
        await asyncio.gather(
            *(
                kit.store.add(ch, who("c-" + u, u), t + (30 if n % 6 else 60))
                for n, u in enumerate(users[start : start + 50], start)
            )
        )
    assert await kit.two.presence.counts(ch, t + 30) == (500, 500)
    await kit.store.add(ch, who("c-x", "u0001"), t + 60)  # back before anybody said so
    page = await kit.store.page(ch, None, 1000, t + 30)
    assert [m.user for m in page.members] == sorted(["u0001", *users[0::6]])
    one, two = await asyncio.gather(
        kit.one.presence.sweep(ch, t + 30), kit.two.presence.sweep(ch, t + 30)
    )
    gone = sorted(u for n, u in enumerate(users) if n % 6 and n != 1)
    assert sorted(one + two) == gone


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_a_page_size_out_of_range_is_refused(kit: Kit, limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be 1 to 1000"):
        await kit.store.page(channel(), None, limit, time.time())


async def test_user_ids_are_any_string(kit: Kit) -> None:
    """Lone surrogates included (a ``sub`` claim's JSON may hold one): they
    page in code point order, and leave and travel like any other."""
    ch, t = channel(), time.time()
    users = ["\ud800", "\udfff", "\ud7ff", "\ue000", "a\ud83d", "😀", " ", "ü"]
    for n, user in enumerate(users):
        assert await kit.store.add(ch, who(f"c{n}", user, {"u": user}), t + 30) is True
    page = await kit.two.presence.page(ch, None, 1000, t)
    assert [m.user for m in page.members] == sorted(users)
    assert [m.info for m in page.members] == [{"u": u} for u in sorted(users)]
    assert [m.user for m in (await kit.store.page(ch, "\ud800", 1000, t)).members] == sorted(
        u for u in users if u > "\ud800"
    )
    got: list[Publication | PresenceEvent] = []
    await kit.two.subscribe(ch, got.append)
    event = PresenceEvent(ch, (Member("\udfff", {"u": "\udfff"}, 1),), ("\ud800",))
    kit.one.publish_presence(event)
    await eventually(lambda: len(got) >= 1)
    assert got == [event]
    await kit.two.unsubscribe(ch, got.append)
    assert sorted(await kit.store.sweep(ch, t + 30)) == sorted(users)


async def test_removing_thousands_at_shutdown(kit: Kit) -> None:
    ch, t = channel(), time.time()
    users = [f"u{n:04d}" for n in range(2_500)]
    for start in range(0, len(users), 50):
        await asyncio.gather(
            *(kit.store.add(ch, who("c-" + u, u), t + 30) for u in users[start : start + 50])
        )
    await kit.store.add(ch, who("c-keep", "u0003"), t + 30)
    left = await kit.store.remove(ch, ["c-" + u for u in users])
    assert sorted(left) == [u for u in users if u != "u0003"]
    assert await kit.store.counts(ch, t) == (1, 1)


async def test_a_batch_applies_adds_then_releases_per_channel(kit: Kit) -> None:
    one, two, t = channel(), channel(), time.time()
    assert await kit.store.add(one, who("c0", "ann"), t + 30)
    adds = [
        PresenceAdd(one, who("c1", "ann"), t + 30),  # ann is here already: no join
        PresenceAdd(one, who("c2", "bob", {"n": 1}), t + 30),
        PresenceAdd(one, who("c3", "bob"), t + 30),  # bob's second client
        PresenceAdd(two, who("c4", "cy"), t + 30),
        PresenceAdd(two, who("a1"), t + 30),  # anonymous: never a join
    ]
    releases = [PresenceRelease(two, "c4", t + 5), PresenceRelease(one, "gone", t + 5)]
    done = await kit.store.apply(adds, releases)
    assert done == {one: [False, True, False], two: [True, False]}
    assert await kit.two.presence.counts(one, t) == (4, 2)
    page = await kit.two.presence.page(one, None, 10, t)
    assert page.members == [Member("ann", None, 2), Member("bob", None, 2)]  # bob's info: c3's
    assert await kit.two.presence.sweep(two, t + 6) == ["cy"]  # released in the batch
    assert await kit.store.counts(two, t + 6) == (1, 0)
    assert await kit.store.apply([], []) == {}

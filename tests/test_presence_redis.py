"""What only the Redis presence store has: its keys and their expiry, its
pub/sub encoding of presence events, and bad input on pub/sub."""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from redis.crc import key_slot

from redis_servers import RedisServer, shared_redis
from support import eventually
from torchannels import Publication
from torchannels.brokers import Member, PresenceEvent, RedisBroker
from torchannels.brokers.presence_redis import MARGIN, decode_event, encode_event
from torchannels.identity import Identity, User


@pytest.fixture
async def broker() -> AsyncIterator[RedisBroker]:
    url = shared_redis()
    prefix = "test-" + secrets.token_hex(6)
    made = RedisBroker.from_url(url, prefix=prefix)
    yield made
    await made.close()
    admin = redis.asyncio.Redis.from_url(url)
    keys = [key async for key in admin.scan_iter(match=f"{{{prefix}:*")]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()


@pytest.fixture
async def admin() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(shared_redis())
    yield client
    await client.aclose()


async def expiries(admin: redis.asyncio.Redis, broker: RedisBroker, channel: str) -> list[int]:
    """The PTTL of each presence key of ``channel`` (-2: no such key)."""
    return [await admin.pttl(key) for key in broker.presence.keys(channel)]


async def test_every_key_shares_the_hash_tag_and_expires_after_the_last_client(
    broker: RedisBroker, admin: redis.asyncio.Redis
) -> None:
    ch, t = "room:1", time.time()
    keys = broker.presence.keys(ch)
    assert all(key.startswith(f"{{{broker.prefix}:{ch}}}:p") for key in keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1
    await broker.presence.add(ch, Identity("c1", User("ann", {"a": 1}), "sse", t), t + 30)
    await broker.presence.add(ch, Identity("c2", None, "sse", t), t + 90)
    await broker.presence.counts(ch, t + 31)  # ann's leave pending: the :pl set exists
    ttls = await expiries(admin, broker, ch)
    present = [ttl for ttl in ttls if ttl != -2]
    assert len(present) == 2  # :pc and :pl (:pd, :pu, :pn, :pi are empty, so gone)
    assert all((90 - 5) * 1000 < ttl <= (90 + MARGIN) * 1000 for ttl in present)
    await broker.presence.heartbeat({ch: ["c2"]}, t + 300)
    assert all(ttl > (300 - 5) * 1000 for ttl in await expiries(admin, broker, ch) if ttl != -2)
    assert await broker.presence.remove(ch, ["c2"]) == ["ann"]
    assert await expiries(admin, broker, ch) == [-2] * 6  # nothing left behind


async def test_abandoned_presence_leaves_no_key(
    broker: RedisBroker, admin: redis.asyncio.Redis
) -> None:
    """A process killed with clients present: nobody sweeps, and every key
    still goes a margin after the last expiry."""
    ch, t = "room:2", time.time()
    await broker.presence.add(ch, Identity("c1", User("ann", {"x": 1}), "websocket", t), t + 30)
    await broker.presence.release(ch, "c1", t + 5)
    ttls = await expiries(admin, broker, ch)
    assert ttls[5] == -2  # no pending leaves
    assert all(0 < ttl <= (5 + MARGIN) * 1000 for ttl in ttls[:5])


ROUND_TRIPS: list[tuple[PresenceEvent, bytes]] = [
    (PresenceEvent("c", (), ()), b'P{"j":[],"l":[]}'),
    (PresenceEvent("c", (Member("ann", None, 1),), ()), b'P{"j":[["ann",null]],"l":[]}'),
    (
        PresenceEvent("c", (Member("é", {"n": "Ω"}, 1),), ("bob", "😀")),
        'P{"j":[["é",{"n":"Ω"}]],"l":["bob","😀"]}'.encode(),
    ),
]


@pytest.mark.parametrize(("event", "payload"), ROUND_TRIPS)
def test_presence_events_encode_to_exact_bytes_and_back(
    event: PresenceEvent, payload: bytes
) -> None:
    assert encode_event(event) == payload
    assert decode_event("c", payload) == event


@pytest.mark.parametrize(
    "payload",
    [b"P", b"P{", b"P[]", b'P{"j":[]}', b'P{"j":[["",null]],"l":[]}', b'P{"j":[[1,null]],"l":[]}',
     b'P{"j":[["a",[]]],"l":[]}', b'P{"j":[["a"]],"l":[]}', b'P{"j":[],"l":[7]}', b"P\xff"],
)  # fmt: skip
def test_a_malformed_presence_event_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="malformed presence event"):
        decode_event("c", payload)


async def test_garbage_on_pub_sub_is_logged_and_delivery_goes_on(
    broker: RedisBroker, admin: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    ch = "room:3"
    got: list[Any] = []
    await broker.subscribe(ch, got.append)
    name = f"{{{broker.prefix}:{ch}}}:p"
    with caplog.at_level(logging.ERROR, logger="torchannels.broker"):
        await admin.publish(name, b'P{"j":[["a"]]}')
        await admin.publish(name, b"not a publication")
        broker.publish_presence(PresenceEvent(ch, (), ("ann",)))
        await broker.publish(ch, {"n": 1})
        await eventually(lambda: len(got) >= 2)
    assert got[0] == PresenceEvent(ch, (), ("ann",))
    assert isinstance(got[1], Publication) and got[1].offset == 1
    malformed = [r for r in caplog.records if "malformed message" in r.getMessage()]
    assert len(malformed) == 2 and not any(r.exc_info for r in malformed)


async def test_a_presence_event_for_a_bad_channel_is_logged_not_raised(
    broker: RedisBroker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="torchannels.broker"):
        broker.publish_presence(PresenceEvent("a{b}", (), ("ann",)))
    assert any("presence event of 'a{b}' not sent" in r.getMessage() for r in caplog.records)


def at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def test_an_event_never_overtakes_a_publish_on_a_redis_without_the_scripts(
    tmp_path: Path,
) -> None:
    """A fresh (or restarted, or SCRIPT FLUSHed) Redis lacks the publish
    scripts: a publish is then sent again after loading them, and an event
    queued behind it must not go out first."""
    own = RedisServer(tmp_path / "redis")
    own.start()
    try:
        for round_ in range(3):
            one = RedisBroker.from_url(own.url, prefix="p")
            two = RedisBroker.from_url(own.url, prefix="p")
            got: list[Any] = []
            ch = f"room:{round_}"
            await two.subscribe(ch, got.append)
            one.publish_soon(ch, {"n": 1})
            one.publish_presence(PresenceEvent(ch, (Member("ann", None, 1),), ()))
            await one.publish(ch, {"n": 2})
            await eventually(functools.partial(at_least, got, 3))
            assert [type(x) for x in got] == [Publication, PresenceEvent, Publication]
            await one.close()
            await two.close()
            own.cli("SCRIPT", "FLUSH")  # our own server: the next round starts without them
    finally:
        own.kill()

"""The Redis broker's history store on the shared Redis: holes, keys that
reads must not create, and positions kept longer than history.

Each test uses its own random key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio

from redis_servers import shared_redis
from support import Server, content, receive
from torchannels import Hub, Settings
from torchannels.brokers import HistoryPolicy, RedisBroker
from torchannels.brokers.base import NO_EPOCH
from torchannels.errors import RESET_TRIMMED
from torchannels.frames import Publication
from torchannels.protocol import Position


class Redis:
    """Brokers on one key prefix of the shared Redis, and an admin client."""

    def __init__(self) -> None:
        self.url = shared_redis()
        self.prefix = "t" + secrets.token_hex(5)
        self.admin = redis.asyncio.Redis.from_url(self.url)
        self.brokers: list[RedisBroker] = []

    def broker(self, **options: Any) -> RedisBroker:
        broker = RedisBroker.from_url(self.url, prefix=self.prefix, **options)
        self.brokers.append(broker)
        return broker

    def key(self, channel: str, kind: str) -> str:
        return f"{{{self.prefix}:{channel}}}:{kind}"

    async def keys(self) -> list[str]:
        found = self.admin.scan_iter(match=f"{{{self.prefix}:*", count=1000)
        return sorted([k.decode() async for k in found])

    async def close(self) -> None:
        for broker in self.brokers:
            await broker.close()
        keys = await self.keys()
        if keys:
            await self.admin.delete(*keys)
        await self.admin.aclose()


@pytest.fixture
async def rd() -> AsyncIterator[Redis]:
    made = Redis()
    yield made
    await made.close()


def offsets(pubs: list[Publication]) -> list[int]:
    return [p.offset for p in pubs]


# -- holes ------------------------------------------------------------------------


async def test_a_process_keeping_no_history_leaves_no_hole(rd: Redis) -> None:
    """The review's rolling deploy: A keeps 100, B keeps none, on one Redis."""
    a = rd.broker(history=HistoryPolicy(size=100))
    b = rd.broker(history=HistoryPolicy(size=0))
    epoch = (await a.publish("c", {"n": 1})).epoch
    await a.publish("c", {"n": 2})
    await a.publish("c", {"n": 3})
    for n in (4, 5, 6):
        await b.publish("c", {"n": n})
    await a.publish("c", {"n": 7})
    for reader in (a, b):
        resumed = await reader.read("c", Position(epoch, 2))
        assert resumed.reset == RESET_TRIMMED
        assert resumed.position == Position(epoch, 6)
        assert offsets(resumed.publications) == [7]
        fresh = await reader.read("c", None)
        assert fresh.reset is None and fresh.position == Position(epoch, 6)
        assert offsets(fresh.publications) == [7]


async def test_size_zero_deletes_the_stream(rd: Redis) -> None:
    a = rd.broker(history=HistoryPolicy(size=100))
    b = rd.broker(history=HistoryPolicy(size=0))
    await a.publish_many([("c", {"n": n}) for n in (1, 2)])
    assert await rd.admin.exists(rd.key("c", "h")) == 1
    await b.publish_many([("c", {"n": 3}), ("d", {"n": 1})])  # one PUBLISH_MANY call
    assert await rd.admin.exists(rd.key("c", "h")) == 0
    await a.publish("c", {"n": 4})
    await b.publish("c", {"n": 5})  # one PUBLISH call
    assert await rd.admin.exists(rd.key("c", "h")) == 0


async def test_a_hole_in_the_stream_is_served_as_a_reset(rd: Redis) -> None:
    """A hole that a writer left (an older version of the broker skipped the
    stream when it kept no history): every read checks contiguity."""
    broker = rd.broker(history=HistoryPolicy(size=100))
    pubs = [await broker.publish("c", {"n": n}) for n in range(1, 8)]
    epoch = pubs[0].epoch
    await rd.admin.xdel(rd.key("c", "h"), "0-4", "0-5")
    behind = await broker.read("c", Position(epoch, 2))
    assert behind.reset == RESET_TRIMMED
    assert behind.position == Position(epoch, 5)
    assert offsets(behind.publications) == [6, 7]
    at_hole = await broker.read("c", Position(epoch, 5))
    assert at_hole.reset is None and offsets(at_hole.publications) == [6, 7]
    fresh = await broker.read("c", None)
    assert fresh.reset is None and fresh.position == Position(epoch, 5)
    assert offsets(fresh.publications) == [6, 7]
    # the newest ones gone: nothing reaches the top, so nothing is served
    await rd.admin.xdel(rd.key("c", "h"), "0-7")
    tail = await broker.read("c", Position(epoch, 5))
    assert tail.reset == RESET_TRIMMED and tail.position == Position(epoch, 7)
    assert tail.publications == []


async def test_a_state_a_hole_made_stale_is_not_served(rd: Redis) -> None:
    broker = rd.broker(history=HistoryPolicy(size=100))
    pubs = [await broker.publish("c", {"n": n}) for n in range(1, 3)]
    await broker.set_state("c", [{"s": 1}])
    for n in range(3, 6):
        await broker.publish("c", {"n": n})
    await rd.admin.xdel(rd.key("c", "h"), "0-3")
    fresh = await broker.read("c", None)
    assert fresh.reset is None and not fresh.state
    assert fresh.position == Position(pubs[0].epoch, 3)
    assert offsets(fresh.publications) == [4, 5]


# -- reads create nothing ------------------------------------------------------------


async def test_reads_polls_and_info_of_unpublished_channels_create_no_key(rd: Redis) -> None:
    broker = rd.broker()
    await broker.publish("real", {"n": 1})
    before = await rd.keys()
    for i in range(100):
        channel = f"ghost:{i}"
        await broker.read(channel, None)
        await broker.read(channel, Position("abcd1234", 3))
        await broker.info(channel)
    await broker.positions([f"ghost:{i}" for i in range(100)])
    assert await rd.keys() == before
    assert await broker.channels() == ["real"]


# -- positions outlive history -----------------------------------------------------


async def test_a_caught_up_client_resumes_after_history_expired(rd: Redis) -> None:
    """Real expiry in Redis: the history TTL passes (its keys are gone), the
    meta TTL has not."""
    broker = rd.broker(history=HistoryPolicy(size=100, ttl=0.2))
    pubs = [await broker.publish("c", {"n": n}) for n in range(1, 4)]
    await broker.set_state("c", [{"s": 1}])
    epoch = pubs[0].epoch
    for _ in range(500):  # bounded: until Redis expired the history and state
        if await rd.admin.exists(rd.key("c", "h"), rd.key("c", "s")) == 0:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the history never expired")
    assert await rd.keys() == [rd.key("c", "m")]
    at_top = await broker.read("c", Position(epoch, 3))
    assert at_top.reset is None and at_top.publications == []
    behind = await broker.read("c", Position(epoch, 2))
    assert behind.reset == RESET_TRIMMED and behind.position == Position(epoch, 3)
    assert await broker.channels() == []  # not listed past its history TTL
    nxt = await broker.publish("c", {"n": 4})
    assert nxt.position == Position(epoch, 4)
    assert offsets((await broker.read("c", Position(epoch, 3))).publications) == [4]
    assert await broker.channels() == ["c"]


# -- through a server -------------------------------------------------------------


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


async def test_a_subscriber_of_an_empty_channel_gets_its_first_message(
    rd: Redis, make_server: Callable[..., Server]
) -> None:
    broker = rd.broker()
    server = make_server(hub_=Hub(broker, Settings(ping_interval=0.5)))
    joined = await receive(server, "stream", ["c"], until=lambda fs: "subscribed" in kinds(fs),
                           keep_open=True)  # fmt: skip
    assert joined.frames[0]["epoch"] == NO_EPOCH and joined.frames[0]["offset"] == 0
    assert await rd.keys() == []
    assert joined.stream is not None
    pub = await broker.publish("c", {"n": 1})
    frames = await joined.stream.wait_frames(lambda fs: "message" in kinds(content(fs)))
    assert kinds(content(frames)) == ["subscribed", "message"]  # no reset
    assert content(frames)[1]["data"]["offset"] == pub.offset
    joined.stream.close()


async def test_a_caught_up_client_comes_back_after_a_quiet_period(
    rd: Redis, make_server: Callable[..., Server]
) -> None:
    broker = rd.broker(history=HistoryPolicy(size=100, ttl=0.2))
    server = make_server(hub_=Hub(broker, Settings(ping_interval=0.5)))
    first = await receive(server, "poll", ["c"])
    for n in range(1, 4):
        await broker.publish("c", {"n": n})
    got = await receive(server, "poll", ["c"], cursor=first.cursor)
    assert [f["data"]["n"] for f in got.frames if f["type"] == "message"] == [1, 2, 3]
    for _ in range(500):  # bounded: until Redis expired the history
        if await rd.admin.exists(rd.key("c", "h")) == 0:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the history never expired")
    back = await receive(server, "poll", ["c"], cursor=got.cursor)
    assert back.frames == [] and back.cursor == got.cursor  # nothing to do, no reset

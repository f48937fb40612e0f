"""The Broker contract, run against every broker.

Only the public Broker interface is used (the async methods plus
``configure_channel``/``policy_for``), so a new broker joins by adding a
factory to ``BROKER_FACTORIES``. A factory gets the default history policy
(and options every broker's constructor takes, such as
``idempotency_window``) and returns a :class:`Kit` whose ``advance`` moves
the broker's notion of time.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio

from redis_servers import shared_redis
from support import eventually
from torchannels import Broker, HistoryPolicy, MemoryBroker, Position, Publication
from torchannels.brokers import RedisBroker
from torchannels.brokers.base import ReadResult, check_unbroken
from torchannels.errors import RESET_EPOCH, RESET_INVALID, RESET_TRIMMED, ChannelLimitError


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Kit:
    """A broker under test and the knobs the contract needs."""

    broker: Broker
    advance: Callable[[float], Awaitable[None]]
    #: True when ``ts`` stamps come from the clock the kit drives.
    exact_clock: Callable[[], float] | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def memory_factory(policy: HistoryPolicy | None, **options: Any) -> Kit:
    clock = FakeClock()

    async def advance(seconds: float) -> None:
        clock.now += seconds

    return Kit(MemoryBroker(policy, clock=clock, **options), advance, exact_clock=clock)


async def redis_factory(policy: HistoryPolicy | None, **options: Any) -> Kit:
    """The shared Redis, under a random key prefix deleted afterwards.

    Time moves by the broker's clock (``ts`` stamps, history age) and by
    shortening every key's expiry (PEXPIRE) by as much: Redis forgets an
    idle channel by key expiry, and the kit lets that expiry come sooner.
    """
    url = shared_redis()
    clock = FakeClock()
    prefix = "test-" + secrets.token_hex(6)
    broker = RedisBroker.from_url(url, prefix=prefix, history=policy, clock=clock, **options)
    admin = redis.asyncio.Redis.from_url(url)
    pattern = f"{{{prefix}:*"

    async def advance(seconds: float) -> None:
        clock.now += seconds
        elapsed = round(seconds * 1000)
        async for key in admin.scan_iter(match=pattern):
            left = await admin.pttl(key)
            if left > elapsed:
                await admin.pexpire(key, left - elapsed)
            elif left >= 0:
                await admin.delete(key)

    async def cleanup() -> None:
        keys = [key async for key in admin.scan_iter(match=pattern)]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()

    return Kit(broker, advance, exact_clock=clock, closers=[cleanup])


BROKER_FACTORIES: dict[str, Callable[..., Awaitable[Kit]]] = {
    "memory": memory_factory,
    "redis": redis_factory,
}

MakeKit = Callable[..., Awaitable[Kit]]


@pytest.fixture(params=sorted(BROKER_FACTORIES))
async def make_kit(request: pytest.FixtureRequest) -> AsyncIterator[MakeKit]:
    factory = BROKER_FACTORIES[request.param]
    kits: list[Kit] = []

    async def make(policy: HistoryPolicy | None = None, **options: Any) -> Kit:
        kit = await factory(policy, **options)
        kits.append(kit)
        return kit

    yield make
    for kit in kits:
        await kit.broker.close()
        for close in kit.closers:
            await close()


@pytest.fixture
async def kit(make_kit: MakeKit) -> Kit:
    return await make_kit()


def other_epoch(epoch: str) -> str:
    """A valid epoch that differs from ``epoch``."""
    return ("z" if epoch[0] != "z" else "y") + epoch[1:]


def offsets(pubs: list[Publication]) -> list[int]:
    return [p.offset for p in pubs]


def texts(pubs: list[Publication]) -> list[Any]:
    return [p.data.get("n") for p in pubs]


async def publish_n(broker: Broker, channel: str, numbers: range) -> list[Publication]:
    return [await broker.publish(channel, {"n": n}) for n in numbers]


class TestBrokerContract:
    # -- publish ------------------------------------------------------------

    async def test_publish_stamps_a_copy(self, kit: Kit) -> None:
        message = {"text": "hi", "nested": {"k": [1, 2]}}
        pub = await kit.broker.publish("news", message)
        assert message == {"text": "hi", "nested": {"k": [1, 2]}}
        assert pub.data is not message
        assert set(pub.data) == {"text", "nested", "channel", "ts", "epoch", "offset"}
        assert pub.data["channel"] == pub.channel == "news"
        assert pub.data["offset"] == pub.offset == 1
        assert pub.data["epoch"] == pub.epoch
        assert isinstance(pub.data["ts"], float) and pub.data["ts"] == pub.ts
        if kit.exact_clock is not None:
            assert pub.ts == kit.exact_clock()
        assert pub.position == Position(pub.epoch, 1)
        assert json.loads(pub.payload) == pub.data

    async def test_offsets_count_per_channel(self, kit: Kit) -> None:
        a = await publish_n(kit.broker, "a", range(3))
        b = await publish_n(kit.broker, "b", range(2))
        a += await publish_n(kit.broker, "a", range(3, 4))
        assert offsets(a) == [1, 2, 3, 4]
        assert offsets(b) == [1, 2]
        assert len({p.epoch for p in a}) == 1
        assert len({p.epoch for p in b}) == 1
        ts = [p.ts for p in a]
        assert ts == sorted(ts)

    async def test_message_frame_is_built_once_and_shared(self, kit: Kit) -> None:
        pub = await kit.broker.publish("news", {"n": 1})
        frame = pub.frame
        assert frame is pub.frame
        assert json.loads(frame.envelope) == {"type": "message", "data": pub.data}
        assert json.loads(frame.sse_data) == pub.data
        assert frame.channel == "news" and frame.position == pub.position

    # -- read(None): a fresh join ------------------------------------------

    async def test_read_fresh_unknown_channel(self, kit: Kit) -> None:
        result = await kit.broker.read("nobody-here", None)
        assert result.position.offset == 0
        assert result.publications == []
        assert not result.state
        assert result.reset is None
        info = await kit.broker.info("nobody-here")
        assert info.position.offset == 0 and info.history_length == 0
        assert not info.has_state

    async def test_read_fresh_without_state_gets_history(self, kit: Kit) -> None:
        pubs = await publish_n(kit.broker, "news", range(1, 4))
        result = await kit.broker.read("news", None)
        assert result.position == Position(pubs[0].epoch, 0)
        assert offsets(result.publications) == [1, 2, 3]
        assert texts(result.publications) == [1, 2, 3]
        assert not result.state
        assert result.reset is None

    async def test_read_fresh_with_state_gets_state_then_later(self, kit: Kit) -> None:
        first = await publish_n(kit.broker, "game", range(1, 3))
        at = await kit.broker.set_state("game", [{"board": "x"}, {"board": "xo"}])
        assert at == Position(first[0].epoch, 2)
        later = await publish_n(kit.broker, "game", range(3, 5))
        result = await kit.broker.read("game", None)
        assert result.reset is None
        assert result.position == at
        assert result.state is not None
        assert [s.data["board"] for s in result.state] == ["x", "xo"]
        for s in result.state:
            assert s.data["channel"] == "game"
            assert s.position == at
            assert json.loads(s.payload) == s.data
        assert offsets(result.publications) == offsets(later) == [3, 4]

    async def test_empty_state_hides_earlier_history(self, kit: Kit) -> None:
        await publish_n(kit.broker, "c", range(1, 4))
        at = await kit.broker.set_state("c", [])
        result = await kit.broker.read("c", None)
        assert result.position == at and at.offset == 3
        assert result.state is not None and list(result.state) == []
        assert result.publications == []

    async def test_latest_state_wins(self, kit: Kit) -> None:
        await kit.broker.set_state("c", [{"v": 1}])
        await publish_n(kit.broker, "c", range(1, 3))
        at = await kit.broker.set_state("c", [{"v": 2}])
        result = await kit.broker.read("c", None)
        assert result.position == at and at.offset == 2
        assert result.state is not None
        assert [s.data["v"] for s in result.state] == [2]
        assert result.publications == []

    async def test_state_on_a_channel_never_published(self, kit: Kit) -> None:
        at = await kit.broker.set_state("fresh", [{"v": 1}])
        assert at.offset == 0
        result = await kit.broker.read("fresh", None)
        assert result.position == at
        assert result.state is not None and [s.data["v"] for s in result.state] == [1]
        pub = await kit.broker.publish("fresh", {"n": 1})
        assert pub.offset == 1 and pub.epoch == at.epoch

    # -- read(since): resume --------------------------------------------------

    @pytest.mark.parametrize(
        ("since", "expected"), [(0, [1, 2, 3, 4, 5]), (2, [3, 4, 5]), (4, [5]), (5, [])]
    )
    async def test_read_since_position(self, kit: Kit, since: int, expected: list[int]) -> None:
        pubs = await publish_n(kit.broker, "news", range(1, 6))
        pos = Position(pubs[0].epoch, since)
        result = await kit.broker.read("news", pos)
        assert result.reset is None
        assert result.position == pos
        assert offsets(result.publications) == expected
        assert texts(result.publications) == expected
        assert not result.state

    async def test_resume_ignores_state(self, kit: Kit) -> None:
        pubs = await publish_n(kit.broker, "news", range(1, 4))
        await kit.broker.set_state("news", [{"summary": True}])
        await publish_n(kit.broker, "news", range(4, 5))
        result = await kit.broker.read("news", Position(pubs[0].epoch, 1))
        assert result.reset is None
        assert not result.state
        assert offsets(result.publications) == [2, 3, 4]

    # -- read(since): resets --------------------------------------------------

    async def test_reset_on_epoch_mismatch(self, kit: Kit) -> None:
        pubs = await publish_n(kit.broker, "news", range(1, 4))
        await kit.broker.set_state("news", [{"s": 1}])
        await publish_n(kit.broker, "news", range(4, 5))
        stale = Position(other_epoch(pubs[0].epoch), 2)
        result = await kit.broker.read("news", stale)
        assert result.reset == RESET_EPOCH
        assert result.position == Position(pubs[0].epoch, 3)  # where the state stands
        assert result.state is not None and [s.data["s"] for s in result.state] == [1]
        assert offsets(result.publications) == [4]

    async def test_reset_on_epoch_mismatch_without_state(self, kit: Kit) -> None:
        pubs = await publish_n(kit.broker, "news", range(1, 3))
        result = await kit.broker.read("news", Position(other_epoch(pubs[0].epoch), 2))
        assert result.reset == RESET_EPOCH
        assert result.position == Position(pubs[0].epoch, 0)
        assert offsets(result.publications) == [1, 2]

    @pytest.mark.parametrize("ahead", [4, 5, 10**17])
    async def test_reset_on_position_ahead(self, kit: Kit, ahead: int) -> None:
        pubs = await publish_n(kit.broker, "news", range(1, 4))
        result = await kit.broker.read("news", Position(pubs[0].epoch, ahead))
        assert result.reset == RESET_INVALID
        assert result.position == Position(pubs[0].epoch, 0)
        assert offsets(result.publications) == [1, 2, 3]

    async def test_reset_on_position_ahead_of_an_empty_channel(self, kit: Kit) -> None:
        info = await kit.broker.info("empty")
        result = await kit.broker.read("empty", Position(info.position.epoch, 1))
        assert result.reset == RESET_INVALID
        assert result.position.offset == 0
        assert result.publications == []

    async def test_reset_on_history_trimmed_by_count(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=3))
        pubs = await publish_n(kit.broker, "news", range(1, 7))
        epoch = pubs[0].epoch
        assert (await kit.broker.info("news")).history_length == 3
        ok = await kit.broker.read("news", Position(epoch, 3))  # oldest kept is 4
        assert ok.reset is None
        assert offsets(ok.publications) == [4, 5, 6]
        for gone in (0, 1, 2):
            result = await kit.broker.read("news", Position(epoch, gone))
            assert result.reset == RESET_TRIMMED
            assert result.position == Position(epoch, 3)
            assert offsets(result.publications) == [4, 5, 6]
        fresh = await kit.broker.read("news", None)
        assert fresh.reset is None
        assert fresh.position == Position(epoch, 3)
        assert offsets(fresh.publications) == [4, 5, 6]

    async def test_trimmed_reset_brings_state(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=3))
        pubs = await publish_n(kit.broker, "news", range(1, 6))
        at = await kit.broker.set_state("news", [{"s": "now"}])
        await publish_n(kit.broker, "news", range(6, 7))
        result = await kit.broker.read("news", Position(pubs[0].epoch, 1))
        assert result.reset == RESET_TRIMMED
        assert result.position == at == Position(pubs[0].epoch, 5)
        assert result.state is not None and [s.data["s"] for s in result.state] == ["now"]
        assert offsets(result.publications) == [6]

    async def test_state_older_than_history_is_not_served(self, make_kit: MakeKit) -> None:
        # State at 3, history kept from 5: message 4 is gone, so the state can
        # no longer be brought up to date; joiners get the retained history.
        kit = await make_kit(HistoryPolicy(size=2))
        pubs = await publish_n(kit.broker, "news", range(1, 4))
        await kit.broker.set_state("news", [{"s": "at3"}])
        await publish_n(kit.broker, "news", range(4, 7))
        fresh = await kit.broker.read("news", None)
        assert fresh.state is None
        assert fresh.position == Position(pubs[0].epoch, 4)
        assert offsets(fresh.publications) == [5, 6]
        await kit.broker.set_state("news", [{"s": "at6"}])
        current = await kit.broker.read("news", None)
        assert current.state is not None and current.position.offset == 6

    async def test_reset_on_history_trimmed_by_age(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=100, ttl=10, meta_ttl=0))
        pubs = await publish_n(kit.broker, "news", range(1, 3))
        epoch = pubs[0].epoch
        await kit.advance(6)
        await publish_n(kit.broker, "news", range(3, 4))
        still = await kit.broker.read("news", Position(epoch, 0))
        assert still.reset is None
        assert offsets(still.publications) == [1, 2, 3]
        await kit.advance(6)  # 1 and 2 are now 12 s old, 3 is 6 s old
        assert (await kit.broker.info("news")).history_length == 1
        trimmed = await kit.broker.read("news", Position(epoch, 1))
        assert trimmed.reset == RESET_TRIMMED
        assert trimmed.position == Position(epoch, 2)
        assert offsets(trimmed.publications) == [3]
        ok = await kit.broker.read("news", Position(epoch, 2))
        assert ok.reset is None and offsets(ok.publications) == [3]
        await kit.advance(7)  # 3 is 13 s old too, but the channel was used 13 s ago
        at_top = await kit.broker.read("news", Position(epoch, 3))
        # idle, and no meta_ttl beyond the ttl: forgotten whole
        assert at_top.reset == RESET_EPOCH and at_top.publications == []
        assert at_top.position.epoch != epoch and at_top.position.offset == 0
        info = await kit.broker.info("news")
        assert info.history_length == 0 and info.position.offset == 0
        again = await publish_n(kit.broker, "news", range(1, 2))
        assert again[0].epoch not in (epoch, None) and again[0].offset == 1  # no reuse

    async def test_a_quiet_channel_keeps_its_position_for_meta_ttl(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=100, ttl=10, meta_ttl=60))
        pubs = await publish_n(kit.broker, "news", range(1, 4))
        await kit.broker.set_state("news", [{"s": 1}])
        epoch = pubs[0].epoch
        await kit.advance(11)  # history and state are gone, the position is kept
        at_top = await kit.broker.read("news", Position(epoch, 3))
        assert at_top.reset is None and at_top.position == Position(epoch, 3)
        assert at_top.publications == [] and not at_top.state
        behind = await kit.broker.read("news", Position(epoch, 1))
        assert behind.reset == RESET_TRIMMED and behind.position == Position(epoch, 3)
        assert behind.publications == [] and not behind.state
        fresh = await kit.broker.read("news", None)
        assert fresh.reset is None and fresh.position == Position(epoch, 3)
        assert fresh.publications == [] and not fresh.state
        info = await kit.broker.info("news")
        assert info.position == Position(epoch, 3)
        assert info.history_length == 0 and not info.has_state
        assert await kit.broker.positions(["news"]) == {"news": Position(epoch, 3)}
        assert await kit.broker.channels() == []  # listed only within its history ttl
        later = await kit.broker.publish("news", {"n": 4})
        assert later.position == Position(epoch, 4)  # the same epoch goes on
        resumed = await kit.broker.read("news", Position(epoch, 3))
        assert resumed.reset is None and offsets(resumed.publications) == [4]
        assert await kit.broker.channels() == ["news"]
        await kit.advance(61)  # past meta_ttl: forgotten whole
        gone = await kit.broker.read("news", Position(epoch, 4))
        assert gone.reset == RESET_EPOCH and gone.position.offset == 0
        assert await kit.broker.positions(["news"]) == {}
        again = await kit.broker.publish("news", {"n": 1})
        assert again.epoch != epoch and again.offset == 1

    async def test_reads_create_no_channel(self, kit: Kit) -> None:
        for _ in range(3):
            await kit.broker.read("ghost", None)
            await kit.broker.read("ghost", Position("abc", 5))
            await kit.broker.info("ghost")
        assert await kit.broker.channels() == []
        assert await kit.broker.positions(["ghost"]) == {}

    async def test_a_reader_of_an_empty_channel_resumes_after_its_first_message(
        self, kit: Kit
    ) -> None:
        joined = await kit.broker.read("quiet", None)
        assert joined.position.offset == 0 and joined.reset is None
        pub = await kit.broker.publish("quiet", {"n": 1})
        resumed = await kit.broker.read("quiet", joined.position)
        assert resumed.reset is None and offsets(resumed.publications) == [pub.offset]

    async def test_messages_older_than_ttl_go_while_the_channel_is_used(
        self, make_kit: MakeKit
    ) -> None:
        kit = await make_kit(HistoryPolicy(size=100, ttl=10))
        pubs = await publish_n(kit.broker, "news", range(1, 3))
        epoch = pubs[0].epoch
        for n in range(3, 6):  # one publish every 6 s: never idle for 10 s
            await kit.advance(6)
            await publish_n(kit.broker, "news", range(n, n + 1))
        info = await kit.broker.info("news")
        assert info.position == Position(epoch, 5) and info.history_length == 2  # 4 and 5
        behind = await kit.broker.read("news", Position(epoch, 2))
        assert behind.reset == RESET_TRIMMED
        assert behind.position == Position(epoch, 3) and offsets(behind.publications) == [4, 5]

    async def test_size_zero_keeps_no_history(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=0))
        pubs = await publish_n(kit.broker, "news", range(1, 3))
        epoch = pubs[0].epoch
        assert (await kit.broker.info("news")).history_length == 0
        assert (await kit.broker.read("news", Position(epoch, 2))).reset is None
        behind = await kit.broker.read("news", Position(epoch, 1))
        assert behind.reset == RESET_TRIMMED and behind.publications == []
        assert behind.position == Position(epoch, 2)

    # -- per-channel and prefix policies -----------------------------------

    async def test_configure_channel_exact_and_prefix(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=50, ttl=100))
        broker = kit.broker
        broker.configure_channel("chat:vip*", size=4)  # longer prefix configured first
        broker.configure_channel("chat:*", size=2)
        broker.configure_channel("chat:vip:1", size=1)
        expected = {
            "chat:a": 2,
            "chat:vipx": 4,
            "chat:vip:1": 1,
            "chat:vip:2": 4,
            "other": 6,
            "chat": 6,
        }
        for channel in expected:
            await publish_n(broker, channel, range(6))
        for channel, kept in expected.items():
            assert (await broker.info(channel)).history_length == kept, channel
            assert broker.policy_for(channel).size == (50 if kept == 6 else kept)

    async def test_configure_channel_inherits_what_it_does_not_set(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=50, ttl=100))
        broker = kit.broker
        broker.configure_channel("news*", size=3)
        broker.configure_channel("news:x", ttl=5)
        assert broker.policy_for("news:x") == HistoryPolicy(size=3, ttl=5)
        assert broker.policy_for("news:y") == HistoryPolicy(size=3, ttl=100)
        assert broker.policy_for("sport") == HistoryPolicy(size=50, ttl=100)

    async def test_channel_ttl_applies_to_that_channel_only(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=50, ttl=100))
        kit.broker.configure_channel("short", ttl=5)
        await publish_n(kit.broker, "short", range(2))
        await publish_n(kit.broker, "long", range(2))
        await kit.advance(10)
        assert (await kit.broker.info("short")).history_length == 0
        assert (await kit.broker.info("long")).history_length == 2

    # -- listeners ------------------------------------------------------------

    async def test_subscribe_delivers_new_publications(self, kit: Kit) -> None:
        got_1: list[Any] = []
        got_2: list[Any] = []
        await kit.broker.publish("news", {"n": 0})  # before subscribing: not delivered
        await kit.broker.subscribe("news", got_1.append)
        await kit.broker.subscribe("news", got_2.append)
        sent = await publish_n(kit.broker, "news", range(1, 4))
        await kit.broker.publish("other", {"n": 99})
        await eventually(lambda: len(got_1) == 3 and len(got_2) == 3)
        assert offsets(got_1) == offsets(got_2) == offsets(sent) == [2, 3, 4]
        assert [p.data for p in got_1] == [p.data for p in sent]

    async def test_unsubscribe_stops_delivery(self, kit: Kit) -> None:
        gone: list[Any] = []
        stays: list[Any] = []
        await kit.broker.subscribe("news", gone.append)
        await kit.broker.subscribe("news", stays.append)
        await kit.broker.publish("news", {"n": 1})
        await eventually(lambda: len(gone) == 1 and len(stays) == 1)
        await kit.broker.unsubscribe("news", gone.append)
        await kit.broker.publish("news", {"n": 2})
        await eventually(lambda: len(stays) == 2)
        assert texts(gone) == [1]
        assert texts(stays) == [1, 2]

    async def test_unsubscribe_unknown_listener_is_harmless(self, kit: Kit) -> None:
        got: list[Any] = []
        await kit.broker.unsubscribe("never", got.append)
        await kit.broker.subscribe("news", got.append)
        stranger: list[Any] = []
        await kit.broker.unsubscribe("news", stranger.append)
        await kit.broker.publish("news", {"n": 1})
        await eventually(lambda: len(got) == 1)

    async def test_broken_listener_does_not_stop_others(self, kit: Kit) -> None:
        got: list[Any] = []

        def broken(pub: object) -> None:
            raise RuntimeError("listener bug")

        await kit.broker.subscribe("news", broken)
        await kit.broker.subscribe("news", got.append)
        pub = await kit.broker.publish("news", {"n": 1})
        await eventually(lambda: len(got) == 1)
        assert pub.offset == 1
        assert (await kit.broker.info("news")).position.offset == 1

    # -- info -------------------------------------------------------------------

    async def test_info(self, kit: Kit) -> None:
        pubs = await publish_n(kit.broker, "news", range(1, 4))
        info = await kit.broker.info("news")
        assert info.channel == "news"
        assert info.position == pubs[-1].position
        assert info.history_length == 3
        assert info.has_state is False
        await kit.broker.set_state("news", [{"s": 1}])
        info = await kit.broker.info("news")
        assert info.has_state is True
        assert info.position == pubs[-1].position

    # -- listing ----------------------------------------------------------------

    async def test_channels_lists_what_was_published_sorted(self, kit: Kit) -> None:
        assert await kit.broker.channels() == []
        for name in ("news", "chat:b", "chat:a", "a", "chat:a"):
            await kit.broker.publish(name, {"n": 1})
        await kit.broker.set_state("scores", [{"s": 1}])  # a state makes a channel too
        assert await kit.broker.channels() == ["a", "chat:a", "chat:b", "news", "scores"]
        await kit.broker.publish("b", {"n": 1})  # a channel made after a listing is listed
        assert await kit.broker.channels(after="a", limit=2) == ["b", "chat:a"]

    async def test_channels_pages_with_after_and_limit(self, kit: Kit) -> None:
        names = [f"ch:{i:02d}" for i in range(25)]
        for name in reversed(names):
            await kit.broker.publish(name, {"n": 1})
        pages, after = [], None
        while True:
            page = await kit.broker.channels(after=after, limit=10)
            if not page:
                break
            pages.append(page)
            after = page[-1]
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [n for p in pages for n in p] == names
        assert await kit.broker.channels(after="ch:23", limit=10) == ["ch:24"]
        assert await kit.broker.channels(after="zzz") == []
        assert await kit.broker.channels(limit=0) == []

    async def test_channels_filters_by_prefix(self, kit: Kit) -> None:
        for name in ("chat:a", "chat:b", "chatty", "chat", "news", "cha"):
            await kit.broker.publish(name, {"n": 1})
        assert await kit.broker.channels("chat:") == ["chat:a", "chat:b"]
        assert await kit.broker.channels("chat") == ["chat", "chat:a", "chat:b", "chatty"]
        assert await kit.broker.channels("chat", after="chat:a", limit=2) == ["chat:b", "chatty"]
        assert await kit.broker.channels("nothing") == []
        # Characters a glob or a key pattern would treat specially are plain here.
        for name in ("a.b#c$", "a.b#d@", "a/b"):
            await kit.broker.publish(name, {"n": 1})
        assert await kit.broker.channels("a.b#") == ["a.b#c$", "a.b#d@"]

    async def test_channels_forgets_idle_channels(self, make_kit: MakeKit) -> None:
        kit = await make_kit(HistoryPolicy(size=10, ttl=60))
        await kit.broker.publish("old", {"n": 1})
        await kit.advance(30)
        await kit.broker.publish("young", {"n": 1})
        assert await kit.broker.channels() == ["old", "young"]
        await kit.advance(31)
        assert await kit.broker.channels() == ["young"]


# -- not broker-specific --------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "ttl", "meta_ttl"), [(-1, 10.0, 0.0), (10, 0.0, 0.0), (10, -1.0, 0.0), (1, 1, -1)]
)
def test_history_policy_refuses_nonsense(size: int, ttl: float, meta_ttl: float) -> None:
    with pytest.raises(ValueError):
        HistoryPolicy(size, ttl, meta_ttl)


def test_memory_broker_bounds_kept_positions_by_its_channel_limit() -> None:
    clock = FakeClock()
    broker = MemoryBroker(HistoryPolicy(ttl=10, meta_ttl=1000), channel_limit=3, clock=clock)
    pubs = {}
    for name in ("a", "b", "c"):
        pubs[name] = broker.publish_nowait(name, {"n": 1})
        clock.now += 1
    clock.now += 10  # all three dormant: positions kept, history gone
    assert broker.read_nowait("a", pubs["a"].position).reset is None
    broker.publish_nowait("d", {"n": 1})  # at the limit: the oldest dormant one goes
    assert broker.channel_count == 3
    assert broker.read_nowait("a", pubs["a"].position).reset == RESET_EPOCH
    assert broker.read_nowait("b", pubs["b"].position).reset is None
    broker.publish_nowait("e", {"n": 1})
    broker.publish_nowait("f", {"n": 1})
    assert broker.channel_count == 3
    with pytest.raises(ChannelLimitError):  # live channels are never forgotten early
        broker.publish_nowait("g", {"n": 1})


def test_memory_broker_restart_makes_a_new_epoch() -> None:
    first, second = MemoryBroker(), MemoryBroker()
    assert first.epoch != second.epoch
    pub = first.publish_nowait("news", {"n": 1})
    result = second.read_nowait("news", pub.position)
    assert result.reset == RESET_EPOCH


# -- the one rule that served history has no hole (every broker, the session) ----


def _pubs(*numbers: int) -> list[Publication]:
    return [Publication("c", "e", n, 0.0, b"{}") for n in numbers]


@pytest.mark.parametrize(
    ("since", "at", "numbers", "top", "reset", "position", "served"),
    [
        # unbroken: returned as it is
        (2, 2, (3, 4, 5), 5, None, 2, [3, 4, 5]),
        (5, 5, (), 5, None, 5, []),
        (None, 0, (1, 2), None, None, 0, [1, 2]),
        # a hole in the middle: a resumer is reset to the unbroken run's start
        (2, 2, (3, 7), 7, RESET_TRIMMED, 6, [7]),
        (2, 2, (3, 5, 6, 7), 7, RESET_TRIMMED, 4, [5, 6, 7]),
        (None, 0, (1, 2, 3, 7), 7, None, 6, [7]),
        # the newest ones missing: nothing reaches the top
        (2, 2, (3,), 7, RESET_TRIMMED, 7, []),
        (2, 2, (), 7, RESET_TRIMMED, 7, []),
        # top unknown (the session): only holes between publications count
        (2, 2, (3, 7), None, RESET_TRIMMED, 6, [7]),
        (2, 2, (4,), None, RESET_TRIMMED, 3, [4]),
    ],
)
def test_check_unbroken(
    since: int | None,
    at: int,
    numbers: tuple[int, ...],
    top: int | None,
    reset: str | None,
    position: int,
    served: list[int],
) -> None:
    reader = None if since is None else Position("e", since)
    state = _pubs(at)
    result = ReadResult(Position("e", at), _pubs(*numbers), state, None)
    checked = check_unbroken(reader, result, top)
    assert checked.reset == reset
    assert checked.position == Position("e", position)
    assert offsets(checked.publications) == served
    if position == at:
        assert checked is result
    else:
        assert checked.state is None  # the hole made any state stale


def test_check_unbroken_keeps_an_epoch_reset() -> None:
    result = ReadResult(Position("e", 2), _pubs(3, 7), None, RESET_EPOCH)
    checked = check_unbroken(Position("old", 9), result, 7)
    assert checked.reset == RESET_EPOCH and checked.position == Position("e", 6)

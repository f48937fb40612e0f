"""How sessions and the hub recover from a broker that loses or fails: the
periodic position check, the resync signal, failed catch-ups ending with
``reconnect`` (broker_unavailable), no leaked subscriptions, concurrent
reads, and the grace period before the hub unsubscribes a channel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from support import Server, content, eventually, messages, track_cursor
from torchannels import Hub, MemoryBroker, Position, Publication, ReadResult, Settings
from torchannels.brokers import Listener, PresenceEvent
from torchannels.errors import BrokerUnavailable


class FaultyBroker(MemoryBroker):
    """A memory broker whose live delivery can lose chosen offsets, whose
    reads can fail or wait, and which counts what the hub asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.lose: set[int] = set()
        self.fail_reads = False
        self.gate: asyncio.Event | None = None  # reads wait on it when set
        self.reads = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.cancelled_reads = 0
        self.subscribes = 0
        self.unsubscribes = 0
        self._wrapped: dict[tuple[str, Listener], Listener] = {}

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        self.reads += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let concurrent reads overlap
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_reads:
                raise BrokerUnavailable("the test broker is down")
            return self.read_nowait(channel, since)
        except asyncio.CancelledError:
            self.cancelled_reads += 1
            raise
        finally:
            self.in_flight -= 1

    async def subscribe(self, channel: str, listener: Listener) -> None:
        def lossy(pub: Publication | PresenceEvent) -> None:
            if not isinstance(pub, Publication) or pub.offset not in self.lose:
                listener(pub)

        self.subscribes += 1
        self._wrapped[(channel, listener)] = lossy
        await super().subscribe(channel, lossy)

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        self.unsubscribes += 1
        await super().unsubscribe(channel, self._wrapped.pop((channel, listener), listener))


def numbers(frames: list[dict[str, Any]]) -> list[int]:
    return [m["n"] for m in messages(frames)]


def has_messages(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda frames: len(messages(frames)) >= count


def subscribed(frames: list[dict[str, Any]]) -> bool:
    return any(f["type"] == "subscribed" for f in frames)


@pytest.fixture
def broker() -> FaultyBroker:
    return FaultyBroker()


def serve(make_server: Callable[..., Server], broker: FaultyBroker, **settings: Any) -> Server:
    settings.setdefault("ping_interval", 0.5)
    return make_server(hub_=Hub(broker, Settings(**settings)))


@pytest.mark.parametrize("transport", ["stream", "sse"])
async def test_a_quiet_channel_that_lost_its_last_message_recovers(
    make_server: Callable[..., Server], broker: FaultyBroker, transport: str
) -> None:
    server = serve(make_server, broker, position_check_interval=0.2)
    stream = server.stream(transport, channel="quiet")
    await stream.wait_frames(subscribed)
    broker.lose = {2}
    server.hub.channel("quiet").send({"n": 1})
    server.hub.channel("quiet").send({"n": 2})  # lost live, and nothing follows it
    frames = await stream.wait_frames(has_messages(2))
    assert numbers(frames) == [1, 2]


async def test_without_position_checks_the_lost_message_waits_for_the_next(
    make_server: Callable[..., Server], broker: FaultyBroker
) -> None:
    """The control for the test above: the loss is real, and only the next
    publication would reveal it when checks are off."""
    server = serve(make_server, broker, position_check_interval=0)
    stream = server.stream("stream", channel="quiet")
    await stream.wait_frames(subscribed)
    broker.lose = {2}
    hub = server.hub
    hub.channel("quiet").send({"n": 1})
    hub.channel("quiet").send({"n": 2})
    frames = await stream.wait_frames(has_messages(1))
    probe = server.stream("stream", channel="quiet")  # a second reader sees offset 2
    await probe.wait_frames(subscribed)
    assert numbers(await stream.wait_frames(has_messages(1))) == [1]
    hub.channel("quiet").send({"n": 3})
    frames = await stream.wait_frames(has_messages(3))
    assert numbers(frames) == [1, 2, 3]


async def test_a_resync_signal_makes_sessions_read_back(
    make_server: Callable[..., Server], broker: FaultyBroker
) -> None:
    server = serve(make_server, broker, position_check_interval=0)
    stream = server.stream("sse", channel="r")
    await stream.wait_frames(subscribed)
    broker.lose = {1, 2}
    server.hub.channel("r").send({"n": 1})
    server.hub.channel("r").send({"n": 2})
    broker._resync(["r"])  # what a network broker does after resubscribing
    frames = await stream.wait_frames(has_messages(2))
    assert numbers(frames) == [1, 2]


@pytest.mark.parametrize("transport", ["longpoll", "stream", "sse"])
async def test_a_failed_catch_up_ends_with_reconnect_and_the_resume_loses_nothing(
    make_server: Callable[..., Server], broker: FaultyBroker, transport: str
) -> None:
    server = serve(make_server, broker, position_check_interval=0)
    ch = server.hub.channel("f")
    epoch = ch.send({"n": 0})["epoch"]
    stream = server.stream(transport, channel="f", cursor=f"f={epoch}:1")
    await eventually(lambda: server.hub.local_subscribers("f") == 1)
    if transport == "longpoll":  # its first read done: it waits (else a failed read is a 503)
        await eventually(lambda: len(server.hub.connections) == 1)
    broker.lose = {2}
    broker.fail_reads = True
    ch.send({"n": 1})  # lost live
    ch.send({"n": 2})  # reveals the gap; the read back fails
    await asyncio.wait_for(stream.response, 10)
    frames = json.loads(stream.buffer)["frames"] if transport == "longpoll" else stream.frames()
    assert [f for f in frames if f["type"] == "reconnect"] == [
        {"type": "reconnect", "reason": "broker_unavailable"}
    ]
    await eventually(lambda: server.hub.local_subscribers("f") == 0)
    broker.fail_reads = False
    cursor = track_cursor(f"f={epoch}:1", frames)
    doc = await server.poll(channel="f", cursor=cursor)
    assert numbers(doc["frames"]) == [1, 2]


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
async def test_a_poll_whose_read_fails_is_503_and_leaks_nothing(
    make_server: Callable[..., Server], broker: FaultyBroker, transport: str
) -> None:
    server = serve(make_server, broker, unsubscribe_grace=0)
    broker.fail_reads = True
    response = await server.fetch(server.url(transport=transport, channel="down"))
    assert response.code == 503
    assert json.loads(response.body)["error"] == "broker_unavailable"
    assert server.hub.local_subscribers("down") == 0
    await eventually(lambda: broker.unsubscribes == broker.subscribes)


async def test_a_subscribe_reads_its_channels_concurrently(
    make_server: Callable[..., Server], broker: FaultyBroker
) -> None:
    server = serve(make_server, broker)
    names = [f"c{i}" for i in range(8)]
    doc = await server.poll(channels=",".join(names))
    assert [f["channel"] for f in content(doc["frames"])] == names  # still in the order named
    assert broker.most_in_flight == len(names)


async def test_closing_cancels_a_catch_up_in_flight(
    make_server: Callable[..., Server], broker: FaultyBroker
) -> None:
    server = serve(make_server, broker, position_check_interval=0)
    stream = server.stream("stream", channel="slow")
    await stream.wait_frames(subscribed)
    broker.gate = asyncio.Event()  # reads now wait
    broker.lose = {1}
    server.hub.channel("slow").send({"n": 1})
    server.hub.channel("slow").send({"n": 2})  # gap: a catch-up starts and waits
    await eventually(lambda: broker.in_flight == 1)
    stream.close()
    await eventually(lambda: broker.cancelled_reads == 1)
    assert broker.in_flight == 0


async def test_the_hub_keeps_a_channel_subscribed_for_a_grace_period(
    make_server: Callable[..., Server], broker: FaultyBroker
) -> None:
    server = serve(make_server, broker, unsubscribe_grace=0.3)
    cursor = (await server.poll(channel="g"))["cursor"]
    for n in range(3):  # long-poll cycles: each answered by a publish
        held = asyncio.ensure_future(server.poll("longpoll", channel="g", cursor=cursor))
        await eventually(lambda: server.hub.local_subscribers("g") == 1)
        server.hub.channel("g").send({"n": n})
        cursor = (await held)["cursor"]
    assert (broker.subscribes, broker.unsubscribes) == (1, 0)
    await eventually(lambda: broker.unsubscribes == 1)  # after the grace period
    await server.poll(channel="g")
    assert broker.subscribes == 1  # a plain poll does not subscribe


async def test_joins_of_one_channel_at_once_share_one_broker_read(
    make_server: Callable[..., Server], broker: FaultyBroker
) -> None:
    server = serve(make_server, broker)
    server.hub.channel("busy").send({"n": 1})
    broker.gate = asyncio.Event()  # hold the read until everybody asked
    streams = [server.stream("sse", channel="busy") for _ in range(8)]
    await eventually(lambda: server.hub.local_subscribers("busy") == 8)
    broker.gate.set()
    for stream in streams:
        frames = await stream.wait_frames(has_messages(1))
        assert numbers(frames) == [1]
    assert broker.reads == 1

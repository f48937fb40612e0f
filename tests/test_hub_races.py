"""Races between sessions at the hub, made deterministic.

The in-memory broker answers at once; :class:`SlowBroker` holds an answer
(a read's snapshot, or a subscribe) until the test lets it go, as a Redis
reply in flight would. Each test orders the steps with events, never with
sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from torchannels import Hub, MemoryBroker, Position, ReadResult, Settings
from torchannels.brokers import Listener
from torchannels.frames import MESSAGE, Frame
from torchannels.hub import Subscriber
from torchannels.session import Session

#: No background position checks: nothing rescues a session that is behind.
SETTINGS = Settings(position_check_interval=0, unsubscribe_grace=0)


class SlowBroker(MemoryBroker):
    """The in-memory broker whose first ``hold_reads`` reads take their
    snapshot at once but answer only once ``answer`` is set, and whose
    subscribes wait for ``subscribed`` while ``hold_subscribes`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_reads = 0
        self.reads = 0
        self.read_taken = asyncio.Event()
        self.answer = asyncio.Event()
        self.hold_subscribes = False
        self.subscribing = asyncio.Event()
        self.subscribed = asyncio.Event()

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        self.reads += 1
        result = self.read_nowait(channel, since)
        if self.hold_reads:
            self.hold_reads -= 1
            self.read_taken.set()
            await self.answer.wait()
        return result

    async def subscribe(self, channel: str, listener: Listener) -> None:
        if self.hold_subscribes:
            self.subscribing.set()
            await self.subscribed.wait()
        await super().subscribe(channel, listener)


class Collected:
    """A session's owner: the frames it was given (and no broker fails)."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        self.frames.extend(frames)

    def broker_failed(self, exc: BaseException) -> None:
        raise AssertionError(f"the broker failed: {exc!r}")

    def offsets(self, channel: str) -> list[int]:
        return [
            f.position.offset
            for f in self.frames
            if f.kind == MESSAGE and f.channel == channel and f.position is not None
        ]


def session(hub: Hub) -> tuple[Session, Collected]:
    sink = Collected()
    return Session(hub, sink, lambda channel: True), sink


async def until(predicate: object, what: str) -> None:
    """Yield to the loop until ``predicate()`` holds (bounded)."""
    assert callable(predicate)
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def test_a_read_started_before_an_attach_is_not_shared_with_it() -> None:
    broker = SlowBroker()
    hub = Hub(broker, SETTINGS)
    hub.channel("c").send({"n": 1})
    a, a_sink = session(hub)
    b, b_sink = session(hub)
    broker.hold_reads = 1
    a_joins = asyncio.ensure_future(a.subscribe(["c"], {}, live=True))
    await broker.read_taken.wait()  # A's read has its snapshot: the channel at 1
    hub.channel("c").send({"n": 2})  # live to A (buffered); B is not attached yet
    b_joins = asyncio.ensure_future(b.subscribe(["c"], {}, live=True))
    # B reads for itself, after its attach, and so sees message 2. (Joining
    # A's read, B would wait for it, and come out at 1 with the channel at 2.)
    await asyncio.wait_for(b_joins, 10)
    assert broker.reads == 2
    assert b_sink.offsets("c") == [1, 2]
    assert b.positions["c"].offset == 2
    broker.answer.set()
    await a_joins
    assert a_sink.offsets("c") == [1, 2]
    hub.channel("c").send({"n": 3})
    assert a_sink.offsets("c") == b_sink.offsets("c") == [1, 2, 3]
    a.close()
    b.close()


async def test_sessions_joining_together_still_share_one_read() -> None:
    broker = SlowBroker()
    hub = Hub(broker, SETTINGS)
    hub.channel("c").send({"n": 1})
    sessions = [session(hub) for _ in range(3)]
    for s, _ in sessions:  # all attached before any reads
        await hub.attach("c", s)
    broker.hold_reads = 1
    reads = [asyncio.ensure_future(hub.read("c", None)) for _ in sessions]
    await broker.read_taken.wait()
    broker.answer.set()
    results = await asyncio.gather(*reads)
    assert broker.reads == 1
    assert [r.publications[-1].offset for r in results] == [1, 1, 1]
    # The read left the table as it completed: the next one reads again.
    await hub.read("c", None)
    assert broker.reads == 2
    for s, _ in sessions:
        hub.detach("c", s)


async def test_a_cancelled_first_attach_does_not_cancel_the_others() -> None:
    broker = SlowBroker()
    hub = Hub(broker, SETTINGS)
    broker.hold_subscribes = True
    a, _ = session(hub)
    b, b_sink = session(hub)
    first = asyncio.ensure_future(hub.attach("c", a))
    await broker.subscribing.wait()  # A's attach is subscribing the broker
    second = asyncio.ensure_future(hub.attach("c", b))
    await until(lambda: hub.local_subscribers("c") == 2, "B waits on the same subscribe")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert hub.local_subscribers("c") == 1  # A is not left attached
    broker.subscribed.set()
    await asyncio.wait_for(second, 10)  # B attached: no CancelledError
    b.positions["c"] = (await hub.read("c", None)).position
    b._buffers["c"] = None  # live, as Session.subscribe leaves it
    hub.channel("c").send({"n": 1})
    assert b_sink.offsets("c") == [1]
    hub.detach("c", b)
    await until(lambda: not broker._listeners, "the broker subscription is released")


async def test_a_cancelled_lone_attach_leaves_no_broker_subscription() -> None:
    broker = SlowBroker()
    hub = Hub(broker, SETTINGS)
    broker.hold_subscribes = True
    a, _ = session(hub)
    attach = asyncio.ensure_future(hub.attach("c", a))
    await broker.subscribing.wait()
    attach.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attach
    assert hub.local_subscribers("c") == 0
    broker.subscribed.set()  # the subscribe completes, then is released
    await until(lambda: "c" in broker._listeners, "the subscribe completed")
    await until(lambda: not broker._listeners, "the broker subscription is released")
    await until(lambda: hub.local_channels() == {} and not hub._tasks, "the hub let go")


class LateHub(Hub):
    """Runs ``before_attach`` as an attach begins, before it registers the
    subscriber: what happens when a client's close (or an unsubscribe)
    arrives while a session's attach tasks are still queued."""

    def __init__(self, before_attach: Callable[[str, Session], None]) -> None:
        super().__init__(MemoryBroker(), SETTINGS)
        self.before_attach = before_attach

    async def attach(self, channel: str, subscriber: Subscriber) -> None:
        assert isinstance(subscriber, Session)
        self.before_attach(channel, subscriber)
        await super().attach(channel, subscriber)


@pytest.mark.parametrize("channels", [["x"], ["x", "y"]])
async def test_a_close_before_the_attach_registers_leaves_nothing_attached(
    channels: list[str],
) -> None:
    hub = LateHub(lambda channel, s: s.close())
    a, _ = session(hub)
    await a.subscribe(channels, {}, live=True)
    assert hub.subscription_count() == 0
    assert isinstance(hub.broker, MemoryBroker)
    await until(lambda: not hub.broker._listeners, "the broker subscriptions are released")


async def test_an_unsubscribe_before_the_attach_registers_detaches_that_channel() -> None:
    def unsubscribe_x(channel: str, s: Session) -> None:
        if channel == "x":
            s.unsubscribe("x")  # a WebSocket unsubscribe command, say

    hub = LateHub(unsubscribe_x)
    a, a_sink = session(hub)
    await a.subscribe(["x", "y"], {}, live=True)
    assert hub.local_channels() == {"y": 1}
    assert a.channels == ["y"]
    hub.channel("x").send({"n": 1})
    hub.channel("y").send({"n": 1})
    assert a_sink.offsets("x") == [] and a_sink.offsets("y") == [1]
    a.close()
    assert hub.subscription_count() == 0


async def test_a_one_channel_session_agrees_with_the_general_path() -> None:
    """A session serving one channel, live, takes the fan-out's fast path (no
    dict per recipient); duplicates, a gap, a second channel and its
    unsubscribe still come out as the general path has them."""
    broker = MemoryBroker()
    hub = Hub(broker, SETTINGS)
    hub.channel("c").send({"n": 1})
    s, sink = session(hub)
    await s.subscribe(["c"], {}, live=True)
    assert s._sole == "c"  # the fast path is on
    hub.channel("c").send({"n": 2})
    assert sink.offsets("c") == [1, 2] and s.positions["c"].offset == 2
    two = (await hub.read("c", None)).publications[-1]
    assert not s.on_publication(two, (two.frame,))  # a duplicate: dropped
    # A gap: 3 and 4 published while the hub does not deliver to the session.
    hub.detach("c", s)
    hub.channel("c").send({"n": 3})
    four = broker.publish_nowait("c", {"n": 4})
    assert not s.on_publication(four, (four.frame,))
    assert s._sole is None  # catching up: the general path
    await until(lambda: sink.offsets("c") == [1, 2, 3, 4], "3 is read back")
    assert s.positions["c"].offset == 4 and s._sole == "c"
    await hub.attach("c", s)
    hub.channel("c").send({"n": 5})
    assert sink.offsets("c") == [1, 2, 3, 4, 5]
    # A second channel: the general path, then the fast path again.
    await s.subscribe(["d"], {}, live=True)
    assert s._sole is None
    hub.channel("c").send({"n": 6})
    hub.channel("d").send({"n": 1})
    assert sink.offsets("c")[-1] == 6 and sink.offsets("d") == [1]
    assert s.unsubscribe("d") and s._sole == "c"
    hub.channel("c").send({"n": 7})
    assert sink.offsets("c") == [1, 2, 3, 4, 5, 6, 7]
    assert s.positions == {"c": Position(s.positions["c"].epoch, 7)}
    s.close()
    assert s._sole is None

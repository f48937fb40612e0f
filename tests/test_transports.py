"""Every transport delivers, resumes and resets the same way.

poll and long-poll make one request per step; stream and SSE keep one
response open. ``receive`` (conftest) hides the difference: it returns the
content frames as NDJSON envelopes and the cursor to come back with.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from support import (
    STREAMING,
    TRANSPORTS,
    Framings,
    Server,
    Stream,
    content,
    last_event_id,
    messages,
    outline,
    receive,
    track_cursor,
)
from torchannels import (
    ChannelMixin,
    Hub,
    MemoryBroker,
    Position,
    Publication,
    ReadResult,
    Settings,
    Subscription,
)
from torchannels.brokers import Listener, PresenceEvent

each_transport = pytest.mark.parametrize("transport", TRANSPORTS)
each_stream = pytest.mark.parametrize("transport", STREAMING)


def n_messages(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda frames: len(messages(frames)) >= count


def msg(channel: str, **data: Any) -> tuple[Any, ...]:
    return ("message", channel, data)


@each_transport
async def test_several_channels_in_one_request(server: Server, transport: str) -> None:
    hub = server.hub
    a1 = hub.channel("A").send({"n": 1})
    hub.channel("A").send({"n": 2})
    hub.channel("B").send({"n": 1})
    epoch = a1["epoch"]
    got = await receive(
        server,
        transport,
        ["A", "B", "C"],
        until=lambda fs: sum(f["type"] == "subscribed" for f in fs) == 3 and n_messages(3)(fs),
        sentinel="C",
    )
    assert outline(got.frames) == [
        ("subscribed", "A", 0, None),
        msg("A", n=1),
        msg("A", n=2),
        ("subscribed", "B", 0, None),
        msg("B", n=1),
        ("subscribed", "C", 0, None),
    ]
    assert {f["epoch"] for f in got.frames if f["type"] == "subscribed"} == {epoch}
    # Streaming transports saw the sentinel on C as well.
    c_top = 0 if transport in ("poll", "longpoll") else 1
    assert got.cursor == f"A={epoch}:2,B={epoch}:1,C={epoch}:{c_top}"


@each_stream
async def test_live_messages_of_several_channels_arrive_in_order(
    server: Server, transport: str
) -> None:
    stream = server.stream(transport, channel=["A", "B"])
    await stream.wait_frames(lambda fs: sum(f["type"] == "subscribed" for f in fs) == 2)
    order = [("B", 1), ("A", 1), ("B", 2), ("A", 2), ("A", 3)]
    for channel, n in order:
        server.hub.channel(channel).send({"n": n})
    frames = await stream.wait_frames(n_messages(len(order)))
    assert [(m["channel"], m["n"]) for m in messages(frames)] == order
    assert [m["offset"] for m in messages(frames, "A")] == [1, 2, 3]


@each_transport
async def test_state_compression(server: Server, transport: str) -> None:
    game = server.hub.channel("game")
    game.send({"move": 1})
    game.send({"move": 2})
    game.set_state([{"board": "x"}, {"board": "xo"}])
    game.send({"move": 3})
    game.send({"move": 4})
    got = await receive(server, transport, ["game"], until=n_messages(2), sentinel="game")
    assert outline(got.frames) == [
        ("subscribed", "game", 2, [{"board": "x"}, {"board": "xo"}]),
        msg("game", move=3),
        msg("game", move=4),
    ]


@each_transport
async def test_late_join_never_redownloads(server: Server, transport: str) -> None:
    a, b = server.hub.channel("A"), server.hub.channel("B")
    a.set_state([{"a_state": 1}])
    a.send({"a": 1})
    b.send({"b": 0})
    b.set_state([{"b_state": 1}])
    first = await receive(server, transport, ["A"], until=n_messages(1), sentinel="A")
    assert outline(first.frames) == [("subscribed", "A", 0, [{"a_state": 1}]), msg("A", a=1)]

    a.send({"a": 2})
    b.send({"b": 1})
    second = await receive(
        server, transport, ["A", "B"], cursor=first.cursor, until=n_messages(2), sentinel="B"
    )
    assert outline(second.frames) == [
        msg("A", a=2),
        ("subscribed", "B", 1, [{"b_state": 1}]),
        msg("B", b=1),
    ]

    a.send({"a": 3})
    third = await receive(
        server, transport, ["A", "B"], cursor=second.cursor, until=n_messages(1), sentinel="B"
    )
    assert outline(third.frames) == [msg("A", a=3)]


@each_transport
async def test_resume_gets_exactly_the_missed_messages(server: Server, transport: str) -> None:
    a, b = server.hub.channel("A"), server.hub.channel("B")
    for n in (1, 2, 3):
        a.send({"n": n})
    b.send({"n": 1})
    first = await receive(server, transport, ["A", "B"], until=n_messages(4), sentinel="B")
    assert [(m["channel"], m["n"]) for m in messages(first.frames)] == [
        ("A", 1),
        ("A", 2),
        ("A", 3),
        ("B", 1),
    ]

    a.send({"n": 4})
    b.send({"n": 2})
    a.send({"n": 5})
    a.send({"n": 6})
    second = await receive(
        server, transport, ["A", "B"], cursor=first.cursor, until=n_messages(4), sentinel="B"
    )
    assert outline(second.frames) == [msg("A", n=4), msg("A", n=5), msg("A", n=6), msg("B", n=2)]

    a.send({"n": 7})
    third = await receive(
        server, transport, ["A", "B"], cursor=second.cursor, until=n_messages(1), sentinel="B"
    )
    assert outline(third.frames) == [msg("A", n=7)]


@each_transport
async def test_trimmed_history_gives_reset_then_state_then_later(
    server: Server, transport: str
) -> None:
    ch = server.hub.channel("A")
    ch.configure(history_size=3)
    ch.send({"n": 1})
    first = await receive(server, transport, ["A"], until=n_messages(1))
    assert outline(first.frames) == [("subscribed", "A", 0, None), msg("A", n=1)]
    for n in (2, 3, 4, 5):
        ch.send({"n": n})
    ch.set_state([{"s": "now"}])
    ch.send({"n": 6})  # history keeps 4, 5, 6; the client stands at 1
    second = await receive(
        server, transport, ["A"], cursor=first.cursor, until=n_messages(1), sentinel="A"
    )
    assert outline(second.frames) == [
        ("reset", "A", "history_trimmed"),
        ("subscribed", "A", 5, [{"s": "now"}]),
        msg("A", n=6),
    ]
    ch.send({"n": 7})
    third = await receive(
        server, transport, ["A"], cursor=second.cursor, until=n_messages(1), sentinel="A"
    )
    assert outline(third.frames) == [msg("A", n=7)]


@each_transport
@pytest.mark.parametrize("gap", ["epoch_changed", "position_ahead"])
async def test_unservable_position_gives_reset_then_state_then_later(
    server: Server, transport: str, gap: str
) -> None:
    ch = server.hub.channel("A")
    epoch = ch.send({"n": 1})["epoch"]
    ch.send({"n": 2})
    ch.set_state([{"s": "now"}])
    ch.send({"n": 3})
    if gap == "epoch_changed":  # a position from before a restart
        old = MemoryBroker()
        assert old.epoch != epoch
        stale = f"A={old.publish_nowait('A', {'n': 1}).position}"
    else:
        stale = f"A={epoch}:99"
    got = await receive(server, transport, ["A"], cursor=stale, until=n_messages(1), sentinel="A")
    assert outline(got.frames) == [
        ("reset", "A", gap),
        ("subscribed", "A", 2, [{"s": "now"}]),
        msg("A", n=3),
    ]
    assert got.frames[1]["epoch"] == epoch


@each_transport
async def test_a_reset_channel_does_not_disturb_the_others(server: Server, transport: str) -> None:
    a, b = server.hub.channel("A"), server.hub.channel("B")
    epoch = a.send({"n": 1})["epoch"]
    b.send({"n": 1})
    b.send({"n": 2})
    cursor = f"A=zzzz:1,B={epoch}:1"
    got = await receive(
        server, transport, ["A", "B"], cursor=cursor, until=n_messages(2), sentinel="B"
    )
    assert outline(got.frames) == [
        ("reset", "A", "epoch_changed"),
        ("subscribed", "A", 0, None),
        msg("A", n=1),
        msg("B", n=2),
    ]


@each_transport
async def test_names_and_text_survive_every_framing(server: Server, transport: str) -> None:
    """Every legal name character and awkward text (line breaks, U+2028,
    non-ASCII, quotes) arrive exactly as sent, and the cursor round-trips."""
    name = "Chat_1-x.y:room/2@host#tag$"
    text = 'line one\nline two\r\n\u2028 caf\u00e9 \u2713 "quoted" \\ end'
    ch = server.hub.channel(name)
    sent = ch.send({"text": text, "nested": {"list": [1, 2.5, None, True]}})
    first = await receive(server, transport, [name], until=n_messages(1))
    assert messages(first.frames) == [sent]
    second = ch.send({"text": text[::-1]})
    got = await receive(
        server, transport, [name], cursor=first.cursor, until=n_messages(1), sentinel=name
    )
    assert messages(got.frames) == [second]


# -- SSE specifics ---------------------------------------------------------------


async def test_sse_ids_carry_the_whole_cursor(server: Server) -> None:
    a, b = server.hub.channel("A"), server.hub.channel("B")
    epoch = a.send({"n": 1})["epoch"]
    b.send({"n": 1})
    stream = server.stream("sse", channel=["A", "B"], cursor="A=zzzz:1")
    await stream.wait_frames(n_messages(2))
    b.send({"n": 2})
    await stream.wait_frames(n_messages(3))
    events = stream.events()
    assert events[0].retry == 1000 and events[0].event == "connected" and events[0].id is None
    cursor = "A=zzzz:1"
    moving = 0
    for event, frame in zip(events, stream.frames(), strict=True):
        if frame["type"] in ("connected", "ping"):
            assert event.id is None, event
            continue
        moving += 1
        cursor = track_cursor(cursor, [frame])
        assert event.id == cursor, (frame, event)
    assert moving == 6  # reset A, subscribed A, A1, subscribed B, B1, B2
    assert last_event_id(events) == f"A={epoch}:1,B={epoch}:2"


async def test_sse_resumes_from_last_event_id_alone(server: Server) -> None:
    a, b = server.hub.channel("A"), server.hub.channel("B")
    epoch = a.send({"n": 1})["epoch"]
    a.send({"n": 2})
    b.send({"n": 1})
    first = await receive(server, "sse", ["A", "B"], until=n_messages(3))
    assert first.cursor == f"A={epoch}:2,B={epoch}:1"
    a.send({"n": 3})
    b.send({"n": 2})
    a.send({"n": 4})
    # The browser reconnects to the URL it started with: its cursor is stale.
    stale = f"A={epoch}:0,B={epoch}:0"
    second = await receive(
        server,
        "sse",
        ["A", "B"],
        cursor=stale,
        headers={"Last-Event-ID": first.cursor},
        until=n_messages(3),
        sentinel="B",
    )
    assert outline(second.frames) == [msg("A", n=3), msg("A", n=4), msg("B", n=2)]
    assert second.cursor == f"A={epoch}:4,B={epoch}:3"  # B3 is the sentinel


async def test_sse_last_event_id_entries_win_per_channel(server: Server) -> None:
    a, b = server.hub.channel("A"), server.hub.channel("B")
    epoch = a.send({"n": 1})["epoch"]
    a.send({"n": 2})
    b.send({"n": 1})
    b.send({"n": 2})
    got = await receive(
        server,
        "sse",
        ["A", "B"],
        cursor=f"A={epoch}:0,B={epoch}:1",
        headers={"Last-Event-ID": f"A={epoch}:1"},
        until=n_messages(2),
        sentinel="B",
    )
    assert outline(got.frames) == [msg("A", n=2), msg("B", n=2)]


# -- streaming specifics --------------------------------------------------------


def gated_handler(hub: Hub, gate: asyncio.Event) -> type[ChannelMixin]:
    class Gated(ChannelMixin):
        async def can_access(self, sub: Subscription) -> bool:
            await gate.wait()
            return True

    Gated.hub = hub
    return Gated


@each_stream
async def test_streaming_headers_and_connected_frame_at_once(
    make_server: Callable[..., Server], hub: Hub, transport: str
) -> None:
    gate = asyncio.Event()
    server = make_server(gated_handler(hub, gate))
    hub.channel("news").send({"n": 1})
    stream = server.stream(transport, channel="news")
    # can_access has not answered yet, and the first frame is already here.
    frames = await stream.wait_frames(lambda fs: len(fs) >= 1)
    first = dict(frames[0])
    assert isinstance(first.pop("client"), str)  # the signed client id
    assert first == {"type": "connected", "transport": transport, "ping": 0.5}
    assert content(frames) == []
    assert stream.status == 200
    assert stream.headers["x-accel-buffering"] == "no"
    assert "no-cache" in stream.headers["cache-control"]
    expected_type = "text/event-stream" if transport == "sse" else "application/x-ndjson"
    assert stream.headers["content-type"].startswith(expected_type)
    gate.set()
    frames = await stream.wait_frames(n_messages(1))
    assert outline(frames) == [("subscribed", "news", 0, None), msg("news", n=1)]


@each_stream
async def test_pings_arrive(server: Server, transport: str) -> None:
    stream = server.stream(transport, channel="quiet")
    frames = await stream.wait_frames(
        lambda fs: sum(f["type"] == "ping" for f in fs) >= 2, timeout=5
    )
    assert frames[0]["type"] == "connected"
    assert outline(frames) == [("subscribed", "quiet", 0, None)]
    if transport == "sse":
        # Pings are real events (not comments) so EventSource pages see them.
        pings = [e for e in stream.events() if e.event == "ping"]
        assert len(pings) >= 2 and all(e.id is None for e in pings)


async def _drain_until(stream: Stream, n: int) -> bool:
    """Wait until message ``n`` arrived (True) or the response ended (False)."""

    def has_n() -> bool:
        return any(m.get("n") == n for m in messages(stream.frames()))

    await stream.wait_for(lambda _: has_n() or stream.response.done())
    return has_n()


@each_stream
async def test_byte_cap_ends_with_reconnect_and_loses_nothing(
    make_server: Callable[..., Server], transport: str
) -> None:
    cap = 600
    hub = Hub(MemoryBroker(), Settings(stream_max_bytes=cap, ping_interval=0.5))
    server = make_server(hub_=hub)
    channel = hub.channel("big")

    def open_stream(cursor: str) -> Stream:
        if transport == "sse" and cursor:
            return server.stream("sse", headers={"Last-Event-ID": cursor}, channel="big")
        query: dict[str, Any] = {"cursor": cursor} if cursor else {}
        return server.stream(transport, channel="big", **query)

    cursor = ""
    stream = open_stream(cursor)
    streams = [stream]
    ended = 0
    for n in range(20):
        channel.send({"n": n, "pad": "x" * 60})
        while not await _drain_until(stream, n):
            ended += 1
            await stream.response
            frames = stream.frames()
            assert stream.complete, "the response must end cleanly"
            assert len(stream.buffer) >= cap
            assert outline(frames)[-1] == ("reconnect", "byte_limit")
            assert [f["type"] for f in content(frames)].count("reconnect") == 1
            if transport == "sse":
                cursor = last_event_id(stream.events()) or cursor
            else:
                cursor = track_cursor(cursor, content(frames))
            stream = open_stream(cursor)
            streams.append(stream)
    stream.close()
    received = [m["n"] for s in streams for m in messages(s.frames())]
    assert received == list(range(20))
    assert ended >= 2


async def test_poll_answers_are_json_and_not_cached(server: Server) -> None:
    for transport in ("poll", "longpoll"):
        resp = await server.fetch(server.url(transport=transport, channel="news"))
        assert resp.code == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert "no-store" in resp.headers["Cache-Control"]


# -- brokers with network-like timing (the Broker seam is the edge) -------------


class LaggyBroker(MemoryBroker):
    """History reads take a while, as over a network: publications made
    meanwhile reach the session both live and (maybe) in the read."""

    def __init__(self, snapshot_first: bool) -> None:
        super().__init__()
        self.snapshot_first = snapshot_first
        self.reading = asyncio.Event()
        self.gate = asyncio.Event()

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        self.reading.set()
        if self.snapshot_first:  # the answer was taken, then travelled slowly
            result = self.read_nowait(channel, since)
            await self.gate.wait()
            return result
        await self.gate.wait()
        return self.read_nowait(channel, since)


class LossyBroker(MemoryBroker):
    """Loses the live delivery of chosen offsets (history keeps them)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose: set[int] = set()
        self._wrapped: dict[tuple[str, Listener], Listener] = {}

    async def subscribe(self, channel: str, listener: Listener) -> None:
        def lossy(pub: Publication | PresenceEvent) -> None:
            if not isinstance(pub, Publication) or pub.offset not in self.lose:
                listener(pub)

        self._wrapped[(channel, listener)] = lossy
        await super().subscribe(channel, lossy)

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        await super().unsubscribe(channel, self._wrapped.pop((channel, listener), listener))


@pytest.mark.parametrize("transport", ["longpoll", *STREAMING])
@pytest.mark.parametrize("snapshot_first", [True, False], ids=["old-read", "fresh-read"])
async def test_publications_racing_the_catch_up_arrive_once(
    make_server: Callable[..., Server], transport: str, snapshot_first: bool
) -> None:
    broker = LaggyBroker(snapshot_first)
    hub = Hub(broker, Settings(ping_interval=0.5))
    server = make_server(hub_=hub)
    ch = hub.channel("A")
    epoch = ch.send({"n": 1})["epoch"]
    ch.send({"n": 2})
    ch.send({"n": 3})
    stream = server.stream(transport, channel="A", cursor=f"A={epoch}:2")
    await asyncio.wait_for(broker.reading.wait(), 5)
    ch.send({"n": 4})
    ch.send({"n": 5})
    broker.gate.set()
    if transport == "longpoll":
        await asyncio.wait_for(stream.response, 5)
        doc = json.loads(stream.buffer)
        assert [m["n"] for m in messages(doc["frames"])] == [3, 4, 5]
        assert doc["cursor"] == f"A={epoch}:5"
        return
    frames = await stream.wait_frames(n_messages(3))
    ch.send({"n": 6})
    frames = await stream.wait_frames(n_messages(4))
    assert [m["n"] for m in messages(frames)] == [3, 4, 5, 6]
    assert [m["offset"] for m in messages(frames)] == [3, 4, 5, 6]
    assert [f["type"] for f in content(frames)] == ["message"] * 4


@pytest.mark.parametrize("transport", STREAMING)
async def test_a_live_delivery_lost_by_the_broker_is_read_back(
    make_server: Callable[..., Server], transport: str
) -> None:
    broker = LossyBroker()
    hub = Hub(broker, Settings(ping_interval=0.5))
    server = make_server(hub_=hub)
    stream = server.stream(transport, channel="A")
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    broker.lose = {2, 3}
    for n in (1, 2, 3, 4):
        hub.channel("A").send({"n": n})
    frames = await stream.wait_frames(n_messages(4))
    hub.channel("A").send({"n": 5})
    frames = await stream.wait_frames(n_messages(5))
    assert [m["n"] for m in messages(frames)] == [1, 2, 3, 4, 5]


async def test_single_channel_sse_events_are_built_once(server: Server, framings: Framings) -> None:
    """Every one-channel SSE subscriber gets the same event bytes, id line
    included; a two-channel subscriber gets its own whole-cursor id."""
    single = [server.stream("sse", channel="solo") for _ in range(3)]
    both = server.stream("sse", channel=["solo", "other"])
    for s in [*single, both]:
        await s.wait_frames(lambda fs: sum(f["type"] == "subscribed" for f in fs) >= 1)
    await s.wait_frames(lambda fs: sum(f["type"] == "subscribed" for f in fs) == 2)
    server.hub.channel("solo").send({"n": 1})
    for s in [*single, both]:
        await s.wait_frames(lambda fs: any(f["type"] == "message" for f in fs))
    pub = (await server.hub.broker.read("solo", None)).publications[-1]
    epoch = pub.epoch
    # Written straight to the socket: the event as one piece of the chunked body.
    whole = [
        e
        for e in framings.answered(pub.frame)
        if e.endswith(f"id: solo={epoch}:1\n\n\r\n".encode())
    ]
    # The one-channel event was asked for once per one-channel subscriber,
    # built once, and the very same bytes object handed to each.
    [event, *others] = whole
    assert len(others) == len(single) - 1 and all(e is event for e in others)
    assert sorted(framings.built(pub.frame)) == sorted(set(framings.built(pub.frame)))
    size, _, rest = event.partition(b"\r\n")
    assert int(size, 16) == len(rest) - 2 and rest.endswith(b"\r\n")
    event = rest[:-2]  # what the client reads, chunk framing removed
    for s in single:
        assert event in s.buffer
    assert event not in both.buffer
    assert f"id: solo={epoch}:1,other={epoch}:0".encode() in both.buffer

"""Presence through the hub, over real loopback sockets on every transport
(memory broker): joins and leaves, grace, polling clients, coalescing,
order with messages, snapshots, reads and errors (issue 18)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from presence_support import (
    Member,
    joined,
    left,
    presence_hub,
    serve,
    snapshot_users,
)
from support import Server, Stream, eventually
from torchannels.errors import BadRequest
from torchannels.identity import Identity, User

LIVE = ("stream", "sse", "websocket", "longpoll")
EVERY = ("poll", *LIVE)


async def settle(hub: Any, after: float) -> None:
    """Wait until ``after`` has passed, then sweep: every grace that ended
    by then has been acted on (the sweeper's own run is not waited for)."""
    await eventually(lambda: time.time() > after, timeout=10)
    await hub.presence_tracker.sweep()


async def marker(hub: Any, member: Member, name: str) -> None:
    """Make ``name`` join and wait until ``member`` sees it: everything sent
    to ``member`` before that join's frame has arrived."""
    await hub.presence_tracker.add("room:1", Identity(name, User(name), "poll", 0), live=True)
    await member.wait(lambda fs: name in joined(fs))


class Joiner:
    """A user in ``room:1`` over one transport."""

    def __init__(self, server: Server, transport: str, user: str) -> None:
        self.server, self.transport, self.user = server, transport, user
        self.member: Member | None = None
        self.stream: Stream | None = None
        self.held: asyncio.Future[dict[str, Any]] | None = None
        self.first: dict[str, Any] | None = None  # its subscribed frame

    async def join(self) -> None:
        query: dict[str, Any] = {"user": self.user, "channel": "room:1"}
        if self.transport == "websocket":
            self.member = await Member.connect(self.server, f"user={self.user}&channel=room:1")
            await self.member.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
            self.first = self.member.of("subscribed")[0]
        elif self.transport in ("stream", "sse"):
            self.stream = self.server.stream(self.transport, **query)
            frames = await self.stream.wait_frames(
                lambda fs: any(f["type"] == "subscribed" for f in fs)
            )
            self.first = next(f for f in frames if f["type"] == "subscribed")
        else:
            self.doc = await self.server.poll_doc("poll", **query)
            self.first = self.doc["frames"][0]

    async def hold(self) -> None:
        """Long-poll: hold a request from the first poll's cursor (live), and
        return once the hub has attached it: presence frames are not kept in
        history, so one sent before the hold attaches would never reach it."""
        if self.transport == "longpoll":
            doc, query = self.doc, {"user": self.user, "channel": "room:1"}
            hub = self.server.hub
            before = hub.local_subscribers("room:1")
            held = self.held = asyncio.ensure_future(
                self.server.poll_doc(
                    "longpoll", cursor=doc["cursor"], client=doc["client"], timeout=30, **query
                )
            )
            await eventually(lambda: hub.local_subscribers("room:1") > before or held.done())

    def frames(self) -> list[dict[str, Any]]:
        if self.member is not None:
            return self.member.frames
        if self.stream is not None:
            return self.stream.frames()
        if self.held is not None and self.held.done():
            frames: list[dict[str, Any]] = self.held.result()["frames"]
            return frames
        return []

    async def wait(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        if self.stream is not None:
            await self.stream.wait_frames(predicate)
        elif self.member is not None:
            await self.member.wait(predicate)
        else:
            assert self.held is not None
            await asyncio.wait_for(asyncio.shield(self.held), 10)
            assert predicate(self.frames()), self.frames()

    async def leave(self) -> None:
        if self.member is not None:
            await self.member.close()
        if self.stream is not None:
            self.stream.close()
        if self.held is not None and not self.held.done():
            self.held.cancel()


@pytest.mark.parametrize("transport", EVERY)
async def test_joins_and_leaves_are_seen_by_members(
    make_server: Callable[..., Server], transport: str
) -> None:
    hub = presence_hub()
    server = serve(make_server, hub)
    ann = await Member.connect(server, "user=ann&channel=room:1")
    await ann.wait(lambda fs: bool(ann.of("subscribed")))
    bob = Joiner(server, transport, "bob")
    await bob.join()
    assert bob.first is not None and snapshot_users(bob.first) == ["ann", "bob"]
    await ann.wait(lambda fs: "bob" in joined(fs))
    await bob.hold()
    if transport != "poll":  # a live member sees the others come
        await marker(hub, ann, "cy")
        await bob.wait(lambda fs: "cy" in joined(fs))
    await bob.leave()
    await ann.wait(lambda fs: "bob" in left(fs))
    await marker(hub, ann, "dee")
    assert (joined(ann.frames).count("bob"), left(ann.frames).count("bob")) == (1, 1)
    await ann.close()


@pytest.mark.parametrize("transport", ["websocket", "stream", "sse"])
async def test_reconnect_within_grace_makes_no_leave_and_no_join(
    make_server: Callable[..., Server], transport: str
) -> None:
    hub = presence_hub(presence_grace=2.0)
    server = serve(make_server, hub)
    ann = await Member.connect(server, "user=ann&channel=room:1")
    first = Joiner(server, transport, "bob")
    await first.join()
    await ann.wait(lambda fs: "bob" in joined(fs))
    await first.leave()  # a page reload: gone, and back at once
    gone = time.time()
    again = Joiner(server, "websocket", "bob")  # even over another transport
    await again.join()
    await settle(hub, gone + 2.0)  # the first connection's grace is over, and swept
    await marker(hub, ann, "cy")
    assert (joined(ann.frames).count("bob"), left(ann.frames)) == (1, [])
    assert await hub.presence_counts("room:1") == (3, 3)  # ann, bob (one client), cy
    await again.leave()
    await ann.close()


async def test_poll_client_stays_present_while_it_polls_then_leaves_once(
    make_server: Callable[..., Server],
) -> None:
    hub = presence_hub(presence_grace=1.5)
    server = serve(make_server, hub)
    ann = await Member.connect(server, "user=ann&channel=room:1")
    doc = await server.poll_doc("poll", channel="room:1", user="bob")
    for _ in range(8):  # 1.6 s of polling, longer than the grace
        await asyncio.sleep(0.2)
        doc = await server.poll_doc(
            "poll", channel="room:1", user="bob", cursor=doc["cursor"], client=doc["client"]
        )
    last = time.time()
    assert await hub.presence_counts("room:1") == (2, 2)  # one client for all those polls
    await settle(hub, last + 1.5)
    await ann.wait(lambda fs: "bob" in left(fs))
    await marker(hub, ann, "cy")
    assert (joined(ann.frames).count("bob"), left(ann.frames).count("bob")) == (1, 1)
    await ann.close()


async def test_a_join_burst_reaches_a_member_in_a_handful_of_frames(
    make_server: Callable[..., Server],
) -> None:
    hub = presence_hub(presence_coalesce=0.2)
    server = serve(make_server, hub)
    ann = await Member.connect(server, "user=ann&channel=room:1")
    await ann.wait(lambda fs: bool(ann.of("subscribed")))
    users = [f"u{n:03}" for n in range(200)]
    tracker = hub.presence_tracker
    await asyncio.gather(
        *(tracker.add("room:1", Identity(f"c{u}", User(u), "poll", 0), live=True) for u in users)
    )
    await ann.wait(lambda fs: set(users) <= set(joined(fs)))
    frames = ann.of("presence")
    assert len(frames) <= 5, len(frames)
    assert sorted(u for u in joined(frames) if u != "ann") == users  # each join once
    await ann.close()


def test_coalescing_cancels_join_then_leave_and_leave_then_join() -> None:
    from torchannels.presence_hub import Coalescer

    c = Coalescer()
    c.join("a", None)
    c.leave("a")  # came and went within the window: nothing
    c.leave("b")
    c.join("b", {"x": 1})  # left and came back: nothing
    assert c.frame("room") is None
    c.join("c", None)
    frame = c.frame("room")
    assert frame is not None and json.loads(frame.envelope)["joins"] == [
        {"user": "c", "info": None}
    ]


@pytest.mark.parametrize("transport", ["websocket", "stream", "sse"])
async def test_presence_frames_are_in_order_with_messages(
    make_server: Callable[..., Server], transport: str
) -> None:
    hub = presence_hub()
    server = serve(make_server, hub)
    watcher = await Member.connect(server, "user=zed&channel=room:1")
    ann = Joiner(server, transport, "ann")
    await ann.join()
    await watcher.wait(lambda fs: "ann" in joined(fs))  # ann's own join was flushed
    await ann.wait(lambda fs: "ann" in joined(fs))
    room = hub.channel("room:1")
    room.send({"n": 1})
    await hub.presence_tracker.add("room:1", Identity("cb", User("bob"), "poll", 0), live=True)
    await watcher.wait(lambda fs: "bob" in joined(fs))  # the frame was flushed
    room.send({"n": 2})
    await ann.wait(lambda fs: any(f["type"] == "message" and f["data"]["n"] == 2 for f in fs))
    seen = [
        ("m", f["data"]["n"]) if f["type"] == "message" else ("p", joined([f]))
        for f in ann.frames()
        if f["type"] in ("message", "presence")
    ]
    assert seen[-3:] == [("m", 1), ("p", ["bob"]), ("m", 2)], seen
    await ann.leave()
    await watcher.close()


@pytest.mark.parametrize("transport", EVERY)
async def test_subscribed_frame_carries_a_snapshot(
    make_server: Callable[..., Server], transport: str
) -> None:
    hub = presence_hub()
    server = serve(make_server, hub)
    ann = await Member.connect(server, "user=ann&channel=room:1&channel=news")
    anon = await Member.connect(server, "channel=room:1")  # a client, not a user
    await anon.wait(lambda fs: bool(anon.of("subscribed")))
    cy = Joiner(server, transport, "cy")
    await cy.join()
    assert cy.first is not None
    assert cy.first["presence"] == {
        "members": [
            {"user": "ann", "info": {"name": "ann"}, "clients": 1},
            {"user": "cy", "info": {"name": "cy"}, "clients": 1},
        ],
        "next": None,
        "clients": 3,
        "users": 2,
    }
    await ann.wait(lambda fs: len(ann.of("subscribed")) == 2)
    news = next(f for f in ann.of("subscribed") if f["channel"] == "news")
    assert "presence" not in news  # no presence on that channel
    await cy.leave()
    for member in (ann, anon):
        await member.close()


async def test_reading_presence_over_websocket_and_http(make_server: Callable[..., Server]) -> None:
    hub = presence_hub()
    server = serve(make_server, hub)
    users = sorted(f"user{n}" for n in range(250))
    for u in users:
        await hub.presence_tracker.add("quiet:1", Identity(u, User(u), "poll", 0), live=True)
    ann = await Member.connect(server, "user=ann")
    await ann.wait(lambda fs: bool(ann.of("connected")))
    # WebSocket: three pages of 100, 100 and 50.
    got: list[str] = []
    after: str | None = None
    for n in range(3):
        command: dict[str, Any] = {"type": "presence", "channel": "quiet:1", "limit": 100}
        if after is not None:
            command["after"] = after
        ann.send(command)
        page = await ann.nth("presence_page", n)
        assert (page["channel"], page["clients"], page["users"]) == ("quiet:1", 250, 250)
        got += [m["user"] for m in page["members"]]
        after = page["next"]
    assert got == users and after is None
    # HTTP: the same pages.
    got, query = [], {"presence": "quiet:1", "limit": "100", "user": "ann"}
    while True:
        resp = await server.fetch(server.url(**query))
        assert resp.code == 200, resp.body
        doc = json.loads(resp.body)
        assert set(doc) == {"channel", "members", "next", "clients", "users"}
        got += [m["user"] for m in doc["members"]]
        if doc["next"] is None:
            break
        query["after"] = doc["next"]
    assert got == users
    await ann.close()


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({"presence": "news"}, 400, "presence_disabled"),
        ({"presence": "quiet:1", "after": "dXNlcjE.AAAAAAAAAAAAAAAA"}, 400, "invalid_cursor"),
        ({"presence": "quiet:1", "after": "junk"}, 400, "invalid_cursor"),
        ({"presence": "quiet:1", "limit": "0"}, 400, "invalid_limit"),
        ({"presence": "quiet:1", "limit": "1001"}, 400, "invalid_limit"),
        ({"presence": "quiet:1", "limit": "ten"}, 400, "invalid_limit"),
        ({"presence": "bad name"}, 400, "invalid_channel"),
        ({"presence": "secret:1"}, 403, "forbidden"),
    ],
)
async def test_presence_read_errors_over_http(
    make_server: Callable[..., Server], query: dict[str, str], status: int, code: str
) -> None:
    server = serve(make_server, presence_hub())
    resp = await server.fetch(server.url(**query))
    assert (resp.code, json.loads(resp.body)["error"]) == (status, code), resp.body


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"channel": "news"}, "presence_disabled"),
        ({"channel": "quiet:1", "after": "dXNlcjE.AAAAAAAAAAAAAAAA"}, "invalid_cursor"),
        ({"channel": "quiet:1", "after": 5}, "invalid_cursor"),
        ({"channel": "quiet:1", "limit": 0}, "invalid_limit"),
        ({"channel": "quiet:1", "limit": "10"}, "invalid_limit"),
        ({"channel": "secret:1"}, "forbidden"),
    ],
)
async def test_presence_command_errors_over_websocket(
    make_server: Callable[..., Server], command: dict[str, Any], code: str
) -> None:
    server = serve(make_server, presence_hub())
    sock = await Member.connect(server, "user=ann")
    sock.send({"type": "presence", **command})
    frames = await sock.wait(lambda fs: bool(sock.of("error")))
    error = next(f for f in frames if f["type"] == "error")
    assert (error["channel"], error["code"]) == (command["channel"], code)
    sock.send({"type": "presence", "channel": "quiet:1"})  # the socket still serves
    await sock.wait(lambda fs: bool(sock.of("presence_page")))
    await sock.close()


async def test_embedded_reads_on_the_hub_and_the_channel() -> None:
    hub = presence_hub()
    for u in ("bo", "al", "cy"):
        await hub.presence_tracker.add("quiet:x", Identity(u, User(u), "poll", 0), live=True)
    await hub.presence_tracker.add("quiet:x", Identity("anon", None, "poll", 0), live=True)
    assert await hub.presence_counts("quiet:x") == (4, 3)
    page = await hub.channel("quiet:x").presence(limit=2)
    assert ([m.user for m in page.members], page.next) == (["al", "bo"], "bo")
    rest = await hub.presence("quiet:x", after=page.next)
    assert ([m.user for m in rest.members], rest.next) == (["cy"], None)
    assert await hub.channel("quiet:x").presence_counts() == (4, 3)
    for bad in ("news",):
        with pytest.raises(BadRequest, match="no presence"):
            await hub.presence(bad)
    with pytest.raises(BadRequest, match="limit"):
        await hub.presence("quiet:x", limit=0)
    await hub.close()


async def test_graceful_close_removes_this_process_clients_at_once() -> None:
    hub = presence_hub(presence_grace=30.0)
    await hub.presence_tracker.add("room:1", Identity("c1", User("ann"), "poll", 0), live=True)
    hub.presence_tracker.release("room:1", "c1")  # in its grace
    store = hub.broker.presence
    await hub.close()
    assert await store.counts("room:1", time.time()) == (0, 0)


async def test_a_poll_client_alone_in_a_channel_is_announced_when_its_grace_ends(
    make_server: Callable[..., Server],
) -> None:
    hub = presence_hub(presence_grace=0.5)
    server = serve(make_server, hub)
    events: list[Any] = []
    await hub.broker.subscribe("room:2", events.append)  # what other processes would get
    await server.poll_doc("poll", channel="room:2", user="bob")
    polled = time.time()
    assert hub.presence_tracker.grace  # nobody here is live in room:2: only the poll's grace
    await settle(hub, polled + 0.5)
    leaves = [e.leaves for e in events if getattr(e, "leaves", ())]
    assert leaves == [("bob",)]
    assert await hub.presence_counts("room:2") == (0, 0)
    assert hub.presence_tracker.grace == {}  # nothing left to sweep


async def test_a_release_before_the_add_runs_leaves_nothing_live() -> None:
    """A session that subscribes several channels starts their adds together
    and may be closed before they run: the client must not stay live (kept
    by heartbeats forever)."""
    hub = presence_hub(presence_grace=0.2)
    tracker = hub.presence_tracker
    me = Identity("c1", User("ann"), "websocket", 0)
    pending = tracker.add("room:1", me, live=True)
    tracker.release("room:1", "c1")  # closed first
    await pending
    assert "room:1" not in tracker.live
    await settle(hub, time.time() + 0.2)
    assert await hub.presence_counts("room:1") == (0, 0)
    await hub.close()


async def test_presence_churn_counts_back_to_zero(make_server: Callable[..., Server]) -> None:
    hub = presence_hub(presence_grace=0.3)
    server = serve(make_server, hub)
    for n in range(30):
        transport = ("websocket", "stream", "sse", "longpoll", "poll")[n % 5]
        joiner = Joiner(server, transport, f"u{n % 7}")
        await joiner.join()
        await joiner.hold()
        await joiner.leave()
    await eventually(lambda: not hub.presence_tracker.live and hub.connections == set())
    await settle(hub, time.time() + 0.3)
    assert await hub.presence_counts("room:1") == (0, 0)
    assert hub.presence_tracker.grace == {}

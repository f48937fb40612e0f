"""Presence across three ``serve`` processes on one Redis (issue 18, "Done
when"): joins and leaves reach members on every transport, a reconnect within
the grace makes no leave and no join, a SIGKILLed process's users leave
within the TTL and are announced once, a graceful shutdown removes its
entries at once, and the counts are right on every process.

Each test starts its own processes with a fresh ``--redis-prefix`` on the
shared redis-server, presence and join/leave on ``room:*`` from a TOML
``--config``, and tokens whose ``sub`` is the user and ``info`` its info.
Negative checks ("no leave for alice") wait for a later event that any such
leave would have come before (a sentinel user's leave), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from server.presence_members import (
    Member,
    check_frames,
    cluster_flags,
    held,
    join_info,
    joins,
    leaves,
    member_pool,
    read_presence,
    token,
)
from server.processes import ServerProcess, api, as_json, assert_error, until

Open = Callable[..., Awaitable[Member]]
Spawn = Callable[..., ServerProcess]

LIVE = ("stream", "sse", "websocket")


@pytest.fixture
async def members() -> AsyncIterator[Open]:
    async with member_pool() as open_member:
        yield open_member


def users(body: dict[str, Any], key: str = "members") -> list[str]:
    return [m["user"] for m in body[key]]


async def test_members_on_every_transport_see_joins_and_leaves_across_processes(
    spawn: Spawn, tmp_path: Path, http: Any, members: Open
) -> None:
    flags = cluster_flags(tmp_path, grace=2.0, ttl=4.0)
    a, b, c = (spawn(*flags) for _ in range(3))
    room = "room:every"
    # A watcher per transport and four joiners, spread so that every watcher
    # is on another process than most joiners. c holds only live connections
    # and the long-poll watcher, so /health tells when its long-poll is held.
    watchers = {
        "poll": await members(a, "poll", room, "w-poll"),
        "sse": await members(a, "sse", room, "w-sse"),
        "websocket": await members(b, "websocket", room, "w-ws"),
        "stream": await members(c, "stream", room, "w-stream"),
        "longpoll": await members(c, "longpoll", room, "w-longpoll"),
    }
    spots = {"poll": b, "longpoll": a, "stream": a, "sse": b}
    joiners = {t: await members(hub, t, room, f"j-{t}", {"name": f"J {t}", "n": i})
               for i, (t, hub) in enumerate(spots.items())}  # fmt: skip
    early = [f"j-{t}" for t in spots]

    def saw_joins(*names: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda fs: set(names) <= set(joins(fs, room))

    def saw_leaves(*names: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda fs: set(names) <= set(leaves(fs, room))

    for t in LIVE:
        frames = await watchers[t].wait(saw_joins(*early))
        assert {u: join_info(frames, room)[u] for u in early} == {
            f"j-{t}": {"name": f"J {t}", "n": i} for i, t in enumerate(spots)
        }

    async def poll_watcher_lists(names: set[str], present: bool) -> bool:
        listed = set(users(await read_presence(http, a, room, watchers["poll"].token)))
        return names <= listed if present else not names & listed

    await until(lambda: poll_watcher_lists(set(early), True), "the poll watcher reads the joins")
    # The last joiner joins while c's long-poll watcher is held: the join frame answers it.
    await held(http, c, connections=2)  # the stream watcher and the held long-poll
    last = await members(c, "websocket", room, "j-websocket", {"name": "J websocket"})
    for watcher in watchers.values():
        if watcher.transport != "poll":
            frames = await watcher.wait(saw_joins("j-websocket"))
            assert join_info(frames, room)["j-websocket"] == {"name": "J websocket"}
    await until(lambda: poll_watcher_lists({"j-websocket"}, True), "the poll watcher reads it")

    for joiner in joiners.values():
        await joiner.close()
    for t in LIVE:
        await watchers[t].wait(saw_leaves(*early))
    await until(lambda: poll_watcher_lists(set(early), False), "the poll watcher reads the leaves")
    await held(http, c, connections=3)  # the stream watcher, the last joiner, the long-poll
    await last.close()
    for watcher in watchers.values():
        if watcher.transport != "poll":
            await watcher.wait(saw_leaves("j-websocket"))
    await until(lambda: poll_watcher_lists({"j-websocket"}, False), "the poll watcher reads it")
    for t in LIVE:
        frames = watchers[t].content()
        check_frames(frames)
        for name in [*early, "j-websocket"]:
            assert joins(frames, room).count(name) == 1, (t, name, frames)
            assert leaves(frames, room).count(name) == 1, (t, name, frames)
    assert not {f"w-{t}" for t in ("poll", "sse", "ws", "stream", "longpoll")} & set(
        leaves(watchers["websocket"].content(), room)
    )  # the watchers, polling ones included, stayed present throughout


async def test_a_reconnect_within_the_grace_makes_no_leave_and_no_join(
    spawn: Spawn, tmp_path: Path, http: Any, members: Open
) -> None:
    flags = cluster_flags(tmp_path, grace=5.0, ttl=10.0)
    a, b, c = (spawn(*flags) for _ in range(3))
    room = "room:reconnect"
    watch_a = await members(a, "websocket", room, "watch-a")
    watch_c = await members(c, "sse", room, "watch-c")
    alice = await members(b, "websocket", room, "alice")  # steps over to SSE on c
    carol = await members(a, "websocket", room, "carol")  # reloads the page on a
    bob = await members(a, "poll", room, "bob")  # polls a, then b
    sentinel = await members(b, "sse", room, "sentinel")
    everyone = ("alice", "bob", "carol", "sentinel")
    for watcher in (watch_a, watch_c):
        await watcher.wait(lambda fs: set(everyone) <= set(joins(fs, room)))

    await alice.close()
    await carol.close()
    # The clients come back after 2 s (a slow page load): longer than a
    # sweep interval (1 s), within the grace (5 s). This sleep is the
    # scenario, not a check.
    await asyncio.sleep(2.0)
    alice = await members(c, "sse", room, "alice")
    carol = await members(a, "websocket", room, "carol")
    answered = bob.answers
    bob.hub = b  # the same client id, signed by a, verifies on b
    await until(lambda: _true(bob.answers >= answered + 2), "bob polls b")
    page = as_json(await api(http, c, f"/api/channels/{room}/presence"))
    clients = {m["user"]: m["clients"] for m in page["users"]}
    assert clients["bob"] == 1, page  # one client, whichever process it polls

    # Any leave of alice or carol was due before the sentinel's: it goes last.
    await sentinel.close()
    for watcher in (watch_a, watch_c):
        frames = await watcher.wait(lambda fs: "sentinel" in leaves(fs, room))
        check_frames(frames)
        assert not {"alice", "bob", "carol"} & set(leaves(frames, room)), frames
        assert [joins(frames, room).count(u) for u in ("alice", "bob", "carol")] == [1, 1, 1]
    body = as_json(await api(http, b, f"/api/channels/{room}"))
    assert body["presence"] == {"clients": 5, "users": 5}, body  # 2 watchers, alice, bob, carol


async def _true(value: bool) -> bool:
    return value


async def test_a_killed_process_s_users_leave_within_the_ttl_announced_once(
    spawn: Spawn, tmp_path: Path, http: Any, members: Open
) -> None:
    grace, ttl = 2.0, 4.0  # heartbeats every 1.3 s: a busy machine does not lose the living
    flags = cluster_flags(tmp_path, grace=grace, ttl=ttl)
    a, b, c = (spawn(*flags) for _ in range(3))
    room = "room:kill"
    watch_a = await members(a, "websocket", room, "watch-a")
    watch_b = await members(b, "sse", room, "watch-b")
    on_c = [
        await members(c, "websocket", room, "x"),
        await members(c, "stream", room, "y"),
        await members(c, "longpoll", room, "z"),
        await members(c, "websocket", room, "w"),  # w is on a too: w stays
    ]
    await members(a, "sse", room, "w")
    sentinel = await members(b, "websocket", room, "sentinel")
    for watcher in (watch_a, watch_b):
        await watcher.wait(lambda fs: {"x", "y", "z", "w", "sentinel"} <= set(joins(fs, room)))

    killed = time.monotonic()
    c.signal(signal.SIGKILL)
    await c.exited(10)
    for member in on_c:
        await member.close()
    # Heartbeats stopped: the entries expire after the TTL, and the next
    # sweep (every second) of a or b finds them; 3 s of slack for a busy machine.
    for watcher in (watch_a, watch_b):
        await watcher.wait(lambda fs: {"x", "y", "z"} <= set(leaves(fs, room)), ttl + 1 + 3)
    took = time.monotonic() - killed
    # A second announcement would come from the other process's sweep, within
    # a second of the first; the sentinel leaves after the grace, later still.
    await sentinel.close()
    for watcher in (watch_a, watch_b):
        frames = await watcher.wait(lambda fs: "sentinel" in leaves(fs, room))
        check_frames(frames)
        gone = leaves(frames, room)
        assert [gone.count(u) for u in ("x", "y", "z", "sentinel")] == [1, 1, 1, 1], (took, frames)
        assert "w" not in gone, frames
    for hub in (a, b):
        body = as_json(await api(http, hub, f"/api/channels/{room}"))
        assert body["presence"] == {"clients": 3, "users": 3}, body  # watch-a, watch-b, w


async def test_a_graceful_shutdown_removes_its_entries_at_once(
    spawn: Spawn, tmp_path: Path, members: Open
) -> None:
    # Grace and TTL far longer than the wait: only the shutdown's removal
    # can make these leaves arrive in time.
    flags = cluster_flags(tmp_path, grace=60.0, ttl=90.0)
    a, c = spawn(*flags), spawn(*flags)
    room = "room:shutdown"
    watcher = await members(a, "websocket", room, "watch")
    leaving = [await members(c, t, room, f"u-{t}") for t in ("websocket", "sse", "longpoll")]
    await watcher.wait(lambda fs: {m.user for m in leaving} <= set(joins(fs, room)))
    c.signal(signal.SIGTERM)
    assert await c.exited(20) == 0
    for member in leaving:
        await member.close()
    frames = await watcher.wait(lambda fs: {m.user for m in leaving} <= set(leaves(fs, room)))
    check_frames(frames)


async def test_counts_are_right_on_every_process(
    spawn: Spawn, tmp_path: Path, http: Any, members: Open
) -> None:
    flags = cluster_flags(tmp_path, grace=1.0, ttl=3.0)
    hubs = a, b, c = [spawn(*flags) for _ in range(3)]
    room = "room:count"
    u1_ws = await members(a, "websocket", room, "u1", {"name": "One"})
    u1_sse = await members(b, "sse", room, "u1", {"name": "One"})
    await members(c, "stream", room, "u2")
    await members(b, "poll", room, "u3", {"name": "Three"})
    await members(c, "websocket", room, None)  # anonymous: a client, never a user
    await members(a, "longpoll", room, None)

    async def counts(clients: int, users_: int) -> bool:
        for hub in hubs:
            body = as_json(await api(http, hub, f"/api/channels/{room}"))
            if body.get("presence") != {"clients": clients, "users": users_}:
                return False
        return True

    await until(lambda: counts(6, 3), "6 clients and 3 users on every process")
    published = await api(http, c, "/api/publish", {"channel": room, "data": {}})
    assert published.code == 200  # so that the channel is listed
    for hub in hubs:
        rows = as_json(await api(http, hub, "/api/channels?prefix=room:"))["channels"]
        row = next(r for r in rows if r["channel"] == room)
        assert row["presence"] == {"clients": 6, "users": 3}, row
        page = as_json(await api(http, hub, f"/api/channels/{room}/presence"))
        assert page == {
            "channel": room,
            "users": [
                {"user": "u1", "info": {"name": "One"}, "clients": 2},
                {"user": "u2", "info": None, "clients": 1},
                {"user": "u3", "info": {"name": "Three"}, "clients": 1},
            ],
            "next": None,
        }, page
        seen = await read_presence(http, hub, room, token("u2"))
        assert (seen["clients"], seen["users"], users(seen)) == (6, 3, ["u1", "u2", "u3"])
    await u1_ws.close()
    await until(lambda: counts(5, 3), "u1's WebSocket gone after the grace")
    await u1_sse.close()
    await until(lambda: counts(4, 2), "u1 gone after the grace")
    # A channel without presence has no counts, and no member list.
    published = await api(http, a, "/api/publish", {"channel": "news:x", "data": {}})
    assert published.code == 200
    body = as_json(await api(http, b, "/api/channels/news:x"))
    assert "presence" not in body, body
    assert_error(await api(http, c, "/api/channels/news:x/presence"), 400, "presence_disabled")

"""Paging through 10,000 users of one channel across three ``serve``
processes on Redis (issue 18, "Done when"): the API's member list, the
subscribers' reads (HTTP and the WebSocket command) and the ``subscribed``
snapshot all agree, whichever process answers and whichever signed the
cursor.

The 10,000 users are written straight into the processes' presence store
(a RedisBroker with the same prefix in the test process), as 10,000
connections would put them there; one real WebSocket member joins them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from redis_servers import shared_redis
from server.presence_members import Member, cluster_flags, member_pool, prefix_of, read_presence
from server.processes import ServerProcess, api, as_json, assert_error, fetch
from torchannels.brokers import RedisBroker
from torchannels.identity import Identity, User

Open = Callable[..., Awaitable[Member]]
USERS = 10_000
ROOM = "room:big"


@pytest.fixture
async def members() -> AsyncIterator[Open]:
    async with member_pool() as open_member:
        yield open_member


async def fill(prefix: str, count: int) -> tuple[RedisBroker, list[str]]:
    """``count`` users (``user-00000`` ...), one client each, info ``{"n": i}``."""
    broker = RedisBroker.from_url(shared_redis(), prefix=prefix)
    now = time.time()
    gate = asyncio.Semaphore(32)
    clients = [f"filled-{uuid.uuid4().hex[:8]}-{i}" for i in range(count)]

    async def add(i: int) -> None:
        user = User(f"user-{i:05d}", {"n": i})
        async with gate:
            joined = await broker.presence.add(
                ROOM, Identity(clients[i], user, "websocket", now), now + 600
            )
        assert joined

    await asyncio.gather(*(add(i) for i in range(count)))
    return broker, clients


async def test_paging_through_ten_thousand_users(
    spawn: Callable[..., ServerProcess], tmp_path: Path, http: Any, members: Open
) -> None:
    flags = cluster_flags(tmp_path, grace=2.0, ttl=30.0)
    hubs = [spawn(*flags) for _ in range(3)]
    broker, clients = await fill(prefix_of(flags), USERS)
    try:
        watcher = await members(hubs[0], "websocket", ROOM, "watcher", {"me": True})
        want = [{"user": f"user-{i:05d}", "info": {"n": i}, "clients": 1} for i in range(USERS)]
        want.append({"user": "watcher", "info": {"me": True}, "clients": 1})

        # The snapshot in the subscribed frame: the first 100 and the counts.
        subscribed = next(f for f in watcher.content() if f["type"] == "subscribed")
        snapshot = subscribed["presence"]
        assert (snapshot["clients"], snapshot["users"]) == (USERS + 1, USERS + 1)
        assert snapshot["members"] == want[:100] and snapshot["next"] is not None

        # The API: default page 100, then pages of 1,000 from process to process.
        first = as_json(await api(http, hubs[1], f"/api/channels/{ROOM}/presence"))
        assert first["users"] == want[:100] and first["next"] is not None
        listed: list[dict[str, Any]] = []
        after: str | None = None
        pages = 0
        while True:
            query = "?limit=1000" + (f"&after={after}" if after else "")
            hub = hubs[pages % 3]
            page = as_json(await api(http, hub, f"/api/channels/{ROOM}/presence{query}"))
            assert page["channel"] == ROOM and len(page["users"]) <= 1000
            listed += page["users"]
            pages += 1
            after = page["next"]
            if after is None:
                break
        assert (pages, listed) == (11, want)
        info = as_json(await api(http, hubs[2], f"/api/channels/{ROOM}"))
        assert info["presence"] == {"clients": USERS + 1, "users": USERS + 1}

        # A subscriber's HTTP read, and the WebSocket command, page the same way.
        read: list[dict[str, Any]] = []
        after = None
        while True:
            extra: dict[str, str] = {"after": after} if after else {}
            body = await read_presence(http, hubs[1], ROOM, watcher.token, limit=1000, **extra)
            assert (body["clients"], body["users"]) == (USERS + 1, USERS + 1)
            read += body["members"]
            after = body["next"]
            if after is None:
                break
        assert read == want
        assert await websocket_pages(watcher) == want

        # A cursor that was tampered with is refused, on the API and for subscribers.
        bad = first["next"][:-2] + ("AA" if not first["next"].endswith("AA") else "BB")
        response = await api(http, hubs[0], f"/api/channels/{ROOM}/presence?after={bad}")
        assert_error(response, 400, "invalid_cursor")
        response = await fetch(http, hubs[2].url(presence=ROOM, token=watcher.token, after=bad))
        assert_error(response, 400, "invalid_cursor")
    finally:
        await broker.presence.remove(ROOM, clients)
        await broker.close()


async def websocket_pages(watcher: Member) -> list[dict[str, Any]]:
    """Every member, read with the WebSocket command a page of 1,000 at a time."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        command: dict[str, Any] = {"type": "presence", "channel": ROOM, "limit": 1000}
        if after is not None:
            command["after"] = after
        count = len(watcher.content())
        await watcher.send(json.dumps(command))

        def answered(frames: list[dict[str, Any]], n: int = count) -> bool:
            return any(f["type"] == "presence_page" for f in frames[n:])

        frames = await watcher.wait(answered)
        page = next(f for f in frames[count:] if f["type"] == "presence_page")
        assert page["channel"] == ROOM and page["users"] == USERS + 1
        found += page["members"]
        after = page["next"]
        if after is None:
            return found

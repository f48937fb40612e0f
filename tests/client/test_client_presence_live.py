"""The Python client's presence against a real ``torchannels serve`` with
presence channels, on every transport: the snapshot after ``subscribed``,
a second client's join then leave as diffs, the one-off read (over the
socket and over HTTP) and its refusals, and client ids kept by polls."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.client_helpers import FLAGS, Reader, channels_url, publisher, tasks_left
from client.test_client_cli import Subscriber
from client.test_client_doc_examples import DOC, KEY_LINE, Example, blocks
from server.processes import SECRET, START_TIMEOUT, ServerProcess
from torchannels.client import (
    TRANSPORTS,
    APIError,
    AuthError,
    Client,
    Member,
    PresenceDiff,
    PresencePage,
    PresenceSnapshot,
    RequestError,
    subscribe_sync,
)
from torchannels.tokens import encode_token

#: ``room:*``: presence with joins and leaves; ``count:*``: presence only;
#: ``open:*`` (anonymous): none.
CHANNELS = """
[channels."room:*"]
presence = true
join_leave = true

[channels."count:*"]
presence = true
"""


@pytest.fixture(scope="module")
def presence_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("presence-hub")
    (path / "channels.toml").write_text(CHANNELS)
    server = ServerProcess(path, ["--port", "0", *FLAGS, "--config", str(path / "channels.toml"),
                                  "--presence-grace", "0.5"], None)  # fmt: skip
    yield server
    server.close()


def token(user: str | None, info: dict[str, Any] | None = None, **claims: Any) -> str:
    body: dict[str, Any] = {"exp": time.time() + 600, "channels": ["room:*", "count:*"]}
    if user is not None:
        body["sub"] = user
    if info is not None:
        body["info"] = info
    return encode_token({**body, **claims}, SECRET)


def fast(url: str, **options: Any) -> Client:
    return Client(url, min_delay=0.05, max_delay=0.3, poll_interval=0.05, longpoll_timeout=2,
                  **options)  # fmt: skip


def of(reader: Reader, kind: type[Any]) -> list[Any]:
    return [e for e in reader.events if isinstance(e, kind)]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_polls_keep_their_client_id(hub: ServerProcess, transport: str) -> None:
    channel = f"open:ids-{transport}"
    async with publisher(hub) as pub, fast(channels_url(hub), transport=transport) as client:
        feed = client.subscribe(channel)
        reader = Reader(feed)
        ids = []
        for n in range(1, 5):  # each message comes in an answer (or frame) of its own
            await pub.publish(channel, {"n": n})
            await reader.received(channel, n, "one more message")
            ids.append(feed.client_id)
        assert ids[0] is not None and "." in ids[0]  # CLIENT.SIG, opaque otherwise
        # A poll sends its id back with each request: the server keeps it.
        assert ids == [ids[0]] * 4
        await reader.stop()
    assert not await tasks_left()


async def snapshot_of(reader: Reader) -> PresenceSnapshot:
    await reader.wait(lambda: bool(of(reader, PresenceSnapshot)), "a snapshot")
    snapshot: PresenceSnapshot = of(reader, PresenceSnapshot)[0]
    return snapshot


def joined(reader: Reader) -> list[str]:
    return [m.user for d in of(reader, PresenceDiff) for m in d.joins]


def left(reader: Reader) -> list[str]:
    return [u for d in of(reader, PresenceDiff) for u in d.leaves]


def members(page: PresencePage) -> dict[str, tuple[Any, int]]:
    return {m.user: (m.info, m.clients) for m in page.members}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_member_sees_a_second_client_join_then_leave(
    presence_hub: ServerProcess, transport: str
) -> None:
    """Both on ``transport``. A ``poll`` request is not a live connection:
    the hub sends it no ``presence`` frames, so ann reads instead."""
    channel, url = f"room:join-{transport}", channels_url(presence_hub)
    async with fast(url, transport=transport, token=token("ann", {"name": "Ann"})) as ann:
        watcher = Reader(ann.subscribe(channel))
        snapshot = await snapshot_of(watcher)
        assert snapshot.channel == channel and set(members(snapshot)) <= {"ann"}
        async with fast(url, transport=transport, token=token("bob", {"n": 2})) as bob:
            visitor = Reader(bob.subscribe(channel))
            # bob's own snapshot lists ann, with her info
            seen = await snapshot_of(visitor)
            assert members(seen)["ann"] == ({"name": "Ann"}, 1) and seen.complete
            if transport == "poll":
                assert members(await ann.presence(channel))["bob"] == ({"n": 2}, 1)
            else:
                await watcher.wait(lambda: "bob" in joined(watcher), "bob's join")
            await visitor.stop()
        if transport == "poll":
            await until_read(ann, channel, lambda page: "bob" not in members(page))
            assert not of(watcher, PresenceDiff)
        else:
            await watcher.wait(lambda: "bob" in left(watcher), "bob's leave")
            check_diffs(of(watcher, PresenceDiff), snapshot)
        await watcher.stop()
    assert not await tasks_left()


def check_diffs(diffs: list[PresenceDiff], snapshot: PresenceSnapshot) -> None:
    """bob joined once, with his info, then left; ann saw herself."""
    assert [m for d in diffs for m in d.joins if m.user == "bob"] == [Member("bob", {"n": 2}, 1)]
    join = next(n for n, d in enumerate(diffs) if "bob" in [m.user for m in d.joins])
    assert next(n for n, d in enumerate(diffs) if "bob" in d.leaves) > join
    assert [u for d in diffs for u in d.leaves] == ["bob"]
    # ann sees herself: in her snapshot, or joining just after it. (The hub
    # may send her own join after a snapshot that has her already.)
    joins = [m.user for d in diffs for m in d.joins]
    assert "ann" in members(snapshot) or "ann" in joins
    assert all(d.channel == snapshot.channel for d in diffs)


async def until_read(client: Client, channel: str, check: Callable[[PresencePage], bool]) -> None:
    """Read ``channel``'s presence until ``check`` holds (bounded)."""
    deadline = time.monotonic() + 10
    while not check(page := await client.presence(channel)):
        assert time.monotonic() < deadline, f"not within 10 s: {page}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_the_one_off_read_and_its_pages(presence_hub: ServerProcess, transport: str) -> None:
    """Over the socket of a WebSocket subscription, else over HTTP."""
    channel, url = f"count:read-{transport}", channels_url(presence_hub)
    users = ["ann", "bob", "cy"]
    clients = [fast(url, transport=transport, token=token(u, {"u": u})) for u in users]
    readers = [Reader(c.subscribe(channel)) for c in clients]
    try:
        for reader in readers:
            await snapshot_of(reader)
        reading = clients[0]
        whole = await reading.presence(channel)
        assert whole.channel == channel and (whole.users, whole.clients) == (3, 3)
        assert members(whole) == {u: ({"u": u}, 1) for u in users} and whole.next is None
        pages = [await reading.presence(channel, limit=2)]
        while pages[-1].next is not None:
            pages.append(await reading.presence(channel, after=pages[-1].next, limit=2))
        assert [[m.user for m in p.members] for p in pages] == [["ann", "bob"], ["cy"]]
        assert pages[1].next is None and pages[1].users == 3
        # No `join_leave` on count:*: no diff, ever (the snapshot is all there is)
        assert not of(readers[0], PresenceDiff)
    finally:
        for reader in readers:
            await reader.stop()
        for client in clients:
            await client.aclose()
    assert not await tasks_left()


@pytest.mark.parametrize("transport", ["websocket", None])
async def test_refused_reads(presence_hub: ServerProcess, transport: str | None) -> None:
    """``None``: no subscription, so HTTP."""
    url = channels_url(presence_hub)
    async with fast(url, transport="websocket", token=token("ann")) as client:
        reader = Reader(client.subscribe("count:refusals")) if transport else None
        if reader is not None:
            await snapshot_of(reader)
        cases: list[tuple[dict[str, Any], type[APIError], str]] = [
            ({"channel": "open:no-presence"}, RequestError, "presence_disabled"),
            ({"channel": "count:refusals", "after": "tampered.cursor"}, RequestError,
             "invalid_cursor"),
            ({"channel": "count:refusals", "limit": 0}, RequestError, "invalid_limit"),
            ({"channel": "count:refusals", "limit": 1001}, RequestError, "invalid_limit"),
            ({"channel": "secret:x"}, AuthError, "forbidden"),  # not in the token's channels
        ]  # fmt: skip
        for args, cls, code in cases:
            with pytest.raises(cls) as refused:
                await client.presence(**args)
            assert refused.value.code == code, (args, refused.value)
        if reader is not None:  # the subscription is untouched by the refusals
            assert not reader.task.done() and reader.error is None
            await reader.stop()
    async with fast(url) as anonymous:  # no token
        with pytest.raises(AuthError) as refused:
            await anonymous.presence("count:refusals")
        assert refused.value.code == "token_required"
    assert not await tasks_left()


@pytest.mark.parametrize("as_json", [False, True])
async def test_torchannels_subscribe_prints_presence(presence_hub: ServerProcess,
                                                     as_json: bool) -> None:  # fmt: skip
    channel = f"room:cli-{as_json}"
    flags = ["--json"] if as_json else []
    sub = await Subscriber.start(presence_hub, channel, "--token", token("ann"),
                                 "--transport", "websocket", *flags)  # fmt: skip
    try:
        first = await sub.line()
        async with fast(channels_url(presence_hub), token=token("bob", {"n": 1})) as bob:
            visitor = Reader(bob.subscribe(channel))
            await snapshot_of(visitor)
            joined = await sub.line()
            await visitor.stop()
        left = await sub.line()
        code, _ = await sub.interrupt()
    finally:
        sub.kill()
    assert code == 130
    if as_json:
        snapshot = json.loads(first)
        assert snapshot["type"] == "presence_snapshot" and snapshot["channel"] == channel
        assert {m["user"] for m in snapshot["members"]} <= {"ann"}
        diff = json.loads(joined)  # ann's own join may come with bob's (see above)
        assert diff["type"] == "presence" and diff["channel"] == channel
        assert {"user": "bob", "info": {"n": 1}} in diff["joins"] and diff["leaves"] == []
        assert json.loads(left) == {"type": "presence", "channel": channel, "joins": [],
                                    "leaves": [{"user": "bob"}]}  # fmt: skip
    else:
        counts = "(0 users, 0 clients|1 user, 1 client: ann)"  # ann herself, or not yet
        assert re.fullmatch(rf"\d\d:\d\d:\d\d {channel} present {counts}", first), first
        assert re.fullmatch(rf"\d\d:\d\d:\d\d {channel} joined (ann, )?bob", joined), joined
        assert re.fullmatch(rf"\d\d:\d\d:\d\d {channel} left bob", left), left


def test_the_doc_example(tmp_path: Path) -> None:
    """docs/python-client.md's presence example, as a script, against
    ``serve --dev`` with presence on ``demo:chat``: its snapshot (of no
    user: the example is anonymous), then bob's join and, after the grace,
    his leave."""
    (tmp_path / "channels.toml").write_text(
        '[channels."demo:chat"]\npresence = true\njoin_leave = true\n'
    )
    _, example, *_ = blocks(DOC.read_text())
    hub = ServerProcess(tmp_path, ["--dev", "--port", "0", "--config",
                                   str(tmp_path / "channels.toml"), "--token-secret", SECRET,
                                   "--presence-grace", "0.5"], None)  # fmt: skip
    try:
        while (match := KEY_LINE.fullmatch(hub._read_line(START_TIMEOUT))) is None:
            pass
        run = Example(example, (hub, match.group(1).decode()), tmp_path)
        run.until(r"^demo:chat here: \[\]$")
        with subscribe_sync(channels_url(hub), "demo:chat", token=token("bob")) as bob:
            assert isinstance(next(bob), PresenceSnapshot)  # bob is connected now
            run.until(r"^demo:chat here: \['bob'\]$")
        run.until(r"^demo:chat here: \[\]$")  # after the grace
        assert run.finish(interrupt=True) == (0, ""), run.lines
    finally:
        hub.close()


async def test_an_http_read_renews_a_lapsed_token(presence_hub: ServerProcess) -> None:
    asked: list[str] = []

    def fresh() -> str:
        asked.append("token")
        return token("ann")

    url = channels_url(presence_hub)
    async with fast(url, token=token("ann", exp=time.time() - 5), get_token=fresh) as client:
        page = await client.presence("count:renew")  # no subscription: over HTTP
    assert page.channel == "count:renew" and asked == ["token"]
    async with fast(url, get_token=fresh) as client:  # no token yet: asks for one first
        await client.presence("count:renew")
    assert asked == ["token", "token"]
    async with fast(url, token=token("ann", exp=time.time() - 5)) as client:  # no get_token
        with pytest.raises(AuthError) as lapsed:
            await client.presence("count:renew")
    assert lapsed.value.code == "token_expired" and lapsed.value.status == 403

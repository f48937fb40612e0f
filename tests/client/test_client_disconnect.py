"""The client's side of the control API (issue 19), on every transport,
against a scripted hub on loopback (``scripted_hub.py``): a ``disconnect``
frame that says not to come back ends the iteration with ``Disconnected``
and no request follows; one that says to come back reconnects at once from
the positions, with a fresh token and, on polls, a new client id; a channel
``unsubscribed`` is a ``ChannelError`` and is not asked for again; a channel
error ``token_revoked`` is renewed as ``token_expired`` is."""

from __future__ import annotations

import asyncio
import contextlib
import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from client.client_helpers import WAIT, Reader, Statuses, tasks_left
from client.scripted_hub import (
    Frame,
    ScriptedHub,
    channel_error,
    close,
    connected,
    disconnect,
    message,
    subscribed,
)
from torchannels.client import (
    TRANSPORTS,
    ChannelError,
    Client,
    ClientError,
    Disconnected,
    Event,
    Message,
    Status,
)

POLLING = ("poll", "longpoll")
REASONS = ("disconnected_by_server", "token_revoked")


def fast(url: str, **options: Any) -> Client:
    return Client(url, min_delay=0.05, max_delay=0.3, poll_interval=0.05, longpoll_timeout=2,
                  **options)  # fmt: skip


@contextlib.asynccontextmanager
async def serving(plan: list[list[Frame]], transport: str,
                  **options: Any) -> AsyncIterator[tuple[ScriptedHub, Client]]:  # fmt: skip
    """A scripted hub, and a client of it on ``transport`` that retries fast."""
    async with ScriptedHub(plan) as hub, fast(hub.url, transport=transport, **options) as client:
        yield hub, client


def script(transport: str, frames: list[Frame], last: Frame) -> list[list[Frame]]:
    """``frames``, then ``last``, the frame under test. On a streaming
    transport one connection carries them all, after ``connected``; on a
    polling one ``frames`` answer the first request and ``last`` the
    second, which sends back the client id the first answer gave."""
    if transport in POLLING:
        return [frames, [last]]
    return [[connected(transport, 0), *frames, last]]


class Tokens:
    """A ``get_token`` that gives ``t1``, ``t2``, ... and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"t{self.calls}"


async def drain(feed: Any, events: list[Event]) -> None:
    """Iterate ``feed`` to its end (or its exception), at most :data:`WAIT` s."""
    async with asyncio.timeout(WAIT):
        async for event in feed:
            events.append(event)


@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_disconnect_without_reconnect_ends_the_iteration(transport: str,
                                                                 reason: str) -> None:  # fmt: skip
    plan = script(transport, [subscribed("room", 1), message("room", 2)], disconnect(reason, False))
    statuses, events = Statuses(), list[Event]()
    async with serving(plan, transport, on_status=statuses) as (hub, client):
        feed = client.subscribe("room")
        with pytest.raises(Disconnected) as info:
            await drain(feed, events)
        # Over: the next step stops at once, and no request was made after the frame.
        with pytest.raises(StopAsyncIteration):
            await anext(feed)
        assert len(hub.seen) == len(plan), hub.seen
        assert feed not in client._subscriptions
        assert not await tasks_left()
    error = info.value
    assert isinstance(error, ClientError)
    assert (error.reason, error.reconnect) == (reason, False)
    assert reason in str(error)
    assert [(e.channel, e.offset) for e in events if isinstance(e, Message)] == [("room", 2)]
    assert statuses == [Status("connected", transport), Status("disconnected", transport, reason)]
    assert feed.transport is None and feed.cursor == "room=e:2"


@pytest.mark.parametrize(("reason", "expected"), [
    ("token_revoked", "token_revoked"),
    ("", "disconnected_by_server"),
])  # fmt: skip
async def test_a_websocket_closed_4003_without_the_frame_is_a_disconnect(
    reason: str, expected: str
) -> None:
    plan = [[connected("websocket", 0), subscribed("room", 1), close(4003, reason)]]
    statuses, events = Statuses(), list[Event]()
    async with serving(plan, "websocket", on_status=statuses) as (hub, client):
        with pytest.raises(Disconnected) as info:
            await drain(client.subscribe("room"), events)
        assert len(hub.seen) == 1
    assert (info.value.reason, info.value.reconnect) == (expected, False)
    assert statuses[-1] == Status("disconnected", "websocket", expected)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_disconnect_with_reconnect_resumes_at_once_with_a_fresh_token(
    transport: str,
) -> None:
    plan = script(transport, [subscribed("room", 1), message("room", 2)],
                  disconnect("token_revoked", True))  # fmt: skip
    statuses, tokens = Statuses(), Tokens()
    async with serving(plan, transport, on_status=statuses, get_token=tokens) as (hub, client):
        reader = Reader(client.subscribe("room"))
        await reader.wait(lambda: len(hub.seen) > len(plan), "the request after the frame")
        assert reader.error is None
        await reader.stop()
    before, after = hub.seen[len(plan) - 1], hub.seen[len(plan)]
    assert before.token == "t1" and after.token == "t2"
    assert after.channels == ["room"] and after.cursor == "room=e:2"
    if transport in POLLING:
        assert before.client == "c0"  # the first answer's id, sent back ...
        assert after.client is None  # ... and dropped after the disconnect: a new client
    assert Status("reconnecting", transport, "token_revoked", 0.0) in statuses
    assert "disconnected" not in statuses.states()
    assert [e.offset for e in reader.messages("room")] == [2]


@pytest.mark.parametrize("frames", [
    [disconnect("disconnected_by_server", True)],  # the frame, then close 4004
    [close(4004)],  # the close alone
])  # fmt: skip
async def test_a_websocket_closed_4004_reconnects_at_once(frames: list[Frame]) -> None:
    plan = [[connected("websocket", 0), subscribed("room", 3), *frames]]
    statuses = Statuses()
    async with serving(plan, "websocket", on_status=statuses, token="static") as (hub, client):
        reader = Reader(client.subscribe("room"))
        await reader.wait(lambda: len(hub.seen) == 2, "a second connection")
        await reader.stop()
    assert hub.seen[1].cursor == "room=e:3" and hub.seen[1].token == "static"
    assert Status("reconnecting", "websocket", "disconnected_by_server", 0.0) in statuses


async def test_a_server_that_disconnects_every_connection_is_not_hammered() -> None:
    """Connections that carry nothing before their ``disconnect`` (reconnect
    true): the first is followed at once, the next ones after a pause."""
    bare = [connected("websocket", 0), disconnect("disconnected_by_server", True)]
    statuses = Statuses()
    async with serving([bare] * 4, "websocket", on_status=statuses) as (hub, client):
        reader = Reader(client.subscribe("room"))
        await reader.wait(lambda: len(hub.seen) >= 4, "four connections")
        await reader.stop()
    delays = [s.delay for s in statuses if s.state == "reconnecting"][:3]
    assert delays[0] == 0.0 and all(d > 0 for d in delays[1:]), statuses


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unsubscribed_channel_is_an_error_and_is_not_asked_for_again(
    transport: str,
) -> None:
    frames = [subscribed("a", 1), subscribed("b", 1), channel_error("b", "unsubscribed"),
              message("a", 2)]  # fmt: skip
    if transport in POLLING:
        plan = [frames]
    else:  # the server ends the connection later, for its own reason
        plan = [[connected(transport, 0), *frames, {"type": "reconnect", "reason": "shutdown"}]]
    async with serving(plan, transport) as (hub, client):
        feed = client.subscribe("a", "b")
        reader = Reader(feed)
        await reader.wait(lambda: len(hub.seen) >= 2, "the next request")
        await reader.stop()
    assert hub.seen[0].channels == ["a", "b"]
    assert all(seen.channels == ["a"] for seen in hub.seen[1:]), hub.seen
    assert hub.seen[1].cursor == "a=e:2"
    assert ChannelError("b", "unsubscribed", "unsubscribed (b)") in reader.events
    assert feed.channels == ["a"] and reader.offsets("a") == [2]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_revoked_token_is_renewed_when_it_can_be(transport: str) -> None:
    frames = [subscribed("a", 1), channel_error("b", "token_revoked")]
    plan = [frames if transport in POLLING else [connected(transport, 0), *frames]]
    tokens = Tokens()
    async with serving(plan, transport, get_token=tokens) as (hub, client):
        reader = Reader(client.subscribe("a", "b"))
        await reader.wait(lambda: len(hub.seen) >= 2, "a request with a fresh token")
        await reader.stop()
    assert [(s.token, s.channels) for s in hub.seen[:2]] == [("t1", ["a", "b"]),
                                                               ("t2", ["a", "b"])]  # fmt: skip
    assert hub.seen[1].cursor == "a=e:1"
    assert not [e for e in reader.events if isinstance(e, ChannelError)]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_revoked_token_without_get_token_is_a_channel_error(transport: str) -> None:
    frames = [channel_error("a", "token_revoked")]
    plan = [frames if transport in POLLING else [connected(transport, 0), *frames]]
    events: list[Event] = []
    async with serving(plan, transport, token="old") as (hub, client):
        feed = client.subscribe("a")
        await drain(feed, events)  # the only channel refused: the iteration ends
    assert events == [ChannelError("a", "token_revoked", "token_revoked (a)")]
    assert len(hub.seen) == 1 and feed.channels == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_token_revoked_again_after_its_renewal_is_a_channel_error(transport: str) -> None:
    """Renewed once, as torchannel.js does: a fresh token refused as revoked
    too, before the channel was served with it, is not renewed in a loop."""
    refused = [channel_error("a", "token_revoked")]
    plan = [refused if transport in POLLING else [connected(transport, n), *refused]
            for n in range(2)]  # fmt: skip
    events, tokens = list[Event](), Tokens()
    async with serving(plan, transport, get_token=tokens) as (hub, client):
        await drain(client.subscribe("a"), events)
    assert events == [ChannelError("a", "token_revoked", "token_revoked (a)")]
    assert [s.token for s in hub.seen] == ["t1", "t2"] and tokens.calls == 2


async def test_the_docs_watch_example_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/python-client.md's ``watch`` (Disconnected by the server), run as written."""
    doc = (Path(__file__).parents[2] / "docs" / "python-client.md").read_text()
    [code] = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "def watch(" in b]
    space: dict[str, Any] = {}
    exec(compile(textwrap.dedent(code), "python-client.md", "exec"), space)  # our own docs
    for transport in ("websocket", "poll"):
        plan = script(transport, [subscribed("room", 1), message("room", 2)],
                      disconnect("token_revoked", False))  # fmt: skip
        async with serving(plan, transport) as (_, client):
            async with asyncio.timeout(WAIT):
                assert await space["watch"](client.subscribe("room")) == "token_revoked"
        assert capsys.readouterr().out.startswith("room 2 {")

"""Lifecycle webhooks of one embedded hub (memory broker), over real
loopback sockets on every transport, to a real receiver: what holds a
channel, a user and a member, the grace, polling clients, anonymous
clients, the configured kinds only, and the hub's own checks (issue 21)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from presence_support import Member, presence_hub, serve
from support import Server, Stream, eventually
from torchannels import Hub
from torchannels.brokers.lifecycle import EVENT_TYPES
from webhook_receiver import Receiver, receiving, spec

SECRET = "webhook-test-secret"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving(SECRET) as receiver:
        yield receiver


def hooked(
    make_server: Callable[..., Server], receiver: Receiver, events: tuple[str, ...]
) -> Server:
    """A presence hub posting ``events`` to ``receiver``, served."""
    hub = presence_hub()
    hub.enable_webhooks(receiver.url, SECRET, events)
    return serve(make_server, hub)


@pytest.fixture
def server(make_server: Callable[..., Server], receiver: Receiver) -> Server:
    """:func:`hooked` with every event type (in place of conftest's plain ``server``)."""
    return hooked(make_server, receiver, EVENT_TYPES)


def on_events(user: str, channel: str, info: Any = None) -> list[tuple[str, str]]:
    return [
        spec("channel_occupied", channel=channel),
        spec("member_joined", channel=channel, user=user, info=info or {"name": user}),
        spec("user_online", user=user),
    ]


def off_events(user: str, channel: str) -> list[tuple[str, str]]:
    return [
        spec("channel_vacated", channel=channel),
        spec("member_left", channel=channel, user=user),
        spec("user_offline", user=user),
    ]


async def subscribed(server: Server, transport: str, **query: Any) -> Stream:
    """A ``transport`` stream of ``query``, once subscribed."""
    stream = server.stream(transport, **query)
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    return stream


async def marker(server: Server, receiver: Receiver, name: str) -> None:
    """Subscribe an anonymous client to ``mark:NAME`` and wait for its
    occupied event: every event queued before it has been delivered."""
    await subscribed(server, "sse", channel=f"mark:{name}")
    await receiver.arrived(spec("channel_occupied", channel=f"mark:{name}"))


@pytest.mark.parametrize("transport", ["stream", "sse", "websocket", "longpoll"])
async def test_a_live_connection_holds_its_channel_user_and_membership(
    server: Server, receiver: Receiver, transport: str
) -> None:
    if transport == "websocket":
        member = await Member.connect(server, "user=ann&channel=room:1")
        await member.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
        close: Callable[[], Any] = member.conn.close
    elif transport == "longpoll":
        query = {"user": "ann", "channel": "room:1"}
        doc = await server.poll_doc("longpoll", **query)  # subscribed: answered at once
        held = asyncio.ensure_future(
            server.poll_doc("longpoll", **query, cursor=doc["cursor"], client=doc["client"])
        )
        await eventually(lambda: server.hub.local_subscribers("room:1") == 1)

        async def close() -> None:  # a message answers the held request
            server.hub.channel("room:1").send({"text": "bye"})
            assert (await held)["frames"]

    else:
        stream = await subscribed(server, transport, user="ann", channel="room:1")
        close = stream.close
    await receiver.arrived(*on_events("ann", "room:1"))
    assert receiver.specs() == on_events("ann", "room:1")
    closed = time.time()
    result = close()
    if hasattr(result, "__await__"):
        await result
    await receiver.arrived(*off_events("ann", "room:1"))
    took = receiver.arrival(spec("user_offline", user="ann")) - closed
    # Held for the grace (0.6 s), then released at a sweep (every 0.5 s),
    # then sent within the batch window (0.25 s).
    assert 0.5 <= took < 0.6 + 0.5 + 0.25 + 2.0, took
    assert receiver.specs() == on_events("ann", "room:1") + off_events("ann", "room:1")
    receiver.check()


async def test_a_reconnect_within_the_grace_makes_no_event(
    server: Server, receiver: Receiver
) -> None:
    first = await subscribed(server, "sse", user="ann", channel="room:1")
    await receiver.arrived(*on_events("ann", "room:1"))
    first.close()
    await eventually(lambda: server.hub.local_subscribers("room:1") == 0)
    closed = time.time()
    again = await subscribed(server, "stream", user="ann", channel="room:1")
    # Past the first connection's grace and a sweep, then a marker: had
    # anything been released, its events would have come before the marker's.
    ended = closed + server.hub.settings.presence_grace + 0.6
    await eventually(lambda: time.time() > ended, timeout=5)
    await marker(server, receiver, "reload")
    assert receiver.specs() == [
        *on_events("ann", "room:1"),
        spec("channel_occupied", channel="mark:reload"),
    ]
    again.close()
    await receiver.arrived(*off_events("ann", "room:1"))
    receiver.check()


async def test_two_connections_of_a_user_go_offline_with_the_last(
    server: Server, receiver: Receiver
) -> None:
    one = await subscribed(server, "sse", user="ann", channel="room:1")
    two = await subscribed(server, "stream", user="ann", channel="news")
    await receiver.arrived(
        spec("user_online", user="ann"), spec("channel_occupied", channel="news")
    )
    one.close()
    await receiver.arrived(spec("member_left", channel="room:1", user="ann"))
    await marker(server, receiver, "one-left")
    assert spec("user_offline", user="ann") not in receiver.specs()
    assert receiver.specs().count(spec("user_online", user="ann")) == 1
    two.close()
    await receiver.arrived(spec("user_offline", user="ann"))
    receiver.check()


async def test_a_poll_request_holds_for_the_grace_after_it(
    server: Server, receiver: Receiver
) -> None:
    doc = await server.poll_doc("poll", user="ann", channel="room:1")
    await receiver.arrived(*on_events("ann", "room:1"))
    # Polls within the grace keep it held: no off event between them.
    client = doc["client"]
    for _ in range(3):
        await server.poll_doc("poll", user="ann", channel="room:1", client=client)
    await marker(server, receiver, "polled")
    assert not set(off_events("ann", "room:1")) & set(receiver.specs())
    await receiver.arrived(*off_events("ann", "room:1"))
    assert receiver.specs().count(spec("user_online", user="ann")) == 1
    receiver.check()


async def test_anonymous_clients_make_channel_events_only(
    server: Server, receiver: Receiver
) -> None:
    stream = await subscribed(server, "sse", channel="room:2")
    await receiver.arrived(spec("channel_occupied", channel="room:2"))
    stream.close()
    await receiver.arrived(spec("channel_vacated", channel="room:2"))
    assert [kind for kind, _ in receiver.specs()] == ["channel_occupied", "channel_vacated"]


async def test_only_the_configured_events_are_sent(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    server = hooked(make_server, receiver, ("user_offline", "channel_occupied"))
    stream = await subscribed(server, "sse", user="ann", channel="room:1")
    await receiver.arrived(spec("channel_occupied", channel="room:1"))
    stream.close()
    await receiver.arrived(spec("user_offline", user="ann"))
    assert receiver.specs() == [
        spec("channel_occupied", channel="room:1"),
        spec("user_offline", user="ann"),
    ]


def test_enable_webhooks_checks_its_arguments() -> None:
    hub = Hub()
    with pytest.raises(ValueError, match="unknown webhook event 'user_away'"):
        hub.enable_webhooks("http://127.0.0.1:1/", "s", ["user_away"])
    with pytest.raises(ValueError, match="secret"):
        hub.enable_webhooks("http://127.0.0.1:1/", "", ["user_online"])
    assert hub.lifecycle is None
    hub.enable_webhooks("http://127.0.0.1:1/", "s", ["user_online"])
    with pytest.raises(RuntimeError, match="already"):
        hub.enable_webhooks("http://127.0.0.1:1/", "s", ["user_online"])

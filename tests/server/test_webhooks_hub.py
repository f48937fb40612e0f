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
from support import Server, eventually
from torchannels import Hub
from webhook_receiver import Receiver, spec

SECRET = "webhook-test-secret"
EVERY = (
    "channel_occupied",
    "channel_vacated",
    "user_online",
    "user_offline",
    "member_joined",
    "member_left",
)
ANN = {"name": "ann"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(SECRET)
    await receiver.start()
    yield receiver
    await receiver.stop()


def hooked(receiver: Receiver, events: tuple[str, ...] = EVERY) -> Hub:
    hub = presence_hub()
    hub.enable_webhooks(receiver.url, SECRET, events)
    return hub


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


async def marker(server: Server, receiver: Receiver, name: str) -> None:
    """Subscribe an anonymous client to ``mark:NAME`` and wait for its
    occupied event: every event queued before it has been delivered."""
    stream = server.stream("sse", channel=f"mark:{name}")
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    await receiver.arrived(spec("channel_occupied", channel=f"mark:{name}"))


@pytest.mark.parametrize("transport", ["stream", "sse", "websocket", "longpoll"])
async def test_a_live_connection_holds_its_channel_user_and_membership(
    make_server: Callable[..., Server], receiver: Receiver, transport: str
) -> None:
    hub = hooked(receiver)
    server = serve(make_server, hub)
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
        await eventually(lambda: hub.local_subscribers("room:1") == 1)

        async def close() -> None:  # a message answers the held request
            hub.channel("room:1").send({"text": "bye"})
            assert (await held)["frames"]

    else:
        stream = server.stream(transport, user="ann", channel="room:1")
        await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
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
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    hub = hooked(receiver)
    server = serve(make_server, hub)
    first = server.stream("sse", user="ann", channel="room:1")
    await first.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    await receiver.arrived(*on_events("ann", "room:1"))
    first.close()
    await eventually(lambda: hub.local_subscribers("room:1") == 0)
    closed = time.time()
    again = server.stream("stream", user="ann", channel="room:1")
    await again.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    # Past the first connection's grace and a sweep, then a marker: had
    # anything been released, its events would have come before the marker's.
    ended = closed + hub.settings.presence_grace + 0.6
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
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    hub = hooked(receiver)
    server = serve(make_server, hub)
    one = server.stream("sse", user="ann", channel="room:1")
    two = server.stream("stream", user="ann", channel="news")
    for stream in (one, two):
        await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
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
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    hub = hooked(receiver)
    server = serve(make_server, hub)
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
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    hub = hooked(receiver)
    server = serve(make_server, hub)
    stream = server.stream("sse", channel="room:2")
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    await receiver.arrived(spec("channel_occupied", channel="room:2"))
    stream.close()
    await receiver.arrived(spec("channel_vacated", channel="room:2"))
    assert [kind for kind, _ in receiver.specs()] == ["channel_occupied", "channel_vacated"]


async def test_only_the_configured_events_are_sent(
    make_server: Callable[..., Server], receiver: Receiver
) -> None:
    hub = hooked(receiver, ("user_offline", "channel_occupied"))
    server = serve(make_server, hub)
    stream = server.stream("sse", user="ann", channel="room:1")
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
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

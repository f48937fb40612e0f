"""A cursor saved part-way through a channel's state covers only the state
messages already yielded: resuming from it gives the rest of the state,
against a real hub, on every transport."""

from __future__ import annotations

import asyncio

import pytest

from client.client_helpers import WAIT, channels_url, publisher
from server.processes import ServerProcess
from torchannels.client import TRANSPORTS, Client, Event, Message


def feed_client(hub: ServerProcess, transport: str) -> Client:
    return Client(channels_url(hub), transport=transport, poll_interval=0.05, longpoll_timeout=2)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stopping_part_way_through_a_state_loses_none_of_it(
    hub: ServerProcess, transport: str
) -> None:
    channel, other = f"open:state-cursor-{transport}", f"open:state-cursor-{transport}-b"
    async with publisher(hub) as pub:
        state = await pub.set_state(channel, [{"k": 1}, {"k": 2}, {"k": 3}])
        before = await pub.publish(other, {"n": 0})
        async with feed_client(hub, transport) as client:
            sub = client.subscribe(other, channel)
            seen: list[Event] = []
            async with asyncio.timeout(WAIT):
                async for event in sub:
                    seen.append(event)
                    if isinstance(event, Message) and event.state:
                        break  # the consumer stops after the state's first message
            saved = sub.cursor
        first = seen[-1]
        assert isinstance(first, Message) and first.data["k"] == 1, seen
        assert saved == f"{other}={before.epoch}:1", saved  # nothing of the state's channel

        after = await pub.publish(channel, {"n": 1})
        async with feed_client(hub, transport) as client:
            sub = client.subscribe(other, channel, cursor=saved)
            resumed: list[Message] = []
            async with asyncio.timeout(WAIT):
                async for event in sub:
                    assert isinstance(event, Message), event
                    resumed.append(event)
                    if not event.state:
                        break
                    if event.data["k"] == 3:  # the state's last message: now covered
                        whole = f"{channel}={state.epoch}:{state.offset}"
                        assert sub.cursor == f"{other}={before.epoch}:1,{whole}"
    assert [m.data.get("k") for m in resumed if m.state] == [1, 2, 3], resumed
    assert [(m.channel, m.offset) for m in resumed if not m.state] == [(channel, after.offset)]


async def test_a_cursor_saved_after_the_whole_state_resumes_after_it(hub: ServerProcess) -> None:
    """The other side: once the last state message was yielded, the cursor
    covers the state, and resuming gives only what came after it."""
    channel = "open:state-cursor-whole"
    async with publisher(hub) as pub:
        await pub.set_state(channel, [{"k": 1}, {"k": 2}])
        async with Client(channels_url(hub), transport="websocket") as client:
            sub = client.subscribe(channel)
            async with asyncio.timeout(WAIT):
                async for event in sub:
                    assert isinstance(event, Message) and event.state, event
                    if event.data["k"] == 2:
                        break
            saved = sub.cursor
        after = await pub.publish(channel, {"n": 1})
        async with Client(channels_url(hub), transport="websocket") as client:
            async with asyncio.timeout(WAIT):
                event = await anext(client.subscribe(cursor=saved))
    assert isinstance(event, Message) and not event.state, event
    assert event.offset == after.offset

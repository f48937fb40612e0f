"""Long-poll holding, timeout and cleanup when clients go away (all live transports)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from support import STREAMING, Server, eventually, messages, outline
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings, Subscription


def at_top(server: Server, channel: str) -> str:
    """A cursor standing at the newest message of ``channel`` (nothing pending)."""
    pub = server.hub.channel(channel).send({"n": 0})
    return f"{channel}={pub['epoch']}:{pub['offset']}"


async def test_longpoll_holds_then_answers_when_a_message_arrives(server: Server) -> None:
    cursor = at_top(server, "news")
    task = asyncio.ensure_future(server.poll("longpoll", channel="news", cursor=cursor, timeout=5))
    await eventually(lambda: server.hub.local_subscribers("news") == 1)
    assert not task.done()
    sent = server.hub.channel("news").send({"n": 1})
    doc = await asyncio.wait_for(task, 5)
    assert [f["type"] for f in doc["frames"]] == ["message"]
    assert messages(doc["frames"]) == [sent]
    assert doc["cursor"] == f"news={sent['epoch']}:{sent['offset']}"
    await eventually(lambda: server.hub.local_subscribers("news") == 0)


async def test_longpoll_ignores_other_channels_while_holding(server: Server) -> None:
    cursor = at_top(server, "news")
    task = asyncio.ensure_future(server.poll("longpoll", channel="news", cursor=cursor, timeout=5))
    await eventually(lambda: server.hub.local_subscribers("news") == 1)
    # A witness long-poll on "sport" is answered by the same publication: once
    # it is back, the server has dispatched it to every subscriber, news too.
    witness = asyncio.ensure_future(
        server.poll("longpoll", channel="sport", cursor=at_top(server, "sport"), timeout=5)
    )
    await eventually(lambda: server.hub.local_subscribers("sport") == 1)
    sport = server.hub.channel("sport").send({"n": 1})
    assert messages((await asyncio.wait_for(witness, 5))["frames"]) == [sport]
    assert not task.done()
    server.hub.channel("news").send({"n": 2})
    doc = await asyncio.wait_for(task, 5)
    assert outline(doc["frames"]) == [("message", "news", {"n": 2})]


async def test_longpoll_of_several_channels_answers_for_the_one_that_moved(
    server: Server,
) -> None:
    cursor = at_top(server, "a") + "," + at_top(server, "b")
    task = asyncio.ensure_future(
        server.poll("longpoll", channel=["a", "b"], cursor=cursor, timeout=5)
    )
    await eventually(lambda: server.hub.local_subscribers("b") == 1)
    sent = server.hub.channel("b").send({"n": 1})
    doc = await asyncio.wait_for(task, 5)
    assert messages(doc["frames"]) == [sent]
    a_pos = cursor.split(",")[0]
    assert doc["cursor"] == f"{a_pos},b={sent['epoch']}:{sent['offset']}"


async def test_longpoll_times_out_with_empty_frames(server: Server) -> None:
    cursor = at_top(server, "news")
    doc = await server.poll("longpoll", channel="news", cursor=cursor, timeout=0.3)
    assert doc == {"cursor": cursor, "frames": []}
    await eventually(lambda: server.hub.local_subscribers("news") == 0)
    # Nothing was lost meanwhile: a message sent now is there for the next poll.
    sent = server.hub.channel("news").send({"n": 1})
    doc = await server.poll("longpoll", channel="news", cursor=cursor, timeout=0.3)
    assert messages(doc["frames"]) == [sent]


async def test_longpoll_default_timeout_comes_from_settings(
    make_server: Callable[..., Server],
) -> None:
    hub = Hub(MemoryBroker(), Settings(longpoll_timeout=0.3))
    server = make_server(hub_=hub)
    cursor = at_top(server, "news")
    doc = await server.poll("longpoll", channel="news", cursor=cursor)
    assert doc == {"cursor": cursor, "frames": []}


@pytest.mark.parametrize("transport", ["longpoll", *STREAMING])
async def test_client_disconnect_leaves_no_subscriber(server: Server, transport: str) -> None:
    cursor = at_top(server, "news") + "," + at_top(server, "more")
    client = server.stream(transport, channel=["news", "more"], cursor=cursor)
    await eventually(
        lambda: (
            server.hub.local_subscribers("news") == 1 and server.hub.local_subscribers("more") == 1
        )
    )
    client.close()
    await eventually(
        lambda: (
            server.hub.local_subscribers("news") == 0 and server.hub.local_subscribers("more") == 0
        ),
        timeout=1,
    )
    # Publishing to the channels afterwards is harmless.
    server.hub.channel("news").send({"n": 1})
    assert server.hub.local_subscribers("news") == 0


@pytest.mark.parametrize("transport", ["longpoll", *STREAMING])
async def test_disconnect_while_can_access_is_pending_leaves_no_subscriber(
    make_server: Callable[..., Server], hub: Hub, transport: str
) -> None:
    """The client leaves while an async can_access is still deciding; once it
    decides, nothing may stay subscribed on behalf of the departed client."""
    asked = asyncio.Event()
    gate = asyncio.Event()
    gone = asyncio.Event()
    served = asyncio.Event()

    class Slow(ChannelMixin):
        async def can_access(self, sub: Subscription) -> bool:
            asked.set()
            await gate.wait()
            return True

        def on_connection_close(self) -> None:
            gone.set()
            super().on_connection_close()

        async def get(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().get(*args, **kwargs)
            finally:
                served.set()

    Slow.hub = hub
    server = make_server(Slow)
    cursor = at_top(server, "news")
    client = server.stream(transport, channel="news", cursor=cursor)
    await asyncio.wait_for(asked.wait(), 5)
    client.close()
    await asyncio.wait_for(gone.wait(), 5)
    assert not served.is_set()  # still inside can_access
    gate.set()
    # The request is over only once the decision was acted on.
    await asyncio.wait_for(served.wait(), 5)
    assert hub.local_subscribers("news") == 0


async def test_timeout_above_the_server_maximum_is_capped(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(hub_=Hub(MemoryBroker(), Settings(longpoll_timeout=0.3)))
    first = await server.poll("poll", channel="idle")
    # 999 s is more than the server allows: it holds for its own 0.3 s
    # maximum and answers with no frames, rather than refusing the request.
    doc = await asyncio.wait_for(
        server.poll("longpoll", channel="idle", cursor=first["cursor"], timeout="999"), 10
    )
    assert doc == {"cursor": first["cursor"], "frames": []}

"""How the client's WebSocket sorts what it reads when a presence read is
asked on it: the answer to the asker, every other frame to the iteration,
in order, whichever task happens to read. Against a scripted Tornado
WebSocket server on loopback, to make orders a real hub makes only by
chance (a subscription refusal racing the answer, a late answer after the
asker gave up, an older server that knows no ``presence`` command)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from torchannels.client import (
    AuthError,
    ChannelError,
    Client,
    ConnectError,
    Message,
    PresencePage,
    PresenceSnapshot,
    RequestError,
)

ANN = {"user": "ann", "info": None, "clients": 2}
PAGE: dict[str, Any] = {"clients": 2, "users": 1, "members": [ANN], "next": None}


class Script(tornado.websocket.WebSocketHandler):
    """Subscribes the connect URL's channels (``refused:*`` get ``forbidden``);
    answers ``presence`` commands after ``delay`` seconds, writing a message
    of the first channel first (live traffic between command and answer)."""

    def initialize(self, log: list[dict[str, Any]], delay: float, old: bool) -> None:
        self.log, self.delay, self.old = log, delay, old

    def open(self) -> None:
        self.write_message({"type": "connected", "transport": "websocket", "ping": 60,
                            "client": "c1.sig"})  # fmt: skip
        for channel in self.get_arguments("channel"):
            if channel.startswith("refused"):
                self.write_message({"type": "error", "channel": channel, "code": "forbidden",
                                    "message": "no"})  # fmt: skip
            else:
                self.write_message({"type": "subscribed", "channel": channel, "epoch": "e",
                                    "offset": 0, "presence": PAGE})  # fmt: skip

    async def on_message(self, message: str | bytes) -> None:
        command = json.loads(message)
        self.log.append(command)
        await asyncio.sleep(self.delay)
        n = len(self.log)
        live = self.get_arguments("channel")[0]
        self.write_message({"type": "message", "data": {"channel": live, "epoch": "e",
                                                        "offset": n, "ts": 1.0}})  # fmt: skip
        channel = command["channel"]
        answer: dict[str, Any]
        if self.old:
            answer = {"type": "error", "code": "bad_message", "message": "unknown type"}
        elif channel.startswith("refused"):
            answer = {"type": "error", "channel": channel, "code": "forbidden", "message": "no"}
        elif channel == "broken":  # as a hub whose broker failed: reconnect, then close
            self.write_message({"type": "reconnect", "reason": "broker_unavailable"})
            await asyncio.sleep(2)  # slow to close: the client must not wait for it
            self.close(1000)
            return
        elif channel == "plain":
            answer = {"type": "error", "channel": channel, "code": "presence_disabled",
                      "message": "no presence"}  # fmt: skip
        else:
            answer = {"type": "presence_page", "channel": channel, **PAGE}
        self.write_message(answer)


class Reads(tornado.web.RequestHandler):
    """``GET /channels?presence=C``: a page of 7 clients."""

    def get(self) -> None:
        self.finish({"channel": self.get_argument("presence"), **PAGE, "clients": 7})


Scripted = tuple[str, list[dict[str, Any]], tornado.httpserver.HTTPServer]


async def scripted(delay: float = 0.0, old: bool = False) -> Scripted:
    log: list[dict[str, Any]] = []
    app = tornado.web.Application([(r"/channels/ws", Script,
                                    {"log": log, "delay": delay, "old": old}),
                                   (r"/channels", Reads)])  # fmt: skip
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    return f"http://127.0.0.1:{sock.getsockname()[1]}/channels", log, server


@pytest.fixture
async def hub() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    url, log, server = await scripted()
    yield url, log
    server.stop()


async def test_a_read_from_inside_the_loop_is_answered_on_the_socket(
    hub: tuple[str, list[dict[str, Any]]],
) -> None:
    url, log = hub
    async with Client(url, transport="websocket") as client:
        feed = client.subscribe("room", "refused:x")
        events: list[Any] = []
        async for event in feed:  # nobody else reads the socket while this body runs
            events.append(event)
            if isinstance(event, PresenceSnapshot):
                page = await client.presence("room", after="YQ.s", limit=5)
                assert page == PresencePage("room", event.members, 2, 1, None)
                with pytest.raises(AuthError) as refused:
                    await client.presence("refused:x")
                with pytest.raises(RequestError) as plain:
                    await client.presence("plain")
            if len([e for e in events if isinstance(e, Message)]) == 3:
                break
        assert feed.client_id == "c1.sig"
    assert refused.value.code == "forbidden" and refused.value.status == 403
    assert plain.value.code == "presence_disabled" and plain.value.status == 400
    assert log == [{"type": "presence", "channel": "room", "after": "YQ.s", "limit": 5},
                   {"type": "presence", "channel": "refused:x"},
                   {"type": "presence", "channel": "plain"}]  # fmt: skip
    # The subscription's own refusal went to the iteration, not to the read;
    # the messages written between command and answer reached it in order.
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["PresenceSnapshot", "ChannelError", "Message", "Message", "Message"]
    assert events[1] == ChannelError("refused:x", "forbidden", "no")
    assert [e.offset for e in events if isinstance(e, Message)] == [1, 2, 3]


async def read_until(feed: Any, count: int, events: list[Any]) -> None:
    async with asyncio.timeout(10):
        async for event in feed:
            events.append(event)
            if len([e for e in events if isinstance(e, Message)]) == count:
                return


async def test_an_answer_after_the_asker_gave_up_is_dropped() -> None:
    url, log, server = await scripted(delay=1.0)
    try:
        async with Client(url, transport="websocket", connect_timeout=0.3) as client:
            feed = client.subscribe("plain")
            events: list[Any] = []
            async for event in feed:
                events.append(event)
                break  # the snapshot
            with pytest.raises(ConnectError, match=r"no answer within 0\.3 s"):
                await client.presence("plain")
            client.connect_timeout = 10
            # Its answer, an `error` frame for a subscribed channel, comes
            # before this one's: given to the iteration it would refuse `plain`.
            with pytest.raises(RequestError):
                await client.presence("plain")
            await read_until(feed, 2, events)
            assert feed.channels == ["plain"] and len(log) == 2
        assert [type(e).__name__ for e in events] == ["PresenceSnapshot", "Message", "Message"]
    finally:
        server.stop()


async def test_a_server_without_the_command() -> None:
    url, _, server = await scripted(old=True)
    try:
        async with Client(url, transport="websocket") as client:
            feed = client.subscribe("room")
            events: list[Any] = []
            async for event in feed:
                events.append(event)
                break
            with pytest.raises(RequestError) as old:
                await client.presence("room")
            await read_until(feed, 1, events)  # the subscription goes on
        assert old.value.code == "bad_message" and feed.channels == ["room"]
    finally:
        server.stop()


async def test_a_read_answered_by_reconnect_is_asked_over_http(
    hub: tuple[str, list[dict[str, Any]]],
) -> None:
    url, log = hub
    async with Client(url, transport="websocket", max_delay=0.1, connect_timeout=1) as client:
        feed = client.subscribe("room")
        events: list[Any] = []
        async for event in feed:
            events.append(event)
            if len(events) == 1:
                assert isinstance(event, PresenceSnapshot)
                page = await client.presence("broken")
                assert page == PresencePage("broken", event.members, 7, 1, None)  # HTTP's
                assert await client.presence("room") == PresencePage(
                    "room", event.members, 7, 1, None)  # no socket: HTTP again  # fmt: skip
            elif len(events) == 3:
                break
        assert log == [{"type": "presence", "channel": "broken"}]
    # The feed saw the reconnect, and connected again: a second snapshot.
    assert [type(e).__name__ for e in events] == ["PresenceSnapshot", "Message",
                                                  "PresenceSnapshot"]  # fmt: skip

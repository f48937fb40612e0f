"""``Client.publish`` against a small Tornado server on loopback that plays
the hub's side of the contract (docs/protocol.md, "Publishing from a
client"): the ``publish`` command on a subscription's WebSocket, answered
``published`` or ``publish_error`` with the command's ``id``, and the HTTP
``POST`` to the subscribe URL, answered with the position or an error. It
records what the client sent, so the tests check the bytes on the wire and
what the client makes of every answer, including none at all."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from client.client_helpers import Reader, tasks_left
from torchannels.client import (
    ChannelFeed,
    Client,
    ClientError,
    Message,
    Published,
    PublishError,
)

EPOCH = "3f9a0c12"
Frame = dict[str, Any]


@dataclass
class Post:
    """One HTTP request as the server got it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def error_body(code: str, message: str = "why") -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


class Hub:
    """The server's state: what it got, and what it answers next."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.answers: list[Answer | None] = []  # POSTs' answers in turn (None: never answer)
        self.commands: list[tuple[int, Frame]] = []  # (connection number, command)
        self.connections = 0
        self.offset = 0
        self.released = asyncio.Event()  # lets the requests held unanswered go

    def position(self) -> int:
        self.offset += 1
        return self.offset


class Posts(tornado.web.RequestHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    async def post(self) -> None:
        r = self.request
        query = {k: [v.decode() for v in vs] for k, vs in r.query_arguments.items()}
        self.hub.posts.append(Post(r.method or "", r.path, query, dict(r.headers), r.body))
        answer = self.hub.answers.pop(0) if self.hub.answers else Answer(200, b"")
        if answer is None:
            await self.hub.released.wait()
            return
        if answer.status == 200 and not answer.body:
            channel = json.loads(r.body)["channel"]
            doc = {"channel": channel, "epoch": EPOCH, "offset": self.hub.position()}
            answer = Answer(200, json.dumps(doc).encode())
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(answer.body)


class Socket(tornado.websocket.WebSocketHandler):
    """Subscribes the connect URL's channels (each with one message), then
    answers ``publish`` commands by their channel:

    ``silent``: never; ``late``: just before the next command's answer;
    ``pair:*``: two at a time, the second first; ``lost``: closes (1011);
    ``reconnect``: a ``reconnect`` frame; ``refused``: ``publish_forbidden``;
    ``busy``: ``rate_limited``; ``old``: as a server without the command;
    ``malformed``: ``published`` without an offset; any other: a live
    message of the first subscribed channel, then ``published``.
    """

    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.late: list[Frame] = []
        self.pairs: list[Frame] = []

    def open(self) -> None:
        self.hub.connections += 1
        self.n = self.hub.connections
        self.live = self.get_arguments("channel")[0]
        self.sent = 0
        self.write_message({"type": "connected", "transport": "websocket", "ping": 60,
                            "client": f"c{self.n}~1.sig"})  # fmt: skip
        for channel in self.get_arguments("channel"):
            self.write_message({"type": "subscribed", "channel": channel, "epoch": "e",
                                "offset": 0})  # fmt: skip
        self.message()

    def message(self) -> None:
        self.sent += 1
        data = {"channel": self.live, "epoch": "e", "offset": self.sent, "ts": 1.0}
        self.write_message({"type": "message", "data": data})

    def published(self, command: Frame, **fields: Any) -> Frame:
        return {"type": "published", "id": command.get("id"), "channel": command["channel"],
                "epoch": EPOCH, "offset": self.hub.position(), **fields}  # fmt: skip

    def publish_error(self, command: Frame, code: str, retry: bool, **fields: Any) -> Frame:
        return {"type": "publish_error", "id": command.get("id"), "channel": command["channel"],
                "code": code, "message": f"{code}!", "retry": retry, **fields}  # fmt: skip

    def on_message(self, message: str | bytes) -> None:
        command = json.loads(message)
        self.hub.commands.append((self.n, command))
        channel = command["channel"]
        if channel == "silent":
            return
        if channel == "late":
            self.late.append(command)
            return
        for held in self.late:
            self.write_message(self.published(held))
        self.late.clear()
        if channel.startswith("pair:"):
            self.pairs.append(command)
            if len(self.pairs) == 2:
                for held in reversed(self.pairs):
                    self.write_message(self.published(held))
            return
        if channel == "lost":
            self.close(1011, "gone")
        elif channel == "reconnect":
            self.write_message({"type": "reconnect", "reason": "broker_unavailable"})
        elif channel == "refused":
            self.write_message(self.publish_error(command, "publish_forbidden", False))
        elif channel == "busy":
            self.write_message(self.publish_error(command, "rate_limited", True, retry_after=1.5))
        elif channel == "old":
            why = '"channels" must be a list of channel names'
            self.write_message({"type": "error", "code": "bad_message", "message": why})
        elif channel == "malformed":
            self.write_message({**self.published(command), "offset": None})
        else:
            self.message()
            self.write_message(self.published(command))


@pytest.fixture
async def hub() -> AsyncIterator[tuple[Hub, str]]:
    """The hub, and its subscribe URL (with a query string of its own)."""
    state = Hub()
    app = tornado.web.Application([(r"/channels/ws", Socket, {"hub": state}),
                                   (r"/channels", Posts, {"hub": state})])  # fmt: skip
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    yield state, f"http://127.0.0.1:{sock.getsockname()[1]}/channels?app=demo"
    state.released.set()
    server.stop()
    await server.close_all_connections()


async def first_event(feed: ChannelFeed) -> Any:
    async with asyncio.timeout(10):
        return await anext(feed)


# -- HTTP --------------------------------------------------------------------------


async def test_over_http_the_post_carries_the_token_headers_and_body(hub: tuple[Hub, str]) -> None:
    state, url = hub
    client = Client(url, token="t0k", headers={"X-App": "7"})
    published = await client.publish("room:1", {"text": "hé", "n": [1, 2]})
    assert published == Published("room:1", EPOCH, 1) and published.ts is None
    [post] = state.posts
    assert (post.method, post.path, post.query) == ("POST", "/channels", {"app": ["demo"]})
    assert post.headers["Authorization"] == "Bearer t0k"  # as subscriptions send it
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["X-App"] == "7"
    assert post.headers["Content-Length"] == str(len(post.body))
    assert post.body == '{"channel":"room:1","data":{"text":"hé","n":[1,2]}}'.encode()
    assert state.commands == []  # no socket was opened


async def test_without_a_token_no_authorization_is_sent(hub: tuple[Hub, str]) -> None:
    state, url = hub
    assert await Client(url).publish("room:1", {}) == Published("room:1", EPOCH, 1)
    assert "Authorization" not in state.posts[0].headers
    assert state.posts[0].body == b'{"channel":"room:1","data":{}}'


@pytest.mark.parametrize(("status", "code", "headers", "retry", "retry_after"), [
    (400, "bad_json", {}, False, None),
    (400, "invalid_channel", {}, False, None),
    (400, "invalid_message", {}, False, None),
    (403, "publish_forbidden", {}, False, None),
    (403, "token_required", {}, False, None),
    (403, "token_expired", {}, False, None),  # without get_token: not renewed
    (403, "not_in_room", {}, False, None),  # a backend's own code
    (413, "publish_too_large", {}, False, None),
    (429, "rate_limited", {"Retry-After": "2"}, True, 2.0),
    (429, "rate_limited", {"Retry-After": "0.5"}, True, 0.5),
    (429, "rate_limited", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, True, None),
    (429, "rate_limited", {}, True, None),
    (503, "proxy_unavailable", {}, True, None),
    (503, "proxy_error", {}, False, None),
    (503, "broker_unavailable", {}, True, None),
    (500, "internal", {}, False, None),
])  # fmt: skip
async def test_http_refusals(
    hub: tuple[Hub, str], status: int, code: str, headers: dict[str, str], retry: bool,
    retry_after: float | None,
) -> None:  # fmt: skip
    state, url = hub
    state.answers.append(Answer(status, error_body(code, f"no: {code}"), headers))
    with pytest.raises(PublishError) as caught:
        await Client(url, token="t").publish("room:1", {"a": 1})
    error = caught.value
    assert isinstance(error, ClientError)
    assert (error.code, error.message, error.status) == (code, f"no: {code}", status)
    assert (error.retry, error.retry_after) == (retry, retry_after)
    assert str(error) == f"{code}: no: {code}"
    assert len(state.posts) == 1  # never sent again by the client itself


@pytest.mark.parametrize(("answer", "retry"), [
    (Answer(502, b"<html>Bad Gateway</html>"), True),  # a proxy in front
    (Answer(504, b"upstream timed out"), True),
    (Answer(404, b"<html>Not Found</html>"), False),
    (Answer(400, b'{"message": "no code"}'), False),
    (Answer(400, b'["bad_json"]'), False),
])  # fmt: skip
async def test_an_error_that_is_not_the_servers_json_is_a_bad_answer(
    hub: tuple[Hub, str], answer: Answer, retry: bool
) -> None:  # fmt: skip
    state, url = hub
    state.answers.append(answer)
    with pytest.raises(PublishError) as caught:
        await Client(url).publish("room:1", {})
    error = caught.value
    assert (error.code, error.status, error.retry) == ("bad_answer", answer.status, retry)
    assert f"HTTP {answer.status}" in error.message


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b"{}", b'{"channel": "room:1", "epoch": "e"}',
    b'{"channel": "room:1", "epoch": "e", "offset": "19"}',
    b'{"channel": "room:1", "epoch": "e", "offset": true}',
    b'{"channel": "room:1", "epoch": 5, "offset": 19}',
])  # fmt: skip
async def test_a_success_without_its_position_is_a_bad_answer(
    hub: tuple[Hub, str], body: bytes
) -> None:  # fmt: skip
    state, url = hub
    state.answers.append(Answer(200, body))
    with pytest.raises(PublishError) as caught:
        await Client(url).publish("room:1", {})
    error = caught.value
    assert (error.code, error.status, error.retry) == ("bad_answer", 200, False)
    assert "probably published" in error.message


async def test_no_answer_in_time_is_a_network_error_and_leaves_nothing_running(
    hub: tuple[Hub, str],
) -> None:
    state, url = hub
    state.answers.append(None)  # held until the test ends
    client = Client(url, connect_timeout=0.3)
    with pytest.raises(PublishError) as caught:
        await client.publish("room:1", {"a": 1})
    error = caught.value
    assert (error.code, error.retry, error.status) == ("network_error", True, 0)
    assert "timed out" in error.message and "may or may not have been published" in error.message
    assert len(state.posts) == 1
    state.released.set()  # the server's handler ends; the client's request already did
    assert await tasks_left() == set()


async def test_an_unreachable_server_is_a_network_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PublishError) as caught:
        await Client(f"http://127.0.0.1:{port}/channels").publish("room:1", {})
    error = caught.value
    assert (error.code, error.retry, error.status) == ("network_error", True, 0)
    assert "connection refused" in error.message


async def test_a_lapsed_token_is_renewed_once_and_the_publish_sent_again(
    hub: tuple[Hub, str],
) -> None:
    state, url = hub
    tokens = iter(["t1", "t2", "t3"])
    client = Client(url, get_token=lambda: next(tokens))  # no token yet: asked first
    state.answers.append(Answer(403, error_body("token_expired")))
    assert await client.publish("room:1", {"n": 1}) == Published("room:1", EPOCH, 1)
    assert [p.headers["Authorization"] for p in state.posts] == ["Bearer t1", "Bearer t2"]
    assert state.posts[0].body == state.posts[1].body

    state.posts.clear()
    state.answers += [Answer(403, error_body("token_revoked"))] * 2
    with pytest.raises(PublishError) as caught:
        await client.publish("room:1", {"n": 2})
    assert caught.value.code == "token_revoked" and caught.value.status == 403
    assert [p.headers["Authorization"] for p in state.posts] == ["Bearer t2", "Bearer t3"]


class Unserialisable:
    pass


@pytest.mark.parametrize(("channel", "data"), [
    ("bad channel", {}),
    ("", {}),
    ("x" * 129, {}),
    (7, {}),
    ("room:1", [1, 2]),
    ("room:1", "text"),
    ("room:1", None),
    ("room:1", {"ts": 1}),  # a key the server sets
    ("room:1", {"offset": 1}),
    ("room:1", {"n": math.nan}),
    ("room:1", {"n": math.inf}),
    ("room:1", {"o": Unserialisable()}),
    ("room:1", {"s": "\ud800"}),  # a lone surrogate
])  # fmt: skip
async def test_arguments_are_checked_before_anything_is_sent(
    hub: tuple[Hub, str], channel: Any, data: Any
) -> None:  # fmt: skip
    state, url = hub
    async with Client(url, transport="websocket") as client:
        feed = client.subscribe("room:1")
        await first_event(feed)  # a socket is open: it would be used
        with pytest.raises(ValueError):
            await client.publish(channel, data)
        with pytest.raises(ValueError):
            await Client(url).publish(channel, data)  # no socket: it would be HTTP
    assert state.commands == [] and state.posts == []


# -- WebSocket ---------------------------------------------------------------------


async def test_over_an_open_websocket_it_is_the_command(hub: tuple[Hub, str]) -> None:
    state, url = hub
    async with Client(url, token="t", transport="websocket") as client:
        reader = Reader(client.subscribe("room:1"))  # another task reads the socket
        await reader.received("room:1", 1, "the subscription's first message")
        first = await client.publish("room:1", {"text": "hi"})
        second = await client.publish("room:2", {"text": "there"})
        await reader.received("room:1", 3, "the live messages")
        await reader.stop()
    assert (first, second) == (Published("room:1", EPOCH, 1), Published("room:2", EPOCH, 2))
    assert state.commands == [
        (1, {"type": "publish", "channel": "room:1", "data": {"text": "hi"}, "id": 1}),
        (1, {"type": "publish", "channel": "room:2", "data": {"text": "there"}, "id": 2}),
    ]
    assert state.posts == []
    assert reader.offsets("room:1") == [1, 2, 3] and reader.error is None


async def test_from_inside_the_loop_the_answer_comes_and_the_rest_goes_on_in_order(
    hub: tuple[Hub, str],
) -> None:
    state, url = hub
    events: list[Any] = []
    answers: list[Published] = []
    async with Client(url, transport="websocket") as client:
        async with asyncio.timeout(10):
            async for event in client.subscribe("room:1"):  # nobody else reads meanwhile
                events.append(event)
                if len(events) == 1:
                    answers.append(await client.publish("room:1", {"n": 1}))
                    answers.append(await client.publish("room:1", {"n": 2}))
                if len(events) == 3:
                    break
    assert answers == [Published("room:1", EPOCH, 1), Published("room:1", EPOCH, 2)]
    # The messages written before each answer reached the iteration, in order.
    assert [e.offset for e in events if isinstance(e, Message)] == [1, 2, 3]
    assert len(state.commands) == 2 and state.posts == []


async def test_the_socket_of_a_subscription_to_the_channel_is_chosen(
    hub: tuple[Hub, str],
) -> None:
    state, url = hub
    async with Client(url, transport="websocket") as client:
        a, b = client.subscribe("room:a"), client.subscribe("room:b")
        await first_event(a)
        await first_event(b)
        await client.publish("room:b", {})
        await client.publish("room:a", {})
    assert [(n, c["channel"]) for n, c in state.commands] == [(2, "room:b"), (1, "room:a")]


async def test_answers_are_matched_by_id_not_by_order(hub: tuple[Hub, str]) -> None:
    state, url = hub
    async with Client(url, transport="websocket") as client:
        await first_event(client.subscribe("room:1"))
        one, two = await asyncio.gather(client.publish("pair:1", {"k": 1}),
                                        client.publish("pair:2", {"k": 2}))  # fmt: skip
    # The server answered pair:2 first (offset 1), then pair:1 (offset 2).
    assert one == Published("pair:1", EPOCH, 2) and two == Published("pair:2", EPOCH, 1)
    assert [c["id"] for _, c in state.commands] == [1, 2]


@pytest.mark.parametrize(("channel", "code", "retry", "retry_after"), [
    ("refused", "publish_forbidden", False, None),
    ("busy", "rate_limited", True, 1.5),
    ("old", "bad_message", False, None),  # a server that knows no `publish` command
])  # fmt: skip
async def test_publish_errors_on_the_socket(
    hub: tuple[Hub, str], channel: str, code: str, retry: bool, retry_after: float | None
) -> None:  # fmt: skip
    state, url = hub
    async with Client(url, transport="websocket") as client:
        feed = client.subscribe("room:1")
        await first_event(feed)
        with pytest.raises(PublishError) as caught:
            await client.publish(channel, {})
        # The subscription goes on, and so do publishes on it.
        assert await client.publish("room:1", {}) == Published("room:1", EPOCH, 1)
        assert (await first_event(feed)).offset == 2
        assert feed.channels == ["room:1"]
    error = caught.value
    assert (error.code, error.retry, error.retry_after, error.status) == (
        code, retry, retry_after, 0)  # fmt: skip
    assert state.posts == []


async def test_a_malformed_published_frame_is_a_bad_answer(hub: tuple[Hub, str]) -> None:
    _, url = hub
    async with Client(url, transport="websocket") as client:
        await first_event(client.subscribe("room:1"))
        with pytest.raises(PublishError) as caught:
            await client.publish("malformed", {})
    assert (caught.value.code, caught.value.retry) == ("bad_answer", False)


@pytest.mark.parametrize(("channel", "why"), [
    ("lost", "closed 1011 gone"),
    ("reconnect", "reconnect broker_unavailable"),
])  # fmt: skip
async def test_a_socket_that_ends_before_the_answer_is_connection_lost(
    hub: tuple[Hub, str], channel: str, why: str
) -> None:  # fmt: skip
    state, url = hub
    async with Client(url, transport="websocket") as client:
        feed = client.subscribe("room:1")
        async with asyncio.timeout(10):
            async for _ in feed:  # nobody else reads: the socket stays as it ended
                with pytest.raises(PublishError) as caught:
                    await client.publish(channel, {"n": 1})
                # The socket is done: the next publish is not sent on it, but over HTTP.
                assert await client.publish("room:1", {"n": 2}) == Published("room:1", EPOCH, 1)
                break
    error = caught.value
    assert (error.code, error.retry, error.status) == ("connection_lost", True, 0)
    assert why in error.message and "may or may not have been published" in error.message
    assert [c["channel"] for _, c in state.commands] == [channel]
    assert [json.loads(p.body) for p in state.posts] == [{"channel": "room:1", "data": {"n": 2}}]


async def test_no_answer_on_the_socket_in_time_is_connection_lost(hub: tuple[Hub, str]) -> None:
    state, url = hub
    async with Client(url, transport="websocket", connect_timeout=0.3) as client:
        feed = client.subscribe("room:1")
        await first_event(feed)
        with pytest.raises(PublishError) as silent:
            await client.publish("silent", {})
        with pytest.raises(PublishError) as late:
            await client.publish("late", {})
        client.connect_timeout = 10
        # late's answer comes just before this one's: it must not be taken for it.
        assert await client.publish("room:1", {}) == Published("room:1", EPOCH, 2)
        assert (await first_event(feed)).offset == 2  # the subscription went on
        # Answered in order, silent's would be the oldest command still waiting:
        # it was forgotten when its asker gave up.
        with pytest.raises(PublishError) as old:
            await client.publish("old", {})
        assert old.value.code == "bad_message"
    for error in (silent.value, late.value):
        assert (error.code, error.retry, error.status) == ("connection_lost", True, 0)
        assert "no answer on the WebSocket within 0.3 s" in error.message
    assert [c["channel"] for _, c in state.commands] == ["silent", "late", "room:1", "old"]
    assert state.posts == []


async def test_a_cancelled_publish_leaves_the_socket_working(hub: tuple[Hub, str]) -> None:
    state, url = hub
    async with Client(url, transport="websocket") as client:
        await first_event(client.subscribe("room:1"))
        task = asyncio.create_task(client.publish("late", {}))
        async with asyncio.timeout(10):
            while not state.commands:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.publish("room:1", {}) == Published("room:1", EPOCH, 2)

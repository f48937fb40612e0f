"""The WebSocket transport over real sockets: same semantics as HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import tornado.web
from tornado.websocket import websocket_connect

from support import Framings, Server, Socket, eventually
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings, Subscription
from torchannels.errors import CLOSE_GOING_AWAY, CLOSE_TOO_BIG


class BaseHandler(tornado.web.RequestHandler):
    def get_current_user(self) -> str:
        return self.get_query_argument("user", "anon")


class SeedStyleHandler(ChannelMixin, BaseHandler):
    def can_access(self, sub: Subscription) -> bool:
        if not super().can_access(sub):  # the seed's idiom must work on WS too
            return False
        return (
            not sub.channel.startswith("private:") or sub.channel == f"private:{self.current_user}"
        )


class AsyncDenyHandler(ChannelMixin, tornado.web.RequestHandler):
    async def can_access(self, sub: Subscription) -> bool:
        await asyncio.sleep(0)
        return sub.channel != "vault"


@pytest.fixture
async def ws_server(make_server: Callable[..., Server]) -> Server:
    return make_ws_server(make_server, SeedStyleHandler)


def make_ws_server(
    make_server: Callable[..., Server], base: type[ChannelMixin], hub: Hub | None = None
) -> Server:
    hub = hub or Hub(
        MemoryBroker(), Settings(ping_interval=0.5, max_channels=4, max_request_bytes=2048)
    )
    handler: type[ChannelMixin] = type("Handler", (base,), {"hub": hub})
    return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])


@pytest.fixture
async def connect(ws_server: Server) -> AsyncIterator[Callable[..., Any]]:
    sockets: list[Socket] = []

    async def open_socket(query: str = "", server: Server | None = None, **kw: Any) -> Socket:
        srv = server or ws_server
        url = f"ws://127.0.0.1:{srv.port}/channels/ws" + (f"?{query}" if query else "")
        sock = Socket(await websocket_connect(url, **kw))
        sockets.append(sock)
        await sock.wait(lambda fs: bool(fs))
        return sock

    yield open_socket
    for sock in sockets:
        sock.conn.close()


async def test_connect_subscribes_from_query_and_delivers(ws_server: Server, connect: Any) -> None:
    ws_server.hub.channel("news").send({"n": 1})
    sock = await connect("channel=news")
    await sock.wait(lambda fs: len(fs) >= 3)
    first = dict(sock.frames[0])
    assert isinstance(first.pop("client"), str)  # the signed client id
    assert first == {"type": "connected", "transport": "websocket", "ping": 0.5}
    assert sock.frames[1]["type"] == "subscribed" and sock.frames[1]["offset"] == 0
    ws_server.hub.channel("news").send({"n": 2})
    await sock.wait(lambda fs: sock.offsets("news") == [1, 2])


async def test_in_band_subscribe_and_unsubscribe(ws_server: Server, connect: Any) -> None:
    sock = await connect()
    sock.send({"type": "subscribe", "channels": ["a", "b"]})
    await sock.wait(lambda fs: len(sock.of("subscribed")) == 2)
    ws_server.hub.channel("a").send({"n": 1})
    ws_server.hub.channel("b").send({"n": 1})
    await sock.wait(lambda fs: sock.offsets("a") == [1] and sock.offsets("b") == [1])
    sock.send({"type": "unsubscribe", "channels": ["a", "never-held"]})
    await sock.wait(lambda fs: len(sock.of("unsubscribed")) == 2)
    assert [f["channel"] for f in sock.of("unsubscribed")] == ["a", "never-held"]
    assert ws_server.hub.local_subscribers("a") == 0
    ws_server.hub.channel("a").send({"n": 2})
    ws_server.hub.channel("b").send({"n": 2})
    await sock.wait(lambda fs: sock.offsets("b") == [1, 2])
    assert sock.offsets("a") == [1]
    # Subscribing to a channel already held does nothing.
    sock.send({"type": "subscribe", "channels": ["b"]})
    ws_server.hub.channel("b").send({"n": 3})
    await sock.wait(lambda fs: sock.offsets("b") == [1, 2, 3])
    assert len(sock.of("subscribed")) == 2


async def test_resume_from_cursor_gets_exactly_the_missed(ws_server: Server, connect: Any) -> None:
    pubs = [ws_server.hub.channel("log").send({"n": n}) for n in range(1, 6)]
    cursor = f"log={pubs[0]['epoch']}:2"
    sock = await connect()
    sock.send({"type": "subscribe", "channels": ["log"], "cursor": cursor})
    await sock.wait(lambda fs: sock.offsets("log") == [3, 4, 5])
    assert not sock.of("subscribed") and not sock.of("reset")


async def test_reset_brings_state_then_later_messages(ws_server: Server, connect: Any) -> None:
    ch = ws_server.hub.channel("doc")
    ch.send({"n": 1})
    ch.set_state([{"snapshot": "v1"}])
    ch.send({"n": 2})
    sock = await connect("channel=doc&cursor=doc=0bad0:1")
    await sock.wait(lambda fs: sock.offsets("doc") == [2])
    kinds = [f["type"] for f in sock.frames[1:]]
    assert kinds == ["reset", "subscribed", "message"]
    assert sock.frames[1]["reason"] == "epoch_changed"
    assert [m["snapshot"] for m in sock.frames[2]["state"]] == ["v1"]


async def test_can_access_of_the_apps_handler_applies(ws_server: Server, connect: Any) -> None:
    sock = await connect("user=ann")
    sock.send({"type": "subscribe", "channels": ["private:bob", "private:ann", "open"]})
    await sock.wait(lambda fs: len(sock.of("subscribed")) == 2)
    errors = sock.of("error")
    assert [(e["channel"], e["code"]) for e in errors] == [("private:bob", "forbidden")]
    assert {f["channel"] for f in sock.of("subscribed")} == {"private:ann", "open"}


async def test_async_can_access_denies_one_channel(
    make_server: Callable[..., Server], connect: Any
) -> None:
    server = make_ws_server(make_server, AsyncDenyHandler)
    sock = await connect("channel=vault&channel=lobby", server=server)
    await sock.wait(lambda fs: sock.of("error") and sock.of("subscribed"))
    assert sock.of("error")[0]["channel"] == "vault"
    server.hub.channel("lobby").send({"n": 1})
    await sock.wait(lambda fs: sock.offsets("lobby") == [1])


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '{"type": "dance", "channels": []}',
        '{"type": "subscribe"}',
        '{"type": "subscribe", "channels": [1]}',
        '{"type": "subscribe", "channels": "a"}',
    ],
)
async def test_malformed_commands_get_bad_message(
    ws_server: Server, connect: Any, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    sock = await connect()
    sock.conn.write_message(raw)
    await sock.wait(lambda fs: bool(sock.of("error")))
    error = sock.of("error")[0]
    assert error["code"] == "bad_message" and "channel" not in error
    sock.send({"type": "subscribe", "channels": ["still-open"]})
    await sock.wait(lambda fs: bool(sock.of("subscribed")))
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"type": "subscribe", "channels": ["ok", "bad name"]}, "invalid_channel"),
        ({"type": "subscribe", "channels": ["a", "b"], "cursor": "a=x"}, "malformed_cursor"),
        ({"type": "subscribe", "channels": ["c1", "c2", "c3", "c4", "c5"]}, "too_many_channels"),
        ({"type": "subscribe", "channels": ["a"], "cursor": 5}, "bad_message"),
    ],
)
async def test_refused_subscribe_answers_each_channel(
    connect: Any, command: dict[str, Any], code: str
) -> None:
    sock = await connect()
    sock.send(command)
    await sock.wait(lambda fs: len(sock.of("error")) == len(command["channels"]))
    assert [e["channel"] for e in sock.of("error")] == command["channels"]
    assert {e["code"] for e in sock.of("error")} == {code}
    assert not sock.of("subscribed")


async def test_channel_limit_counts_channels_already_held(connect: Any) -> None:
    sock = await connect("channel=a&channel=b&channel=c")
    await sock.wait(lambda fs: len(sock.of("subscribed")) == 3)
    sock.send({"type": "subscribe", "channels": ["d", "e"]})
    await sock.wait(lambda fs: len(sock.of("error")) == 2)
    assert {e["code"] for e in sock.of("error")} == {"too_many_channels"}


async def test_oversized_client_frame_closes_with_1009(ws_server: Server, connect: Any) -> None:
    sock = await connect()
    sock.send({"type": "subscribe", "channels": ["x" * 100] * 30})
    await asyncio.wait_for(sock.closed.wait(), 10)
    assert sock.conn.close_code == CLOSE_TOO_BIG


async def test_bad_query_at_connect_is_an_error_frame(connect: Any) -> None:
    sock = await connect("channel=bad%20name")
    await sock.wait(lambda fs: bool(sock.of("error")))
    assert sock.of("error")[0]["code"] == "invalid_channel"
    assert sock.of("error")[0]["channel"] == "bad name"


async def test_cross_origin_refused_unless_allowed(
    make_server: Callable[..., Server], ws_server: Server
) -> None:
    url = f"ws://127.0.0.1:{ws_server.port}/channels/ws"
    from tornado.httpclient import HTTPClientError, HTTPRequest

    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(url, headers={"Origin": "http://evil.example"}))
    assert refused.value.code == 403
    same = await websocket_connect(
        HTTPRequest(url, headers={"Origin": f"http://127.0.0.1:{ws_server.port}"})
    )
    same.close()
    hub = Hub(MemoryBroker(), Settings(allowed_origins=("http://app.example",)))
    allowed = make_ws_server(make_server, SeedStyleHandler, hub)
    ok = await websocket_connect(
        HTTPRequest(
            f"ws://127.0.0.1:{allowed.port}/channels/ws", headers={"Origin": "http://app.example"}
        )
    )
    ok.close()


async def test_message_is_framed_once_for_every_recipient(
    ws_server: Server, connect: Any, framings: Framings
) -> None:
    sockets = [await connect("channel=fan") for _ in range(3)]
    for sock in sockets:
        await sock.wait(lambda fs, s=sock: bool(s.of("subscribed")))
    pub_data = ws_server.hub.channel("fan").send({"n": 1})
    for sock in sockets:
        await sock.wait(lambda fs, s=sock: s.offsets("fan") == [1])
    history = (await ws_server.hub.broker.read("fan", None)).publications
    frame = history[-1].frame
    assert history[-1].data == pub_data
    # One prepared WebSocket frame, built once; every recipient got those bytes.
    assert framings.built(frame) == ["ws"]
    [prepared, *others] = framings.answered(frame)
    assert len(others) == 2 and all(data is prepared for data in others)
    assert prepared[0] == 0x81 and prepared.endswith(frame.envelope)


async def test_pings_and_cleanup_on_disconnect(ws_server: Server, connect: Any) -> None:
    sock = await connect("channel=p")
    await sock.wait(lambda fs: len(sock.of("ping")) >= 2)
    assert ws_server.hub.local_subscribers("p") == 1
    await sock.close()
    await eventually(lambda: ws_server.hub.local_subscribers("p") == 0)
    await eventually(lambda: not ws_server.hub.connections)


async def test_shutdown_sends_reconnect_and_closes_1001(ws_server: Server, connect: Any) -> None:
    sock = await connect("channel=s")
    await sock.wait(lambda fs: bool(sock.of("subscribed")))
    assert await ws_server.hub.shutdown(5)
    await asyncio.wait_for(sock.closed.wait(), 10)
    assert sock.of("reconnect") == [{"type": "reconnect", "reason": "shutdown"}]
    assert sock.conn.close_code == CLOSE_GOING_AWAY


async def test_slow_consumer_is_closed_with_4001(make_server: Callable[..., Server]) -> None:
    hub = Hub(MemoryBroker(), Settings(max_pending_bytes=256 * 1024))
    server = make_ws_server(make_server, SeedStyleHandler, hub)
    # A raw client that completes the handshake and then never reads.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /channels/ws?channel=flood HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert b" 101 " in head
    await eventually(lambda: hub.local_subscribers("flood") == 1)
    blob = "x" * 65536
    for n in range(400):
        hub.channel("flood").send({"n": n, "blob": blob})
        if hub.stats.slow_dropped:
            break
        await asyncio.sleep(0)
    assert hub.stats.slow_dropped == 1
    await eventually(lambda: hub.local_subscribers("flood") == 0)
    writer.close()


# -- the app's own hooks, refusals and command errors (issue 7) ---------------------


class FriendOnly(ChannelMixin, tornado.web.RequestHandler):
    """An app's own origin policy, extending the default one with super()."""

    def check_origin(self, origin: str) -> bool:
        return origin == "https://friend.example" or super().check_origin(origin)


async def test_the_apps_check_origin_decides_on_the_websocket_route(
    make_server: Callable[..., Server],
) -> None:
    from tornado.httpclient import HTTPClientError, HTTPRequest

    server = make_ws_server(make_server, FriendOnly)
    url = f"ws://127.0.0.1:{server.port}/channels/ws"
    friend = await websocket_connect(HTTPRequest(url, headers={"Origin": "https://friend.example"}))
    friend.close()
    same = await websocket_connect(
        HTTPRequest(url, headers={"Origin": f"http://127.0.0.1:{server.port}"})
    )  # the default policy, reached through super()
    same.close()
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(HTTPRequest(url, headers={"Origin": "https://other.example"}))
    assert refused.value.code == 403


async def test_no_new_websocket_while_shutting_down(ws_server: Server) -> None:
    from tornado.httpclient import HTTPClientError

    assert await ws_server.hub.shutdown(1)
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(f"ws://127.0.0.1:{ws_server.port}/channels/ws?channel=late")
    assert refused.value.code == 503
    assert json.loads(refused.value.response.body)["error"] == "shutting_down"  # type: ignore[union-attr]
    assert not ws_server.hub.connections


async def test_a_repeated_cursor_on_the_connect_url_is_bad_parameter(connect: Any) -> None:
    sock = await connect("channel=c&cursor=c%3Dab%3A1&cursor=c%3Dab%3A2")
    await sock.wait(lambda fs: bool(sock.of("error")))
    assert sock.of("error")[0]["code"] == "bad_parameter"
    assert not sock.of("subscribed")


async def test_deeply_nested_json_is_bad_message_and_the_socket_stays(
    ws_server: Server, connect: Any
) -> None:
    sock = await connect()
    sock.conn.write_message("[" * 2000)  # deeper than the recursion limit, under 2048 bytes
    await sock.wait(lambda fs: bool(sock.of("error")))
    assert sock.of("error")[0]["code"] == "bad_message"
    sock.send({"type": "subscribe", "channels": ["after"]})
    await sock.wait(lambda fs: bool(sock.of("subscribed")))


class FailingBroker(MemoryBroker):
    """A broker whose reads fail with a ValueError of its own."""

    async def read(self, channel: str, since: Any) -> Any:
        raise ValueError("the broker broke")


async def test_a_broker_error_is_not_reported_as_bad_json(
    make_server: Callable[..., Server],
) -> None:
    """Only the JSON parse is answered ``a command must be JSON text``; an
    error deeper in a subscribe is not blamed on the client's command."""
    hub = Hub(FailingBroker(), Settings(ping_interval=5))
    server = make_ws_server(make_server, SeedStyleHandler, hub)
    sock = Socket(await websocket_connect(f"ws://127.0.0.1:{server.port}/channels/ws"))
    await sock.wait(lambda fs: bool(sock.of("connected")))
    sock.send({"type": "subscribe", "channels": ["doomed"]})
    await asyncio.wait_for(sock.closed.wait(), 10)  # the failure ends the socket
    assert not sock.of("error"), sock.frames


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
async def test_a_lone_surrogate_in_a_command_is_answered_and_the_socket_stays(
    ws_server: Server, connect: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17 2b.3: ``"\\ud800"`` is not valid Unicode, so the frame that
    echoes it cannot be UTF-8 as is; it was a traceback and a dropped socket."""
    other = await connect("channel=calm")
    await other.wait(lambda fs: bool(other.of("subscribed")))
    sock = await connect()
    sock.send({"type": kind, "channels": ["\ud800", "fine"]})
    answer = "error" if kind == "subscribe" else "unsubscribed"
    await sock.wait(lambda fs: len(sock.of(answer)) == 2)
    assert [f["channel"] for f in sock.of(answer)] == ["\ud800", "fine"]
    if kind == "subscribe":
        assert {f["code"] for f in sock.of("error")} == {"invalid_channel"}
    sock.send({"type": "subscribe", "channels": ["after"]})
    await sock.wait(lambda fs: bool(sock.of("subscribed")))
    assert not sock.closed.is_set()
    ws_server.hub.channel("calm").send({"n": 1})
    await other.wait(lambda fs: other.offsets("calm") == [1])
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not [r for r in caplog.records if r.exc_info], caplog.text


async def test_a_lone_surrogate_on_the_connect_url_is_an_error_frame(
    connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sock = await connect("channel=%ED%A0%80")  # "\ud800" as (invalid) UTF-8
    await sock.wait(lambda fs: bool(sock.of("error")))
    assert sock.of("error")[0]["code"] == "bad_parameter"
    sock.send({"type": "subscribe", "channels": ["after"]})
    await sock.wait(lambda fs: bool(sock.of("subscribed")))
    assert not [r for r in caplog.records if r.exc_info], caplog.text

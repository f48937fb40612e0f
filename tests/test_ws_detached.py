"""An open WebSocket takes its socket over from Tornado
(transports/ws_detached.py) and speaks RFC 6455 itself over real sockets:
Tornado's protocol, stream and HTTP connection are released; pings, the
close handshake both ways, protocol errors failing the connection with a
close code, commands read one at a time; TLS and permessage-deflate stay
on Tornado's path."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import struct
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, cast

import pytest
import tornado.testing
import tornado.web
from tornado.websocket import websocket_connect

from support import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    RawSocket,
    Server,
    eventually,
    frame_type,
    self_signed_tls,
)
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings, Subscription
from torchannels.forwarded import TrustedProxies
from torchannels.server.address_limit import PerAddressLimit
from torchannels.server.listener import HubHTTPServer
from torchannels.transports import ws_detached
from torchannels.transports.websocket import ChannelSocketMixin
from torchannels.transports.ws_frames import unmask


class Watched(ChannelMixin):
    """Keeps weak references to what Tornado made for each WebSocket.
    ``can_access`` waits on ``gate`` for channels named ``slow:*``."""

    protocols: ClassVar[list[weakref.ref[Any]]] = []
    handlers: ClassVar[list[weakref.ref[Any]]] = []
    gate: ClassVar[asyncio.Event]

    async def can_access(self, sub: Subscription) -> bool:
        if sub.channel.startswith("slow:"):
            await Watched.gate.wait()
        return True


def watched(cls: type[tornado.web.RequestHandler]) -> type[tornado.web.RequestHandler]:
    """``cls`` (a WebSocket handler) recording its handlers and protocols."""

    def open(self: Any, *args: Any, **kwargs: Any) -> Any:
        Watched.protocols.append(weakref.ref(self.ws_connection))
        Watched.handlers.append(weakref.ref(self))
        return cls.open(self, *args, **kwargs)  # type: ignore[attr-defined]

    return type("Watching", (cls,), {"open": open})


def alive(refs: list[weakref.ref[Any]]) -> int:
    gc.collect()
    return sum(ref() is not None for ref in refs)


@pytest.fixture
def ws(make_server: Callable[..., Server]) -> Callable[..., Server]:
    """``ws(**settings)`` -> a server with a WebSocket route on a fresh hub."""
    Watched.protocols, Watched.handlers = [], []
    Watched.gate = asyncio.Event()

    def make(tls: Any = None, attrs: dict[str, Any] | None = None, **settings: Any) -> Server:
        hub = Hub(MemoryBroker(), Settings(**{"ping_interval": 5, **settings}))
        handler = cast(type[Watched], type("Handler", (Watched,), {"hub": hub}))
        socket_class = type("Socket", (watched(handler.websocket()),), attrs or {})
        return make_server(handler, hub_=hub, routes=[(r"/channels/ws", socket_class)], tls=tls)

    return make


def command(sock: RawSocket, **body: Any) -> None:
    sock.send(TEXT, json.dumps(body).encode())


async def kinds_until(sock: RawSocket, last: str) -> list[str]:
    kinds: list[str] = []
    while (kind := frame_type(await sock.frame())) != last:
        assert kind != "EOF", kinds
        kinds.append(kind)
    return kinds


async def test_an_open_websocket_lets_tornados_protocol_go(ws: Callable[..., Server]) -> None:
    server = ws()
    sock = await RawSocket.connect(server.port, "channel=a")
    assert await kinds_until(sock, "subscribed") == ["connected"]
    assert alive(Watched.protocols) == 0  # the protocol, its stream, the HTTP connection
    (handler,) = [ref() for ref in Watched.handlers]
    assert handler is not None and handler.request.connection is None  # kept: can_access
    del handler
    command(sock, type="subscribe", channels=["b"])  # in-band commands still work
    assert await kinds_until(sock, "subscribed") == []
    server.hub.channel("b").send({"n": 1})
    assert frame_type(await sock.frame()) == "message"
    sock.close()  # noticed: the connection ends
    await eventually(lambda: not server.hub.connections and alive(Watched.handlers) == 0)


async def test_a_ping_is_answered_with_its_payload(ws: Callable[..., Server]) -> None:
    server = ws()
    sock = await RawSocket.connect(server.port, "")
    assert frame_type(await sock.frame()) == "connected"
    sock.send(PING, b"are you there")
    assert await sock.frame() == (PONG, b"are you there")
    sock.close()
    await eventually(lambda: not server.hub.connections)


async def test_a_client_close_is_answered_with_its_code_and_the_server_closes(
    ws: Callable[..., Server],
) -> None:
    server = ws()
    sock = await RawSocket.connect(server.port, "channel=a")
    await kinds_until(sock, "subscribed")
    sock.send(CLOSE, struct.pack("!H", 4000) + b"leaving")
    assert await sock.frame() == (CLOSE, struct.pack("!H", 4000))
    assert await sock.frame() is None  # then the server closed the connection
    await eventually(lambda: not server.hub.connections and server.hub.local_subscribers("a") == 0)


async def test_shutdown_closes_with_1001_once_the_client_answers(
    ws: Callable[..., Server],
) -> None:
    server = ws()
    sock = await RawSocket.connect(server.port, "channel=a")
    await kinds_until(sock, "subscribed")
    shutdown = asyncio.ensure_future(server.hub.shutdown(5))
    frames = await sock.until_end()  # answers the close frame
    assert [frame_type(f) for f in frames][-2:] == ["reconnect", "CLOSE"]
    assert frames[-1][1] == struct.pack("!H", 1001) + b"shutdown"
    assert await shutdown


async def test_a_client_that_never_answers_our_close_is_closed(
    ws: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_detached, "CLOSE_TIMEOUT", 0.3)
    server = ws()
    sock = await RawSocket.connect(server.port, "channel=a")
    await kinds_until(sock, "subscribed")
    shutdown = asyncio.ensure_future(server.hub.shutdown(5))
    assert await kinds_until(sock, "CLOSE") == ["reconnect"]
    assert await sock.frame() is None  # no answer from us: closed after the timeout
    assert await shutdown


def raw_frame(first: int, payload: bytes, *, masked: bool = True) -> bytes:
    key = os.urandom(4)
    if not masked:
        return bytes((first, len(payload))) + payload
    return bytes((first, 0x80 | len(payload))) + key + unmask(payload, key)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (raw_frame(0x81, b'{"type":"ping"}', masked=False), 1002),  # unmasked
        (raw_frame(0x83, b""), 1002),  # a reserved opcode
        (raw_frame(0xC1, b"x"), 1002),  # RSV1: no compression was negotiated
        (raw_frame(0x80, b"x"), 1002),  # a continuation of nothing
        (raw_frame(0x09, b"x"), 1002),  # a fragmented PING
        (raw_frame(0x81, b"\xff\xfe"), 1007),  # text, not UTF-8
        (raw_frame(0x88, b"\x03\xed"), 1002),  # close code 1005 may not be sent
        (bytes((0x81, 0x80 | 126)) + struct.pack("!H", 3000) + os.urandom(4), 1009),  # > 2048
    ],
    ids=[
        "unmasked",
        "opcode",
        "rsv1",
        "continuation",
        "fragmented-ping",
        "utf8",
        "close-code",
        "too-big",
    ],
)
async def test_a_protocol_error_fails_the_connection_with_its_code(
    ws: Callable[..., Server], data: bytes, code: int
) -> None:
    server = ws(max_request_bytes=2048)
    sock = await RawSocket.connect(server.port, "channel=a")
    await kinds_until(sock, "subscribed")
    sock.writer.write(data)
    frame = await sock.frame()
    assert frame is not None and frame[0] == CLOSE
    assert struct.unpack("!H", frame[1][:2])[0] == code
    assert await sock.frame() is None  # closed at once
    await eventually(lambda: not server.hub.connections)


async def test_commands_are_read_one_at_a_time_in_order(ws: Callable[..., Server]) -> None:
    server = ws()
    sock = await RawSocket.connect(server.port, "")
    assert frame_type(await sock.frame()) == "connected"
    command(sock, type="subscribe", channels=["slow:a"])
    command(sock, type="subscribe", channels=["fast"])
    sock.send(PING, b"queued")  # behind the commands: not read while one runs
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sock.reader.readexactly(1), 0.3)
    Watched.gate.set()
    got = [await sock.frame() for _ in range(3)]
    assert [json.loads(f[1])["channel"] for f in got[:2] if f is not None] == ["slow:a", "fast"]
    assert got[2] == (PONG, b"queued")
    sock.close()


async def test_bytes_sent_with_the_handshake_are_read(ws: Callable[..., Server]) -> None:
    server = ws()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    writer.write(
        f"GET /channels/ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode() + raw_frame(0x81, b'{"type":"subscribe","channels":["early"]}')
    )  # fmt: skip
    await reader.readuntil(b"\r\n\r\n")
    sock = RawSocket(reader, writer)
    assert await kinds_until(sock, "subscribed") == ["connected"]
    sock.close()


async def test_a_tls_websocket_stays_on_tornados_path(ws: Callable[..., Server]) -> None:
    server_tls, client_tls = self_signed_tls()
    server = ws(tls=server_tls)
    url = server.url("/channels/ws", channel="a").replace("http:", "wss:")
    conn = await websocket_connect(tornado.httpclient.HTTPRequest(url, ssl_options=client_tls))
    try:
        assert json.loads(await conn.read_message() or "")["type"] == "connected"
        assert alive(Watched.protocols) == 1  # Tornado's protocol serves it
        server.hub.channel("a").send({"n": 1})
        kinds = [json.loads(await conn.read_message() or "")["type"] for _ in range(2)]
        assert kinds == ["subscribed", "message"]
    finally:
        conn.close()
    await eventually(lambda: not server.hub.connections)


async def test_permessage_deflate_stays_on_tornados_path(ws: Callable[..., Server]) -> None:
    server = ws(attrs={"get_compression_options": lambda self: {}})
    url = server.url("/channels/ws", channel="a").replace("http:", "ws:")
    conn = await websocket_connect(url, compression_options={})
    try:
        assert json.loads(await conn.read_message() or "")["type"] == "connected"
        assert alive(Watched.protocols) == 1
        conn.write_message(json.dumps({"type": "subscribe", "channels": ["b"]}))  # compressed
        kinds = [json.loads(await conn.read_message() or "")["type"] for _ in range(2)]
        assert kinds == ["subscribed", "subscribed"]
    finally:
        conn.close()
    await eventually(lambda: not server.hub.connections)


async def test_a_taken_websocket_counts_against_the_servers_caps_until_it_closes(
    ws: Callable[..., Server],
) -> None:
    Watched.protocols, Watched.handlers = [], []
    hub = Hub(MemoryBroker(), Settings(ping_interval=5))
    handler = cast(type[Watched], type("Handler", (Watched,), {"hub": hub}))
    app = tornado.web.Application([(r"/channels/ws", watched(handler.websocket()))])
    server = HubHTTPServer(app)
    server.max_connections = 1
    server.limits = PerAddressLimit(0, TrustedProxies(()))
    sock, port = tornado.testing.bind_unused_port()
    server.add_sockets([sock])
    try:
        first = await RawSocket.connect(port, "channel=a")
        await kinds_until(first, "subscribed")
        assert alive(Watched.protocols) == 0 and server.open_connections == 1
        first.send(CLOSE, struct.pack("!H", 1000))
        assert frame_type(await first.frame()) == "CLOSE"
        await eventually(lambda: server.open_connections == 0)
        second = await RawSocket.connect(port, "channel=a")  # its place is free
        await kinds_until(second, "subscribed")
        second.close()
        await eventually(lambda: server.open_connections == 0)
    finally:
        server.stop()


async def test_a_client_gone_before_the_hand_over_ends_quietly(
    ws: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    def hand_over(self: Any, *, paused: bool) -> bool:
        self._stream.close()  # the client left: Tornado has not told the handler yet
        return bool(ChannelSocketMixin._hand_over(self, paused=paused))

    server = ws(attrs={"_hand_over": hand_over})
    sock = await RawSocket.connect(server.port, "channel=a")
    while await sock.frame() is not None:
        pass
    await eventually(lambda: not server.hub.connections and server.hub.local_subscribers("a") == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

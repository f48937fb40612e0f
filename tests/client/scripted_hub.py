"""A scripted hub on a loopback socket, speaking every transport's framing
(docs/protocol.md: poll and longpoll answers, NDJSON, SSE, WebSocket).

Connection (or poll request) number n gets the frames of ``script[n]``, the
ones after the script a quiet connection. So a test makes the server say
what a real hub says only when another process acts (a ``disconnect``, an
``unsubscribed``), at an exact place, and sees every request the client
made after it: its transport, channels, cursor, client id and token.

A connection ends after its frames when the last one ends it (a
``disconnect`` or ``reconnect`` frame, or :func:`close`): a stream's
response finishes, a WebSocket closes (4003/4004 after a ``disconnect``,
1001 after a ``reconnect``, or the code :func:`close` gives, with no frame).
Otherwise it stays open until the client leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

Frame = dict[str, Any]
#: How long a quiet long-poll is held before its empty answer.
QUIET_HOLD = 0.3


def close(code: int, reason: str = "") -> Frame:
    """Not a frame: a WebSocket closed with ``code`` and ``reason`` at this
    place, without a frame (a stream's response just ends)."""
    return {"type": "_close", "code": code, "reason": reason}


def disconnect(reason: str, reconnect: bool) -> Frame:
    return {"type": "disconnect", "reason": reason, "reconnect": reconnect}


def subscribed(channel: str, offset: int) -> Frame:
    return {"type": "subscribed", "channel": channel, "epoch": "e", "offset": offset}


def message(channel: str, offset: int) -> Frame:
    data = {"channel": channel, "epoch": "e", "offset": offset, "ts": 1.0}
    return {"type": "message", "data": data}


def channel_error(channel: str, code: str) -> Frame:
    return {"type": "error", "channel": channel, "code": code, "message": f"{code} ({channel})"}


def connected(transport: str, n: int) -> Frame:
    return {"type": "connected", "transport": transport, "ping": 60, "client": f"s{n}"}


def _ends(frames: Sequence[Frame]) -> bool:
    return bool(frames) and frames[-1]["type"] in ("disconnect", "reconnect", "_close")


def sse(frame: Frame) -> bytes:
    """One frame as an SSE event (a message's data alone, errors as ``channel_error``)."""
    kind = frame["type"]
    if kind == "message":
        return b"data: " + json.dumps(frame["data"]).encode() + b"\n\n"
    name = "channel_error" if kind == "error" else kind
    return f"event: {name}\ndata: {json.dumps(frame)}\n\n".encode()


@dataclass(frozen=True)
class Seen:
    """One request as the hub got it."""

    transport: str
    channels: list[str]
    cursor: str | None
    client: str | None
    token: str | None


class ScriptedHub:
    """``async with ScriptedHub(script) as hub``: ``hub.url`` is its subscribe URL."""

    def __init__(self, script: Sequence[Sequence[Frame]]) -> None:
        self.script = [list(frames) for frames in script]
        self.seen: list[Seen] = []
        self._waits: set[asyncio.Future[None]] = set()
        app = tornado.web.Application([(r"/channels/ws", Socket, {"hub": self}),
                                       (r"/channels", Plain, {"hub": self})])  # fmt: skip
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/channels"
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets([sock])

    def take(self, handler: tornado.web.RequestHandler, transport: str) -> tuple[int, list[Frame]]:
        """Record a request; its number and the frames the script gives it."""
        auth = handler.request.headers.get("Authorization")
        self.seen.append(Seen(transport, handler.get_arguments("channel"),
                              handler.get_argument("cursor", None),
                              handler.get_argument("client", None),
                              auth.removeprefix("Bearer ") if auth else None))  # fmt: skip
        n = len(self.seen) - 1
        return n, self.script[n] if n < len(self.script) else []

    def wait(self) -> asyncio.Future[None]:
        """Resolved when :meth:`aclose` is called (or by the handler that holds it)."""
        future = asyncio.get_running_loop().create_future()
        self._waits.add(future)
        future.add_done_callback(self._waits.discard)
        return future

    async def __aenter__(self) -> ScriptedHub:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        self._server.stop()
        for future in list(self._waits):
            if not future.done():
                future.set_result(None)
        await self._server.close_all_connections()


class Plain(tornado.web.RequestHandler):
    """poll, longpoll, stream and sse, by the ``transport`` argument."""

    def initialize(self, hub: ScriptedHub) -> None:
        self.hub = hub
        self.gone: asyncio.Future[None] | None = None

    def on_connection_close(self) -> None:
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)

    async def get(self) -> None:
        transport = self.get_argument("transport")
        n, frames = self.hub.take(self, transport)
        self.gone = self.hub.wait()
        ends = _ends(frames)
        frames = [f for f in frames if f["type"] != "_close"]
        if transport in ("poll", "longpoll"):
            if not frames and transport == "longpoll":
                await asyncio.wait([self.gone], timeout=QUIET_HOLD)
            self.finish({"cursor": self.get_argument("cursor", ""),
                         "client": self.get_argument("client", None) or f"c{n}",
                         "frames": frames})  # fmt: skip
            return
        frames = frames or [connected(transport, n)]
        if transport == "sse":
            self.set_header("Content-Type", "text/event-stream")
            self.write(b"retry: 1000\n" + b"".join(sse(f) for f in frames))
        else:
            self.set_header("Content-Type", "application/x-ndjson")
            self.write(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
        await self.flush()
        if not ends:
            await self.gone  # open until the client leaves


class Socket(tornado.websocket.WebSocketHandler):
    def initialize(self, hub: ScriptedHub) -> None:
        self.hub = hub

    def open(self) -> None:
        n, frames = self.hub.take(self, "websocket")
        for frame in frames or [connected("websocket", n)]:
            if frame["type"] == "_close":
                self.close(frame["code"], frame["reason"])
                return
            self.write_message(frame)
        last = frames[-1]["type"] if frames else None
        if last == "disconnect":
            code = 4004 if frames[-1]["reconnect"] else 4003
            self.close(code, frames[-1]["reason"])
        elif last == "reconnect":
            self.close(1001, frames[-1]["reason"])

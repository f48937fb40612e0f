"""WebSocket: many channels over one socket, subscribed and dropped in-band.

The same session, positions, resets and ``can_access`` as the HTTP
transports. Frames are written as prepared WebSocket frames: the frame
header and payload of a message are built once (``Frame.cached``) and the
same bytes go to every recipient's socket, with no per-recipient encoding,
compression or task. Backpressure is counted from the socket's own write
futures; a client more than ``max_pending_bytes`` behind is closed with
4001 and resumes from its positions.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tornado.ioloop import PeriodicCallback
from tornado.iostream import IOStream
from tornado.websocket import WebSocketHandler

from .. import frames as F
from ..errors import (
    BAD_MESSAGE,
    CLOSE_EXPIRED,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_SLOW,
    RECONNECT_EXPIRED,
    RECONNECT_SHUTDOWN,
    BadRequest,
)
from ..frames import Frame
from ..protocol import dumps, parse_cursor
from ..request import check_channels, query_channels
from ..session import Session

if TYPE_CHECKING:
    from ..handlers import Subscription
    from ..hub import Hub

UNSUBSCRIBED = "unsubscribed"


def ws_text_frame(payload: bytes) -> bytes:
    """A complete, final, unmasked WebSocket text frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


def _prepared(frame: Frame) -> bytes:
    return ws_text_frame(frame.envelope)


class ChannelSocketMixin(WebSocketHandler):
    """The WebSocket transport, combined with a ``ChannelMixin`` handler by
    :meth:`ChannelMixin.websocket` so that it shares its ``can_access``."""

    name = "websocket"

    if TYPE_CHECKING:

        @property
        def channel_hub(self) -> Hub: ...

        def can_access(self, sub: Subscription) -> bool | Awaitable[bool]: ...

        def subscription_expires(self) -> float | None: ...

    _session: Session | None = None
    _stream: IOStream | None = None

    # -- Tornado hooks ------------------------------------------------------------

    @property
    def ping_interval(self) -> float | None:
        return self.channel_hub.settings.ping_interval

    @property
    def ping_timeout(self) -> float | None:
        return self.channel_hub.settings.ping_interval

    @property
    def max_message_size(self) -> int:
        return self.channel_hub.settings.max_request_bytes

    def check_origin(self, origin: str) -> bool:
        """Cross-origin sockets only from ``Settings.allowed_origins`` (or the
        app's ``trusted_origins``); same-origin ones never reach here."""
        allowed = self.channel_hub.settings.allowed_origins
        return origin.rstrip("/") in allowed or super().check_origin(origin)

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        from ..handlers import Subscription

        hub = self.channel_hub
        assert self.ws_connection is not None
        self._stream = self.ws_connection.stream
        self._unflushed = 0
        self._mark = 0
        self._watching = False
        self._closing = False
        self.set_nodelay(True)
        self._session = Session(
            hub, self._send, lambda channel: self.can_access(Subscription(channel, self))
        )
        self._write(_prepared(F.connected(self.name, hub.settings.ping_interval)))
        self._pinger = PeriodicCallback(self._ping, hub.settings.ping_interval * 1000)
        self._pinger.start()
        self._expiry: asyncio.TimerHandle | None = None
        expires = self.subscription_expires()
        if expires is not None:
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, expires - time.time()), self.end, RECONNECT_EXPIRED
            )
        hub.connection_opened(self)
        try:
            channels = query_channels(self.request.query_arguments, hub.settings.max_channels)
            cursor = parse_cursor(self.get_query_argument("cursor", ""), hub.settings.max_channels)
        except BadRequest as exc:
            self._error(exc.code, exc.message)
            return None
        if channels:
            return self._session.subscribe(channels, cursor, live=True)
        return None

    async def on_message(self, message: str | bytes) -> None:
        session = self._session
        if session is None or self._closing:
            return
        try:
            command = json.loads(message)
            if not isinstance(command, dict):
                raise BadRequest(BAD_MESSAGE, "a command is a JSON object")
            kind = command.get("type")
            names = command.get("channels")
            if not isinstance(names, list):
                raise BadRequest(BAD_MESSAGE, '"channels" must be a list of channel names')
            limit = self.channel_hub.settings.max_channels
            if not all(isinstance(n, str) for n in names):
                raise BadRequest(BAD_MESSAGE, '"channels" must be a list of channel names')
            if kind == "subscribe":
                await self._subscribe(session, names, command.get("cursor", ""), limit)
            elif kind == "unsubscribe":
                for channel in dict.fromkeys(names):
                    session.unsubscribe(channel)  # answered even if not held
                    self._write(ws_text_frame(dumps({"type": UNSUBSCRIBED, "channel": channel})))
            else:
                raise BadRequest(BAD_MESSAGE, f"unknown command type {kind!r}")
        except ValueError:
            self._error(BAD_MESSAGE, "a command must be JSON text")
        except BadRequest as exc:
            self._error(exc.code, exc.message)

    async def _subscribe(
        self, session: Session, names: list[str], cursor_text: object, limit: int
    ) -> None:
        """A refused subscribe answers every named channel with an ``error``
        frame carrying the code, so the client knows what is not served."""
        try:
            if not isinstance(cursor_text, str):
                raise BadRequest(BAD_MESSAGE, '"cursor" must be a string')
            channels = check_channels(list(names), limit)
            cursor = parse_cursor(cursor_text, limit)
            new = [c for c in channels if c not in session.channels]
            check_channels([*session.channels, *new], limit)
        except BadRequest as exc:
            self._send([F.error(n, exc.code, exc.message) for n in dict.fromkeys(names)])
            return
        await session.subscribe(new, cursor, live=True)

    def on_close(self) -> None:
        self._closing = True
        if self._session is None:
            return  # never opened
        self._session.close()
        self._pinger.stop()
        if self._expiry is not None:
            self._expiry.cancel()
        self.channel_hub.connection_closed(self)

    def end(self, reason: str) -> None:
        """Send ``reconnect`` and close: 1001 on shutdown, 4002 on expiry."""
        if self._closing:
            return
        self._write(_prepared(F.reconnect(reason)))
        self._closing = True
        code = {RECONNECT_SHUTDOWN: CLOSE_GOING_AWAY, RECONNECT_EXPIRED: CLOSE_EXPIRED}
        self.close(code.get(reason, CLOSE_NORMAL), reason)

    # -- writing ------------------------------------------------------------------

    def _error(self, code: str, message: str) -> None:
        self._write(ws_text_frame(dumps({"type": F.ERROR, "code": code, "message": message})))

    def _ping(self) -> None:
        self._write(F.PING_FRAME.cached("ws", _prepared))

    def _send(self, frames: list[Frame]) -> None:
        if len(frames) == 1:
            self._write(frames[0].cached("ws", _prepared))
        else:
            self._write(b"".join(f.cached("ws", _prepared) for f in frames))

    def _write(self, data: bytes) -> None:
        stream = self._stream
        if self._closing or stream is None or stream.closed():
            return
        self._unflushed += len(data)
        if self._unflushed > self.channel_hub.settings.max_pending_bytes:
            self._closing = True
            self.channel_hub.stats.slow_dropped += 1
            if self._session is not None:
                self._session.close()
            self.close(CLOSE_SLOW, "slow_consumer")
            return
        future = stream.write(data)
        if not self._watching:
            self._watch(future)

    def _watch(self, future: Any) -> None:
        # Writes complete in order, so when this one is done everything
        # written before it is too: one callback covers a whole burst.
        self._watching = True
        self._mark = self._unflushed
        future.add_done_callback(self._drained)

    def _drained(self, future: Any) -> None:
        self._watching = False
        if future.exception() is not None or self._stream is None:
            return
        self._unflushed -= self._mark
        if self._unflushed > 0 and not self._stream.closed():
            self._watch(self._stream.write(b""))

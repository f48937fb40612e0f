"""WebSocket: many channels over one socket, subscribed and dropped in-band.

The same session, positions, resets and ``can_access`` as the HTTP
transports. Frames are written as prepared WebSocket frames: the frame
header and payload of a message are built once (``Frame.cached``) and the
same bytes go to every recipient's socket, with no per-recipient encoding,
compression or task. Writes go through an :class:`Outbox` like HTTP
streams; a client more than ``max_pending_bytes`` of live frames behind is
closed with 4001 and resumes from its positions.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tornado.ioloop import PeriodicCallback
from tornado.web import HTTPError
from tornado.websocket import WebSocketHandler

from .. import frames as F
from ..errors import (
    BAD_MESSAGE,
    BAD_PARAMETER,
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
from ..request import check_channels, query_names
from ..session import Session
from .outbox import Outbox

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


def _nothing() -> None:
    pass


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
        stream = self.ws_connection.stream
        assert stream is not None
        self._closing = False
        self._outbox = Outbox(
            stream.write,
            hub.settings.max_pending_bytes,
            on_slow=self._slow,
            on_closed=self._gone,
            on_idle=_nothing,
        )
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
        # The connect URL subscribes exactly like an in-band command would.
        try:
            names = query_names(self.request.query_arguments)
            cursor_text = self.get_query_argument("cursor", "")
        except (BadRequest, HTTPError):
            self._error(BAD_PARAMETER, "query parameters must be UTF-8, cursor given once")
            return None
        if not names and cursor_text:
            names = [entry.partition("=")[0] for entry in cursor_text.split(",")]
        if names:
            return self._subscribe(self._session, names, cursor_text, hub.settings.max_channels)
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
        self._write(F.PING_FRAME.cached("ws", _prepared), backlog=False)

    def _send(self, frames: list[Frame], *, backlog: bool = False) -> None:
        if len(frames) == 1:
            data = frames[0].cached("ws", _prepared)
        else:
            data = b"".join(f.cached("ws", _prepared) for f in frames)
        self._write(data, backlog=backlog)

    def _write(self, data: bytes, *, backlog: bool = True) -> None:
        """Queue complete WebSocket frames; control frames count as backlog."""
        if not self._closing:
            self._outbox.put(data, backlog=backlog)

    def _slow(self) -> None:
        self._closing = True
        self.channel_hub.stats.slow_dropped += 1
        if self._session is not None:
            self._session.close()
        self.close(CLOSE_SLOW, "slow_consumer")

    def _gone(self) -> None:
        self._closing = True

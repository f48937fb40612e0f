"""WebSocket: many channels over one socket, subscribed and dropped in-band.

The same session, positions, resets and ``can_access`` as the HTTP
transports, and the same :class:`~.connection.LiveConnection` (outbox,
keep-alive, expiry, slow-consumer limit, ``end``). Frames are written as
prepared WebSocket frames: the frame header and payload of a message are
built once (``Frame.cached``) and the same bytes go to every recipient's
socket, with no per-recipient encoding, compression or task: straight to
the socket when its stream holds nothing (:func:`.outbox.direct_writer`).
Server frames are unmasked, so one encoding serves every recipient. Frames
are sent uncompressed even when an app turns on permessage-deflate: that
extension is per message (RFC 7692 section 6: a message with RSV1 unset is
not compressed), and compressing per connection would undo the sharing.

The keep-alive tick writes a JSON ``ping`` frame (a browser page cannot see
protocol pings) and a protocol PING in the same write; a peer that leaves
two PINGs in a row unanswered (nothing at all heard from it) is cut off.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tornado.iostream import IOStream
from tornado.web import HTTPError
from tornado.websocket import WebSocketHandler

from .. import frames as F
from ..client_publish import PublishRefused, publish_from_client
from ..errors import (
    BAD_MESSAGE,
    BAD_PARAMETER,
    CLOSE_EXPIRED,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_SLOW,
    CLOSE_TRY_AGAIN,
    RECONNECT_BROKER,
    RECONNECT_EXPIRED,
    RECONNECT_SHUTDOWN,
    RECONNECT_SLOW,
    AccessDenied,
    BadRequest,
)
from ..frames import Frame
from ..presence_reads import read_page
from ..protocol import dumps, parse_cursor
from ..request import check_channels, parse_ping, query_names
from ..session import Session, Unowned
from ..tornado_compat import release_websocket, take_socket, websocket_stream
from .connection import LiveConnection, log_broker_failure
from .outbox import DirectWriter, direct_writer
from .ws_detached import DetachedWebSocket
from .ws_frames import TEXT, frame

if TYPE_CHECKING:
    from ..hub import Hub
    from ..identity import Identity

UNSUBSCRIBED = "unsubscribed"

#: A protocol-level PING control frame with no payload (RFC 6455 5.5.2).
PROTOCOL_PING = b"\x89\x00"

#: The close code that ends a connection for each ``reconnect`` reason.
CLOSE_CODES = {
    RECONNECT_BROKER: CLOSE_TRY_AGAIN,
    RECONNECT_SHUTDOWN: CLOSE_GOING_AWAY,
    RECONNECT_EXPIRED: CLOSE_EXPIRED,
    RECONNECT_SLOW: CLOSE_SLOW,
}


def _is_command_id(ident: object) -> bool:
    """A command's ``id``: an integer, or a string of at most 64 characters."""
    if isinstance(ident, bool):
        return False
    return isinstance(ident, int) or (isinstance(ident, str) and len(ident) <= 64)


def ws_text_frame(payload: bytes) -> bytes:
    """A complete, final, unmasked WebSocket text frame (RFC 6455 5.2)."""
    return frame(TEXT, payload)


def _prepared(frame: Frame) -> bytes:
    return ws_text_frame(frame.envelope)


def _encode(frame: Frame) -> bytes:
    return frame.cached("ws", _prepared)


class ChannelSocketMixin(WebSocketHandler):
    """The WebSocket transport, combined with a ``ChannelMixin`` handler by
    :meth:`ChannelMixin.websocket` so that it shares its ``can_access``."""

    name = "websocket"

    if TYPE_CHECKING:
        hub: Hub

        def _authorize_channel(self, channel: str) -> bool | Awaitable[bool]: ...

        def _refused_while_closing(self) -> bool: ...

        def subscription_expires(self) -> float | None: ...

        async def channel_identity(self, transport: str, client: str | None) -> Identity: ...

        async def authorize_publish(self, channel: str, data: dict[str, Any]) -> dict[str, Any]: ...

        _channel_identity: Identity | None

    _connection: LiveConnection | None = None
    #: The open WebSocket's stream while Tornado has it (kept: a cut also
    #: ends a close handshake under way, after which Tornado no longer
    #: names the stream).
    _stream: IOStream | None = None
    #: The socket, once taken over from Tornado.
    _detached: DetachedWebSocket | None = None
    #: Write frames straight to the socket when the stream holds nothing
    #: (False: every write through ``IOStream.write``; the same bytes).
    direct_writes: ClassVar[bool] = True
    #: Take the socket over once open, releasing Tornado's protocol, stream
    #: and HTTP connection (False: Tornado keeps it; the same frames, more
    #: memory per connection).
    hand_over: ClassVar[bool] = True

    # -- Tornado hooks ------------------------------------------------------------

    @property
    def ping_interval(self) -> float | None:
        return None  # the LiveConnection's keep-alive tick pings

    @property
    def max_message_size(self) -> int:
        return self.hub.settings.max_request_bytes

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not self._refused_while_closing():  # as on the HTTP URL
            await self.channel_identity(self.name, None)
            await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        subscribe = self._begin()
        if self._hand_over(paused=subscribe is not None) and subscribe is not None:
            return self._subscribe_then_read(subscribe)
        return subscribe

    async def _subscribe_then_read(self, subscribe: Awaitable[None]) -> None:
        """The connect URL's subscribe, before the first frame is read (as
        Tornado reads nothing until ``open()`` is done)."""
        try:
            await subscribe
        finally:
            if self._detached is not None:
                self._detached.resume()

    def _hand_over(self, *, paused: bool) -> bool:
        """Take the socket from Tornado (:mod:`.ws_detached`); False, and
        Tornado keeps it, on TLS, with ``direct_writes`` or ``hand_over``
        off, or when the app turned permessage-deflate on (kept on
        Tornado's path, which speaks it)."""
        connection = self._connection
        stream = self._stream
        if (
            not self.hand_over
            or connection is None
            or stream is None
            or not isinstance(connection.outbox.write, DirectWriter)
            or self.get_compression_options() is not None
            or connection.outbox.busy
            or stream.closed()
            or stream.writing()
        ):
            return False
        release_hook = getattr(stream, "on_detach", None)
        release = release_hook() if release_hook is not None else None
        sock, ahead = take_socket(stream)
        release_websocket(self)
        self._stream = None
        self._detached = detached = DetachedWebSocket(
            sock,
            connection,
            self,
            release,
            max_size=self.max_message_size,
            ahead=ahead,
            paused=paused,
        )
        connection.hand_over(self, detached)
        return True

    def on_ws_connection_close(
        self, close_code: int | None = None, close_reason: str | None = None
    ) -> None:
        if self._detached is not None:
            return  # Tornado's protocol let go: the detached socket tells of the close
        super().on_ws_connection_close(close_code, close_reason)

    def _begin(self) -> Awaitable[None] | None:
        hub = self.hub
        self._stream = stream = websocket_stream(self)
        self.set_nodelay(True)
        try:
            ping = parse_ping(self._one_argument("ping"), hub.settings)
            bad_ping = None
        except BadRequest as exc:
            ping, bad_ping = None, exc
        identity = self._channel_identity
        session = Session(hub, Unowned(), self._authorize_channel, identity)
        self._connection = connection = LiveConnection(
            self.name,
            hub,
            session,
            encode=_encode,
            write=direct_writer(stream) if self.direct_writes else stream.write,
            link=self,
            ping=_encode(F.PING_FRAME) + PROTOCOL_PING,
            expires=self.subscription_expires(),
            hears_peer=True,
            ping_interval=ping,
        )
        client = hub.client_ids.sign(session.identity.client, session.identity.since)
        connection.put(_encode(F.connected(self.name, connection.ping_interval, client)))
        connection.start()
        if bad_ping is not None:
            self._error(bad_ping.code, bad_ping.message)
            return None
        # The connect URL subscribes exactly like an in-band command would.
        try:
            names = query_names(self.request.query_arguments)
            cursors = self.get_query_arguments("cursor")
        except (BadRequest, HTTPError):
            cursors = []
            names = None
        if names is None or len(cursors) > 1:
            self._error(BAD_PARAMETER, "query parameters must be UTF-8, cursor given once")
            return None
        cursor_text = cursors[0] if cursors else ""
        if not names and cursor_text:
            names = [entry.partition("=")[0] for entry in cursor_text.split(",")]
        if names:
            return self._subscribe(session, names, cursor_text)
        return None

    def _one_argument(self, name: str) -> str | None:
        """A single-valued connect URL parameter (BadRequest if repeated or not UTF-8)."""
        values = self.request.query_arguments.get(name, [])
        if len(values) > 1:
            raise BadRequest(BAD_PARAMETER, f"parameter {name!r} given {len(values)} times")
        try:
            return values[0].decode("utf-8") if values else None
        except UnicodeDecodeError:
            raise BadRequest(BAD_PARAMETER, f"parameter {name!r} is not UTF-8") from None

    def on_pong(self, data: bytes) -> None:
        if self._connection is not None:
            self._connection.heard()

    def on_ping(self, data: bytes) -> None:
        self.on_pong(data)

    async def on_message(self, message: str | bytes) -> None:
        connection = self._connection
        if connection is None:
            return
        if connection.ending or connection.stopped:
            return
        # A client that is not reading gets no more commands read until its
        # queue drains (write_timeout ends one that takes nothing); a slow
        # can_access must not make the peer look dead either.
        try:
            with connection.not_reading():
                await connection.drained()
        except asyncio.CancelledError:
            return  # the loop is closing under a throttled client: nothing to log
        if connection.ending or connection.stopped:
            return
        try:
            command = json.loads(message)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            self._error(BAD_MESSAGE, "a command must be JSON text")
            return
        with connection.not_reading():
            try:
                await self._command(connection.session, command)
            except BadRequest as exc:
                self._error(exc.code, exc.message)

    async def _command(self, session: Session, command: object) -> None:
        if not isinstance(command, dict):
            raise BadRequest(BAD_MESSAGE, "a command is a JSON object")
        kind = command.get("type")
        if kind == F.PRESENCE:
            await self._presence(command)
            return
        if kind == "publish":
            await self._publish(session, command)
            return
        names = command.get("channels")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadRequest(BAD_MESSAGE, '"channels" must be a list of channel names')
        if kind == "subscribe":
            await self._subscribe(session, names, command.get("cursor", ""))
        elif kind == "unsubscribe":
            for channel in dict.fromkeys(names):
                session.unsubscribe(channel)  # answered even if not held
                self._put(ws_text_frame(dumps({"type": UNSUBSCRIBED, "channel": channel})))
        else:
            raise BadRequest(BAD_MESSAGE, f"unknown command type {kind!r}")

    async def _subscribe(self, session: Session, names: list[str], cursor_text: object) -> None:
        """A refused subscribe answers every named channel with an ``error``
        frame carrying the code, so the client knows what is not served."""
        limit = self.hub.settings.max_channels
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
        try:
            await session.subscribe(new, cursor, live=True)
        except Exception as exc:
            self._broker_failed(exc)

    async def _publish(self, session: Session, command: dict[str, Any]) -> None:
        """``{"type": "publish", "channel", "data", "id"?}``: answered
        ``published`` (with the position) or ``publish_error`` (never an
        ``error`` frame, which would mean the channel is not served)."""
        ident = command.get("id")
        channel = command.get("channel")
        reply: dict[str, Any]
        try:
            if ident is not None and not _is_command_id(ident):
                raise PublishRefused(BAD_MESSAGE, '"id" must be an integer or a short string')
            done = await publish_from_client(
                self.hub, session.identity, channel, command.get("data"), self.authorize_publish
            )
            reply = {"type": F.PUBLISHED, "channel": done.channel, "epoch": done.epoch,
                     "offset": done.offset}  # fmt: skip
        except PublishRefused as exc:
            named = channel if isinstance(channel, str) else None
            reply = {"type": F.PUBLISH_ERROR, "channel": named, "code": exc.code,
                     "message": exc.message, "retry": exc.retry}  # fmt: skip
            if exc.retry_after is not None:
                reply["retry_after"] = exc.retry_after
        if ident is not None and _is_command_id(ident):
            reply["id"] = ident
        self._put(ws_text_frame(dumps(reply)))

    async def _presence(self, command: dict[str, Any]) -> None:
        """``{"type": "presence", "channel", "after"?, "limit"?}``: answered
        by a ``presence_page`` frame, or an ``error`` frame for the channel."""
        channel = command.get("channel")
        try:
            body = await read_page(
                self.hub,
                self._authorize_channel,
                channel,
                command.get("after"),
                command.get("limit"),
            )
        except (BadRequest, AccessDenied) as exc:
            if isinstance(channel, str):
                self._send([F.error(channel, exc.code, exc.message)])
            else:
                self._error(exc.code, exc.message)
            return
        except Exception as exc:
            self._broker_failed(exc)
            return
        self._put(ws_text_frame(dumps({"type": F.PRESENCE_PAGE, **body})))

    def _broker_failed(self, exc: BaseException) -> None:
        log_broker_failure(exc)
        if self._connection is not None:
            self._connection.end(RECONNECT_BROKER)

    def on_close(self) -> None:
        if self._connection is not None:
            self._connection.stop()

    # -- writing ------------------------------------------------------------------

    def close_cleanly(self, reason: str) -> None:
        """The connection's :class:`~.connection.Link`. After ``reconnect``:
        close with 1001 on shutdown, 4002 on expiry, 4001 for a slow
        consumer, else 1000; after ``disconnect``, 4003 or 4004
        (``LiveConnection.close_code``)."""
        connection = self._connection
        code = connection.close_code if connection is not None else None
        code = code or CLOSE_CODES.get(reason, CLOSE_NORMAL)
        if self._detached is not None:
            self._detached.close_with(code, reason)
        else:
            self.close(code, reason)

    def cut(self) -> None:
        """The connection's :class:`~.connection.Link`: close the socket now,
        with no close handshake."""
        if self._detached is not None:
            self._detached.cut()
        elif self._stream is not None:
            self._stream.close()

    def _error(self, code: str, message: str) -> None:
        self._put(ws_text_frame(dumps({"type": F.ERROR, "code": code, "message": message})))

    def _send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        if self._connection is not None:
            self._connection.send(frames, backlog=backlog)

    def _put(self, data: bytes) -> None:
        """Queue a reply to a command; it counts like any frame."""
        if self._connection is not None:
            self._connection.put(data)

"""An open WebSocket's socket once Tornado has let go of it.

Tornado does the handshake (origin check, subprotocol, ``101``) and calls
``open()``; there the WebSocket transport takes the socket over
(``tornado_compat.take_websocket``) and Tornado's ``WebSocketProtocol13``,
``IOStream`` and ``HTTP1Connection`` are released. What remains is this
:class:`DetachedWebSocket`, the handler (``can_access`` is its method, and
may read its request) and the connection.

It reads the client's frames with :class:`~.ws_frames.FrameReader` and does
what Tornado's protocol did with them:

- a text or binary message goes to the handler's ``on_message``; while the
  coroutine it returns runs, nothing more is read (so a client's commands
  are handled one at a time, in order, and a client that does not read
  its answers is not read either);
- a PING is answered with a PONG (while bytes wait to be written, only the
  latest PING is answered once they are), then ``on_ping``; a PONG goes to
  ``on_pong``;
- a close frame is answered with one carrying the same code, and the
  connection is closed; after a close frame of ours (:meth:`close_cleanly`)
  the client has 5 seconds to answer before the connection is closed;
- a frame that breaks the protocol fails the connection: a close frame
  with 1002, 1007 or 1009 (:mod:`.ws_frames`), then the connection is
  closed at once.

The handler's ``on_close`` runs once, when the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .detached import DetachedSocket, Stoppable
from .ws_frames import (
    CLOSE,
    PING,
    PONG,
    FrameError,
    FrameReader,
    Received,
    close_frame,
    frame,
)

log = logging.getLogger("torchannels.transport")

#: Seconds a client has to answer our close frame.
CLOSE_TIMEOUT = 5.0
#: The close code of a connection whose message handler failed.
INTERNAL_ERROR = 1011


class SocketHandler(Protocol):
    """What a detached WebSocket tells (Tornado's ``WebSocketHandler`` hooks)."""

    close_code: int | None
    close_reason: str | None

    def on_message(self, message: str | bytes) -> Awaitable[None] | None: ...

    def on_ping(self, data: bytes) -> None: ...

    def on_pong(self, data: bytes) -> None: ...

    def on_close(self) -> None: ...


class DetachedWebSocket(DetachedSocket):
    """The socket of one open WebSocket after the hand-over.

    ``paused``: read nothing until :meth:`resume` (the connect URL's
    subscribe runs first, as Tornado awaited ``open()``).
    """

    __slots__ = ("_ahead", "_close_timer", "_paused", "_pong", "handler", "reader", "sent_close")

    def __init__(
        self,
        sock: socket.socket,
        owner: Stoppable,
        handler: SocketHandler,
        release: Callable[[], None] | None = None,
        *,
        max_size: int,
        ahead: bytes = b"",
        paused: bool = False,
    ) -> None:
        self.handler = handler
        self.reader = FrameReader(max_size)
        self._paused = paused
        self._pong: bytes | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        #: A close frame of ours went out (or is queued): no more frames.
        self.sent_close = False
        self._ahead = ahead  # what the client sent before the hand-over
        super().__init__(sock, owner, release, reading=False)
        if not paused:
            self.resume()

    def resume(self) -> None:
        """Read again: what is buffered first, then the socket."""
        self._paused = False
        if self._ahead:
            self.reader.feed(self._ahead)
            self._ahead = b""
        self._process()
        if not self._paused and not self.closed:
            self.read()

    def received(self, data: bytes) -> None:
        self.reader.feed(data)
        self._process()

    def _process(self) -> None:
        """Act on every whole frame read, until one must be waited for."""
        reader = self.reader
        while not (self._paused or self.closed):
            try:
                received = reader.next()
            except FrameError as exc:
                self.fail(exc.code, exc.reason)
                return
            if received is None:
                return
            self._act(received)

    def _act(self, received: Received) -> None:
        opcode, data = received.opcode, received.data
        handler = self.handler
        if opcode == PING:
            assert isinstance(data, bytes)
            self._send_pong(frame(PONG, data))
            handler.on_ping(data)
        elif opcode == PONG:
            assert isinstance(data, bytes)
            handler.on_pong(data)
        elif opcode == CLOSE:
            assert isinstance(data, str)
            handler.close_code, handler.close_reason = received.code, data or None
            if not self.sent_close:
                self.sent_close = True
                self.send_now(close_frame(received.code))  # the same code back (5.5.1)
            self.close_once_written()
        else:
            if self.sent_close:
                return  # closing: messages are no longer handled
            try:
                result = handler.on_message(data)
            except Exception:
                log.exception("a WebSocket message handler failed")
                self.fail(INTERNAL_ERROR, "internal error")
                return
            if result is not None:
                self._paused = True
                self.pause()
                asyncio.ensure_future(result).add_done_callback(self._handled)

    def _handled(self, task: asyncio.Future[Any]) -> None:
        """A message's coroutine ended: read on."""
        if task.cancelled():
            return  # the loop is going away
        exc = task.exception()
        if exc is not None:
            log.error("a WebSocket message handler failed", exc_info=exc)
            self.fail(INTERNAL_ERROR, "internal error")
            return
        if not self.closed:
            self.resume()

    def _send_pong(self, pong: bytes) -> None:
        if self.sent_close:
            return  # no frames after a close frame
        if not self.send_now(pong):
            self._pong = pong  # answered once what waits is written: the latest only

    def flushed(self) -> None:
        pong, self._pong = self._pong, None
        if pong is not None:
            self._send_pong(pong)
        super().flushed()

    # -- ending -------------------------------------------------------------------

    def close_with(self, code: int, reason: str) -> None:
        """A close frame with ``code`` and ``reason``; the connection is
        closed when the client answers, or after :data:`CLOSE_TIMEOUT`."""
        if self.closed or self.sent_close:
            return
        self._write_close(code, reason)
        self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.close)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close frame with ``code``
        if none went out yet, then close at once."""
        if self.closed:
            return
        if not self.sent_close:
            self._write_close(code, reason)
        self.close()

    def _write_close(self, code: int, reason: str) -> None:
        self.sent_close = True
        try:
            self(close_frame(code, reason))
        except OSError:
            self.close()

    def close(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        super().close()

    def ended(self) -> None:
        """The socket closed: the handler's ``on_close`` (it stops the connection)."""
        self.handler.on_close()

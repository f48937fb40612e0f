"""A live connection's socket once Tornado has let go of it.

Once a stream's (NDJSON or SSE) headers are out and its subscribe is done,
or a WebSocket is open, the transport hands the socket to a
:class:`DetachedSocket` and releases Tornado's ``HTTP1Connection``,
``IOStream`` and, for a stream, its ``RequestHandler`` and
``HTTPServerRequest`` (``RequestHandler.detach()``, the way Tornado's own
WebSocket takes a connection over). An idle connection then holds its
socket, this object and its :class:`~.connection.LiveConnection`, not the
~12 KB of Tornado's objects.

- Writes go straight to the socket (``send``); what it does not take waits
  here and goes out as the socket becomes writable (``loop.add_writer``).
- Reads (``loop.add_reader``): a stream only notices the peer leaving
  (whatever a client sends after its request is dropped); a WebSocket
  parses the client's frames (transports/ws_detached.py).
- :meth:`DetachedResponse.close_cleanly` ends a stream's response (the
  chunked body's terminator) and closes the connection once that is
  written. The response's headers said so (``Connection: close``):
  nothing serves a next request on it.

Only plain sockets: a TLS stream sends its own way and stays Tornado's.
A stream that counts its connection (the server's listener) says, through
its ``on_detach()``, what to call once the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Protocol

#: Bytes read at a time.
READ_SIZE = 65536
#: The end of a chunked body (RFC 9112 7.1): the last, empty chunk.
LAST_CHUNK = b"0\r\n\r\n"


class Stoppable(Protocol):
    """What a detached socket tells when it closes."""

    def stop(self) -> None:
        """The connection is over (idempotent)."""


class DetachedSocket:
    """The socket of one live connection, after Tornado let go of it.

    It is the write of its connection's outbox (called with bytes: None
    when the socket took all of them, else a future of the rest, with
    :attr:`unsent` the bytes not taken) and how the connection is cut
    (:meth:`cut`). Slots, and module functions as the loop's callbacks:
    one object per connection.
    """

    __slots__ = (
        "_closing",
        "_future",
        "_pending",
        "_release",
        "closed",
        "owner",
        "socket",
        "unsent",
    )

    def __init__(
        self,
        sock: socket.socket,
        owner: Stoppable,
        release: Callable[[], None] | None = None,
        *,
        reading: bool = True,
    ) -> None:
        self.socket = sock
        #: Stopped when the socket closes, however that happens.
        self.owner = owner
        self._release = release
        self._pending: memoryview | None = None
        self._future: asyncio.Future[None] | None = None
        #: Close once what waits is written.
        self._closing = False
        #: The socket is closed.
        self.closed = False
        #: Bytes of the last write the socket did not take at once.
        self.unsent = 0
        if reading:
            self.read()

    # -- writing ------------------------------------------------------------------

    def __call__(self, data: bytes) -> asyncio.Future[None] | None:
        """Write ``data``; raises ``OSError`` if the connection is gone."""
        if self.closed:
            raise ConnectionError("the connection is closed")
        if self._pending is not None:  # behind the bytes still waiting
            self._pending = memoryview(bytes(self._pending) + data)
            self.unsent = len(self._pending)
            if self._future is None:
                self._future = asyncio.get_running_loop().create_future()
            return self._future
        try:
            sent = self.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            return None  # the common case: one send, nothing else
        self.unsent = len(data) - sent
        self._pending = memoryview(data)[sent:]
        loop = asyncio.get_running_loop()
        self._future = future = loop.create_future()
        loop.add_writer(self.socket.fileno(), _writable, self)
        return future

    def send_now(self, data: bytes) -> bool:
        """Write ``data`` unless bytes still wait (then nothing is written);
        True if written or queued behind what the socket did not take."""
        if self.closed or self._pending is not None:
            return False
        try:
            future = self(data)
        except OSError:
            self.close()
            return False
        if future is not None:  # no outbox waits on it
            self._future = None
        return True

    @property
    def writing(self) -> bool:
        """Bytes wait for the socket to take them."""
        return self._pending is not None

    def _flush(self) -> None:
        pending = self._pending
        if pending is None:
            return
        try:
            sent = self.socket.send(pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if sent < len(pending):
            self._pending = pending[sent:]
            return
        self._pending = None
        asyncio.get_running_loop().remove_writer(self.socket.fileno())
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)
        self.flushed()

    def flushed(self) -> None:
        """Everything waiting was written."""
        if self._closing:
            self.close()

    def close_once_written(self) -> None:
        """Close now, or once what waits is written."""
        if self._pending is None:
            self.close()
        else:
            self._closing = True

    # -- reading ------------------------------------------------------------------

    def read(self) -> None:
        """Watch the socket for bytes (and the peer leaving)."""
        if not self.closed:
            asyncio.get_running_loop().add_reader(self.socket.fileno(), _readable, self)

    def pause(self) -> None:
        """Stop reading for now (the peer leaving goes unnoticed meanwhile)."""
        if not self.closed:
            asyncio.get_running_loop().remove_reader(self.socket.fileno())

    def readable(self) -> None:
        """The loop's reader: bytes arrived, or the peer left."""
        try:
            data = self.socket.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.received(data)
        else:
            self.close()

    def received(self, data: bytes) -> None:
        """Bytes from the peer: dropped here."""

    # -- ending -------------------------------------------------------------------

    def cut(self) -> None:
        """Close at once, whatever is still unwritten."""
        self.close()

    def close(self) -> None:
        """Close the socket and stop the owner; idempotent."""
        if self.closed:
            return
        self.closed = True
        loop = asyncio.get_running_loop()
        fd = self.socket.fileno()
        loop.remove_reader(fd)
        if self._pending is not None:
            loop.remove_writer(fd)
            self._pending = None
        self.socket.close()
        future, self._future = self._future, None
        if future is not None:
            future.cancel()  # the outbox takes that as closed; nothing left to log
        release, self._release = self._release, None
        if release is not None:
            release()
        self.ended()

    def ended(self) -> None:
        """The socket closed: stop the owner."""
        self.owner.stop()


class DetachedResponse(DetachedSocket):
    """A live HTTP response (stream or SSE) after the hand-over; ``chunked``
    (HTTP/1.1): the body ends with :data:`LAST_CHUNK`."""

    __slots__ = ("chunked",)

    def __init__(
        self,
        sock: socket.socket,
        owner: Stoppable,
        release: Callable[[], None] | None = None,
        *,
        chunked: bool,
    ) -> None:
        self.chunked = chunked
        super().__init__(sock, owner, release)

    def close_cleanly(self, reason: str) -> None:
        """The connection's :class:`~.connection.Link`: end the response
        (``reason``: why, for the log) and close once all is written."""
        self.owner.stop()
        if self.closed:
            return
        if self.chunked:
            with contextlib.suppress(OSError):  # gone: closed below all the same
                self(LAST_CHUNK)
        self.close_once_written()


def _readable(detached: DetachedSocket) -> None:
    detached.readable()


def _writable(detached: DetachedSocket) -> None:
    detached._flush()

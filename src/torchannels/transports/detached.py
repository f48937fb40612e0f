"""A live HTTP response's socket once Tornado has let go of it.

Once a stream's (NDJSON or SSE) headers are out and its subscribe is done,
the transport hands the socket to a :class:`DetachedResponse` and releases
Tornado's ``RequestHandler``, ``HTTPServerRequest``, ``HTTP1Connection``
and ``IOStream`` (``RequestHandler.detach()``, the way Tornado's own
WebSocket takes a connection over). An idle connection then holds its
socket, this object and its :class:`~.connection.LiveConnection`, not the
~12 KB of Tornado's objects.

- Writes go straight to the socket (``send``); what it does not take waits
  here and goes out as the socket becomes writable (``loop.add_writer``).
- Reads only notice the peer leaving (``loop.add_reader``): whatever a
  client sends after its request is read and dropped.
- :meth:`DetachedResponse.close_cleanly` ends the response (the chunked
  body's terminator) and closes the connection once that is written. The
  response's headers said so (``Connection: close``): nothing serves a
  next request on it.

Only plain sockets: a TLS stream sends its own way and stays Tornado's.
A stream that counts its connection (the server's listener) says, through
its ``on_detach()``, what to call once the socket closes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol

#: Bytes read at a time from a peer that sends after its request (dropped).
_READ = 4096
#: The end of a chunked body (RFC 9112 7.1): the last, empty chunk.
LAST_CHUNK = b"0\r\n\r\n"


class Stoppable(Protocol):
    """What a detached response tells when its socket closes."""

    def stop(self) -> None:
        """The connection is over (idempotent)."""


class DetachedResponse:
    """The socket of one live HTTP response, after Tornado let go of it.

    It is the write of its connection's outbox (called with bytes: None
    when the socket took all of them, else a future of the rest, with
    :attr:`unsent` the bytes not taken) and how the connection ends
    (:meth:`close_cleanly`, :meth:`cut`). Slots, and module functions as
    the loop's callbacks: one object per connection.
    """

    __slots__ = (
        "_closing",
        "_future",
        "_pending",
        "_release",
        "chunked",
        "closed",
        "owner",
        "socket",
        "unsent",
    )

    def __init__(
        self,
        sock: socket.socket,
        owner: Stoppable,
        *,
        chunked: bool,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.socket = sock
        #: Stopped when the socket closes, however that happens.
        self.owner = owner
        #: The body is chunked (HTTP/1.1): it ends with :data:`LAST_CHUNK`.
        self.chunked = chunked
        self._release = release
        self._pending: memoryview | None = None
        self._future: asyncio.Future[None] | None = None
        self._closing = False
        #: The socket is closed.
        self.closed = False
        #: Bytes of the last write the socket did not take at once.
        self.unsent = 0
        asyncio.get_running_loop().add_reader(sock.fileno(), _readable, self)

    def __call__(self, data: bytes) -> asyncio.Future[None] | None:
        """Write ``data``; raises ``OSError`` if the connection is gone."""
        if self.closed:
            raise ConnectionError("the connection is closed")
        if self._pending is not None:  # behind the bytes still waiting
            self._pending = memoryview(bytes(self._pending) + data)
            self.unsent = len(self._pending)
            return self._future
        try:
            sent = self.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            return None
        self.unsent = len(data) - sent
        self._pending = memoryview(data)[sent:]
        loop = asyncio.get_running_loop()
        self._future = future = loop.create_future()
        loop.add_writer(self.socket.fileno(), _writable, self)
        return future

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
        if self._closing:
            self.close()

    def close_cleanly(self, reason: str) -> None:
        """End the response (``reason``: why, for the connection's owner)
        and close once everything is written."""
        self.owner.stop()
        if self.closed:
            return
        if self.chunked:
            try:
                if self(LAST_CHUNK) is not None:
                    self._closing = True  # closed once written
                    return
            except OSError:
                pass
        self.close()

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
        if future is not None and not future.done():
            future.set_exception(ConnectionError("the connection is closed"))
        release, self._release = self._release, None
        if release is not None:
            release()
        self.owner.stop()


def _readable(response: DetachedResponse) -> None:
    """The loop's reader: the peer sent bytes (dropped) or left."""
    try:
        data = response.socket.recv(_READ)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data = b""
    if not data:
        response.close()


def _writable(response: DetachedResponse) -> None:
    """The loop's writer: the socket takes more of what waits."""
    response._flush()

"""One connection's outgoing bytes: a bounded queue with one write in flight.

Every long-lived transport writes through an :class:`Outbox` (owned by its
:class:`~.connection.LiveConnection`). :func:`direct_writer` is the write it
uses once a connection's headers are out: straight to the socket, with no
future unless the socket could not take everything.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, Protocol

from tornado.iostream import IOStream

from ..tornado_compat import sends_plainly, stream_socket
from ..write_batch import WriteBatch, current_batch

#: A write: None when every byte went out at once, else a future that
#: completes when the rest has been written (or fails: the peer is gone).
Write = Callable[[bytes], "asyncio.Future[Any] | None"]


class DirectWriter:
    """Writes to a stream's socket while the stream itself has nothing
    queued, handing only what the socket did not take to the stream.

    So the common case (a client that reads) is one ``send`` and nothing
    else: no future, no callback. Bytes the stream holds always go first:
    once it has some, everything goes through it, in order. (A class with
    slots rather than a closure: one object per connection, not three.)
    """

    __slots__ = ("socket", "stream", "unsent")

    def __init__(self, stream: IOStream) -> None:
        self.stream = stream
        self.socket: socket.socket = stream_socket(stream)

    def __call__(self, data: bytes) -> asyncio.Future[Any] | None:
        """Write ``data``; when a future is returned, :attr:`unsent` is how
        many of its bytes the socket did not take (the write in flight)."""
        stream = self.stream
        self.unsent = len(data)
        if stream.writing():
            return stream.write(data)
        try:
            sent = self.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Reset, broken pipe, or closed by the stream (EBADF): the stream
            # meets the same error, or raises StreamClosedError.
            return stream.write(data)
        if sent == len(data):
            return None
        self.unsent = len(data) - sent
        return stream.write(data[sent:])


def direct_writer(stream: IOStream) -> Write:
    """The write for ``stream``: a :class:`DirectWriter`, or the stream's own
    ``write`` for a stream that must send its own way (TLS)."""
    if not sends_plainly(stream):
        return stream.write  # TLS, or a stream that sends its own way
    return DirectWriter(stream)


class Owner(Protocol):
    """What an outbox tells the connection that owns it."""

    def outbox_slow(self) -> None:
        """A live frame came while the client was more than ``limit`` behind
        (what was queued is already discarded)."""

    def outbox_closed(self) -> None:
        """A write failed: the connection is gone."""

    def outbox_written(self) -> None:
        """A write completed (there may be room for more)."""

    def outbox_idle(self) -> None:
        """Writes completed and none is in flight."""


class Outbox:
    """One connection's outgoing bytes: a queue with one write in flight.

    Bytes put during one loop iteration are written together at its end
    (:mod:`torchannels.write_batch`), so publications that reach a connection
    in the same iteration share one write; only the hub's fan-out writes its
    first frame of an iteration at once, when nothing is queued or in flight
    (:meth:`put` with ``batch``). While a write is in flight the rest waits in
    the queue and goes out joined when it completes, so a fast client gets
    every frame at once and a slow one gets them batched. One write carries
    at most about ``WRITE_CHUNK`` bytes (whole frames), so that a client that
    reads, however slowly, completes writes: a write that does not complete
    within ``write_timeout`` means the client stopped reading.

    Every byte counts: :attr:`queued_bytes` is everything handed to the outbox
    and not yet written, the write in flight included. A client is *slow* when
    a live frame arrives while it is more than ``limit`` behind.
    """

    __slots__ = (
        "_in_flight",
        "_owner",
        "_queue",
        "_queued",
        "_write",
        "closed",
        "limit",
        "notify_idle",
        "scheduled",
        "sent_in",
        "write_started",
    )

    #: Bytes joined into one write, at most (plus the frame that crosses it).
    WRITE_CHUNK = 64 * 1024

    def __init__(self, write: Write, limit: int, owner: Owner) -> None:
        self._write = write
        self.limit = limit
        # One reference, not four bound methods: fewer objects per connection.
        self._owner = owner
        # A list, not a deque: taken whole (or in large slices), and an
        # empty list holds no block of memory, for every idle connection.
        self._queue: list[bytes] = []
        self._queued = 0  # bytes in the queue
        self._in_flight = 0  # bytes of the write in flight
        #: Loop time at which the write in flight was handed to the socket.
        self.write_started = 0.0
        self.closed = False
        #: Waiting in this loop iteration's batch for :meth:`pump`.
        self.scheduled = False
        #: The batch of the loop iteration in which :meth:`put` last wrote
        #: at once (what follows in that iteration joins the batch).
        self.sent_in: WriteBatch | None = None
        #: Call the owner's ``outbox_idle`` when writes complete (the owner
        #: sets it when it waits for that, such as to end the connection).
        self.notify_idle = False

    def use(self, write: Write) -> None:
        """Write with ``write`` from now on (none may be in flight)."""
        self._write = write

    @property
    def write(self) -> Write:
        """How this outbox writes."""
        return self._write

    @property
    def busy(self) -> bool:
        """A write is in flight (the socket did not take all of it yet)."""
        return self._in_flight > 0

    @property
    def queued_bytes(self) -> int:
        """Bytes not yet written to the socket, the write in flight included."""
        return self._queued + self._in_flight

    def queue(self, data: bytes) -> None:
        """Queue ``data`` without starting a write (call :meth:`schedule`)."""
        self._queue.append(data)
        self._queued += len(data)

    def put(self, data: bytes, *, live: bool = False, batch: WriteBatch | None = None) -> None:
        """Queue ``data`` for the end of this loop iteration; for a ``live``
        frame, call its owner's ``outbox_slow`` instead when the client is already more than
        ``limit`` behind.

        With ``batch`` (the iteration's, from the hub's fan-out), ``data``
        is written at once when nothing is queued or in flight and this
        outbox has not yet written at once in this iteration: the common
        fan-out case, one ``send`` and no second pass. (Frames that follow
        in the same iteration, as a batch publish makes, still join into
        one write at its end.)
        """
        if self.closed:
            return
        if (
            batch is not None
            and self.sent_in is not batch
            and not self._queued  # (the count: the queue is one object more to touch)
            and not self._in_flight
        ):
            self.sent_in = batch
            try:  # _send, inline on the fan-out path
                future = self._write(data)
            except Exception:
                self._failed()
                return
            if future is not None:
                self._await_written(future, data)
            return
        self._queue.append(data)
        self._queued += len(data)
        if live and self._in_flight and self._queued + self._in_flight > self.limit:
            self.discard()
            self._owner.outbox_slow()
            return
        if not self.scheduled:
            (batch or current_batch()).add(self)

    def schedule(self) -> None:
        """Write what is queued at the end of this loop iteration."""
        if not self.scheduled:
            current_batch().add(self)

    def discard(self) -> None:
        """Forget everything not yet handed to the socket."""
        self._queue.clear()
        self._queued = 0

    def pump(self, wrote: bool = False) -> None:
        """Write what is queued now, unless a write is in flight; then, if
        anything was written (``wrote``: a write just completed) and nothing
        is in flight, call the owner's ``outbox_idle``."""
        queue = self._queue
        while queue and not self._in_flight and not self.closed:
            if len(queue) == 1:  # one frame
                data = queue[0]
                queue.clear()
            elif self._queued <= self.WRITE_CHUNK:
                data = b"".join(queue)
                queue.clear()
            else:
                size = taken = 0
                while taken < len(queue) and size < self.WRITE_CHUNK:
                    size += len(queue[taken])
                    taken += 1
                data = b"".join(queue[:taken])
                del queue[:taken]
            self._queued -= len(data)
            if not self._send(data):
                return
            wrote = True
            self._owner.outbox_written()  # catch-up may wait for the room
        if wrote and self.notify_idle and not self._in_flight and not self.closed:
            self._owner.outbox_idle()

    def _send(self, data: bytes) -> bool:
        """Hand ``data`` to the write; True if it all went out at once, else
        it is the write in flight (or the write failed: closed)."""
        try:
            future = self._write(data)
        except Exception:
            self._failed()
            return False
        if future is None:  # all written at once
            return True
        self._await_written(future, data)
        return False

    def _failed(self) -> None:
        """The write raised: closed under us (StreamClosedError, a finished
        handler, a reset socket)."""
        self.closed = True
        self._owner.outbox_closed()

    def _await_written(self, future: asyncio.Future[Any], data: bytes) -> None:
        """``data`` is the write in flight until ``future`` completes."""
        self._in_flight = _unsent(self._write, data) or 1  # an empty write is still in flight
        self.write_started = asyncio.get_running_loop().time()
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[Any]) -> None:
        self._in_flight = 0
        if future.cancelled() or future.exception() is not None:
            self.closed = True  # the connection is gone
            self.discard()
            self._owner.outbox_closed()
            return
        self._owner.outbox_written()
        self.pump(wrote=True)


def _unsent(write: Write, data: bytes) -> int:
    """The bytes of ``data`` that a write returning a future still holds:
    only what the socket did not take at once, after a partial direct send
    (a write that sends directly says so in ``unsent``)."""
    unsent: int | None = getattr(write, "unsent", None)
    return len(data) if unsent is None else unsent

"""One connection's outgoing bytes: a bounded queue with one write in flight.

Every long-lived transport writes through an :class:`Outbox` (owned by its
:class:`~.connection.LiveConnection`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


class Outbox:
    """One connection's outgoing bytes: a queue with one write in flight.

    A write is handed to the socket while the rest waits in the queue and goes
    out joined when it completes, so a fast client gets every frame at once
    and a slow one gets them batched. One write carries at most about
    ``WRITE_CHUNK`` bytes (whole frames), so that a client that reads, however
    slowly, completes writes: a write that does not complete within
    ``write_timeout`` means the client stopped reading.

    Every byte counts: :attr:`queued_bytes` is everything handed to the outbox
    and not yet written, the write in flight included. A client is *slow* when
    a live frame arrives while it is more than ``limit`` behind.
    """

    #: Bytes joined into one write, at most (plus the frame that crosses it).
    WRITE_CHUNK = 64 * 1024

    def __init__(
        self,
        write: Callable[[bytes], asyncio.Future[Any]],
        limit: int,
        on_slow: Callable[[], None],
        on_closed: Callable[[], None],
        on_written: Callable[[], None],
        on_idle: Callable[[], None],
    ) -> None:
        self._write = write
        self.limit = limit
        self._on_slow = on_slow
        self._on_closed = on_closed
        self._on_written = on_written
        self._on_idle = on_idle
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in the queue
        self._in_flight = 0  # bytes of the write in flight
        #: Loop time at which the write in flight was handed to the socket.
        self.write_started = 0.0
        self.closed = False

    @property
    def busy(self) -> bool:
        """A write is in flight."""
        return self._in_flight > 0

    @property
    def queued_bytes(self) -> int:
        """Bytes not yet written to the socket, the write in flight included."""
        return self._queued + self._in_flight

    def queue(self, data: bytes) -> None:
        """Queue ``data`` without starting a write (call :meth:`pump`)."""
        self._queue.append(data)
        self._queued += len(data)

    def put(self, data: bytes, *, live: bool = False) -> None:
        """Queue ``data`` and write; for a ``live`` frame, call ``on_slow``
        instead when the client is already more than ``limit`` behind."""
        if self.closed:
            return
        self.queue(data)
        if live and self.busy and self._queued + self._in_flight > self.limit:
            self.discard()
            self._on_slow()
            return
        self.pump()

    def discard(self) -> None:
        """Forget everything not yet handed to the socket."""
        self._queue.clear()
        self._queued = 0

    def pump(self) -> None:
        if self.busy or self.closed or not self._queue:
            return
        queue = self._queue
        data = queue.popleft()
        if queue and len(data) < self.WRITE_CHUNK:
            parts = [data]
            size = len(data)
            while queue and size < self.WRITE_CHUNK:
                part = queue.popleft()
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
        self._queued -= len(data)
        self._in_flight = len(data) or 1  # an empty write is still in flight
        self.write_started = asyncio.get_running_loop().time()
        try:
            future = self._write(data)
        except Exception:  # closed under us (StreamClosedError, finished handler)
            self._in_flight = 0
            self.closed = True
            self._on_closed()
            return
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[Any]) -> None:
        self._in_flight = 0
        if future.cancelled() or future.exception() is not None:
            self.closed = True  # the connection is gone
            self.discard()
            self._on_closed()
            return
        self._on_written()
        self.pump()
        if not self.busy:
            self._on_idle()

"""One connection's outgoing bytes: a queue with one write in flight.

Both long-lived transports (HTTP streaming and WebSocket) write through an
Outbox. A write is handed to the socket whole; while it is in flight, new
data waits in the queue and goes out in one piece when it completes, so a
fast client gets every frame at once and a slow one gets them batched.

A client is *slow* when live data it has not taken grows past ``limit``.
Backlog (the catch-up a subscriber asked for when it joined or resumed) is
queued like the rest but not counted: its size is the channel's bounded
history, which the client requested, not a sign of falling behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Outbox:
    def __init__(
        self,
        write: Callable[[bytes], asyncio.Future[Any]],
        limit: int,
        on_slow: Callable[[], None],
        on_closed: Callable[[], None],
        on_idle: Callable[[], None],
    ) -> None:
        self._write = write
        self.limit = limit
        self._on_slow = on_slow
        self._on_closed = on_closed
        self._on_idle = on_idle
        self._queue: list[bytes] = []
        self._queued_live = 0
        self._busy = False
        self.closed = False

    @property
    def busy(self) -> bool:
        """A write is in flight or waiting."""
        return self._busy or bool(self._queue)

    def put(self, data: bytes, *, backlog: bool = False) -> None:
        """Queue ``data``; call ``on_slow`` instead when the client is too far behind."""
        if self.closed:
            return
        self._queue.append(data)
        if not backlog:
            self._queued_live += len(data)
            if self._busy and self._queued_live > self.limit:
                self.discard()
                self._on_slow()
                return
        self.pump()

    def discard(self) -> None:
        """Forget everything not yet handed to the socket."""
        self._queue.clear()
        self._queued_live = 0

    def pump(self) -> None:
        if self._busy or self.closed:
            return
        if not self._queue:
            self._on_idle()
            return
        data = self._queue[0] if len(self._queue) == 1 else b"".join(self._queue)
        self.discard()
        self._busy = True
        try:
            future = self._write(data)
        except Exception:  # closed under us (StreamClosedError, finished handler)
            self._busy = False
            self.closed = True
            self._on_closed()
            return
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[Any]) -> None:
        self._busy = False
        if future.cancelled() or future.exception() is not None:
            self.closed = True  # the connection is gone
            self.discard()
            self._on_closed()
            return
        self.pump()

"""The streaming base: one long response, written as frames arrive.

Writes never wait: frames are appended to a buffer, and one flush at a time
is in flight; when it completes the next batch goes out. A client whose
buffer grows past ``max_pending_bytes`` is too slow and is cut off (it
resumes from its positions). After ``stream_max_bytes`` the response ends
with a ``reconnect`` frame, since proxies may buffer endless responses.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Any

from tornado.ioloop import PeriodicCallback

from .. import frames as F
from ..errors import RECONNECT_BYTE_LIMIT, RECONNECT_EXPIRED, RECONNECT_SLOW
from ..frames import Frame
from .base import Transport


class StreamingTransport(Transport):
    content_type: str = "application/octet-stream"

    def prepare(self) -> None:
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._sent_bytes = 0
        self._flushing = False
        self._ending = False
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._grace: asyncio.TimerHandle | None = None

    @abc.abstractmethod
    def encode(self, frame: Frame) -> bytes:
        """The bytes of one frame on this transport."""

    def preamble(self) -> bytes:
        """Bytes written before the first frame."""
        return b""

    async def run(self) -> None:
        handler = self.handler
        settings = self.hub.settings
        handler.set_header("Content-Type", self.content_type)
        handler.set_header("Cache-Control", "no-cache, no-store")
        handler.set_header("X-Accel-Buffering", "no")
        stream = handler.request.connection.stream  # type: ignore[union-attr]
        stream.set_nodelay(True)
        self._write(self.preamble() + self.encode(F.connected(self.name, settings.ping_interval)))
        pinger = PeriodicCallback(self._ping, settings.ping_interval * 1000)
        pinger.start()
        expiry = None
        if self.expires is not None:
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, self.expires - time.time()), self.end, RECONNECT_EXPIRED
            )
        self.hub.connection_opened(self)
        try:
            await self.session.subscribe(self.request.channels, self.request.cursor, live=True)
            await self._done
        finally:
            self.hub.connection_closed(self)
            pinger.stop()
            if expiry is not None:
                expiry.cancel()
            if self._grace is not None:
                self._grace.cancel()
            self.session.close()
        if not self.closed:
            handler.finish()

    def send(self, frames: list[Frame]) -> None:
        if self._ending:
            return
        self._write(b"".join(self.encode(f) for f in frames))

    def end(self, reason: str) -> None:
        if self._ending or self.closed:
            return
        self._ending = True
        self._pending.append(self.encode(F.reconnect(reason)))
        self._pump()

    def _ping(self) -> None:
        if not self._ending:
            self._write(self.encode(F.PING_FRAME))

    def _write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._sent_bytes += len(data)
        if self._pending_bytes > self.hub.settings.max_pending_bytes:
            self._abort()
            return
        if self._sent_bytes >= self.hub.settings.stream_max_bytes and not self._ending:
            self._ending = True
            self._pending.append(self.encode(F.reconnect(RECONNECT_BYTE_LIMIT)))
        self._pump()

    def _pump(self) -> None:
        if self._flushing or self.closed:
            return
        if self._pending:
            self.handler.write(b"".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0
            self._flushing = True
            self.handler.flush().add_done_callback(self._flushed)
        elif self._ending:
            self._finish()

    def _flushed(self, future: asyncio.Future[Any]) -> None:
        self._flushing = False
        if future.exception() is not None:  # the connection is gone
            self.closed = True
            self._finish()
            return
        self._pump()

    def _abort(self) -> None:
        """Drop a client that cannot keep up: discard what it has not got,
        end with ``reconnect`` (slow_consumer) so it comes back at once and
        resumes from its positions, and cut it off if even that cannot be
        written within ``ping_interval``."""
        self.hub.stats.slow_dropped += 1
        self.session.close()
        self._ending = True
        self._pending = [self.encode(F.reconnect(RECONNECT_SLOW))]
        self._pending_bytes = 0
        self._grace = asyncio.get_running_loop().call_later(
            self.hub.settings.ping_interval, self._cut
        )
        self._pump()

    def _cut(self) -> None:
        if not self._done.done():
            self.closed = True
            self.handler.request.connection.stream.close()  # type: ignore[union-attr]
            self._finish()

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._finish()

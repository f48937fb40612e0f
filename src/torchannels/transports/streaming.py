"""The streaming base: one long response, written as frames arrive.

Writes never wait: they go through an :class:`Outbox` (one flush in flight,
the rest queued). A client more than ``max_pending_bytes`` of live frames
behind is too slow: what it has not got is dropped and the response ends
with ``reconnect`` (slow_consumer), so it resumes from its positions. After
``stream_max_bytes`` the response ends with ``reconnect`` (byte_limit),
since proxies may buffer endless responses.
"""

from __future__ import annotations

import abc
import asyncio
import time

from tornado.ioloop import PeriodicCallback

from .. import frames as F
from ..errors import RECONNECT_BYTE_LIMIT, RECONNECT_EXPIRED, RECONNECT_SLOW
from ..frames import Frame
from .base import Transport
from .outbox import Outbox


class StreamingTransport(Transport):
    content_type: str = "application/octet-stream"

    def prepare(self) -> None:
        self._sent_bytes = 0
        self._ending = False
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._grace: asyncio.TimerHandle | None = None
        self._outbox = Outbox(
            self._flush,
            self.hub.settings.max_pending_bytes,
            on_slow=self._slow,
            on_closed=self._gone,
            on_idle=self._idle,
        )

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
        self._put(self.preamble() + self.encode(F.connected(self.name, settings.ping_interval)))
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

    def send(self, frames: list[Frame], *, backlog: bool = False) -> None:
        if self._ending:
            return
        if len(frames) == 1:  # the live fan-out case: no join per recipient
            self._put(self.encode(frames[0]), backlog=backlog)
        else:
            self._put(b"".join(self.encode(f) for f in frames), backlog=backlog)

    def end(self, reason: str) -> None:
        if self._ending or self.closed:
            return
        self._ending = True
        self._outbox.put(self.encode(F.reconnect(reason)), backlog=True)

    def _ping(self) -> None:
        if not self._ending:
            self._put(self.encode(F.PING_FRAME))

    def _put(self, data: bytes, *, backlog: bool = False) -> None:
        self._sent_bytes += len(data)
        self._outbox.put(data, backlog=backlog)
        if self._sent_bytes >= self.hub.settings.stream_max_bytes:
            self.end(RECONNECT_BYTE_LIMIT)

    def _flush(self, data: bytes) -> asyncio.Future[None]:
        self.handler.write(data)
        return self.handler.flush()

    def _slow(self) -> None:
        """Drop a client that cannot keep up (the outbox already discarded
        what it has not got): end with ``reconnect`` (slow_consumer) so it
        comes back at once and resumes from its positions, and cut it off if
        even that cannot be written within ``ping_interval``."""
        self.hub.stats.slow_dropped += 1
        self.session.close()
        self.end(RECONNECT_SLOW)
        self._grace = asyncio.get_running_loop().call_later(
            self.hub.settings.ping_interval, self._cut
        )

    def _cut(self) -> None:
        if not self._done.done():
            self.closed = True
            self.handler.request.connection.stream.close()  # type: ignore[union-attr]
            self._finish()

    def _gone(self) -> None:
        self.closed = True
        self._finish()

    def _idle(self) -> None:
        if self._ending:
            self._finish()

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._finish()

"""One connection model for every long-lived transport (stream, SSE, WebSocket).

A :class:`LiveConnection` holds what they share, written once:

- the :class:`Outbox`: one write in flight, the rest queued and joined, and
  the slow-consumer limit;
- one keep-alive tick every ``ping_interval``, which writes the transport's
  ping and, where the peer can answer (WebSocket), drops a peer heard
  nothing from for two intervals;
- the expiry of the authorization behind the connection;
- registration with the hub, so shutdown can end it;
- :meth:`LiveConnection.end`: a ``reconnect`` frame, then a clean close once
  it is written, or a cut if the client cannot take it within one interval.

A transport only says how to frame (``encode``), write (``write``), close
cleanly (``finish``) and cut (``cut``) its own kind of connection; HTTP
streams add a byte cap (``byte_limit``). :class:`StreamingTransport` is the
base of the HTTP streams; the WebSocket handler owns a ``LiveConnection``
the same way.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import PeriodicCallback

from .. import frames as F
from ..errors import RECONNECT_BYTE_LIMIT, RECONNECT_EXPIRED, RECONNECT_SLOW
from ..frames import Frame
from ..hub import Hub
from ..session import Session
from .base import Transport


class Outbox:
    """One connection's outgoing bytes: a queue with one write in flight.

    A write is handed to the socket whole; while it is in flight, new data
    waits in the queue and goes out in one piece when it completes, so a fast
    client gets every frame at once and a slow one gets them batched.

    A client is *slow* when live data it has not taken grows past ``limit``.
    Backlog (the catch-up a subscriber asked for when it joined or resumed) is
    queued like the rest but not counted: its size is the channel's bounded
    history, which the client requested, not a sign of falling behind.
    """

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


class LiveConnection:
    """The shared machinery of one long-lived subscriber connection.

    It is what the hub registers (``name`` and ``end``) and the sink its
    session writes to (:meth:`send`).
    """

    def __init__(
        self,
        name: str,
        hub: Hub,
        session: Session,
        *,
        encode: Callable[[Frame], bytes],
        write: Callable[[bytes], asyncio.Future[Any]],
        finish: Callable[[str], None],
        cut: Callable[[], None],
        ping: bytes,
        expires: float | None = None,
        byte_limit: int | None = None,
        hears_peer: bool = False,
    ) -> None:
        self.name = name
        self.hub = hub
        self.session = session
        self._encode = encode
        self._finish = finish
        self._cut_socket = cut
        self._ping = ping
        self._expires = expires
        self._byte_limit = byte_limit
        #: Bytes handed to the outbox so far.
        self.sent_bytes = 0
        #: An ``end`` began: only the ``reconnect`` frame is still written.
        self.ending = False
        #: :meth:`stop` ran; nothing more happens.
        self.stopped = False
        self._reason = ""
        self._hears_peer = hears_peer
        self._heard = True  # since the last tick
        self._missed = 0  # ticks in a row with nothing heard since the one before
        #: False while the transport reads nothing from the peer (a command
        #: is being handled): silence then says nothing about the peer.
        self.listening = True
        self._timers: list[asyncio.TimerHandle] = []
        self._ticker = PeriodicCallback(self._tick, hub.settings.ping_interval * 1000)
        self.outbox = Outbox(
            write,
            hub.settings.max_pending_bytes,
            on_slow=self._slow,
            on_closed=self._gone,
            on_idle=self._idle,
        )

    def start(self) -> None:
        """Register with the hub, start the keep-alive and the expiry timer."""
        self._ticker.start()
        if self._expires is not None:
            delay = max(0.0, self._expires - time.time())
            self._timers.append(self._call_later(delay, self.end, RECONNECT_EXPIRED))
        self.hub.connection_opened(self)

    def stop(self) -> None:
        """The connection is over: unregister, stop timers, leave the hub; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.hub.connection_closed(self)
        self._ticker.stop()
        for timer in self._timers:
            timer.cancel()
        self.session.close()

    def send(self, frames: list[Frame], *, backlog: bool = False) -> None:
        """The session's sink: frame and queue ``frames``."""
        if self.ending or self.stopped:
            return
        encode = self._encode
        if len(frames) == 1:  # the live fan-out case: no join per recipient
            self.put(encode(frames[0]), backlog=backlog)
        else:
            self.put(b"".join(encode(f) for f in frames), backlog=backlog)

    def put(self, data: bytes, *, backlog: bool = False) -> None:
        """Queue bytes already framed for this transport."""
        if self.ending or self.stopped:
            return
        self.sent_bytes += len(data)
        self.outbox.put(data, backlog=backlog)
        if self._byte_limit is not None and self.sent_bytes >= self._byte_limit:
            self.end(RECONNECT_BYTE_LIMIT)

    def heard(self) -> None:
        """The peer sent something (a pong, a command): it is alive."""
        self._heard = True

    def end(self, reason: str) -> None:
        """Send ``reconnect`` (``reason``), then close once it is written; cut
        the connection if that has not happened within ``ping_interval``."""
        if self.ending or self.stopped:
            return
        self.ending = True
        self._reason = reason
        self._timers.append(self._call_later(self.hub.settings.ping_interval, self.cut))
        self.outbox.put(self._encode(F.reconnect(reason)), backlog=True)

    def _tick(self) -> None:
        if self._hears_peer and self.listening:
            self._missed = 0 if self._heard else self._missed + 1
            self._heard = False
            if self._missed >= 2:
                self.cut()  # no answer to two pings in a row: the peer is gone
                return
        if not self.ending:
            self.put(self._ping)

    def _slow(self) -> None:
        """The outbox dropped what the client has not taken: it resumes from
        its positions after ``reconnect`` (slow_consumer)."""
        self.hub.stats.slow_dropped += 1
        self.session.close()
        self.end(RECONNECT_SLOW)

    def _idle(self) -> None:
        if self.ending and not self.stopped:
            self._finish(self._reason)

    def _gone(self) -> None:
        self.cut()

    def cut(self) -> None:
        """Close the connection at once, with no ``reconnect`` frame (a dead
        or stuck peer; tests cutting connections the way a network would)."""
        self._cut_socket()

    def _call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Any:
        return asyncio.get_running_loop().call_later(delay, callback, *args)


class StreamingTransport(Transport):
    """The base of the HTTP streams: one long response, written as frames arrive.

    After ``stream_max_bytes`` the response ends with ``reconnect``
    (byte_limit), since proxies may buffer endless responses.
    """

    content_type: str = "application/octet-stream"

    def prepare(self) -> None:
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connection = LiveConnection(
            self.name,
            self.hub,
            self.session,
            encode=self.encode,
            write=self._write,
            finish=self._end_response,
            cut=self._cut,
            ping=self.encode(F.PING_FRAME),
            expires=self.expires,
            byte_limit=self.hub.settings.stream_max_bytes,
        )

    @abc.abstractmethod
    def encode(self, frame: Frame) -> bytes:
        """The bytes of one frame on this transport."""

    def preamble(self) -> bytes:
        """Bytes written before the first frame."""
        return b""

    async def run(self) -> None:
        handler = self.handler
        handler.set_header("Content-Type", self.content_type)
        handler.set_header("Cache-Control", "no-cache, no-store")
        handler.set_header("X-Accel-Buffering", "no")
        stream = handler.request.connection.stream  # type: ignore[union-attr]
        stream.set_nodelay(True)
        connected = F.connected(self.name, self.hub.settings.ping_interval)
        self.connection.put(self.preamble() + self.encode(connected))
        self.connection.start()
        try:
            try:
                await self.session.subscribe(self.request.channels, self.request.cursor, live=True)
            except Exception as exc:
                self.broker_failed(exc)
            await self._done
        finally:
            self.connection.stop()
        if not self.closed:
            handler.finish()

    def send(self, frames: list[Frame], *, backlog: bool = False) -> None:
        self.connection.send(frames, backlog=backlog)

    def end(self, reason: str) -> None:
        self.connection.end(reason)

    def _write(self, data: bytes) -> asyncio.Future[None]:
        self.handler.write(data)
        return self.handler.flush()

    def _end_response(self, reason: str) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _cut(self) -> None:
        self.closed = True
        if not self._done.done():
            self.handler.request.connection.stream.close()  # type: ignore[union-attr]
            self._done.set_result(None)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if not self._done.done():
            self._done.set_result(None)

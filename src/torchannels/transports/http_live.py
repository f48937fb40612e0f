"""The HTTP side of live connections: one long response, chunked.

:class:`StreamingTransport` is the base of the HTTP streams (NDJSON
``stream`` and SSE). It owns a :class:`~.connection.LiveConnection` and
tells it how to write to, end and cut an HTTP response. Once the headers
are out and the subscribe is done, it hands the socket to a
:class:`~.detached.DetachedResponse` and lets Tornado's request, handler
and connection go. Where Tornado's internals are needed (the request's
stream, its output transforms, taking the socket), it asks
:mod:`torchannels.tornado_compat`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from typing import ClassVar

from .. import frames as F
from ..frames import Frame
from ..tornado_compat import drop_gzip, request_stream, take_socket
from .base import Transport
from .connection import LiveConnection
from .detached import DetachedResponse
from .outbox import DirectWriter, Write, direct_writer


def http_chunk(data: bytes) -> bytes:
    """``data`` as one piece of a chunked HTTP/1.1 body (RFC 9112 7.1)."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


def refuse_further_channels(channel: str) -> bool:
    """A handed-over stream's session subscribes to nothing more (and no
    longer holds the handler whose ``can_access`` decided)."""
    return False


class StreamingTransport(Transport):
    """The base of the HTTP streams: one long response, written as frames arrive.

    Once the response's headers are out, frames are written straight to the
    connection's socket (:func:`.outbox.direct_writer`), each already framed
    as a piece of the chunked body: the framing of a shared frame is built
    once for all recipients (:meth:`encoder`). Tornado's
    ``RequestHandler.write``/``flush`` are only used for the headers, for
    ending the response, and when :attr:`direct_writes` is off.

    Once the subscribe is done, a plain (not TLS) socket is handed over
    (:attr:`hand_over`): Tornado lets go of it (``RequestHandler.detach()``)
    and a :class:`~.detached.DetachedResponse` writes, ends and cuts the
    response from then on; the request is logged and ``on_finish`` runs at
    that moment. Such a response says ``Connection: close``: it is the
    connection's last.

    After ``stream_max_bytes`` the response ends with ``reconnect``
    (byte_limit), since proxies may buffer endless responses.
    """

    content_type: str = "application/octet-stream"
    #: Write frames straight to the socket (False: through
    #: ``RequestHandler.write`` and ``flush``; the same bytes, slower).
    direct_writes: ClassVar[bool] = True
    #: Hand a plain socket over once subscribed, releasing Tornado's
    #: request, handler and connection (False: Tornado keeps the response
    #: to its end; the same bytes, more memory per connection).
    hand_over: ClassVar[bool] = True

    def prepare(self) -> None:
        #: Resolved when the response is over (:attr:`_over`).
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._over = False
        handler = self.handler
        stream = request_stream(handler.request)
        # Tornado chunks a response to an HTTP/1.1 GET (status 200, no
        # Content-Length); to HTTP/1.0 it writes the body as is and closes.
        self._chunked = handler.request.version == "HTTP/1.1"
        write: Write = self._write
        encode = self.encoder(chunked=False)
        self._direct: DirectWriter | None = None
        # Gzip is dropped (see :meth:`run`); an app's own output transform
        # would need every write to go through Tornado.
        if self.direct_writes and stream is not None and drop_gzip(handler):
            write = direct_writer(stream)
            if isinstance(write, DirectWriter):
                self._direct = write
            encode = self.encoder(chunked=self._chunked)
        else:
            self._chunked = False  # Tornado chunks what goes through it
        self.connection = LiveConnection(
            self.name,
            self.hub,
            self.session,
            encode=encode,
            write=write,
            link=self,
            ping=encode(F.PING_FRAME),
            expires=self.expires,
            byte_limit=self.hub.settings.stream_max_bytes,
            ping_interval=self.request.ping,
        )

    @abc.abstractmethod
    def encode(self, frame: Frame) -> bytes:
        """The bytes of one frame on this transport."""

    def encode_chunk(self, frame: Frame) -> bytes:
        """:meth:`encode` as one piece of a chunked body; transports cache it
        on shared frames (``Frame.cached``)."""
        return http_chunk(self.encode(frame))

    def encoder(self, *, chunked: bool) -> Callable[[Frame], bytes]:
        """The function the connection frames with: :meth:`encode_chunk`
        or :meth:`encode`. A transport returns one that holds no reference
        to itself, so that it can be released once handed over."""
        return self.encode_chunk if chunked else self.encode

    def preamble(self) -> bytes:
        """Bytes written before the first frame."""
        return b""

    @property
    def _may_hand_over(self) -> bool:
        """The socket is plain and nothing stands between it and the outbox."""
        return self.hand_over and self._direct is not None

    async def run(self) -> None:
        handler = self.handler
        handler.set_header("Content-Type", self.content_type)
        handler.set_header("Cache-Control", "no-cache, no-store")
        handler.set_header("X-Accel-Buffering", "no")
        if self._may_hand_over and self._chunked:
            handler.set_header("Connection", "close")
        # Never compressed: with ``compress_response=True`` Tornado would gzip
        # each stream on its own (a compressor and a sync flush per frame per
        # connection), costing the CPU and memory fan-out saves. Poll answers
        # may still be compressed. (prepare dropped the transform already.)
        stream = request_stream(handler.request)
        if stream is not None:
            stream.set_nodelay(True)
        # The headers go out now, through Tornado, ahead of every frame.
        handler.flush()
        self._greet()
        self.connection.start()
        handed_over = False
        try:
            try:
                await self.session.subscribe(self.request.channels, self.request.cursor, live=True)
            except Exception as exc:
                self.broker_failed(exc)
            # Nothing is in flight yet, unless the greeting is stuck in the
            # socket (then Tornado keeps the response to its end).
            handed_over = self._hand_over()
            if not handed_over:
                await self._done
        finally:
            if not handed_over:
                self.connection.stop()
        if not self.closed and not handed_over:
            handler.finish()

    def _end(self) -> None:
        """The response is over: ``run`` finishes it, or has nothing to do."""
        self._over = True
        if not self._done.done():
            self._done.set_result(None)

    def _hand_over(self) -> bool:
        """Give the socket to a :class:`~.detached.DetachedResponse` and let
        Tornado's request, handler and connection go; False (and nothing
        changes) unless the socket is plain and idle, and the connection
        is open and not ending."""
        direct = self._direct
        connection = self.connection
        if (
            not self.hand_over
            or direct is None
            or self.closed
            or self._over
            or connection.ending
            or connection.stopped
            or connection.outbox.busy
            or direct.stream.closed()  # the client left; Tornado tells the handler soon
            or direct.stream.writing()
        ):
            return False
        handler = self.handler
        stream = handler.detach()
        release_hook = getattr(stream, "on_detach", None)
        release = release_hook() if release_hook is not None else None
        sock, _ = take_socket(stream)  # what the client sent after its request is dropped
        response = DetachedResponse(sock, connection, release, chunked=self._chunked)
        connection.hand_over(response, response)
        self.session.authorize = refuse_further_channels
        # What RequestHandler.finish() would do for the handler's own part.
        handler.application.log_request(handler)
        handler.on_finish()
        return True

    def _greet(self) -> None:
        # Not inline in run(): its frame stays suspended for the whole
        # connection, and would keep the frame and its bytes alive.
        client = self.hub.client_ids.sign(self.session.identity.client, self.session.identity.since)
        connected = F.connected(self.name, self.connection.ping_interval, client)
        first = self.preamble() + self.encode(connected)
        self.connection.put(http_chunk(first) if self._chunked else first)

    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        self.connection.send(frames, backlog=backlog)

    def end(self, reason: str) -> None:
        self.connection.end(reason)

    def _write(self, data: bytes) -> asyncio.Future[None]:
        self.handler.write(data)
        return self.handler.flush()

    def close_cleanly(self, reason: str) -> None:
        """The connection's :class:`~.connection.Link`: ``run`` finishes the
        response."""
        self._end()

    def cut(self) -> None:
        """The connection's :class:`~.connection.Link`: close the stream now."""
        self.closed = True
        if not self._over:
            stream = request_stream(self.handler.request)
            if stream is not None:
                stream.close()
            self._end()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._end()

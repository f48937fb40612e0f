"""The HTTP side of live connections: one long response, chunked.

:class:`StreamingTransport` is the base of the HTTP streams (NDJSON
``stream`` and SSE). It owns a :class:`~.connection.LiveConnection` and
tells it how to write to, end and cut an HTTP response. Where Tornado's
internals are needed (the request's stream, its output transforms), it
asks :mod:`torchannels.tornado_compat`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import ClassVar

from .. import frames as F
from ..frames import Frame
from ..tornado_compat import drop_gzip, request_stream
from .base import Transport
from .connection import LiveConnection
from .outbox import Write, direct_writer


def http_chunk(data: bytes) -> bytes:
    """``data`` as one piece of a chunked HTTP/1.1 body (RFC 9112 7.1)."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


class StreamingTransport(Transport):
    """The base of the HTTP streams: one long response, written as frames arrive.

    Once the response's headers are out, frames are written straight to the
    connection's socket (:func:`.outbox.direct_writer`), each already framed
    as a piece of the chunked body: the framing of a shared frame is built
    once for all recipients (:meth:`encode_chunk`). Tornado's
    ``RequestHandler.write``/``flush`` are only used for the headers, for
    ending the response, and when :attr:`direct_writes` is off.

    After ``stream_max_bytes`` the response ends with ``reconnect``
    (byte_limit), since proxies may buffer endless responses.
    """

    content_type: str = "application/octet-stream"
    #: Write frames straight to the socket (False: through
    #: ``RequestHandler.write`` and ``flush``; the same bytes, slower).
    direct_writes: ClassVar[bool] = True

    def prepare(self) -> None:
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handler = self.handler
        stream = request_stream(handler.request)
        # Tornado chunks a response to an HTTP/1.1 GET (status 200, no
        # Content-Length); to HTTP/1.0 it writes the body as is and closes.
        self._chunked = handler.request.version == "HTTP/1.1"
        write: Write = self._write
        frame = self.encode
        # Gzip is dropped (see :meth:`run`); an app's own output transform
        # would need every write to go through Tornado.
        if self.direct_writes and stream is not None and drop_gzip(handler):
            write = direct_writer(stream)
            if self._chunked:
                frame = self.encode_chunk
        else:
            self._chunked = False  # Tornado chunks what goes through it
        self.connection = LiveConnection(
            self.name,
            self.hub,
            self.session,
            encode=frame,
            write=write,
            finish=self._end_response,
            cut=self._cut,
            ping=frame(F.PING_FRAME),
            expires=self.expires,
            byte_limit=self.hub.settings.stream_max_bytes,
            ping_interval=self.request.ping,
        )
        # Live frames go from the session straight to the connection.
        self.session.sink = self.connection.send

    @abc.abstractmethod
    def encode(self, frame: Frame) -> bytes:
        """The bytes of one frame on this transport."""

    def encode_chunk(self, frame: Frame) -> bytes:
        """:meth:`encode` as one piece of a chunked body; transports cache it
        on shared frames (``Frame.cached``)."""
        return http_chunk(self.encode(frame))

    def preamble(self) -> bytes:
        """Bytes written before the first frame."""
        return b""

    async def run(self) -> None:
        handler = self.handler
        handler.set_header("Content-Type", self.content_type)
        handler.set_header("Cache-Control", "no-cache, no-store")
        handler.set_header("X-Accel-Buffering", "no")
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

    def _end_response(self, reason: str) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _cut(self) -> None:
        self.closed = True
        if not self._done.done():
            stream = request_stream(self.handler.request)
            if stream is not None:
                stream.close()
            self._done.set_result(None)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if not self._done.done():
            self._done.set_result(None)

"""Server-Sent Events: ``text/event-stream`` for a plain browser EventSource.

Messages are ``message`` events whose data is the message itself; control
frames are named events (``subscribed``, ``reset``, ``channel_error``,
``connected``, ``reconnect``, ``ping``), so a page can watch for pings.
Every event that moves a position has an ``id`` holding the connection's
whole cursor, so the browser's own reconnect (with ``Last-Event-ID``)
resumes every channel without loss or duplicates.

The event's ``event``/``data`` lines are built once per frame and shared by
all recipients; only the short ``id`` line is per connection, because each
connection's cursor spans its own set of channels. Connections to a single
channel share the whole event, ``id`` included, and so do connections that
asked for no ids (``ids=0``).

Every byte is written by one pure encoder, :func:`encode_fields`:

>>> encode_event(b'{"a":1}', event="reset", id="chat=ab12:3")
b'event: reset\\ndata: {"a":1}\\nid: chat=ab12:3\\n\\n'
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .. import frames as F
from ..frames import Frame
from ..protocol import Position, format_cursor
from .base import apply
from .http_live import StreamingTransport, http_chunk

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")

#: SSE event names that differ from the frame type: EventSource fires its own
#: "error" event on connection trouble, so ours must not share the name.
EVENT_NAMES = {F.ERROR: "channel_error"}


def _field(name: bytes, value: str) -> bytes:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {name.decode()} must be one line")
    return name + b": " + value.encode() + b"\n"


def encode_data(data: bytes) -> bytes:
    """``data:`` lines for ``data``; every line break starts a new line."""
    return b"".join(b"data: " + line + b"\n" for line in _LINE_BREAK.split(data))


def encode_fields(
    data: bytes | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """The field lines of an event, without the blank line that dispatches it.

    Fields may be written in pieces (the shared ``event``/``data`` lines of a
    frame, then a connection's own ``id`` line); a blank line ends the event.
    """
    out = b""
    if retry is not None:
        if retry < 0:
            raise ValueError("SSE retry must be >= 0")
        out += b"retry: %d\n" % retry
    if event is not None:
        out += _field(b"event", event)
    if data is not None:
        out += encode_data(data)
    if id is not None:
        if "\0" in id:
            raise ValueError("SSE id must not contain NUL")
        out += _field(b"id", id)
    return out


def encode_event(
    data: bytes | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """One complete event, ending in the blank line that dispatches it.

    An event without ``data`` dispatches nothing in a browser, but its ``id``
    still becomes the ``Last-Event-ID`` sent on reconnect.
    """
    return encode_fields(data, event=event, id=id, retry=retry) + b"\n"


def _body(frame: Frame) -> bytes:
    name = None if frame.kind == F.MESSAGE else EVENT_NAMES.get(frame.kind, frame.kind)
    return encode_fields(frame.sse_data, event=name)


def _plain_event(frame: Frame) -> bytes:
    return frame.cached("sse", _body) + b"\n"


def _single_channel_event(frame: Frame) -> bytes:
    assert frame.channel is not None and frame.position is not None
    cursor = format_cursor({frame.channel: frame.position})
    return frame.cached("sse", _body) + encode_event(id=cursor)


def _plain_chunk(frame: Frame) -> bytes:
    return http_chunk(frame.cached("sse-plain", _plain_event))


def _single_channel_chunk(frame: Frame) -> bytes:
    return http_chunk(frame.cached("sse-single", _single_channel_event))


def sse_event(frame: Frame, cursor: dict[str, Position] | None) -> bytes:
    """The event of ``frame`` on a connection at ``cursor`` (moved by the
    frame), or with no ``id`` at all when ``cursor`` is None (``ids=0``).

    Shared frames get shared bytes: an event without ``id``, or whose
    cursor is the frame's own one channel, is built once for everyone.
    """
    if cursor is None or not apply(cursor, frame):
        return frame.cached("sse-plain", _plain_event)
    if len(cursor) == 1 and frame.position is not None:
        # A one-channel connection's cursor is this frame's own position:
        # the same whole event for every such subscriber, built once.
        return frame.cached("sse-single", _single_channel_event)
    return frame.cached("sse", _body) + encode_event(id=format_cursor(cursor))


def sse_chunk(frame: Frame, cursor: dict[str, Position] | None) -> bytes:
    """:func:`sse_event` as one piece of a chunked body, shared the same way."""
    if cursor is None or not apply(cursor, frame):
        return frame.cached("sse-plain+chunk", _plain_chunk)
    if len(cursor) == 1 and frame.position is not None:
        return frame.cached("sse-single+chunk", _single_channel_chunk)
    return http_chunk(frame.cached("sse", _body) + encode_event(id=format_cursor(cursor)))


def _no_id_event(frame: Frame) -> bytes:
    return sse_event(frame, None)


def _no_id_chunk(frame: Frame) -> bytes:
    return sse_chunk(frame, None)


class SSEFraming:
    """The framing of one SSE connection with ``id:`` lines: its cursor,
    moved by every frame. (An object of its own, not the transport's bound
    method, so that the transport can be released once handed over.)"""

    __slots__ = ("chunked", "cursor")

    def __init__(self, cursor: dict[str, Position], *, chunked: bool) -> None:
        self.cursor = cursor
        self.chunked = chunked

    def __call__(self, frame: Frame) -> bytes:
        cursor = self.cursor
        channel = frame.channel
        position = frame.position
        if channel is not None and position is not None:
            # The fan-out case, inline: apply(), then the whole event the
            # frame shares with every one-channel connection.
            cursor[channel] = position
            if len(cursor) == 1:
                if self.chunked:
                    return frame.cached("sse-single+chunk", _single_channel_chunk)
                return frame.cached("sse-single", _single_channel_event)
        if self.chunked:
            return sse_chunk(frame, cursor)
        return sse_event(frame, cursor)


class SSETransport(StreamingTransport):
    """Server-Sent Events. With ``ids=0`` in the request no event carries an
    ``id`` (a client that resumes from its own cursor needs none), so every
    event is the same bytes for every subscriber."""

    name = "sse"
    content_type = "text/event-stream; charset=utf-8"

    def prepare(self) -> None:
        #: The connection's cursor, moved by every frame; None with ``ids=0``.
        self.cursor: dict[str, Position] | None = None
        if self.request.ids:
            self.cursor = {
                c: p for c, p in self.request.cursor.items() if c in self.request.channels
            }
        super().prepare()  # frames with self.encode, which reads the cursor

    def preamble(self) -> bytes:
        # Fields without a blank line: ``retry`` joins the ``connected`` event.
        return encode_fields(retry=self.hub.settings.sse_retry_ms)

    def encode(self, frame: Frame) -> bytes:
        return sse_event(frame, self.cursor)

    def encode_chunk(self, frame: Frame) -> bytes:
        return sse_chunk(frame, self.cursor)

    def encoder(self, *, chunked: bool) -> Callable[[Frame], bytes]:
        if self.cursor is None:
            return _no_id_chunk if chunked else _no_id_event
        return SSEFraming(self.cursor, chunked=chunked)

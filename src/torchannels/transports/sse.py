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
channel share the whole event, ``id`` included.
"""

from __future__ import annotations

from .. import frames as F
from ..frames import Frame
from ..protocol import Position, format_cursor
from ..sse import encode_data, encode_event
from .base import apply
from .streaming import StreamingTransport

#: SSE event names that differ from the frame type: EventSource fires its own
#: "error" event on connection trouble, so ours must not share the name.
EVENT_NAMES = {F.ERROR: "channel_error"}


def _body(frame: Frame) -> bytes:
    if frame.kind == F.MESSAGE:
        head = b""
    else:
        head = b"event: " + EVENT_NAMES.get(frame.kind, frame.kind).encode() + b"\n"
    return head + encode_data(frame.sse_data)


def _single_channel_event(frame: Frame) -> bytes:
    assert frame.channel is not None and frame.position is not None
    cursor = format_cursor({frame.channel: frame.position})
    return frame.cached("sse", _body) + b"id: " + cursor.encode() + b"\n\n"


class SSETransport(StreamingTransport):
    name = "sse"
    content_type = "text/event-stream; charset=utf-8"

    def prepare(self) -> None:
        super().prepare()
        self.cursor: dict[str, Position] = {
            c: p for c, p in self.request.cursor.items() if c in self.request.channels
        }

    def preamble(self) -> bytes:
        return encode_event(retry=self.hub.settings.sse_retry_ms)[:-1]

    def encode(self, frame: Frame) -> bytes:
        if not apply(self.cursor, frame):
            return frame.cached("sse", _body) + b"\n"
        if len(self.cursor) == 1 and frame.position is not None:
            # A one-channel connection's cursor is this frame's own position:
            # the same whole event for every such subscriber, built once.
            return frame.cached("sse-single", _single_channel_event)
        body = frame.cached("sse", _body)
        return body + b"id: " + format_cursor(self.cursor).encode() + b"\n\n"

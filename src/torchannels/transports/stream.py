"""Streaming: newline-delimited JSON frames in one chunked response."""

from __future__ import annotations

from ..frames import Frame
from .connection import StreamingTransport


def _line(frame: Frame) -> bytes:
    return frame.envelope + b"\n"


class StreamTransport(StreamingTransport):
    name = "stream"
    content_type = "application/x-ndjson"

    def encode(self, frame: Frame) -> bytes:
        return frame.cached("ndjson", _line)

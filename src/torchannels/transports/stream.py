"""Streaming: newline-delimited JSON frames in one chunked response."""

from __future__ import annotations

from ..frames import Frame
from .http_live import StreamingTransport, http_chunk


def _line(frame: Frame) -> bytes:
    return frame.envelope + b"\n"


def _line_chunk(frame: Frame) -> bytes:
    return http_chunk(frame.cached("ndjson", _line))


class StreamTransport(StreamingTransport):
    name = "stream"
    content_type = "application/x-ndjson"

    def encode(self, frame: Frame) -> bytes:
        return frame.cached("ndjson", _line)

    def encode_chunk(self, frame: Frame) -> bytes:
        return frame.cached("ndjson+chunk", _line_chunk)

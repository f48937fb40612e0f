"""Streaming: newline-delimited JSON frames in one chunked response."""

from __future__ import annotations

from collections.abc import Callable

from ..frames import Frame
from .http_live import StreamingTransport, http_chunk


def _line(frame: Frame) -> bytes:
    return frame.envelope + b"\n"


def _line_chunk(frame: Frame) -> bytes:
    return http_chunk(frame.cached("ndjson", _line))


def ndjson(frame: Frame) -> bytes:
    """The NDJSON line of ``frame``, built once per frame."""
    return frame.cached("ndjson", _line)


def ndjson_chunk(frame: Frame) -> bytes:
    """:func:`ndjson` as one piece of a chunked body, built once per frame."""
    return frame.cached("ndjson+chunk", _line_chunk)


class StreamTransport(StreamingTransport):
    name = "stream"
    content_type = "application/x-ndjson"

    def encode(self, frame: Frame) -> bytes:
        return ndjson(frame)

    def encode_chunk(self, frame: Frame) -> bytes:
        return ndjson_chunk(frame)

    def encoder(self, *, chunked: bool) -> Callable[[Frame], bytes]:
        return ndjson_chunk if chunked else ndjson

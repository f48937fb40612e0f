"""Frames out of streamed bytes: NDJSON (``stream``) and Server-Sent Events
(``sse``), fed chunk by chunk as they arrive (a frame may span chunks).

>>> d = NDJSONDecoder()
>>> d.feed(b'{"type":"ping"}\\n{"type":')
[{'type': 'ping'}]
>>> d.feed(b'"ping"}\\n')
[{'type': 'ping'}]
"""

from __future__ import annotations

import json
from typing import Any


class DecodeError(ValueError):
    """The bytes are not frames of the protocol."""


def _frame(text: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DecodeError(f"not JSON: {text!r:.200}") from exc
    if not isinstance(value, dict):
        raise DecodeError(f"a frame that is not an object: {text!r:.200}")
    return value


class NDJSONDecoder:
    """One JSON frame per ``\\n``-terminated line."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        return [_frame(line) for line in lines if line.strip()]


class SSEDecoder:
    """Server-Sent Events into frames: a default event is a ``message``
    frame whose data is the message; ``channel_error`` and the other named
    events carry the whole frame in ``data`` (docs/protocol.md, sse).

    >>> SSEDecoder().feed(b'event: ping\\ndata: {"type":"ping"}\\n\\ndata: {"a":1}\\nid: x\\n\\n')
    [{'type': 'ping'}, {'type': 'message', 'data': {'a': 1}}]
    """

    def __init__(self) -> None:
        self._rest = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        frames = []
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").removesuffix("\r")
            if not line:  # the end of an event
                if self._data:
                    data = _frame("\n".join(self._data))
                    frames.append({"type": "message", "data": data} if not self._event else data)
                self._event, self._data = "", []
            elif not line.startswith(":"):  # ":..." is a comment
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    self._event = "" if value == "message" else value
                elif name == "data":
                    self._data.append(value)
        return frames

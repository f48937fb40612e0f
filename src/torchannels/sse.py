"""A pure encoder for Server-Sent Events (the WHATWG ``text/event-stream``).

>>> encode_event(b'{"a":1}', event="reset", id="chat=ab12:3")
b'event: reset\\ndata: {"a":1}\\nid: chat=ab12:3\\n\\n'
"""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _field(name: bytes, value: str) -> bytes:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {name.decode()} must be one line")
    return name + b": " + value.encode() + b"\n"


def encode_data(data: bytes) -> bytes:
    """``data:`` lines for ``data``; every line break starts a new line."""
    return b"".join(b"data: " + line + b"\n" for line in _LINE_BREAK.split(data))


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
    return out + b"\n"


def encode_comment(text: str = "") -> bytes:
    """A comment line (``: text``) and blank line; browsers ignore it, proxies
    see traffic, so it serves as a keep-alive."""
    return b"".join(b": " + line + b"\n" for line in _LINE_BREAK.split(text.encode())) + b"\n"

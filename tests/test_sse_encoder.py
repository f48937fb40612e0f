"""The pure SSE encoder: input -> exact bytes."""

from __future__ import annotations

from typing import Any

import pytest

from support import parse_sse
from torchannels.transports.sse import encode_data, encode_event, encode_fields


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", b"data: \n"),
        (b"x", b"data: x\n"),
        (b'{"a":1}', b'data: {"a":1}\n'),
        (b"one\ntwo", b"data: one\ndata: two\n"),
        (b"one\r\ntwo", b"data: one\ndata: two\n"),
        (b"one\rtwo", b"data: one\ndata: two\n"),
        (b"one\n\rtwo", b"data: one\ndata: \ndata: two\n"),
        (b"one\r\n\r\ntwo", b"data: one\ndata: \ndata: two\n"),
        (b"end\n", b"data: end\ndata: \n"),
        (b"\n", b"data: \ndata: \n"),
        (b" lead", b"data:  lead\n"),
        (b": not a comment", b"data: : not a comment\n"),
        ("caf\u00e9".encode(), "data: caf\u00e9\n".encode()),
    ],
)
def test_encode_data(data: bytes, expected: bytes) -> None:
    assert encode_data(data) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, b"\n"),
        ({"data": b"hi"}, b"data: hi\n\n"),
        ({"data": b"a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": b"a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": b"{}", "event": "reset"}, b"event: reset\ndata: {}\n\n"),
        ({"data": b"{}", "id": "a=e:1,b=e:2"}, b"data: {}\nid: a=e:1,b=e:2\n\n"),
        ({"id": "a=e:3"}, b"id: a=e:3\n\n"),
        ({"id": ""}, b"id: \n\n"),
        ({"retry": 1000}, b"retry: 1000\n\n"),
        ({"retry": 0}, b"retry: 0\n\n"),
        (
            {"data": b'{"a":1}', "event": "subscribed", "id": "chat=ab12:3", "retry": 250},
            b'retry: 250\nevent: subscribed\ndata: {"a":1}\nid: chat=ab12:3\n\n',
        ),
        ({"event": "connected"}, b"event: connected\n\n"),
        ({"data": b"x", "event": "caf\u00e9"}, "event: caf\u00e9\ndata: x\n\n".encode()),
    ],
)
def test_encode_event(args: dict[str, Any], expected: bytes) -> None:
    assert encode_event(**args) == expected
    assert encode_fields(**args) == expected[:-1]  # the same fields, not yet dispatched


@pytest.mark.parametrize(
    "args",
    [
        {"id": "a\nb"},
        {"id": "a\rb"},
        {"id": "a\r\nb"},
        {"id": "trailing\n"},
        {"id": "nul\x00"},
        {"event": "a\nb"},
        {"event": "a\rb"},
        {"event": "x\r\n"},
        {"retry": -1},
        {"data": b"ok", "id": "bad\n"},
    ],
)
def test_encode_event_refuses(args: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_event(**args)


@pytest.mark.parametrize(
    "data",
    [b"", b"x", b"a\nb", b"a\r\nb", b"a\rb", b"\n\n", b" x ", b'{"k": "v"}'],
)
def test_browser_sees_the_data_with_line_breaks_normalised(data: bytes) -> None:
    """What a spec-following parser rebuilds is the data, with every line
    break turned into LF (the only loss SSE allows)."""
    [event] = parse_sse(encode_event(data, event="e", id="c=e:1"))
    expected = data.decode().replace("\r\n", "\n").replace("\r", "\n")
    assert (event.event, event.data, event.id) == ("e", expected, "c=e:1")

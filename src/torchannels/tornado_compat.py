"""Every reach into Tornado beyond its documented API, in one place.

The write path and the listener need a few things Tornado does not promise:
a handler's output transforms, the stream under an HTTP/1 request or a
WebSocket, a stream's socket, a stream's own ``write_to_fd``, the buffer
of a header read, a handler's status reason, a stream's class swapped
for a subclass, and a detached stream's socket taken from it. Each is one
function here, so a Tornado release that changes one breaks one place,
and ``tests/test_tornado_compat.py`` (which checks the installed version
is within :data:`SUPPORTED` and each reach below still finds what it
expects) fails by name.

Supported: Tornado 6.5 and 6.6 (``>= 6.5, < 6.7``). Before raising the
upper bound, run that test against the new release.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, TypeVar

import tornado
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, SSLIOStream
from tornado.web import GZipContentEncoding

if TYPE_CHECKING:
    from tornado.httputil import HTTPServerRequest
    from tornado.web import RequestHandler
    from tornado.websocket import WebSocketHandler

#: The Tornado versions this module was checked against: ``[low, high)``.
SUPPORTED: tuple[tuple[int, int], tuple[int, int]] = ((6, 5), (6, 7))

_Stream = TypeVar("_Stream", bound=IOStream)


def supported(version: tuple[int, ...] = tornado.version_info) -> bool:
    """True if ``version`` (Tornado's ``version_info``) is within :data:`SUPPORTED`.

    >>> supported((6, 6, 1, 0)), supported((7, 0, 0, 0))
    (True, False)
    """
    low, high = SUPPORTED
    return low <= tuple(version[:2]) < high


def request_stream(request: HTTPServerRequest) -> IOStream | None:
    """The stream under an HTTP/1 ``request`` (``HTTP1Connection.stream``);
    None for any other kind of connection."""
    connection = request.connection
    if isinstance(connection, HTTP1Connection):
        return connection.stream
    return None


def websocket_stream(handler: WebSocketHandler) -> IOStream:
    """The stream of an open WebSocket (``handler.ws_connection.stream``)."""
    protocol = handler.ws_connection
    assert protocol is not None and protocol.stream is not None, "the WebSocket is not open"
    return protocol.stream


def drop_gzip(handler: RequestHandler) -> bool:
    """Remove Tornado's gzip output transform from ``handler``
    (``handler._transforms``, set once the request runs); True if no other
    output transform is left (an app's own would need every write)."""
    kept = [t for t in handler._transforms if not isinstance(t, GZipContentEncoding)]
    handler._transforms = kept
    return not kept


def stream_socket(stream: IOStream) -> socket.socket:
    """The socket of ``stream`` (``IOStream.socket``)."""
    return stream.socket


def sends_plainly(stream: IOStream) -> bool:
    """True if ``stream`` sends with Tornado's own ``IOStream.write_to_fd``
    (a plain ``send``), so a caller may send on its socket directly; False
    for TLS or a stream that sends its own way."""
    return (
        isinstance(stream, IOStream)
        and not isinstance(stream, SSLIOStream)
        and type(stream).write_to_fd is IOStream.write_to_fd
    )


def take_socket(stream: IOStream) -> tuple[socket.socket, bytes]:
    """Take the socket of a plain ``stream`` that Tornado let go of
    (``RequestHandler.detach()``) and that holds nothing to write, with the
    bytes it read ahead (``IOStream._read_buffer``): the stream stops
    watching it (``IOLoop.remove_handler``, ``IOStream._state``) and counts
    as closed without closing it (``IOStream._closed``, ``.socket``), so no
    late call on the stream can touch a descriptor no longer its own."""
    sock = stream.socket
    ahead = bytes(stream._read_buffer)
    stream.io_loop.remove_handler(sock)
    stream._state = None
    stream._closed = True
    stream.socket = None  # type: ignore[assignment]
    return sock, ahead


def release_websocket(handler: WebSocketHandler) -> None:
    """Let go of an open WebSocket's protocol and HTTP connection once its
    socket is taken (:func:`take_socket`), from ``open()``: Tornado's
    protocol counts as closed on both sides (``client_terminated``,
    ``server_terminated``: the frame loop it starts after ``open()`` reads
    nothing, and it then calls the handler's ``on_ws_connection_close``),
    the handler forgets it (``ws_connection``), and the request its HTTP
    connections (``request.connection``, ``request.server_connection``,
    which hold the stream)."""
    protocol = handler.ws_connection
    assert protocol is not None, "the WebSocket is not open"
    protocol.client_terminated = True
    protocol.server_terminated = True
    handler.ws_connection = None
    handler.request.connection = None
    handler.request.server_connection = None


def adopt_stream(stream: IOStream, subclass: type[_Stream]) -> _Stream | None:
    """Make a plain ``IOStream`` an instance of ``subclass`` (one that adds
    behaviour only, no state of its own) by swapping its ``__class__``;
    None, and no change, for any other stream (TLS)."""
    if type(stream) is not IOStream:
        return None
    stream.__class__ = subclass
    assert isinstance(stream, subclass)
    return stream


def header_read_buffer(stream: IOStream) -> bytes | None:
    """What ``stream`` has buffered of a read it is making until a regular
    expression (the request line and headers: ``_read_regex`` and
    ``_read_buffer``); None when it is making no such read."""
    if getattr(stream, "_read_regex", None) is None:
        return None
    return bytes(getattr(stream, "_read_buffer", b""))


def status_reason(handler: RequestHandler) -> str:
    """The reason phrase of ``handler``'s status (``handler._reason``)."""
    reason: str = handler._reason
    return reason


def answered(handler: RequestHandler) -> bool:
    """Whether ``handler`` has finished its response (``handler._finished``):
    an overridable hook such as ``identify()`` may answer the request itself."""
    finished: bool = handler._finished
    return finished

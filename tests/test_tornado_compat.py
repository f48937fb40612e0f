"""The Tornado versions torchannels supports, and each of Tornado's internals
it reaches into (all of them in torchannels/tornado_compat.py), checked
against the installed Tornado over real loopback sockets.

A Tornado upgrade outside ``tornado_compat.SUPPORTED`` fails the first test
by name; one that changes an internal fails the test of that internal.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import socket
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import tornado
import tornado.web
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets

from support import eventually
from torchannels import tornado_compat as compat

ROOT = Path(__file__).parents[1]


def test_the_installed_tornado_is_supported() -> None:
    low, high = compat.SUPPORTED
    assert compat.supported(tornado.version_info), (
        f"Tornado {tornado.version} is outside the versions torchannels supports "
        f"(>= {low[0]}.{low[1]}, < {high[0]}.{high[1]}, tornado_compat.SUPPORTED): check "
        "every function of tornado_compat.py against it, then widen SUPPORTED"
    )
    assert not compat.supported((low[0], low[1] - 1, 0, 0))
    assert not compat.supported((*high, 0, 0))


def test_the_package_requires_no_tornado_older_than_supported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [spec] = [d for d in project["dependencies"] if d.startswith("tornado")]
    found = re.fullmatch(r"tornado>=(\d+)\.(\d+)", spec)
    assert found is not None, spec
    assert (int(found[1]), int(found[2])) == compat.SUPPORTED[0]


def _tornado_privates() -> set[str]:
    """The private attributes Tornado's server-side classes set on themselves."""
    names: set[str] = set()
    for module in ("web", "websocket", "iostream", "httpserver", "http1connection", "tcpserver"):
        source = (Path(tornado.__file__).parent / f"{module}.py").read_text()
        names.update(re.findall(r"self\.(_[a-z]\w*)\s*[:=]", source))
    return names


def _reaches(path: Path, privates: set[str]) -> list[str]:
    """Where ``path`` reads or writes one of Tornado's ``privates``, or swaps
    an object's class. ``self._x`` counts only in a class that does not set
    ``_x`` itself (so a class's own ``_reason`` is its own)."""
    found: list[str] = []

    def own(cls: ast.ClassDef) -> set[str]:
        names = {
            node.attr
            for node in ast.walk(cls)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
        }
        for node in ast.walk(cls):  # __slots__ = ("_a", ...)
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                names.update(
                    c.value
                    for c in ast.walk(node.value)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                )
        return names

    def visit(node: ast.AST, mine: set[str]) -> None:
        if isinstance(node, ast.ClassDef):
            mine = own(node)
        if isinstance(node, ast.Attribute):
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr in privates and not (on_self and node.attr in mine):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
            if node.attr == "__class__" and isinstance(node.ctx, ast.Store):
                found.append(f"{path.name}:{node.lineno} .__class__ =")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr"):
            for arg in node.args[1:2]:
                if isinstance(arg, ast.Constant) and arg.value in privates:
                    found.append(f"{path.name}:{node.lineno} {arg.value!r}")
        for child in ast.iter_child_nodes(node):
            visit(child, mine)

    visit(ast.parse(path.read_text()), set())
    return found


def test_only_the_compat_module_reaches_into_tornado() -> None:
    privates = _tornado_privates()
    assert {"_transforms", "_reason", "_read_buffer", "_read_regex"} <= privates
    package = ROOT / "src" / "torchannels"
    assert _reaches(package / "tornado_compat.py", privates)  # the check sees them
    offenders = [
        reach
        for path in sorted(package.rglob("*.py"))
        if path.name != "tornado_compat.py"
        for reach in _reaches(path, privates)
    ]
    assert not offenders, "use (or add to) torchannels/tornado_compat.py"


# -- each reach, against the installed Tornado -------------------------------------


class _Probe(tornado.web.RequestHandler):
    seen: dict[str, Any]

    def get(self) -> None:
        stream = compat.request_stream(self.request)
        assert stream is not None
        seen = type(self).seen
        seen["gzip_was_on"] = any(
            isinstance(t, tornado.web.GZipContentEncoding)
            for t in self._transforms  # the shape drop_gzip relies on
        )
        seen["only_gzip"] = compat.drop_gzip(self)
        seen["transforms_after"] = list(self._transforms)
        seen["stream"] = stream
        seen["socket"] = compat.stream_socket(stream)
        seen["plain"] = compat.sends_plainly(stream)
        self.set_status(418)
        seen["reason"] = compat.status_reason(self)
        seen["answered_before"] = compat.answered(self)
        self.finish("ok")
        seen["answered_after"] = compat.answered(self)


class _Socket(tornado.websocket.WebSocketHandler):
    seen: dict[str, Any]

    def open(self, *args: Any, **kwargs: Any) -> None:
        type(self).seen["ws_stream"] = compat.websocket_stream(self)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    _Probe.seen, _Socket.seen = {}, {}
    app = tornado.web.Application([("/", _Probe), ("/ws", _Socket)], compress_response=True)
    [sock] = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server = HTTPServer(app)
    server.add_sockets([sock])
    yield sock.getsockname()[1]
    server.stop()
    await server.close_all_connections()


async def test_an_http1_request_has_a_stream_transforms_and_a_reason(port: int) -> None:
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/", headers={"Accept-Encoding": "gzip"}, raise_error=False
    )
    assert response.code == 418 and response.body == b"ok"
    seen = _Probe.seen
    assert seen["gzip_was_on"] and seen["only_gzip"] and seen["transforms_after"] == []
    assert type(seen["stream"]) is IOStream
    assert isinstance(seen["socket"], socket.socket)
    assert seen["plain"] is True
    assert seen["reason"] == "I'm a Teapot"
    assert seen["answered_before"] is False and seen["answered_after"] is True


async def test_an_open_websocket_has_a_stream(port: int) -> None:
    conn = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
    try:
        await eventually(lambda: "ws_stream" in _Socket.seen)
        assert isinstance(_Socket.seen["ws_stream"], IOStream)
    finally:
        conn.close()


def test_write_to_fd_is_the_one_a_direct_writer_replaces() -> None:
    assert list(inspect.signature(IOStream.write_to_fd).parameters) == ["self", "data"]

    class OwnWay(IOStream):
        def write_to_fd(self, data: memoryview) -> int:
            return super().write_to_fd(data)

    a, b = socket.socketpair()
    try:
        assert compat.sends_plainly(IOStream(a))
        assert not compat.sends_plainly(OwnWay(b))
    finally:
        a.close()
        b.close()


async def test_a_header_read_is_seen_and_a_stream_can_be_adopted() -> None:
    class Adopted(IOStream):
        pass

    a, b = socket.socketpair()
    stream = IOStream(a)
    try:
        assert compat.header_read_buffer(stream) is None  # no read yet
        read = stream.read_until_regex(rb"\r?\n\r?\n", max_bytes=1024)
        b.sendall(b"GET / HTTP/1.1\r\nHost: x")
        await eventually(lambda: compat.header_read_buffer(stream) == b"GET / HTTP/1.1\r\nHost: x")
        b.sendall(b"\r\n\r\n")
        assert await asyncio.wait_for(read, 5) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        assert compat.header_read_buffer(stream) is None  # the read is over
        assert compat.adopt_stream(stream, Adopted) is stream
        assert type(stream) is Adopted and compat.stream_socket(stream) is a
        assert compat.adopt_stream(stream, Adopted) is None  # only a plain IOStream
        b.sendall(b"more")
        assert await asyncio.wait_for(stream.read_bytes(4), 5) == b"more"  # still works
    finally:
        stream.close()
        b.close()


class _Detached(tornado.web.RequestHandler):
    seen: dict[str, Any]

    def get(self) -> None:
        self.set_header("Content-Length", "2")
        self.flush()
        stream = self.detach()
        seen = type(self).seen
        seen["handlers_before"] = stream.socket.fileno() in stream.io_loop.handlers  # type: ignore[attr-defined]
        sock, ahead = compat.take_socket(stream)
        seen["socket"], seen["ahead"] = sock, ahead
        seen["handlers_after"] = sock.fileno() in stream.io_loop.handlers  # type: ignore[attr-defined]
        seen["closed"] = stream.closed()
        stream.close()  # a late close of the stream leaves the socket alone
        sock.send(b"ok")
        sock.close()


async def test_a_detached_stream_gives_its_socket_up() -> None:
    _Detached.seen = {}
    app = tornado.web.Application([("/", _Detached)])
    [sock] = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server = HTTPServer(app)
    server.add_sockets([sock])
    try:
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        assert response.body == b"ok"  # sent on the taken socket, after the stream let go
        seen = _Detached.seen
        assert seen["handlers_before"] and not seen["handlers_after"]  # unwatched
        assert seen["closed"] and isinstance(seen["socket"], socket.socket)
        assert seen["ahead"] == b""
    finally:
        server.stop()
        await server.close_all_connections()


class _Released(tornado.websocket.WebSocketHandler):
    seen: dict[str, Any]

    def open(self, *args: Any, **kwargs: Any) -> None:
        sock, ahead = compat.take_socket(compat.websocket_stream(self))
        compat.release_websocket(self)
        seen = type(self).seen
        seen["socket"], seen["ahead"] = sock, ahead
        seen["connections"] = (self.request.connection, self.request.server_connection)
        seen["protocol"] = self.ws_connection
        sock.send(b"\x81\x02ok")  # a text frame, on the socket taken

    def on_ws_connection_close(
        self, close_code: int | None = None, close_reason: str | None = None
    ) -> None:
        type(self).seen["let go"] = True  # Tornado's frame loop ended at once

    def on_message(self, message: str | bytes) -> None:
        type(self).seen["message"] = message

    def on_close(self) -> None:
        type(self).seen["on_close"] = True


async def test_an_open_websocket_lets_its_socket_be_taken() -> None:
    _Released.seen = {}
    app = tornado.web.Application([("/ws", _Released)])
    [sock] = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server = HTTPServer(app)
    server.add_sockets([sock])
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    conn = await tornado.websocket.websocket_connect(url)
    try:
        assert await conn.read_message() == "ok"
        seen = _Released.seen
        await eventually(lambda: "let go" in seen)
        assert seen["connections"] == (None, None) and seen["protocol"] is None
        assert seen["ahead"] == b""
        await conn.write_message("hello")
        taken: socket.socket = seen["socket"]
        taken.setblocking(True)
        taken.settimeout(5)
        data = taken.recv(64)  # Tornado read none of it: the frame is all here
        assert len(data) == 2 + 4 + 5 and data[0] == 0x81
        assert "message" not in seen and "on_close" not in seen
    finally:
        conn.close()
        server.stop()
        _Released.seen["socket"].close()


def test_the_connection_model_does_not_know_tornado() -> None:
    """``LiveConnection`` is transport-agnostic: the HTTP side is http_live.py."""
    source = (ROOT / "src" / "torchannels" / "transports" / "connection.py").read_text()
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {m for m in imported if m.split(".")[0] == "tornado"}
    assert "class StreamingTransport" not in source

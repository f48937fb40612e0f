"""What the server tests share: ``torchannels`` processes and real clients.

Every test under tests/server/ that talks to ``python -m torchannels`` uses
these: :class:`ServerProcess` (a ``serve`` process whose port is parsed from its
banner), :func:`cli` (a one-shot command), Tornado's HTTP and WebSocket
clients, and bare-socket HTTP and WebSocket clients where a test needs to
control every byte (a chunked body that must end cleanly, a WebSocket peer
that never reads or never answers a close). Tokens are signed here with
``hmac`` so the hub is checked against an independent JWT encoder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import tornado.httpclient
import tornado.web
import tornado.websocket

from support import HOUSEKEEPING, Stream, content, read_ws_frame

KEY = "test-api-key"
SECRET = "test-token-secret"
#: ``--max-publish-bytes`` of the main hub.
LIMIT = 2048
#: Upper bounds of every wait, in seconds.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
WAIT = 10.0
LISTENING = re.compile(rb"torchannels server listening on http://127\.0\.0\.1:(\d+)/\n")
OPENAPI_FILE = Path(__file__).parents[2] / "src" / "torchannels" / "server" / "openapi.json"
API_DOC = Path(__file__).parents[2] / "docs" / "api.md"


# -- processes -----------------------------------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test runner's environment without any TORCHANNELS_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHANNELS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m torchannels ARGS`` to completion (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "torchannels", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        input=stdin,
        timeout=30,
        check=False,
    )


class ServerProcess:
    """A ``torchannels serve`` process; ``port`` is parsed from its banner."""

    def __init__(
        self,
        log_dir: Path,
        args: list[str],
        env: Mapping[str, str] | None,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        """``open_files``: the (soft, hard) RLIMIT_NOFILE the process starts with."""
        self.log_path = log_dir / f"hub-{time.monotonic_ns()}.log"

        def limit() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "torchannels", "serve", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=clean_env(env),
                preexec_fn=limit if open_files is not None else None,
            )
        self.stdout = b""
        try:
            banner = self._read_line(START_TIMEOUT)
        except BaseException:
            self.close()
            raise
        match = LISTENING.fullmatch(banner)
        if match is None:
            self.close()
            raise AssertionError(f"no banner: {banner!r}; log: {self.log()}")
        self.port = int(match.group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def _read_line(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.stdout:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"hub did not start in {timeout}s; log: {self.log()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break  # exited before printing its banner
                self.stdout += chunk
        line, _, self.stdout = self.stdout.partition(b"\n")
        return line + b"\n"

    def next_line(self, timeout: float = START_TIMEOUT) -> str:
        """The next line the process printed (after the banner's first)."""
        return self._read_line(timeout).decode()

    def url(self, path: str = "/channels", **query: Any) -> str:
        qs = urlencode(query, doseq=True)
        return self.base + path + (f"?{qs}" if qs else "")

    def ws_url(self, **query: Any) -> str:
        return self.url("/channels/ws", **query).replace("http://", "ws://", 1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    async def exited(self, timeout: float) -> int:
        """Wait (without blocking the event loop) for the process to exit."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"hub still running after {timeout}s; log: {self.log()}")
            await asyncio.sleep(0.02)
        return self._collect()

    def _collect(self) -> int:
        out, _ = self.proc.communicate(timeout=STOP_TIMEOUT)
        self.stdout += out or b""
        return self.proc.returncode

    def close(self) -> None:
        """Teardown: SIGTERM, a bounded wait, then SIGKILL; never raises."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            self._collect()


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def refused(port: int) -> bool:
    """True if nothing accepts TCP connections on ``port`` any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT) -> None:
    """Ask ``await check()`` every 20 ms until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.02)


# -- HTTP ----------------------------------------------------------------------------


Response = tornado.httpclient.HTTPResponse


async def fetch(
    client: Any, url: str, method: str = "GET", body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None, timeout: float = WAIT,
) -> Response:  # fmt: skip
    response: Response = await client.fetch(
        url, method=method, body=body, headers=dict(headers or {}), raise_error=False,
        request_timeout=timeout, allow_nonstandard_methods=True,
    )  # fmt: skip
    return response


def auth(key: str | None = KEY) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


async def api(
    client: Any, hub: ServerProcess, path: str, body: object = None, *,
    key: str | None = KEY, raw: bytes | None = None, method: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:  # fmt: skip
    """A publish-API request: ``body`` as JSON (or ``raw`` bytes), POST unless
    GET; ``headers`` besides the key's."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    verb = method or ("GET" if data is None else "POST")
    return await fetch(client, hub.base + path, verb, data, {**auth(key), **(headers or {})})


def as_json(response: Response) -> Any:
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        response.code, response.headers.get("Content-Type"), response.body,
    )  # fmt: skip
    return json.loads(response.body)


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    body = as_json(response)
    assert (response.code, body.get("error")) == (status, code), body
    assert set(body) == {"error", "message"} and body["message"], body
    assert isinstance(body["message"], str)
    return dict(body)


async def poll(
    client: Any, hub: ServerProcess, channels: list[str], *, transport: str = "poll",
    headers: Mapping[str, str] | None = None, timeout: float = WAIT, **query: Any,
) -> dict[str, Any]:  # fmt: skip
    response = await fetch(
        client, hub.url(transport=transport, channel=channels, **query), headers=headers,
        timeout=timeout,
    )  # fmt: skip
    doc = as_json(response)
    assert response.code == 200, doc
    assert set(doc) == {"cursor", "client", "frames"}
    return dict(doc)


# -- streaming and WebSocket clients ---------------------------------------------------


class Live(Stream):
    """A streaming GET (``stream`` or ``sse``) to a hub process: a
    :class:`support.Stream` (HTTP/1.1 spoken by hand, so ``complete`` tells a
    body that ended cleanly from one cut off), waited on by content frames."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(url, dict(headers or {}))

    def content(self) -> list[dict[str, Any]]:
        return content(self.frames())

    async def wait(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = WAIT
    ) -> list[dict[str, Any]]:
        """Wait until ``predicate(content frames)`` holds; return them."""
        await self.wait_for(lambda _: predicate(self.content()), timeout)
        return self.content()

    async def ended(self, timeout: float = WAIT) -> None:
        await asyncio.wait_for(asyncio.shield(self.response), timeout)

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.response, 5)


class Socket:
    """A Tornado WebSocket client collecting frames; closed at teardown."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self.closed = False

    def content(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] not in HOUSEKEEPING]

    async def wait(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = WAIT
    ) -> list[dict[str, Any]]:
        async def loop() -> None:
            while not predicate(self.content()):
                if self.closed:
                    raise AssertionError(f"socket closed first: {self.frames}")
                message = await self.conn.read_message()
                if message is None:
                    self.closed = True
                else:
                    self.frames.append(json.loads(message))

        await asyncio.wait_for(loop(), timeout)
        return self.content()

    async def aclose(self) -> None:
        """Close and wait for the socket to be gone, so none is left to the GC."""
        self.conn.close()
        with contextlib.suppress(AssertionError, TimeoutError):
            await self.until_closed(timeout=2)
        stream = getattr(self.conn, "stream", None)
        if stream is not None and not stream.closed():
            stream.close()

    async def until_closed(self, timeout: float = WAIT) -> None:
        with contextlib.suppress(AssertionError):
            await self.wait(lambda _: False, timeout)
        assert self.closed


class RawWebSocket:
    """A WebSocket client on a bare socket that never writes after the
    handshake: no pongs, no close reply, and it reads only when asked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, target: str, rcvbuf: int | None = None) -> RawWebSocket:
        sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the window starts small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self, timeout: float = WAIT) -> tuple[int, bytes]:
        """The next frame: (opcode, payload)."""
        return await asyncio.wait_for(read_ws_frame(self.reader), timeout)

    async def until_close(self, timeout: float = WAIT) -> tuple[list[dict[str, Any]], int]:
        """Text frames up to the close frame, and the close code."""
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = await self.frame(max(0.1, deadline - time.monotonic()))
            if opcode == 0x8:
                return frames, struct.unpack("!H", payload[:2])[0]
            if opcode == 0x1:
                frames.append(json.loads(payload))

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# -- tokens --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: Mapping[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    """An HS256 JWT made without torchannels (RFC 7519 by hand)."""
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(dict(claims)).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


def b64json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return value


def jwt_claims(token: str) -> dict[str, Any]:
    return b64json(token.split(".")[1])


def token_for(*channels: str, ttl: float = 300, **extra: Any) -> str:
    return jwt({"exp": time.time() + ttl, "channels": list(channels), **extra})


TRANSPORTS = ("poll", "longpoll", "stream", "sse", "websocket")


async def first_answer(
    http: Any, lives: Any, sockets: Any, hub: ServerProcess, transport: str,
    channels: list[str], headers: Mapping[str, str] | None = None, **query: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """The content frames a fresh subscription gets, until every channel is
    settled (``subscribed`` or ``error``)."""

    def settled(frames: list[dict[str, Any]]) -> bool:
        done = {f.get("channel") for f in frames if f["type"] in ("subscribed", "error")}
        return done >= set(channels)

    if transport in ("poll", "longpoll"):
        doc = await poll(http, hub, channels, transport=transport, headers=headers, **query)
        frames: list[dict[str, Any]] = doc["frames"]
        assert settled(frames), frames
        return frames
    if transport == "websocket":
        sock = await sockets(hub.ws_url(channel=channels, **query))
        frames = await sock.wait(settled)
        assert sock.frames[0]["type"] == "connected"
        return frames
    live = lives(hub.url(transport=transport, channel=channels, **query), headers)
    frames = await live.wait(settled)
    assert live.status == 200
    await live.aclose()
    return frames


def outline(frames: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for f in frames:
        if f["type"] == "error":
            out.append(("error", f["channel"], f["code"]))
        elif f["type"] == "subscribed":
            out.append(("subscribed", f["channel"]))
        elif f["type"] == "reconnect":
            out.append(("reconnect", f["reason"]))
        elif f["type"] == "message":
            out.append(("message", f["data"]["channel"]))
        else:
            out.append((f["type"],))
    return out


def openapi() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(OPENAPI_FILE.read_text())
    return doc

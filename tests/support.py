"""Test support: real Tornado servers on loopback sockets, real HTTP clients.

Imported by tests as ``support`` (not ``conftest``, which is ambiguous once
tests/e2e has a conftest of its own)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import re
import socket
import ssl
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import tornado.httpclient
import tornado.httpserver
import tornado.testing
import tornado.web
from tornado.websocket import WebSocketClientConnection

from torchannels import Hub
from torchannels.errors import CLOSE_SLOW
from torchannels.frames import Frame

#: The frame types that do not concern any channel (keep-alive and framing).
HOUSEKEEPING = frozenset({"connected", "ping"})
#: Transports that hold one long response open.
STREAMING = ("stream", "sse")
#: All transports, in the order tests are parametrised.
TRANSPORTS = ("poll", "longpoll", "stream", "sse")


class Server:
    """A running Tornado app on 127.0.0.1 with helpers to talk to it."""

    def __init__(
        self, app: tornado.web.Application, hub: Hub, tls: ssl.SSLContext | None = None
    ) -> None:
        self.app = app
        self.hub = hub
        sock, self.port = tornado.testing.bind_unused_port()
        self.http = tornado.httpserver.HTTPServer(app, ssl_options=tls)
        self.http.add_sockets([sock])
        self.client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        self.streams: list[Stream] = []

    def url(self, path: str = "/channels", **query: Any) -> str:
        qs = urlencode(query, doseq=True)
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{qs}" if qs else "")

    async def fetch(self, url: str, **kwargs: Any) -> tornado.httpclient.HTTPResponse:
        kwargs.setdefault("raise_error", False)
        kwargs.setdefault("request_timeout", 30)
        return await self.client.fetch(url, **kwargs)

    async def poll(self, transport: str = "poll", **query: Any) -> dict[str, Any]:
        """One poll/long-poll request; returns the decoded JSON document
        without its ``client`` (checked to be there: see :meth:`poll_doc`)."""
        doc = await self.poll_doc(transport, **query)
        assert isinstance(doc.pop("client"), str), doc
        return doc

    async def poll_doc(self, transport: str = "poll", **query: Any) -> dict[str, Any]:
        """One poll/long-poll request; the decoded JSON document as it came."""
        resp = await self.fetch(self.url(transport=transport, **query))
        assert resp.code == 200, resp.body
        doc: dict[str, Any] = json.loads(resp.body)
        return doc

    def stream(self, transport: str, headers: dict[str, str] | None = None, **query: Any) -> Stream:
        return self.open(self.url(transport=transport, **query), headers)

    def open(self, url: str, headers: dict[str, str] | None = None) -> Stream:
        """A raw streaming GET of ``url`` (any transport, any query string)."""
        stream = Stream(url, headers or {})
        self.streams.append(stream)
        return stream

    async def close(self) -> None:
        for stream in self.streams:
            stream.close()
        self.client.close()
        self.http.stop()
        await self.http.close_all_connections()
        for stream in self.streams:
            with contextlib.suppress(BaseException):
                await stream.response


def self_signed_tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1,
    and a client context that trusts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(pem)
        with open(key_path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


class Stream:
    """A streaming GET on its own socket whose body is collected as it arrives.

    It speaks HTTP/1.1 itself (chunked or sized bodies) so that :meth:`close`
    really drops the TCP connection, as a browser leaving the page does.
    """

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.buffer = b""
        self.headers: dict[str, str] = {}
        self.status: int | None = None
        #: True once the body ended cleanly (last chunk or full length read).
        self.complete = False
        self._arrived = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self.response: asyncio.Future[int | None] = asyncio.ensure_future(self._run(url, headers))

    async def _run(self, url: str, headers: Mapping[str, str]) -> int | None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        self._writer = writer
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        try:
            status_line = await reader.readline()
            if not status_line:
                return None
            self.status = int(status_line.split()[1])
            while line := (await reader.readline()).decode("latin-1").rstrip("\r\n"):
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self._arrived.set()
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while size := int((await reader.readline()).split(b";")[0], 16):
                    self._on_chunk(await reader.readexactly(size))
                    await reader.readexactly(2)
                await reader.readexactly(2)  # the CRLF after the last chunk
                self.complete = True
            elif "content-length" in self.headers:
                self._on_chunk(await reader.readexactly(int(self.headers["content-length"])))
                self.complete = True
            else:
                while chunk := await reader.read(65536):
                    self._on_chunk(chunk)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # the connection ended mid-body; ``complete`` stays False
        finally:
            writer.close()
            self._arrived.set()
        return self.status

    def _on_chunk(self, chunk: bytes) -> None:
        self.buffer += chunk
        self._arrived.set()

    async def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 10) -> bytes:
        """Wait until ``predicate(buffer)`` holds; return the buffer."""

        async def loop() -> bytes:
            while not predicate(self.buffer):
                self._arrived.clear()
                if self.response.done():
                    if predicate(self.buffer):
                        break
                    raise AssertionError(f"stream ended first: {self.buffer!r}")
                done = asyncio.ensure_future(self._arrived.wait())
                either: list[asyncio.Future[Any]] = [done, self.response]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                done.cancel()
            return self.buffer

        return await asyncio.wait_for(loop(), timeout)

    async def wait_frames(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
    ) -> list[dict[str, Any]]:
        """Wait until ``predicate(self.frames())`` holds; return the frames."""
        await self.wait_for(lambda _: predicate(self.frames()), timeout)
        return self.frames()

    def lines(self) -> list[dict[str, Any]]:
        """Complete NDJSON lines received so far, decoded."""
        *complete, _ = self.buffer.split(b"\n")
        return [json.loads(line) for line in complete if line]

    def events(self) -> list[SSEEvent]:
        """Complete SSE events received so far."""
        return parse_sse(self.buffer)

    def frames(self) -> list[dict[str, Any]]:
        """Frames received so far, as NDJSON envelopes whatever the transport."""
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            return sse_frames(self.events())
        return self.lines()

    def close(self) -> None:
        """Drop the connection from the client side."""
        if self._writer is not None:
            self._writer.close()
        self.response.cancel()


@dataclass
class SSEEvent:
    """One block of an event stream, as a browser's parser sees it."""

    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


_SSE_LINES = re.compile(r"\r\n|\r|\n")


def parse_sse(raw: bytes) -> list[SSEEvent]:
    """Parse the complete blocks of a ``text/event-stream`` (WHATWG rules).

    Written from the spec, independently of torchannels' encoder: ``field:
    value`` with one optional space after the colon, ``:`` comments, data
    lines joined with ``\\n``, a blank line ending the block.
    """
    text = raw.decode("utf-8")
    lines = _SSE_LINES.split(text)
    events: list[SSEEvent] = []
    current = SSEEvent()
    data: list[str] = []
    touched = False
    for line in lines[:-1]:  # the last piece is an unterminated line
        if line == "":
            if touched:
                current.data = "\n".join(data) if data else None
                events.append(current)
            current, data, touched = SSEEvent(), [], False
            continue
        touched = True
        if line.startswith(":"):
            current.comments.append(line[1:].removeprefix(" "))
            continue
        name, colon, value = line.partition(":")
        value = value.removeprefix(" ") if colon else ""
        if name == "event":
            current.event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            current.id = value
        elif name == "retry" and value.isdigit():
            current.retry = int(value)
    return events


def sse_frames(events: Iterable[SSEEvent]) -> list[dict[str, Any]]:
    """SSE events turned back into the NDJSON envelopes they stand for."""
    out: list[dict[str, Any]] = []
    for ev in events:
        if ev.data is None:
            if "ping" in ev.comments:
                out.append({"type": "ping"})
            continue
        if ev.event is None or ev.event == "message":
            out.append({"type": "message", "data": json.loads(ev.data)})
        else:
            body = json.loads(ev.data)
            # protocol.md: error frames are "channel_error" events on SSE.
            expected = "channel_error" if body.get("type") == "error" else body.get("type")
            assert ev.event == expected, (ev.event, body)
            out.append(body)
    return out


def last_event_id(events: Iterable[SSEEvent]) -> str | None:
    """What a browser would send as ``Last-Event-ID`` after ``events``."""
    last: str | None = None
    for ev in events:
        if ev.id is not None:
            last = ev.id
    return last


def track_cursor(start: str, frames: Iterable[dict[str, Any]]) -> str:
    """A client's cursor after ``frames``, computed the way docs/protocol.md
    tells a client to: subscribed and message frames set a channel's position,
    reset and error frames forget it."""
    positions: dict[str, str] = {}
    for entry in filter(None, start.split(",")):
        name, _, pos = entry.partition("=")
        positions[name] = pos
    for frame in frames:
        kind = frame["type"]
        if kind == "subscribed":
            positions[frame["channel"]] = f"{frame['epoch']}:{frame['offset']}"
        elif kind == "message":
            data = frame["data"]
            positions[data["channel"]] = f"{data['epoch']}:{data['offset']}"
        elif kind in ("reset", "error"):
            positions.pop(frame["channel"], None)
    return ",".join(f"{name}={pos}" for name, pos in positions.items())


def content(frames: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames without housekeeping (connected, ping)."""
    return [f for f in frames if f["type"] not in HOUSEKEEPING]


def messages(frames: Iterable[dict[str, Any]], channel: str | None = None) -> list[dict[str, Any]]:
    """The message payloads among ``frames`` (optionally of one channel)."""
    return [
        f["data"]
        for f in frames
        if f["type"] == "message" and (channel is None or f["data"]["channel"] == channel)
    ]


@dataclass
class Received:
    """What one subscribe request delivered."""

    frames: list[dict[str, Any]]
    #: The cursor to come back with: the server's (poll, SSE id) or, for
    #: NDJSON streams, the one the client computes from the frames.
    cursor: str
    stream: Stream | None = None
    #: The signed client id: the poll answer's ``client``, or the
    #: ``connected`` frame's.
    client: str | None = None


SENTINEL_KEY = "__sentinel__"


async def receive(
    server: Server,
    transport: str,
    channels: Iterable[str],
    *,
    cursor: str | None = None,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
    sentinel: str | None = None,
    headers: dict[str, str] | None = None,
    keep_open: bool = False,
    **query: Any,
) -> Received:
    """Subscribe to ``channels`` once on ``transport`` and collect the answer.

    Poll and long-poll make one request. Streaming transports wait until
    ``until(content frames)`` holds; then, if ``sentinel`` names a channel, a
    sentinel message is published there and awaited, so that everything the
    server wrote before it is known to be in (and the sentinel is removed
    from the result). Proves "no duplicates" without sleeping.
    """
    names = list(channels)
    if cursor is not None:
        query["cursor"] = cursor
    if transport in ("poll", "longpoll"):
        resp = await server.fetch(
            server.url(transport=transport, channel=names, **query), headers=headers
        )
        assert resp.code == 200, resp.body
        doc = json.loads(resp.body)
        assert set(doc) == {"cursor", "client", "frames"}, doc
        return Received(doc["frames"], doc["cursor"], client=doc["client"])
    stream = server.stream(transport, headers=headers, channel=names, **query)
    await stream.wait_frames(lambda fs: until is None or until(content(fs)))
    if sentinel is not None:
        server.hub.channel(sentinel).send({SENTINEL_KEY: True})
        await stream.wait_frames(lambda fs: any(SENTINEL_KEY in m for m in messages(fs)))
    frames = stream.frames()
    if transport == "sse":
        start = cursor or ""
        if headers and "Last-Event-ID" in headers:
            start = headers["Last-Event-ID"]
        got = last_event_id(stream.events())
        new_cursor = got if got is not None else start
    else:
        new_cursor = track_cursor(cursor or "", content(frames))
    if not keep_open:
        stream.close()
    kept = [
        f for f in content(frames) if not (f["type"] == "message" and SENTINEL_KEY in f["data"])
    ]
    client = next((f.get("client") for f in frames if f["type"] == "connected"), None)
    return Received(kept, new_cursor, stream if keep_open else None, client)


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait (in small steps) until ``predicate()`` holds, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


RESERVED = frozenset({"channel", "ts", "epoch", "offset"})


def user_keys(message: Mapping[str, Any]) -> dict[str, Any]:
    """A delivered message without the keys torchannels stamps on it."""
    return {k: v for k, v in message.items() if k not in RESERVED}


def outline(frames: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A compact, comparable view of content frames.

    subscribed -> ("subscribed", channel, offset, [state user dicts] or None)
    message    -> ("message", channel, user dict)
    reset      -> ("reset", channel, reason)
    error      -> ("error", channel, code)
    reconnect  -> ("reconnect", reason)
    """
    out: list[tuple[Any, ...]] = []
    for f in content(frames):
        kind = f["type"]
        if kind == "subscribed":
            state = f.get("state")
            out.append(
                (
                    kind,
                    f["channel"],
                    f["offset"],
                    None if state is None else [user_keys(s) for s in state],
                )
            )
        elif kind == "message":
            out.append((kind, f["data"]["channel"], user_keys(f["data"])))
        elif kind == "reset":
            out.append((kind, f["channel"], f["reason"]))
        elif kind == "error":
            out.append((kind, f["channel"], f["code"]))
        elif kind == "reconnect":
            out.append((kind, f["reason"]))
        else:
            out.append((kind,))
    return out


class Framings:
    """Every ``Frame.cached(key, build)`` call made while recording, by frame.

    Records what the public ``cached`` method was asked and answered, and
    each time it actually ran ``build``: enough to see a frame framed once
    and the same bytes handed to every recipient. Made by the ``framings``
    fixture, which wraps (not replaces) ``Frame.cached``.
    """

    def __init__(self) -> None:
        self.answers: list[tuple[Frame, bytes]] = []
        self.builds: list[tuple[Frame, str]] = []

    def answered(self, frame: Frame) -> list[bytes]:
        """The bytes ``cached`` returned for ``frame``, one per call."""
        return [data for f, data in self.answers if f is frame]

    def built(self, frame: Frame) -> list[str]:
        """The keys ``frame`` was framed for, one per ``build`` run."""
        return [key for f, key in self.builds if f is frame]


#: WebSocket opcodes (RFC 6455 5.2).
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


async def read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked WebSocket frame from a server: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


def upgrade_request(target: str, headers: Mapping[str, str]) -> bytes:
    """The bytes of a WebSocket handshake for ``target`` with ``headers``."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {target} HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def upgrade(
    port: int, target: str, headers: Mapping[str, str]
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake sent with exactly ``headers`` (``Host`` and
    ``Origin`` included, as a browser would): the status, and the open
    connection, which the caller closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(target, headers))
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except BaseException:
        writer.close()
        raise
    return int(head.split()[1]), reader, writer


class RawSocket:
    """A WebSocket client on a bare TCP socket: it reads only when told to and
    answers PINGs only when told to, as a stuck or dead peer would not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, query: str, *, rcvbuf: int | None = None) -> RawSocket:
        sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the window stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /channels/ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b" 101 " in head, head
        return cls(reader, writer)

    async def frame(self, timeout: float = 10) -> tuple[int, bytes] | None:
        """The next (opcode, payload), or None at end of stream."""
        try:
            return await asyncio.wait_for(read_ws_frame(self.reader), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def send(self, opcode: int, payload: bytes = b"") -> None:
        n = len(payload)
        assert n <= 0xFFFF
        head = (
            bytes([0x80 | opcode, 0x80 | n])
            if n < 126
            else struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
        )
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    def close(self) -> None:
        self.writer.close()

    async def until_end(self) -> list[tuple[int, bytes]]:
        """Every frame up to the end of the stream, answering a close frame."""
        frames = []
        while (frame := await self.frame()) is not None:
            frames.append(frame)
            if frame[0] == CLOSE:
                self.send(CLOSE, frame[1][:2])
        return frames


def ended_slow(frames: list[tuple[int, bytes]]) -> list[int]:
    """Check that ``frames`` end with ``reconnect`` (slow_consumer) and close
    4001; return the ``n`` of each message before them."""
    kinds = [frame_type(f) for f in frames]
    assert kinds[-2:] == ["reconnect", "CLOSE"], kinds[-5:]
    assert json.loads(frames[-2][1])["reason"] == "slow_consumer"
    assert struct.unpack("!H", frames[-1][1][:2])[0] == CLOSE_SLOW
    return [json.loads(p)["data"]["n"] for op, p in frames if frame_type((op, p)) == "message"]


def frame_type(frame: tuple[int, bytes] | None) -> str:
    """``"ping"``, ``"message"``, ... for text frames; ``"PING"``/``"CLOSE"``
    for control frames; ``"EOF"`` at the end of the stream."""
    if frame is None:
        return "EOF"
    opcode, payload = frame
    if opcode == TEXT:
        kind: str = json.loads(payload)["type"]
        return kind
    return {CLOSE: "CLOSE", PING: "PING", PONG: "PONG"}[opcode]


class Socket:
    """A WebSocket client that collects decoded frames as they arrive."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            raw = await self.conn.read_message()
            if raw is None:
                self.closed.set()
                self._arrived.set()
                return
            self.frames.append(json.loads(raw))
            self._arrived.set()

    def send(self, command: dict[str, Any]) -> None:
        self.conn.write_message(json.dumps(command))

    async def wait(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        """Wait (at most 10 s) until ``predicate(frames)`` holds; the frames."""

        async def loop() -> None:
            while not predicate(self.frames):
                if self.closed.is_set():
                    raise AssertionError(f"socket closed first: {self.frames}")
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(loop(), 10)
        return self.frames

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    def offsets(self, channel: str) -> list[int]:
        return [f["data"]["offset"] for f in self.of("message") if f["data"]["channel"] == channel]

    async def close(self) -> None:
        self.conn.close()
        await asyncio.wait_for(self.closed.wait(), 10)

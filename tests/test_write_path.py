"""The write path of live connections.

- Frames written straight to the socket (the default) are the very bytes
  Tornado's own write path puts on the wire (``direct_writes = False``).
- What reaches one connection in one loop iteration goes out in one write,
  complete and in order.
- ``ids=0`` drops the SSE ``id:`` lines.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest
import tornado.web

from support import Server, eventually, parse_sse
from torchannels import ChannelMixin, Hub
from torchannels import frames as F
from torchannels.identity import ClientIds
from torchannels.protocol import Position
from torchannels.transports import TRANSPORT_CLASSES
from torchannels.transports.connection import LiveConnection
from torchannels.transports.http_live import http_chunk
from torchannels.transports.sse import SSETransport, sse_chunk, sse_event
from torchannels.transports.stream import StreamTransport

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class SlowStream(StreamTransport):
    direct_writes = False


class SlowSSE(SSETransport):
    direct_writes = False


class Client:
    """A bare TCP client that sends one request and keeps every byte it gets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.data = bytearray()
        self.eof = False
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, port: int, request: str) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request.encode())
        return cls(reader, writer)

    async def _read(self) -> None:
        while chunk := await self.reader.read(65536):
            self.data += chunk
        self.eof = True

    @property
    def body(self) -> bytes:
        """Everything after the response headers."""
        head, sep, rest = bytes(self.data).partition(b"\r\n\r\n")
        assert sep, head
        return rest

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()


@pytest.fixture
def one_client_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection gets the same client id, so that two connections'
    bytes can be compared whole (``connected`` carries the id)."""
    monkeypatch.setattr("torchannels.handlers.new_client_id", lambda: "0a1b2c3d-1")
    # The signed id carries when the client began (in milliseconds): the same for both.
    sign = ClientIds.sign
    monkeypatch.setattr(ClientIds, "sign", lambda self, client, since: sign(self, client, 0.0))


def request(path: str, query: str, *, websocket: bool = False, version: str = "1.1") -> str:
    head = f"GET {path}?{query} HTTP/{version}\r\nHost: 127.0.0.1\r\n"
    if websocket:
        head += (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        )
    return head + "\r\n"


def fast_and_slow(make_server: Callable[..., Server], hub: Hub) -> Server:
    """One hub served twice: ``/channels`` writes straight to the socket,
    ``/slow`` through Tornado (``RequestHandler.write``/``flush``, and
    ``IOStream.write`` for WebSocket)."""
    fast: type[ChannelMixin] = type("Fast", (ChannelMixin,), {"hub": hub})
    slow_transports = {**TRANSPORT_CLASSES, "stream": SlowStream, "sse": SlowSSE}
    slow: type[ChannelMixin] = type(
        "Slow", (ChannelMixin,), {"hub": hub, "transports": slow_transports}
    )
    slow_ws = type("SlowWS", (slow.websocket(),), {"direct_writes": False})
    routes: list[tuple[str, type[tornado.web.RequestHandler]]] = [
        (r"/channels/ws", fast.websocket()),
        (r"/slow", slow),
        (r"/slow/ws", slow_ws),
    ]
    return make_server(fast, hub_=hub, routes=routes)


@pytest.mark.parametrize(
    ("transport", "query", "version"),
    [
        ("stream", "channel=A", "1.1"),
        ("sse", "channel=A", "1.1"),
        ("sse", "channel=A&channel=B", "1.1"),
        ("sse", "channel=A&channel=B&ids=0", "1.1"),
        ("sse", "channel=A", "1.0"),
        ("stream", "channel=A", "1.0"),
        ("websocket", "channel=A&channel=B", "1.1"),
    ],
)
@pytest.mark.usefixtures("one_client_id")
async def test_the_fast_path_puts_the_same_bytes_on_the_wire(
    make_server: Callable[..., Server], hub: Hub, transport: str, query: str, version: str
) -> None:
    server = fast_and_slow(make_server, hub)
    ws = transport == "websocket"
    if not ws:
        query += f"&transport={transport}"
    paths = ("/channels/ws", "/slow/ws") if ws else ("/channels", "/slow")
    clients = [
        await Client.open(server.port, request(p, query, websocket=ws, version=version))
        for p in paths
    ]
    channels = query.count("channel=")
    await eventually(lambda: all(c.data.count(b'"subscribed"') == channels for c in clients))
    # One at a time, each taken by both before the next: a write per frame
    # on both paths (the fast path coalesces what comes in one iteration).
    for n in range(5):
        hub.channel("AB"[n % channels]).send({"n": n, "text": "x" * 50 * n})
        marker = b'"n":%d,' % n
        await eventually(lambda m=marker: all(m in c.data for c in clients))  # type: ignore[misc]
    await hub.shutdown(5)
    if ws:  # the close frame follows reconnect
        await eventually(lambda: all(b"\x88" in c.body.partition(b"reconnect")[2] for c in clients))
    elif version == "1.1":  # the chunked body's terminator
        await eventually(lambda: all(c.data.endswith(b"0\r\n\r\n") for c in clients))
    else:  # an HTTP/1.0 body ends with the connection
        await eventually(lambda: all(c.eof for c in clients))
    fast, slow = clients
    assert b'"reconnect"' in fast.body
    chunked = version == "1.1" and not ws
    if chunked and channels > 1:
        # The two channels' catch-ups leave in one write: one chunk per
        # frame on the fast path, one for the whole write on Tornado's.
        assert dechunk(fast.body) == dechunk(slow.body)
    else:
        assert fast.body == slow.body
    if chunked:
        assert dechunk(fast.body).count(b'"reconnect"') == 1
    for client in clients:
        await client.close()


def dechunk(body: bytes) -> bytes:
    """The payload of a complete chunked body (RFC 9112 7.1), checked."""
    out = b""
    while True:
        size, sep, body = body.partition(b"\r\n")
        assert sep and size, body[:40]
        n = int(size, 16)
        if n == 0:
            assert body == b"\r\n"
            return out
        assert body[n : n + 2] == b"\r\n"
        out += body[:n]
        body = body[n + 2 :]


def live(hub: Hub) -> LiveConnection:
    (connection,) = hub.connections
    assert isinstance(connection, LiveConnection)
    return connection


def carrying(writes: list[bytes]) -> list[bytes]:
    """The writes that carry messages (not a keep-alive ping alone)."""
    return [w for w in writes if b'"n":' in w]


@pytest.mark.parametrize("transport", ["stream", "sse", "websocket"])
async def test_publications_of_one_loop_iteration_go_out_in_two_writes(
    make_server: Callable[..., Server], hub: Hub, transport: str
) -> None:
    """The fan-out writes a connection's first frame of a loop iteration at
    once (nothing queued or in flight); the rest of that iteration (a batch
    publish) joins into one write at its end."""
    server = fast_and_slow(make_server, hub)
    ws = transport == "websocket"
    path, query = ("/channels/ws", "channel=A") if ws else ("/channels", "channel=A")
    if not ws:
        query += f"&transport={transport}"
    client = await Client.open(server.port, request(path, query, websocket=ws))
    await eventually(lambda: b'"subscribed"' in client.data and len(hub.connections) == 1)
    outbox = live(hub).outbox
    writes: list[bytes] = []
    write = outbox._write

    def counted(data: bytes) -> asyncio.Future[None] | None:
        writes.append(data)
        return write(data)

    outbox._write = counted
    channel = hub.channel("A")
    for n in range(10):  # no await: one loop iteration
        channel.send({"n": n})
    # The first at once, the others at the end of the iteration.
    assert len(carrying(writes)) == 1 and b'"n":0,' in writes[-1]
    await eventually(lambda: b'"n":9,' in client.data)
    # Keep-alive pings (every 0.5 s here) are writes of their own: count messages only.
    joined = carrying(writes)
    assert len(joined) == 2
    assert b'"n":0,' not in joined[1] and all(b'"n":%d,' % n in joined[1] for n in range(1, 10))
    positions = [client.data.find(b'"n":%d,' % n) for n in range(10)]
    assert all(p > 0 for p in positions) and positions == sorted(positions)
    # The next iteration's first publication is a write at once again.
    channel.send({"n": 10})
    assert b'"n":10,' in writes[-1]
    channel.send({"n": 11})
    await eventually(lambda: b'"n":11,' in client.data)
    writes = carrying(writes)
    assert len(writes) == 4
    assert b'"n":11,' in writes[3] and b'"n":10,' not in writes[3]
    await client.close()


E = "e1"
MESSAGE = F.Publication("A", E, 7, 1.5, b'{"x":1,"channel":"A","epoch":"e1","offset":7}').frame
MESSAGE_DATA = b'data: {"x":1,"channel":"A","epoch":"e1","offset":7}\n'
RESET = F.reset("A", "expired")
RESET_DATA = b'event: reset\ndata: {"type":"reset","channel":"A","reason":"expired"}\n'
PING = b'event: ping\ndata: {"type":"ping"}\n\n'


@pytest.mark.parametrize(
    ("frame", "cursor", "expected", "after"),
    [
        # ids=0: never an id line, whatever the frame.
        (MESSAGE, None, MESSAGE_DATA + b"\n", None),
        (RESET, None, RESET_DATA + b"\n", None),
        (F.PING_FRAME, None, PING, None),
        # A one-channel connection: the frame's own position.
        (MESSAGE, {}, MESSAGE_DATA + b"id: A=e1:7\n\n", {"A": "e1:7"}),
        (MESSAGE, {"A": "e1:6"}, MESSAGE_DATA + b"id: A=e1:7\n\n", {"A": "e1:7"}),
        # Several channels: the whole cursor.
        (
            MESSAGE,
            {"B": "e1:2"},
            MESSAGE_DATA + b"id: B=e1:2,A=e1:7\n\n",
            {"B": "e1:2", "A": "e1:7"},
        ),
        (RESET, {"B": "e1:2", "A": "e1:6"}, RESET_DATA + b"id: B=e1:2\n\n", {"B": "e1:2"}),
        (RESET, {"A": "e1:6"}, RESET_DATA + b"id: \n\n", {}),
        # No channel: no id, the cursor stays.
        (F.PING_FRAME, {"A": "e1:6"}, PING, {"A": "e1:6"}),
    ],
)
def test_sse_events_with_and_without_ids(
    frame: F.Frame,
    cursor: dict[str, str] | None,
    expected: bytes,
    after: dict[str, str] | None,
) -> None:
    for encode, wrap in ((sse_event, bytes), (sse_chunk, http_chunk)):
        positions = None if cursor is None else {c: Position.parse(p) for c, p in cursor.items()}
        assert encode(frame, positions) == wrap(expected)
        moved = None if positions is None else {c: str(p) for c, p in positions.items()}
        assert moved == after


@pytest.mark.usefixtures("one_client_id")
async def test_sse_ids_over_the_wire(server: Server) -> None:
    with_ids = server.stream("sse", channel="A")
    without = server.stream("sse", channel="A", ids="0")
    explicit = server.stream("sse", channel="A", ids="1")
    streams = (with_ids, without, explicit)
    for s in streams:
        await s.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    e = server.hub.channel("A").send({"n": 1})["epoch"]
    for s in streams:
        await s.wait_frames(lambda fs: any(f["type"] == "message" for f in fs))
    assert [e.id for e in parse_sse(with_ids.buffer)] == [None, f"A={e}:0", f"A={e}:1"]
    assert parse_sse(explicit.buffer) == parse_sse(with_ids.buffer)
    assert b"id:" not in without.buffer
    # The same events otherwise, retry included.
    plain = [dataclasses.replace(e, id=None) for e in parse_sse(with_ids.buffer)]
    assert parse_sse(without.buffer) == plain
    assert plain[0].retry == server.hub.settings.sse_retry_ms


@pytest.mark.parametrize("query", ["ids=2", "ids=", "ids=0&ids=0", "ids=no"])
async def test_a_bad_ids_parameter_is_a_400(server: Server, query: str) -> None:
    response = await server.fetch(server.url() + f"?transport=sse&channel=A&{query}")
    assert response.code == 400
    assert b'"bad_parameter"' in response.body

"""The load generator of bench/fanout.py: subscribers and the publisher.

One asyncio process reads every subscriber's socket with as little parsing
as possible: frames are delimited (WebSocket headers, HTTP chunks, then
the blank line or newline ending an event) and one precompiled regular
expression per span of complete frames checks each message's exact shape
and pulls out its send time and offset. Every subscriber must get every
offset once and in order; the publisher checks the answers' offsets.

Servers that do not speak the torchannels protocol (Nchan, Pushpin: "bare"
runs) deliver the published body as is: their publisher stamps the same
fields (``channel``, ``ts``, ``epoch`` and a consecutive ``offset``) into
the body itself, so the subscribers check them alike; a subscriber counts
as joined once the response head is in, and a lost connection fails the
run (they are not resumed).
"""

from __future__ import annotations

import array
import asyncio
import base64
import hashlib
import json
import os
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

HOST = "127.0.0.1"
CHANNEL = "bench:fanout"
API_KEY = "bench-key"
WARMUP = 20  # messages published and delivered before measuring

SUBSCRIBED_RE = re.compile(
    rb'"type":"subscribed","channel":"[^"]*","epoch":"([a-z0-9]+)","offset":(\d+)'
)
CONTROL_RE = re.compile(rb'"type":"(reset|reconnect)"[^}]*?"reason":"([a-z_]+)"')
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def message_re(pad: int) -> re.Pattern[bytes]:
    """One delivered message, as both servers stamp it: the publisher's data
    (send time ``t`` and ``pad`` x's) then channel, ts, epoch, offset."""
    return re.compile(
        rb'\{"t":([0-9.]+),"p":"x{%d}","channel":"%s","ts":[0-9.e+-]+,'
        rb'"epoch":"[a-z0-9]+","offset":(\d+)\}' % (pad, CHANNEL.encode())
    )


def pad_for(size: int) -> int:
    """The padding that makes the published ``data`` object about ``size`` bytes."""
    overhead = len(b'{"t":,"p":""}') + 17  # a typical repr(time.perf_counter())
    return max(0, size - overhead)


class Run:
    """What the subscribers of one server run share, and the phase being
    measured: offsets up to ``warm_top`` are not counted, ``final`` is the
    last one. ``socketio``: the subscribers speak Socket.IO (Engine.IO 4 over
    WebSocket) instead of the torchannels protocol; ``bare``: the server
    speaks no protocol of its own (Nchan, Pushpin): no ``subscribed`` frame,
    no resume."""

    def __init__(
        self,
        transport: str,
        port: int,
        *,
        size: int,
        max_reconnects: int,
        socketio: bool = False,
        bare: bool = False,
        track: bool = False,
    ) -> None:
        self.transport = transport
        self.port = port
        self.socketio = socketio
        self.bare = bare
        self.msg_re = message_re(pad_for(size))
        self.warm_top = 0
        self.final = WARMUP
        self.latencies = array.array("d")
        self.subscribers: list[Subscriber] = []
        self.done = 0
        self.all_done = asyncio.Event()
        self.stopping = False
        self.reconnects: Counter[str] = Counter()
        self.failures: list[str] = []
        self.max_reconnects = max_reconnects
        self.connect_timeout = 60.0
        #: A subscription token per subscriber (``token=``), or None: anonymous.
        self.tokens: list[str] | None = None
        #: With ``track``: per offset, how many subscribers have it (for a
        #: publisher that must not run ahead of delivery, see ``Publisher.ahead``).
        self.reached: array.array[int] | None = array.array("q") if track else None
        self._awaited: tuple[int, asyncio.Future[None]] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def begin_phase(self, messages: int) -> None:
        """Measure the next ``messages`` offsets: every subscriber must have
        received everything so far (the caller waited for it)."""
        self.warm_top = self.final
        self.final += messages
        self.latencies = array.array("d")
        self.done = 0
        self.all_done = asyncio.Event()
        for sub in self.subscribers:
            sub.received = 0
            sub.done_at = None

    def count_reached(self, before: int, after: int) -> None:
        """A subscriber's last offset moved from ``before`` to ``after``."""
        reached = self.reached
        assert reached is not None
        if len(reached) <= after:
            reached.extend([0] * (after + 1 - len(reached) + 1024))
        for offset in range(max(1, before + 1), after + 1):
            reached[offset] += 1
        if self._awaited is not None and self.reached_by_all(self._awaited[0]):
            if not self._awaited[1].done():
                self._awaited[1].set_result(None)
            self._awaited = None

    def reached_by_all(self, offset: int) -> bool:
        """Whether every subscriber has received ``offset`` (with ``track``)."""
        reached = self.reached
        assert reached is not None
        return offset < 1 or (offset < len(reached) and reached[offset] >= len(self.subscribers))

    async def until_reached(self, offset: int, timeout: float) -> None:
        """Wait until every subscriber has ``offset`` (with ``track``); raise
        TimeoutError naming how many do not after ``timeout`` seconds."""
        if self.reached_by_all(offset):
            return
        future = asyncio.get_running_loop().create_future()
        self._awaited = (offset, future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            behind = sum(1 for s in self.subscribers if s.last < offset)
            raise TimeoutError(
                f"{behind} subscriber(s) still without message {offset} after {timeout:.0f}s"
            ) from None

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def fail(self, text: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(text)


class Subscriber:
    """One subscriber: where it stands in the channel and what it received.
    It outlives its connections: a server that ends one (``reconnect``
    frame, close code) is rejoined from the last offset, as a client would."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.index = index
        self.conn: Connection | None = None
        self.ready: asyncio.Future[None] | None = None
        self.epoch: str | None = None
        self.last = -1  # offset of the last message received
        self.received = 0  # measured messages received
        self.duplicates = 0
        self.gaps = 0
        self.done_at: float | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        """Open a connection; on the first one wait for ``subscribed``."""
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future() if self.epoch is None else None
        query = {"channel": CHANNEL}
        if self.run.tokens is not None:
            query["token"] = self.run.tokens[self.index]
        if self.epoch is not None:
            query["cursor"] = f"{CHANNEL}={self.epoch}:{self.last}"
        host = f"Host: {HOST}:{self.run.port}\r\n"
        ws_key = base64.b64encode(os.urandom(16))
        if self.run.socketio:
            path = "/socket.io/?EIO=4&transport=websocket"
        else:
            path = f"/channels/ws?{urllib.parse.urlencode(query)}"
        if self.run.transport == "websocket":
            request = (
                f"GET {path} HTTP/1.1\r\n{host}"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {ws_key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
        else:
            query["transport"] = self.run.transport
            # (as a browser's EventSource sends it; Nchan requires it)
            accept = "Accept: text/event-stream\r\n" if self.run.transport == "sse" else ""
            target = f"/channels?{urllib.parse.urlencode(query)}"
            request = f"GET {target} HTTP/1.1\r\n{host}{accept}\r\n"
        transport, conn = await asyncio.wait_for(
            loop.create_connection(lambda: Connection(self, ws_key), HOST, self.run.port),
            self.run.connect_timeout,
        )
        self.conn = conn
        transport.write(request.encode())
        if self.ready is not None:
            await asyncio.wait_for(self.ready, self.run.connect_timeout)

    def joined(self) -> None:
        """A bare server answered the subscribe request: from now on it
        delivers every message published (offsets from 1: each run's server
        starts with an empty channel)."""
        if self.epoch is None:
            self.epoch = "bare"
            self.last = 0
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)

    def ended(self, reason: str) -> None:
        """The server ended a connection: resume from the last offset."""
        run = self.run
        if self.ready is not None and not self.ready.done():
            detail = "; ".join(run.failures[-1:])
            self.ready.set_exception(ConnectionError(f"subscriber {self.index}: {reason} {detail}"))
            return
        if run.stopping or self.done_at is not None or self.epoch is None:
            return
        if run.bare:
            run.fail(f"subscriber {self.index}: {reason} (bare servers' subscribers do not resume)")
            return
        self.reconnects += 1
        run.reconnects[reason] += 1
        if self.reconnects > run.max_reconnects:
            run.fail(f"subscriber {self.index}: more than {run.max_reconnects} reconnects")
            return
        run.spawn(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await self.connect()
        except (OSError, TimeoutError) as exc:
            self.run.fail(f"subscriber {self.index}: reconnect failed: {exc!r}")

    def scan(self, data: bytearray, end: int, now: float) -> str | None:
        """Count the messages in ``data[:end]`` (complete frames only); return
        the reason of a ``reconnect`` frame among them."""
        run = self.run
        reason = None
        if self.epoch is None:
            match = SUBSCRIBED_RE.search(data, 0, end)
            if match is None:
                return None
            self.epoch = match[1].decode()
            self.last = int(match[2])
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)
        if data.find(b'"type":"re', 0, end) >= 0:  # rare: reset or reconnect
            for control in CONTROL_RE.finditer(data, 0, end):
                if control[1] == b"reset":
                    run.fail(f"subscriber {self.index}: reset ({control[2].decode()})")
                else:
                    reason = f"reconnect {control[2].decode()}"
        last = self.last
        warm = run.warm_top
        latency = run.latencies.append
        received = 0
        for match in run.msg_re.finditer(data, 0, end):
            offset = int(match[2])
            if offset != last + 1:
                if offset <= last:
                    self.duplicates += 1
                    continue
                self.gaps += offset - last - 1
            last = offset
            if offset > warm:
                received += 1
                latency(now - float(match[1]))
        if run.reached is not None:
            run.count_reached(self.last, last)
        self.last = last
        self.received += received
        if last >= run.final and self.done_at is None:
            self.done_at = now
            run.done += 1
            if run.done == len(run.subscribers):
                run.all_done.set()
        return reason


class Connection(asyncio.Protocol):
    """One connection of a subscriber, read with as little parsing as
    possible: frames are delimited (WebSocket headers, HTTP chunks, blank
    lines), then one regular expression pulls send time and offset out of
    each message (``Subscriber.scan``)."""

    def __init__(self, sub: Subscriber, ws_key: bytes) -> None:
        self.sub = sub
        self.websocket = sub.run.transport == "websocket"
        self.separator = b"\n" if sub.run.transport == "stream" else b"\n\n"
        self.ws_key = ws_key
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head_done = False
        self.reason: str | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(self.reason or "connection lost")

    def _end(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.sub.ended(reason)

    def close(self) -> None:
        """Close without reconnecting (the run is over)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            self.head_done = True
            if not self._check_head(head):
                return
            if self.sub.run.bare:
                self.sub.joined()
            if self.sub.run.socketio:
                self._ws_send(0x1, b"40")  # Socket.IO: join the default namespace
        if self.websocket:
            self._ws_frames(now)
        else:
            self._http_events(now)

    def _check_head(self, head: bytes) -> bool:
        status = head.split(b"\r\n", 1)[0]
        lower = head.lower()
        if self.websocket:
            accept = base64.b64encode(hashlib.sha1(self.ws_key + WS_GUID).digest())
            ok = b" 101 " in status and b"sec-websocket-accept: " + accept.lower() in lower
        else:
            # A bare server may stream SSE unchunked, ended by the close (Nchan).
            sse = self.sub.run.bare and b"content-type: text/event-stream" in lower
            ok = b" 200 " in status and (b"transfer-encoding: chunked" in lower or sse)
        if not ok:
            run = self.sub.run
            run.fail(f"subscriber {self.sub.index}: bad response {status.decode(errors='replace')}")
            run.stopping = True  # not a server hiccup: stop, do not retry
            self._end("bad response")
        return ok

    def _ws_frames(self, now: float) -> None:
        buf = self.buf
        size = len(buf)
        pos = 0
        close: int | None = None
        while size - pos >= 2:
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + n
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 0x9:  # ping: answer so the server keeps us
                self._ws_send(0xA, bytes(buf[pos + head : end]))
            elif n == 1 and opcode == 0x1 and buf[pos + head] == 0x32 and self.sub.run.socketio:
                self._ws_send(0x1, b"3")  # Engine.IO ping "2": pong
            elif opcode == 0x8:
                close = int.from_bytes(buf[pos + head : pos + head + 2], "big") if n >= 2 else 1005
            pos = end
        if pos:
            # Frame headers are two to ten bytes that never look like JSON, so
            # the scan runs over the whole span of complete frames at once.
            self.reason = self.sub.scan(buf, pos, now) or self.reason
            del buf[:pos]
        if close is not None:
            self._ws_send(0x8, close.to_bytes(2, "big"))
            self._end(f"close {close}")

    def _ws_send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.closed:
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _http_events(self, now: float) -> None:
        """Scan the raw chunked body up to its last complete event. Chunk
        headers (``1a3\\r\\n``) are not decoded: every server writes whole
        events in a chunk, and a header never looks like a message, so a
        chunk cut inside an event would show as a missing message (a failed
        run), never as a false pass."""
        buf = self.buf
        cut = buf.rfind(self.separator)
        if cut < 0:
            return
        cut += len(self.separator)
        self.reason = self.sub.scan(buf, cut, now) or self.reason
        del buf[:cut]
        if self.reason is not None:  # a reconnect frame: the response ends with it
            self._end(self.reason)


# -- the publishers -----------------------------------------------------------------


class Publisher:
    """``POST /api/publish``, one message per request, on one keep-alive
    connection, with up to ``window`` requests in flight (HTTP/1.1
    pipelining: Tornado answers them in order, one at a time), so the server
    never waits for the benchmark's event loop to send the next one."""

    #: The request line and headers before ``Content-Length``.
    HEAD = (
        "POST /api/publish HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
    )

    def __init__(self, port: int, pad: int) -> None:
        self.port = port
        self.pad = b"x" * pad
        #: Publish message K only once every subscriber has message K -
        #: ``ahead`` (0: never wait; set for a server that drops what a
        #: connection cannot take at once, with ``until_delivered``).
        self.ahead = 0
        self.until_delivered: Callable[[int, float], Awaitable[None]] | None = None
        self.head = self.HEAD.format(host=HOST, port=port).encode()
        self.offsets: list[int] = []  # answered, in order
        self.last_answer = 0.0
        self.stamped = 0  # offsets stamped by a bare server's publisher so far

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.port), 10
        )

    def _body(self, sent: float) -> bytes:
        return b'{"channel":"%s","data":{"t":%s,"p":"%s"}}' % (
            CHANNEL.encode(),
            repr(sent).encode(),
            self.pad,
        )

    def _stamped(self, sent: float, epoch: bytes) -> bytes:
        """The message as a bare server delivers it: the fields the hub
        stamps, stamped here, with the next consecutive offset."""
        self.stamped += 1
        return b'{"t":%s,"p":"%s","channel":"%s","ts":%s,"epoch":"%s","offset":%d}' % (
            repr(sent).encode(),
            self.pad,
            CHANNEL.encode(),
            repr(time.time()).encode(),
            epoch,
            self.stamped,
        )

    def _request(self, sent: float) -> bytes:
        body = self._body(sent)
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def _offset(self, status: bytes, answer: bytes) -> int:
        """The offset a publish answer reports; raise if it failed."""
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"publish failed: {status!r} {answer[:200]!r}")
        offset: int = json.loads(answer)["offset"]
        return offset

    async def publish(self, count: int, *, rate: float, window: int, limit: float) -> None:
        """Publish ``count`` messages, at ``rate`` per second (0: as fast as the
        window allows); raise if it takes more than ``limit`` seconds."""
        slots = asyncio.Semaphore(window)
        answers = asyncio.ensure_future(self._answers(count, slots))
        start = time.perf_counter()
        try:
            for i in range(count):
                await asyncio.wait_for(slots.acquire(), limit)
                if answers.done():
                    break  # it failed: its exception is raised below
                sent = await self._when(start, i, rate)
                self.writer.write(self._request(sent))
                if time.perf_counter() - start > limit:
                    raise TimeoutError(f"published {i + 1} of {count} messages in {limit}s")
            await asyncio.wait_for(asyncio.shield(answers), limit)
        finally:
            answers.cancel()

    @staticmethod
    async def _when(start: float, i: int, rate: float) -> float:
        """Wait for message ``i``'s turn; its send time."""
        if not rate:
            return time.perf_counter()
        # The send time is the scheduled one, so a server that falls behind
        # shows in latency (no coordinated omission).
        sent = start + i / rate
        delay = sent - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        return sent

    async def _answers(self, count: int, slots: asyncio.Semaphore) -> None:
        for _ in range(count):
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            answer = await self.reader.readexactly(int(length[1]) if length else 0)
            self.offsets.append(self._offset(head.split(b"\r\n", 1)[0], answer))
            self.last_answer = time.perf_counter()
            slots.release()

    def close(self) -> None:
        self.writer.close()


class NchanPublisher(Publisher):
    """Nchan's publisher location (``nchan_publisher http`` at
    ``/api/publish``): the body is the message as delivered, stamped here.
    nginx answers pipelined requests in order; the answer's ``messages``
    (the channel's buffered messages, a buffer longer than the run) is the
    offset of the message just stored."""

    HEAD = (
        "POST /api/publish HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: application/json\r\nContent-Type: application/json\r\n"
    )

    def _body(self, sent: float) -> bytes:
        return self._stamped(sent, b"nchan")

    def _offset(self, status: bytes, answer: bytes) -> int:
        # 201 Created with subscribers, 202 Accepted without.
        if not status.startswith((b"HTTP/1.1 201", b"HTTP/1.1 202")):
            raise RuntimeError(f"publish failed: {status!r} {answer[:200]!r}")
        messages: int = json.loads(answer)["messages"]
        return messages


class PushpinPublisher(Publisher):
    """Pushpin's HTTP publish endpoint (``POST /publish/``, the handler's
    ``push_in_http_port``): one item per request on channel ``bench``, its
    ``http-stream`` content an SSE event holding the stamped message. The
    endpoint answers one request per connection (``Connection: close``, no
    pipelining), so each publish is a connection of its own, one at a
    time, which keeps them in order; the answer carries no offset, so the
    offsets recorded are the ones stamped.

    Pushpin's handler answers at once and delivers later, and with many
    deliveries queued it silently drops some (measured: flat out at 300
    subscribers, 8 of 200 messages missed by some subscribers; 16
    messages ahead at 10,000 subscribers, 22% of the deliveries). So the
    benchmark gives it flow control of its own: with ``ahead`` set,
    message K is sent only once every subscriber has message K -
    ``ahead``."""

    HEAD = "POST /publish/ HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"

    def _body(self, sent: float) -> bytes:
        event = b"data: " + self._stamped(sent, b"pushpin") + b"\n\n"
        item = {"channel": "bench", "formats": {"http-stream": {"content": event.decode()}}}
        return json.dumps({"items": [item]}, separators=(",", ":")).encode()

    async def open(self) -> None:
        pass  # a connection per request

    async def publish(self, count: int, *, rate: float, window: int, limit: float) -> None:
        start = time.perf_counter()
        for i in range(count):
            if self.ahead and self.until_delivered is not None:
                await self.until_delivered(self.stamped + 1 - self.ahead, min(limit, 30.0))
            sent = await self._when(start, i, rate)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 10)
            try:
                writer.write(self._request(sent))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limit)
                status = head.split(b"\r\n", 1)[0]
                if not status.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"publish failed: {status!r}")
            finally:
                writer.close()
            self.offsets.append(self.stamped)
            self.last_answer = time.perf_counter()
            if time.perf_counter() - start > limit:
                raise TimeoutError(f"published {i + 1} of {count} messages in {limit}s")

    def close(self) -> None:
        pass


#: The publisher of each kind of server (``Kind.native``; "": torchannels' API).
PUBLISHERS: dict[str, type[Publisher]] = {
    "": Publisher,
    "nchan": NchanPublisher,
    "pushpin": PushpinPublisher,
}

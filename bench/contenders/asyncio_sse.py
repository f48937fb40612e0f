"""The physical floor for bench/fanout.py: SSE fan-out on a bare
``asyncio.Protocol``, no framework.

``GET /channels?transport=sse&channel=C`` answers a chunked
``text/event-stream`` (the same ``connected``/``subscribed`` events as the
hub); ``POST /api/publish`` with ``{"channel": C, "data": {...}}`` decodes
the JSON, stamps it as the hub does, frames one HTTP chunk holding the SSE
event (``data:`` then the ``id:`` cursor line) and hands those same bytes
to every subscriber's transport: one ``transport.write`` per recipient,
nothing else. Requests are parsed just enough for the benchmark (no
validation); pipelined publishes are answered in order.

    python bench/contenders/asyncio_sse.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Any

EPOCH = "a5c10000"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache, no-store\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class Fanout:
    def __init__(self) -> None:
        self.subscribers: set[asyncio.Transport] = set()
        self.offset = 0

    def publish(self, channel: str, data: dict[str, Any]) -> bytes:
        self.offset += 1
        message = dict(data)
        message["channel"] = channel
        message["ts"] = time.time()
        message["epoch"] = EPOCH
        message["offset"] = self.offset
        cursor = f"{channel}={EPOCH}:{self.offset}".encode()
        framed = chunk(b"data: " + dumps(message) + b"\nid: " + cursor + b"\n\n")
        for transport in self.subscribers:
            transport.write(framed)
        return dumps({"channel": channel, "epoch": EPOCH, "offset": self.offset})

    def subscribe(self, transport: asyncio.Transport, channel: str) -> None:
        connected = dumps({"type": "connected", "transport": "sse", "ping": 15.0})
        subscribed = dumps(
            {"type": "subscribed", "channel": channel, "epoch": EPOCH, "offset": self.offset}
        )
        cursor = f"{channel}={EPOCH}:{self.offset}".encode()
        transport.write(
            HEAD
            + chunk(
                b"retry: 1000\nevent: connected\ndata: " + connected + b"\n\n"
                b"event: subscribed\ndata: " + subscribed + b"\nid: " + cursor + b"\n\n"
            )
        )
        self.subscribers.add(transport)


class Connection(asyncio.Protocol):
    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.fanout.subscribers.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(buf) < end + 4 + length:
                break
            body = buf[end + 4 : end + 4 + length]
            buf = buf[end + 4 + length :]
            target = head.split(b" ", 2)[1]
            if head.startswith(b"POST /api/publish"):
                doc = json.loads(body)
                answer = self.fanout.publish(doc["channel"], doc["data"])
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(answer) + answer
                )
            elif target.startswith(b"/channels?"):
                query = dict(p.split("=", 1) for p in target[10:].decode().split("&"))
                self.fanout.subscribe(self.transport, query["channel"].replace("%3A", ":"))
            else:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        self.buf = buf


async def serve(host: str, port: int) -> None:
    fanout = Fanout()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(fanout), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"asyncio floor listening on http://{host}:{bound}/", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for transport in list(fanout.subscribers):
        transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

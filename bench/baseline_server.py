"""The fan-out ceiling for bench/fanout.py: a minimal Tornado pub/sub server.

It speaks just enough of the torchannels wire protocol (docs/protocol.md)
for the benchmark's subscribers and publisher, byte for byte on the wire:

- ``GET /channels/ws?channel=C``: a ``tornado.websocket.WebSocketHandler``;
- ``GET /channels?transport=stream|sse&channel=C``: a chunked response;
- ``POST /api/publish`` with ``{"channel": C, "data": {...}}`` and a bearer key.

Each publish decodes the body, stamps ``channel``/``ts``/``epoch``/``offset``
as the hub does, encodes the message once, frames it once per transport in
use (WebSocket text frame, HTTP chunk of an NDJSON line or an SSE event) and
writes those same bytes to every connected subscriber's ``IOStream``. There
is no per-channel bookkeeping, no history, no session, no backpressure
accounting and no per-recipient code besides the write itself: what Tornado
and the hardware allow. All subscribers are assumed to be on the benchmark's
one channel, so the SSE ``id:`` line (the cursor) is the same for all of them.

    python bench/baseline_server.py --port 0 --api-key K
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import signal
import time
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.websocket import WebSocketHandler

# The same pure framing function as the hub: both servers write identical
# frame bytes, so the comparison is about everything around it.
from torchannels.transports.websocket import ws_text_frame

EPOCH = "ba5e0000"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


class Fanout:
    """Subscriber streams by transport, and the one channel's offset."""

    def __init__(self) -> None:
        self.streams: dict[str, set[IOStream]] = {"websocket": set(), "stream": set(), "sse": set()}
        self.offset = 0

    def publish(self, channel: str, data: dict[str, Any]) -> dict[str, Any]:
        self.offset += 1
        message = dict(data)
        message["channel"] = channel
        message["ts"] = time.time()
        message["epoch"] = EPOCH
        message["offset"] = self.offset
        payload = dumps(message)
        for kind, streams in self.streams.items():
            if not streams:
                continue
            if kind == "websocket":
                framed = ws_text_frame(b'{"type":"message","data":' + payload + b"}")
            elif kind == "stream":
                framed = http_chunk(b'{"type":"message","data":' + payload + b"}\n")
            else:
                cursor = f"{channel}={EPOCH}:{self.offset}".encode()
                framed = http_chunk(b"data: " + payload + b"\nid: " + cursor + b"\n\n")
            for stream in tuple(streams):
                try:
                    stream.write(framed)
                except StreamClosedError:
                    streams.discard(stream)
        return {"channel": channel, "epoch": EPOCH, "offset": self.offset, "ts": message["ts"]}

    def subscribed(self, channel: str) -> bytes:
        return dumps(
            {"type": "subscribed", "channel": channel, "epoch": EPOCH, "offset": self.offset}
        )


def connected(transport: str) -> bytes:
    return dumps({"type": "connected", "transport": transport, "ping": 15.0})


class SocketHandler(WebSocketHandler):
    def initialize(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.ws_stream: IOStream | None = None

    def open(self, *args: Any, **kwargs: Any) -> None:
        assert self.ws_connection is not None
        self.set_nodelay(True)
        stream = self.ws_stream = self.ws_connection.stream
        channel = self.get_query_argument("channel")
        stream.write(ws_text_frame(connected("websocket")))
        stream.write(ws_text_frame(self.fanout.subscribed(channel)))
        self.fanout.streams["websocket"].add(stream)

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        if self.ws_stream is not None:
            self.fanout.streams["websocket"].discard(self.ws_stream)


class StreamingHandler(tornado.web.RequestHandler):
    def initialize(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def get(self) -> None:
        kind = self.get_query_argument("transport")
        channel = self.get_query_argument("channel")
        if kind not in ("stream", "sse"):
            raise tornado.web.HTTPError(400)
        stream = self.request.connection.stream  # type: ignore[union-attr]
        stream.set_nodelay(True)
        self.set_header("Cache-Control", "no-cache, no-store")
        self.set_header("X-Accel-Buffering", "no")
        if kind == "stream":
            self.set_header("Content-Type", "application/x-ndjson")
            self.write(connected("stream") + b"\n" + self.fanout.subscribed(channel) + b"\n")
        else:
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            self.write(
                b"retry: 1000\nevent: connected\ndata: " + connected("sse") + b"\n\n"
                b"event: subscribed\ndata: " + self.fanout.subscribed(channel) + b"\n"
                b"id: " + f"{channel}={EPOCH}:{self.fanout.offset}".encode() + b"\n\n"
            )
        # The headers and first chunk go through Tornado's chunked writer;
        # after that the fan-out writes whole pre-framed chunks to the stream.
        await self.flush()
        streams = self.fanout.streams[kind]
        streams.add(stream)
        try:
            await self.gone
        finally:
            streams.discard(stream)

    def on_connection_close(self) -> None:
        if not self.gone.done():
            self.gone.set_result(None)


class PublishHandler(tornado.web.RequestHandler):
    def initialize(self, fanout: Fanout, api_key: str) -> None:
        self.fanout = fanout
        self.api_key = api_key

    def check_xsrf_cookie(self) -> None:
        pass

    def post(self) -> None:
        auth = self.request.headers.get("Authorization", "")
        if not hmac.compare_digest(auth[7:].strip().encode(), self.api_key.encode()):
            raise tornado.web.HTTPError(403)
        body = json.loads(self.request.body)
        self.set_header("Content-Type", "application/json")
        self.finish(dumps(self.fanout.publish(body["channel"], body["data"])))


async def serve(port: int, host: str, api_key: str) -> None:
    fanout = Fanout()
    app = tornado.web.Application(
        [
            (r"/channels", StreamingHandler, {"fanout": fanout}),
            (r"/channels/ws", SocketHandler, {"fanout": fanout}),
            (r"/api/publish", PublishHandler, {"fanout": fanout, "api_key": api_key}),
        ]
    )
    server = HTTPServer(app)
    sockets = bind_sockets(port, host, backlog=4096)  # 10,000 subscribers connect at once
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"baseline hub listening on http://{host}:{sockets[0].getsockname()[1]}/", flush=True)
    await stop.wait()
    server.stop()
    for streams in fanout.streams.values():
        for stream in streams:
            stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.host, args.api_key))


if __name__ == "__main__":
    main()

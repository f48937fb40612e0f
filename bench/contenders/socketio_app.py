"""python-socketio (ASGI) on uvicorn, as a fan-out contender for bench/fanout.py.

Socket.IO over its WebSocket transport only (Engine.IO 4, no polling
upgrade): a client connects to ``/socket.io/?EIO=4&transport=websocket``,
sends the namespace CONNECT (``40``) and gets a ``subscribed`` event
(``{"type": "subscribed", "channel", "epoch", "offset"}``) when it joins.
``POST /api/publish`` (``{"channel", "data"}``, a plain ASGI app beside
Socket.IO) stamps the message as the hub does and calls
``sio.emit("message", message)`` to everyone: python-socketio encodes the
packet once and sends it to each recipient in a task. JSON is encoded
compactly (``separators=(",", ":")``), as the other contenders do, so the
benchmark reads the same message bytes. uvicorn with httptools and the
``websockets`` protocol, the standard asyncio loop, no access log.

    python bench/contenders/socketio_app.py --port 0
"""

from __future__ import annotations

import argparse
import json
import socket
import time
import types
from typing import Any

import socketio
import uvicorn

EPOCH = "50c10000"
CHANNEL = "bench:fanout"


def dumps(value: Any, **_: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


compact_json = types.SimpleNamespace(dumps=dumps, loads=json.loads)
sio = socketio.AsyncServer(
    async_mode="asgi",
    json=compact_json,
    always_connect=True,  # the connect handler may emit at once
    ping_interval=3600,
    ping_timeout=3600,
    cors_allowed_origins="*",
)
state = {"offset": 0}


@sio.event  # type: ignore[untyped-decorator,misc]
async def connect(sid: str, environ: dict[str, Any]) -> None:
    subscribed = {"type": "subscribed", "channel": CHANNEL, "epoch": EPOCH}
    subscribed["offset"] = state["offset"]
    await sio.emit("subscribed", subscribed, to=sid)


async def publish_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["path"] != "/api/publish":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    doc = json.loads(body)
    state["offset"] += 1
    message = dict(doc["data"])
    message["channel"] = doc["channel"]
    message["ts"] = time.time()
    message["epoch"] = EPOCH
    message["offset"] = state["offset"]
    await sio.emit("message", message)
    answer = dumps({"channel": doc["channel"], "epoch": EPOCH, "offset": state["offset"]})
    raw = answer.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


app = socketio.ASGIApp(sio, other_asgi_app=publish_app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.create_server((args.host, args.port), backlog=4096)
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="httptools",
        ws="websockets",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=600,
        timeout_graceful_shutdown=2,
        backlog=4096,
        ws_ping_interval=None,
    )
    print(f"python-socketio listening on http://{args.host}:{sock.getsockname()[1]}/", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()

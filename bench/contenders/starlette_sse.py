"""sse-starlette on uvicorn, as a fan-out contender for bench/fanout.py.

Written as its documentation suggests: each ``GET /channels`` is an
``EventSourceResponse`` over an async generator reading the subscriber's
own ``asyncio.Queue``; ``POST /api/publish`` (``{"channel", "data"}``)
stamps the message as the hub does, encodes it once and puts the same
``{"data", "id"}`` event in every queue; sse-starlette formats it per
recipient. uvicorn with httptools, the standard asyncio loop (as the
other contenders), no access log.

    python bench/contenders/starlette_sse.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

EPOCH = "55e00000"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Fanout:
    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[dict[str, str]]] = set()
        self.offset = 0


fanout = Fanout()


async def channels(request: Request) -> EventSourceResponse:
    channel = request.query_params["channel"]
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    subscribed = {"type": "subscribed", "channel": channel, "epoch": EPOCH, "offset": fanout.offset}
    cursor = f"{channel}={EPOCH}:{fanout.offset}"
    fanout.queues.add(queue)

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            connected = {"type": "connected", "transport": "sse", "ping": 15.0}
            yield {"event": "connected", "data": dumps(connected), "retry": 1000}
            yield {"event": "subscribed", "data": dumps(subscribed), "id": cursor}
            while True:
                yield await queue.get()
        finally:
            fanout.queues.discard(queue)

    return EventSourceResponse(events(), ping=3600, sep="\n")


async def publish(request: Request) -> Response:
    doc = json.loads(await request.body())
    channel = doc["channel"]
    fanout.offset += 1
    message = dict(doc["data"])
    message["channel"] = channel
    message["ts"] = time.time()
    message["epoch"] = EPOCH
    message["offset"] = fanout.offset
    event = {"data": dumps(message), "id": f"{channel}={EPOCH}:{fanout.offset}"}
    for queue in fanout.queues:
        queue.put_nowait(event)
    answer = {"channel": channel, "epoch": EPOCH, "offset": fanout.offset}
    return Response(dumps(answer), media_type="application/json")


app = Starlette(
    routes=[Route("/channels", channels), Route("/api/publish", publish, methods=["POST"])]
)


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
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=600,
        timeout_graceful_shutdown=2,
        backlog=4096,
    )
    print(f"sse-starlette listening on http://{args.host}:{sock.getsockname()[1]}/", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()

"""Graceful shutdown on SIGTERM and SIGINT, bounded by ``--shutdown-timeout``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import Callable
from typing import Any

from server.processes import (
    WAIT,
    RawWebSocket,
    ServerProcess,
    as_json,
    fetch,
    outline,
    poll,
    refused,
    until,
)
from support import HOUSEKEEPING


async def test_sigterm_tells_every_client_to_reconnect_and_exits_0(
    spawn: Callable[..., ServerProcess], http: Any, lives: Any, sockets: Any
) -> None:
    hub = spawn("--no-demo", "--shutdown-timeout", "8")
    sse = lives(hub.url(transport="sse", channel="demo:a"))
    stream = lives(hub.url(transport="stream", channel="demo:a"))
    ws = await sockets(hub.ws_url(channel="demo:a"))
    for client in (sse, stream, ws):
        await client.wait(lambda fs: bool(fs))
    first = await poll(http, hub, ["demo:a"])
    held = asyncio.ensure_future(poll(http, hub, ["demo:a"], transport="longpoll", timeout=20,
                                      cursor=first["cursor"]))  # fmt: skip

    async def four() -> bool:
        return bool(as_json(await fetch(http, hub.base + "/health"))["connections"] >= 4)

    await until(four, "the four clients never connected")

    started = time.monotonic()
    hub.signal(signal.SIGTERM)
    answer = await asyncio.wait_for(held, WAIT)
    assert answer["frames"] == [{"type": "reconnect", "reason": "shutdown"}]
    assert answer["cursor"] == first["cursor"]
    assert refused(hub.port), "the hub still accepts connections while shutting down"
    for live in (sse, stream):
        await live.ended()
        assert live.complete, "a streaming response was cut off"
        assert outline(live.content()) == [("subscribed", "demo:a"), ("reconnect", "shutdown")]
    assert sse.buffer.endswith(b"\n\n") and stream.buffer.endswith(b"\n")
    await ws.until_closed()
    assert outline(ws.content()) == [("subscribed", "demo:a"), ("reconnect", "shutdown")]
    assert ws.conn.close_code == 1001

    assert await hub.exited(timeout=8 + 2) == 0
    assert time.monotonic() - started < 4, "a clean shutdown should not wait out the timeout"
    assert hub.stdout.endswith(b"torchannels server stopped\n")
    assert "(clean)" in hub.log()
    assert refused(hub.port)


async def test_shutdown_is_bounded_when_a_client_will_not_leave(
    spawn: Callable[..., ServerProcess],
) -> None:
    """A WebSocket peer that never answers the close keeps the hub waiting
    only ``--shutdown-timeout``; meanwhile /health and new subscriptions on
    an open keep-alive connection get 503, and new connections are refused."""
    hub = spawn("--no-demo", "--shutdown-timeout", "2")
    stubborn = await RawWebSocket.connect(hub.port, "/channels/ws?channel=demo:a")
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)

    async def keep_alive_get(path: str) -> tuple[int, dict[str, Any]]:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        assert length is not None, head
        size = int(length.group(1))
        body = await asyncio.wait_for(reader.readexactly(size), WAIT)
        return int(head.split()[1]), json.loads(body)

    try:
        _, payload = await stubborn.frame()
        assert json.loads(payload)["type"] == "connected"
        _, payload = await stubborn.frame()
        assert json.loads(payload)["type"] == "subscribed"
        healthy = {"status": "ok", "broker": "ok", "worker": 0, "connections": 1}
        assert await keep_alive_get("/health") == (200, healthy)
        started = time.monotonic()
        hub.signal(signal.SIGTERM)
        frames, code = await stubborn.until_close()
        assert outline([f for f in frames if f["type"] not in HOUSEKEEPING]) == [
            ("reconnect", "shutdown"),
        ]  # fmt: skip
        assert code == 1001
        assert refused(hub.port)
        status, body = await keep_alive_get("/health")
        assert (status, body) == (503, {"status": "shutting_down"})
        status, body = await keep_alive_get("/channels?transport=poll&channel=demo:a")
        assert (status, body["error"]) == (503, "shutting_down")
        assert await hub.exited(timeout=2 + 3) == 0
        assert 1.8 <= time.monotonic() - started < 4.5
        assert "(forced)" in hub.log()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        await stubborn.aclose()


async def test_sigint_also_stops_the_hub(spawn: Callable[..., ServerProcess]) -> None:
    hub = spawn("--no-demo")
    hub.signal(signal.SIGINT)
    assert await hub.exited(timeout=5) == 0
    assert hub.stdout == b"torchannels server stopped\n"
    assert "Traceback" not in hub.log()

"""The ``ping`` request parameter: a client asks for a shorter (or longer)
keep-alive on streams, SSE and WebSockets, clamped to ``ping_bounds``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
from tornado.websocket import websocket_connect

from support import Server
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings

#: The hub's own interval: longer than any wait below, so a ping that
#: arrives in time can only be the one the client asked for.
HUB_PING = 15.0


class Handler(ChannelMixin, tornado.web.RequestHandler):
    pass


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    hub = Hub(MemoryBroker(), Settings(ping_interval=HUB_PING))
    handler: type[ChannelMixin] = type("H", (Handler,), {"hub": hub})
    return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])


async def ws_frames(server: Server, query: str, until: Callable[[list[dict[str, Any]]], bool],
                    timeout: float = 10) -> list[dict[str, Any]]:  # fmt: skip
    conn = await websocket_connect(f"ws://127.0.0.1:{server.port}/channels/ws?{query}")
    frames: list[dict[str, Any]] = []

    async def read() -> None:
        while not until(frames):
            raw = await conn.read_message()
            assert raw is not None, f"closed early: {frames}"
            frames.append(json.loads(raw))

    try:
        await asyncio.wait_for(read(), timeout)
    finally:
        conn.close()
    return frames


async def announced(server: Server, transport: str, query: str) -> float:
    """The ``ping`` of the ``connected`` frame a fresh subscription gets."""
    if transport == "websocket":
        frames = await ws_frames(server, f"channel=c&{query}", lambda fs: bool(fs))
    else:
        stream = server.open(server.url(transport=transport, channel="c") + "&" + query)
        frames = await stream.wait_frames(lambda fs: bool(fs))
        stream.close()
    assert frames[0]["type"] == "connected", frames
    ping: float = frames[0]["ping"]
    return ping


@pytest.mark.parametrize("transport", ["stream", "sse", "websocket"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [("", HUB_PING), ("ping=1", 5.0), ("ping=7.5", 7.5), ("ping=600", 60.0), ("ping=inf", 60.0)],
)
async def test_ping_is_clamped_and_announced(
    server: Server, transport: str, query: str, expected: float
) -> None:
    assert await announced(server, transport, query) == expected


async def test_idle_connections_get_the_keepalive_they_asked_for(server: Server) -> None:
    """With ping=5 every live transport sends a keep-alive well before the
    hub's 15 s, on a channel where nothing is published."""

    def pinged(frames: list[dict[str, Any]]) -> bool:
        return any(f["type"] == "ping" for f in frames)

    sse = server.open(server.url(transport="sse", channel="quiet", ping=5))
    stream = server.open(server.url(transport="stream", channel="quiet", ping=5))
    bound = HUB_PING - 5  # a bounded wait that the hub's own interval cannot meet
    results = await asyncio.gather(
        sse.wait_frames(pinged, timeout=bound),
        stream.wait_frames(pinged, timeout=bound),
        ws_frames(server, "channel=quiet&ping=5", pinged, timeout=bound),
    )
    for frames in results:
        assert [f["type"] for f in frames][:2] == ["connected", "subscribed"]
        assert frames[-1]["type"] == "ping"
        assert not [f for f in frames if f["type"] == "message"]


@pytest.mark.parametrize("bad", ["ping=often", "ping=0", "ping=-1", "ping=5&ping=6", "ping=%FF"])
async def test_websocket_with_a_bad_ping_gets_an_error_frame(server: Server, bad: str) -> None:
    frames = await ws_frames(server, f"channel=c&{bad}", lambda fs: len(fs) >= 2)
    first = dict(frames[0])
    assert isinstance(first.pop("client"), str)  # the signed client id
    assert first == {"type": "connected", "transport": "websocket", "ping": HUB_PING}
    assert frames[1]["type"] == "error" and frames[1]["code"] == "bad_parameter"
    assert "channel" not in frames[1]
    assert server.hub.local_subscribers("c") == 0


async def test_timeout_is_checked_before_ping(server: Server) -> None:
    response = await server.fetch(
        server.url(transport="longpoll", channel="c") + "&timeout=x&ping=y"
    )
    assert response.code == 400
    assert json.loads(response.body)["message"].startswith("timeout")

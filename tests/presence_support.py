"""What the presence tests share: a hub with presence channels served over
real loopback sockets, and a WebSocket member that collects frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tornado.web
from tornado.websocket import websocket_connect

from support import Server, Socket
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings
from torchannels.brokers.base import Broker
from torchannels.identity import User

WAIT = 10.0
FAST = {"presence_grace": 0.6, "presence_ttl": 6.0, "presence_coalesce": 0.05}


class UserHandler(ChannelMixin, tornado.web.RequestHandler):
    """The user is ``?user=``, with info ``{"name": USER}``; channels named
    ``secret:*`` are refused."""

    def identify(self) -> User | None:
        user = self.get_query_argument("user", None)
        return None if user is None else User(user, {"name": user})

    def can_access(self, sub: Any) -> bool:
        return not sub.channel.startswith("secret:")


def presence_hub(broker: Broker | None = None, **settings: Any) -> Hub:
    hub = Hub(broker or MemoryBroker(), Settings(ping_interval=0.5, **{**FAST, **settings}))
    hub.configure_channels("room:*", presence=True, join_leave=True)
    hub.configure_channels("quiet:*", presence=True)
    hub.configure_channels("secret:*", presence=True)
    return hub


def serve(make_server: Callable[..., Server], hub: Hub) -> Server:
    handler: type[ChannelMixin] = type("Handler", (UserHandler,), {"hub": hub})
    return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])


class Member(Socket):
    """A WebSocket client that collects decoded frames as they arrive."""

    @classmethod
    async def connect(cls, server: Server, query: str) -> Member:
        url = f"ws://127.0.0.1:{server.port}/channels/ws?{query}"
        return cls(await websocket_connect(url))

    async def nth(self, kind: str, n: int) -> dict[str, Any]:
        """The ``n``-th frame (from 0) of type ``kind``, once it arrived."""
        await self.wait(lambda fs: len([f for f in fs if f["type"] == kind]) > n)
        return self.of(kind)[n]


def joined(frames: list[dict[str, Any]]) -> list[str]:
    """Users in the joins of ``presence`` frames, in order."""
    return [j["user"] for f in frames if f["type"] == "presence" for j in f["joins"]]


def left(frames: list[dict[str, Any]]) -> list[str]:
    return [x["user"] for f in frames if f["type"] == "presence" for x in f["leaves"]]


def snapshot_users(frame: dict[str, Any]) -> list[str]:
    return [m["user"] for m in frame["presence"]["members"]]

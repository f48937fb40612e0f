"""An in-process ``torchannels serve`` application on a loopback port whose
presence store the test fills directly: 10,000 users cost a few store calls
each instead of 10,000 connections. Everything the tests read goes through
the real HTTP API (or the CLI, the Publisher) over loopback.

``room:*`` channels have presence; other channels do not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import tornado.httpserver
import tornado.testing
import tornado.web

from server.processes import KEY
from torchannels.channel_options import ChannelOptions
from torchannels.identity import Identity, User
from torchannels.server.app import make_apps, make_hub
from torchannels.server.config import ServerConfig

#: Long enough that nothing expires during a test.
TTL = 600.0


class PresenceHub:
    """The app of ``config`` (API key :data:`KEY`, no demo, ``room:*`` with
    presence, unless ``config`` says otherwise) served on a free loopback port."""

    def __init__(self, **config: Any) -> None:
        options: dict[str, Any] = {
            "api_key": KEY,
            "demo": False,
            "channels": (("room:*", ChannelOptions(presence=True)),),
            **config,
        }
        self.config = ServerConfig(**options)
        self.hub = make_hub(self.config)
        public, internal = make_apps(self.config, self.hub)
        self.servers: list[tornado.httpserver.HTTPServer] = []
        self.base = self._serve(public)
        #: With ``internal_port``: the base URL of the internal application.
        self.internal_base = None if internal is None else self._serve(internal)

    def _serve(self, app: tornado.web.Application) -> str:
        sock, port = tornado.testing.bind_unused_port()
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        self.servers.append(server)
        return f"http://127.0.0.1:{port}"

    async def add(
        self, channel: str, user: str | None, info: Mapping[str, Any] | None = None
    ) -> str:
        """One more client of ``user`` (None: anonymous) present in ``channel``."""
        client = uuid.uuid4().hex
        identity = Identity(
            client, None if user is None else User(user, info), "websocket", time.time()
        )
        await self.hub.broker.presence.add(channel, identity, time.time() + TTL)
        return client

    async def close(self) -> None:
        for server in self.servers:
            server.stop()
            await server.close_all_connections()
        await self.hub.close()

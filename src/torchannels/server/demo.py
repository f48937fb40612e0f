"""The server's demo: a page with a chat and a live price chart, and the
ticker feed behind it, so a newcomer sees channels work within seconds.

Only ``demo:*`` channels are involved, and ``--no-demo`` removes all of it.
The page holds no credential: its chat publishes as a client
(``client.publish``), where the channel's ``publish`` option allows it, and
the publish API's commands it shows say ``$TORCHANNELS_API_KEY``.

In dev mode (``--dev``) the chat works out of the box: ``demo:chat`` gets
presence with joins and leaves and ``publish = "subscribers"``, and
``POST /demo/token`` gives the page a subscription token for a display
name, since anonymous connections are never users. Anyone who can open the
page can get one, for any name: that is why it exists in dev mode only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import secrets
import time
from typing import Any

import tornado.web

from ..errors import BrokerError
from ..hub import Hub
from ..patterns import ChannelPatterns
from ..tokens import encode_token
from .config import ServerConfig
from .devmode import ORIGIN, admin_hint, program, publish_commands

log = logging.getLogger("torchannels.demo")

CHAT = "demo:chat"
TICKER = "demo:ticker"
MAX_NAME = 32
#: While the broker is unavailable the ticker tries one tick in this many.
QUIET_TRY = 10
#: Lifetime of a demo chat token (s); the page renews it for the same user.
TOKEN_TTL = 24 * 3600.0
#: The user ids POST /demo/token makes: "demo-" and 12 hex digits.
USER_RE = re.compile(r"demo-[0-9a-f]{12}")


FAVICON = os.path.join(os.path.dirname(__file__), "favicon.ico")


class DemoPageHandler(tornado.web.RequestHandler):
    """``GET /``: the demo page. It never holds the API key: its publish
    commands say ``$TORCHANNELS_API_KEY`` (in dev mode the terminal prints
    them with the key), or it says the API is off without a key. Its chat
    box is off at once when ``demo:chat`` has no ``publish`` option."""

    def initialize(self, config: ServerConfig, hub: Hub) -> None:
        self.config = config
        self.hub = hub

    def get(self) -> None:
        config = self.config
        # With --internal-port the API is not on this page's port.
        enabled = config.api_key is not None and config.internal_port is None
        commands = publish_commands(ORIGIN, None, program()) if enabled else []
        identity = config.dev and config.token_secret is not None  # POST /demo/token is there
        chat_publish = self.hub.channel_options.get(CHAT).publish is not None
        page = {"apiEnabled": enabled, "origin": ORIGIN, "commands": commands,
                "identity": identity, "chatPublish": chat_publish}  # fmt: skip
        # Inside <script>: no "</script>" or "<!--" can come out of a command.
        text = json.dumps(page).replace("<", "\\u003c").replace(">", "\\u003e")
        internal = config.internal_port is not None
        self.render("demo.html", api_enabled=enabled, dev=config.dev, identity=identity,
                    page_config=text, internal=internal, admin=admin_hint(config))  # fmt: skip


class FaviconHandler(tornado.web.RequestHandler):
    """``GET /favicon.ico``: browsers ask every page's host for it."""

    _icon: bytes | None = None

    def get(self) -> None:
        if FaviconHandler._icon is None:
            with open(FAVICON, "rb") as file:
                FaviconHandler._icon = file.read()
        self.set_header("Content-Type", "image/x-icon")
        self.set_header("Cache-Control", "public, max-age=86400")
        self.finish(FaviconHandler._icon)


class DemoTokenHandler(tornado.web.RequestHandler):
    """``POST /demo/token`` with ``name`` (dev mode only): a subscription
    token for the demo channels whose user is a new id (``sub``) and whose
    ``info`` is ``{"name": NAME}``, so the chat's member list can show the
    name. ``user``, an id this endpoint made before, keeps that id (a
    renewal). Answers ``{"token", "user", "name"}``, or 400 ``bad_name``."""

    def initialize(self, config: ServerConfig) -> None:
        self.config = config

    def check_xsrf_cookie(self) -> None:
        """The demo chat is anonymous on purpose: anyone may take a name."""

    def post(self) -> None:
        secret = self.config.token_secret
        assert secret is not None  # dev mode always has one (ServerConfig.with_dev_key)
        name = self.get_body_argument("name", "").strip()
        if not name or len(name) > MAX_NAME:
            self.set_status(400)
            message = f"a name of 1-{MAX_NAME} characters, please"
            self.finish({"error": "bad_name", "message": message})
            return
        user = self.get_body_argument("user", "")
        if not USER_RE.fullmatch(user):
            user = "demo-" + secrets.token_hex(6)
        claims = {"sub": user, "info": {"name": name}, "channels": ["demo:*"],
                  "exp": int(time.time() + TOKEN_TTL)}  # fmt: skip
        self.set_header("Cache-Control", "no-store")
        self.finish({"token": encode_token(claims, secret), "user": user, "name": name})


def demo_routes(config: ServerConfig, hub: Hub) -> list[Any]:
    """The demo's routes; in dev mode also its identities (``/demo/token``),
    and on ``demo:chat`` presence with joins and leaves and client publish
    by its subscribers, unless the configuration gives ``demo:chat``
    options of its own."""
    routes: list[Any] = [(r"/", DemoPageHandler, {"config": config, "hub": hub})]
    if config.dev and config.token_secret is not None:
        routes.append((r"/demo/token", DemoTokenHandler, {"config": config}))
        if not any(ChannelPatterns([pattern]).matches(CHAT) for pattern, _ in config.channels):
            hub.configure_channels(CHAT, presence=True, join_leave=True, publish="subscribers")
    return routes


class Ticker:
    """Publishes a random-walk price to ``demo:ticker`` every ``interval`` s
    and keeps the last 60 points as the channel's state, so a late joiner
    draws the recent chart at once instead of replaying history."""

    def __init__(self, hub: Hub, interval: float = 1.0) -> None:
        self.hub = hub
        self.interval = interval
        self.price = 100.0
        self.recent: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def tick(self) -> None:
        self.price = round(max(1.0, self.price * (1 + random.uniform(-0.01, 0.01))), 2)
        point = {"price": self.price, "t": round(time.time(), 3)}
        channel = self.hub.channel(TICKER)
        await channel.asend(point)
        self.recent = [*self.recent[-59:], point]
        await channel.aset_state(self.recent)

    async def _run(self) -> None:
        skipped = 0
        while True:
            # While the broker is down the ticker is quiet: the broker logs
            # its own state changes. It tries every QUIET_TRY-th tick anyway,
            # for a broker that only notices it is back when a command works.
            if self.hub.broker.available or skipped >= QUIET_TRY:
                skipped = 0
                try:
                    await self.tick()
                except BrokerError as exc:
                    log.debug("demo ticker: %s", exc)
                except Exception:  # a bug, not a broker hiccup: say it, keep ticking
                    log.exception("demo ticker failed")
            else:
                skipped += 1
            await asyncio.sleep(self.interval)

"""The seed README's app, written with torchannels, as a model of safe use.

Run it with ``make example`` (or ``python examples/seed_app.py --port 8888``)
and open http://127.0.0.1:8888/. The page subscribes to a chat and a ticker;
the chat form posts to an ordinary Tornado handler that publishes, as the
seed README describes; the ticker is published by a timer and keeps its
latest value as channel state, so late joiners see it at once. A logged-in
user also has a private channel, ``private:<name>``, that only they can read.

What to copy from it, besides the seed API:

- Users come from a signed cookie (``cookie_secret`` with
  ``set_signed_cookie``/``get_signed_cookie``, the new names of
  ``set_secure_cookie``/``get_secure_cookie``), never from a plain one. The
  login asks only for a name: this is a demo, so anyone may be anyone. Your
  app checks a password or a single sign-on before ``set_signed_cookie``.
- The secret comes from ``SEED_APP_COOKIE_SECRET``. Without it a random one
  is made at start (and logged as such): logins then end with the process.
- Every form that changes something (publish, login, logout) carries the
  XSRF token (``xsrf_cookies=True``); the subscription endpoint only reads,
  and ``ChannelMixin`` exempts it from the check.
- Reading is denied by default (``can_access``): the shared channels, the
  ticker and the user's own private channel, nothing else.
- Writing is decided by the publishing handler, before ``send``: only
  logged-in users, only to the shared chat or their own private channel, so
  nobody creates channels at will.
- Bad input is answered 400 with a message (bad channel names, empty or
  long text, messages ``send`` refuses), never 500 with a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import secrets
import signal
import time
from typing import Any

import tornado.web
from tornado.ioloop import PeriodicCallback

import torchannels
from torchannels import torchannel

HERE = os.path.dirname(os.path.abspath(__file__))
log = logging.getLogger("seed_app")

SECRET_ENV = "SEED_APP_COOKIE_SECRET"
USER_COOKIE = "user"
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")  # login names; also safe in channel names
MAX_TEXT = 500
SHARED_CHANNELS = frozenset({"chat"})  # what any logged-in user may write (and anyone read)
READ_ONLY_CHANNELS = frozenset({"ticker"})  # the server's own, read by anyone


def private_channel(user: str) -> str:
    return f"private:{user}"


class BaseHandler(tornado.web.RequestHandler):
    """Stands for the app's own base handler (sessions, users, ...)."""

    def get_current_user(self) -> str | None:
        # Signed: a cookie the browser (or an attacker) made up is ignored.
        value = self.get_signed_cookie(USER_COOKIE, max_age_days=1)
        if value is None:
            return None
        name = value.decode("utf-8", "replace")
        return name if NAME_RE.fullmatch(name) else None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as ``{"error": status, "message": text}``; no traceback."""
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.finish({"error": status_code, "message": message})


class ChannelHandler(torchannel.ChannelMixin, BaseHandler):
    def can_access(self, sub: torchannel.Subscription) -> bool:
        """Override to provide authentication for channels."""
        if not super().can_access(sub):
            return False
        if sub.channel in SHARED_CHANNELS or sub.channel in READ_ONLY_CHANNELS:
            return True
        # A private channel is only for the (signed-in) user of the same name.
        user = self.current_user
        return user is not None and sub.channel == private_channel(user)


class PublishHandler(BaseHandler):
    """An ordinary handler that writes to a channel (the seed's way).

    Tornado has checked the XSRF token before ``post`` runs (403 without it).
    """

    def post(self, channel: str) -> None:
        try:
            handle = ChannelHandler.get_channel(channel)  # validates the name
        except torchannels.ChannelNameError as exc:
            raise tornado.web.HTTPError(400, "%s", exc) from None
        user = self.current_user
        if user is None:
            raise tornado.web.HTTPError(403, "log in to publish")
        if channel not in SHARED_CHANNELS and channel != private_channel(user):
            raise tornado.web.HTTPError(403, "you may not publish to %r", channel)
        text = self.get_body_argument("text", "").strip()
        if not text:
            raise tornado.web.HTTPError(400, "empty message")
        if len(text) > MAX_TEXT:
            raise tornado.web.HTTPError(400, "message longer than %d characters", MAX_TEXT)
        try:
            message = handle.send({"user": user, "text": text})
        except torchannels.MessageError as exc:
            raise tornado.web.HTTPError(400, "%s", exc) from None
        self.write({"channel": channel, "offset": message["offset"]})


class PageHandler(BaseHandler):
    def get(self) -> None:
        user = self.current_user
        self.render(
            "seed_page.html",
            user=user,
            private=private_channel(user) if user else None,
        )


class LoginHandler(BaseHandler):
    """A name is enough here; a real app checks a password before signing."""

    def get(self) -> None:
        self.render("seed_login.html", error=None, name="")

    def post(self) -> None:
        name = self.get_body_argument("name", "").strip()
        if not NAME_RE.fullmatch(name):
            self.set_status(400)
            self.render(
                "seed_login.html",
                error="A name is 1-32 letters, digits, _ or -.",
                name=name[:32],
            )
            return
        self.set_signed_cookie(
            USER_COOKIE,
            name,
            expires_days=1,
            httponly=True,
            samesite="Lax",
            # secure=True as well when the app is served over HTTPS.
        )
        self.redirect("/")


class LogoutHandler(BaseHandler):
    def post(self) -> None:  # POST with the XSRF token: no logging out by a link
        self.clear_cookie(USER_COOKIE)
        self.redirect("/")


def publish_tick(price: list[float]) -> None:
    price[0] = round(max(1.0, price[0] * (1 + random.uniform(-0.01, 0.01))), 2)
    ticker = ChannelHandler.get_channel("ticker")
    tick = {"price": price[0], "at": time.strftime("%H:%M:%S")}
    ticker.send(tick)
    ticker.set_state([tick])  # late joiners get the last price, not every tick


def cookie_secret() -> str:
    secret = os.environ.get(SECRET_ENV, "")
    if secret:
        return secret
    log.warning(
        "%s is not set: using a random cookie secret for this run "
        "(logins end when the app stops; set it to keep them)",
        SECRET_ENV,
    )
    return secrets.token_urlsafe(32)


def make_app(secret: str | None = None) -> tornado.web.Application:
    handlers: list[Any] = [
        (r"^/$", PageHandler),
        (r"^/login$", LoginHandler),
        (r"^/logout$", LogoutHandler),
        (r"^/channels$", ChannelHandler),
        (r"^/channels/ws$", ChannelHandler.websocket()),
        # Any name reaches the handler, which answers a bad one with a 400.
        (r"^/publish/(.*)$", PublishHandler),
        torchannels.static_route(),
    ]
    settings: dict[str, Any] = dict(
        template_path=os.path.join(HERE, "templates"),
        cookie_secret=secret or cookie_secret(),
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Lax"},
        login_url="/login",
        # The seed asked you to copy torchannel.js into your static folder;
        # static_route() serves it from the package instead.
    )
    return tornado.web.Application(handlers, **settings)


async def main(host: str, port: int) -> None:
    server = make_app().listen(port, host)
    price = [100.0]
    ticker = PeriodicCallback(lambda: publish_tick(price), 1000)
    ticker.start()
    # Ctrl-C (SIGINT) or SIGTERM: a graceful stop, not a KeyboardInterrupt
    # traceback. Clients are asked to reconnect (elsewhere, in a real deployment).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"seed app on http://{host}:{port}/", flush=True)
    await stop.wait()
    server.stop()
    ticker.stop()
    hub = ChannelHandler.hub
    await hub.shutdown(5.0)
    await asyncio.wait_for(server.close_all_connections(), 5.0)
    await hub.close()
    print("seed app stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # errors only
    asyncio.run(main(args.host, args.port))

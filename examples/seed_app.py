"""The seed README's app, written with torchannels.

Run it with ``make run`` (or ``python examples/seed_app.py --port 8888``) and
open http://127.0.0.1:8888/. The page subscribes to a chat and a ticker;
the chat form posts to an ordinary Tornado handler that publishes, as the
seed README describes; the ticker is published by a timer and keeps its
latest value as channel state, so late joiners see it at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

import tornado.web
from tornado.ioloop import PeriodicCallback

import torchannels
from torchannels import torchannel

HERE = os.path.dirname(os.path.abspath(__file__))


class BaseHandler(tornado.web.RequestHandler):
    """Stands for the app's own base handler (sessions, users, ...)."""

    def get_current_user(self) -> str | None:
        return self.get_cookie("user") or "guest"


class ChannelHandler(torchannel.ChannelMixin, BaseHandler):
    def can_access(self, sub: torchannel.Subscription) -> bool:
        """Override to provide authentication for channels."""
        if not super().can_access(sub):
            return False
        # Channels under "private:" are only for a user of the same name.
        if sub.channel.startswith("private:"):
            return sub.channel == f"private:{self.current_user}"
        return True


class PublishHandler(BaseHandler):
    """An ordinary handler that writes to a channel (the seed's way)."""

    def post(self, channel: str) -> None:
        text = self.get_body_argument("text", "").strip()[:500]
        if not text:
            raise tornado.web.HTTPError(400, "empty message")
        message = ChannelHandler.get_channel(channel).send(
            {"user": self.current_user, "text": text}
        )
        self.write({"offset": message["offset"]})


class PageHandler(BaseHandler):
    def get(self) -> None:
        self.render("seed_page.html")


def publish_tick(price: list[float]) -> None:
    price[0] = round(max(1.0, price[0] * (1 + random.uniform(-0.01, 0.01))), 2)
    ticker = ChannelHandler.get_channel("ticker")
    tick = {"price": price[0], "at": time.strftime("%H:%M:%S")}
    ticker.send(tick)
    ticker.set_state([tick])  # late joiners get the last price, not every tick


def make_app() -> tornado.web.Application:
    handlers = [
        (r"^/$", PageHandler),
        (r"^/channels$", ChannelHandler),
        (r"^/channels/ws$", ChannelHandler.websocket()),
        (r"^/publish/([-a-zA-Z0-9_:.]+)$", PublishHandler),
        torchannels.static_route(),
    ]
    settings = dict(
        template_path=os.path.join(HERE, "templates"),
        # The seed asked you to copy torchannel.js into your static folder;
        # static_route() serves it from the package instead.
    )
    return tornado.web.Application(handlers, **settings)


async def main(host: str, port: int) -> None:
    make_app().listen(port, host)
    price = [100.0]
    ticker = PeriodicCallback(lambda: publish_tick(price), 1000)
    ticker.start()
    print(f"seed app on http://{host}:{port}/", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))

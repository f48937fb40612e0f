"""Browser tests: the real torchannel.js in headless Debian Chromium.

The Tornado app runs in a thread with its own event loop; tests drive
Chromium through Playwright's sync API and reach the server through
``Site.call`` (run a function on the server's loop) or HTTP. The browser
is Debian's ``/usr/bin/chromium`` (no browser download is possible here);
when it is missing the tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web

import torchannels
from torchannels import ChannelMixin, HistoryPolicy, Hub, MemoryBroker, Settings
from torchannels.transports.connection import LiveConnection

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUTPUT = os.path.join(ROOT, "test-output")
T = TypeVar("T")


class E2EChannelHandler(ChannelMixin, tornado.web.RequestHandler):
    """The app's handler; ``blocked`` makes subscribe requests fail with 503
    so a test can keep clients away while it publishes."""

    blocked = False

    def prepare(self) -> None:
        if type(self).blocked:
            raise tornado.web.HTTPError(503)

    def can_access(self, sub: torchannels.Subscription) -> bool:
        return not sub.channel.startswith("secret")


class PageHandler(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        self.render(f"{name}.html")


class Site:
    """The running test app."""

    def __init__(self) -> None:
        self.hub = Hub(
            MemoryBroker(HistoryPolicy(size=1000, ttl=3600)),
            Settings(ping_interval=2.0, longpoll_timeout=5.0),
        )
        self.handler: type[E2EChannelHandler] = type(
            "ChannelHandler", (E2EChannelHandler,), {"hub": self.hub}
        )
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = tornado.web.Application(
            [
                (r"/channels", self.handler),
                (r"/channels/ws", self.handler.websocket()),
                # The same channels without a WebSocket route next to them
                # (/nows/channels/ws is a 404): the client must fall back.
                (r"/nows/channels", self.handler),
                torchannels.static_route(),
                (
                    r"/vendor/(.*)",
                    tornado.web.StaticFileHandler,
                    {"path": os.path.join(ROOT, "node_modules", "jquery", "dist")},
                ),
                (r"/page/(\w+)", PageHandler),
            ],
            template_path=os.path.join(HERE, "pages"),
            static_path=torchannels.static_path(),
        )
        sock, self.port = tornado.testing.bind_unused_port()
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.add_sockets([sock])
        self._ready.set()
        self.loop.run_forever()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(10)

    def publish(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda: self.hub.channel(channel).send(message))

    def set_state(self, channel: str, messages: list[dict[str, Any]]) -> None:
        self.call(lambda: self.hub.channel(channel).set_state(messages))

    def drop_connections(self) -> int:
        """Cut every live subscriber connection from the server side."""

        def drop() -> int:
            count = 0
            for conn in list(self.hub.connections):
                if isinstance(conn, LiveConnection):
                    conn.cut()
                else:  # a long-poll being held
                    cast(Any, conn).handler.request.connection.stream.close()
                count += 1
            return count

        return self.call(drop)

    def block(self, blocked: bool) -> None:
        self.handler.blocked = blocked

    def configure_history(self, channel: str, size: int) -> None:
        """Keep at most ``size`` messages of ``channel``'s history."""
        self.call(lambda: self.hub.channel(channel).configure(history_size=size))

    def local_subscribers(self, channel: str) -> int:
        return self.call(lambda: self.hub.local_subscribers(channel))

    def connection_count(self) -> int:
        return self.call(lambda: len(self.hub.connections))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    site = Site()
    yield site
    site.block(False)
    site.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module. Not per session: while Playwright's sync
    API is started, the thread counts as running an event loop, and the
    pytest-asyncio tests that run after the browser tests would all fail
    with "Runner.run() cannot be called from a running event loop"."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: run scripts/ensure-chromium.sh "
            "(make test does); browser tests never skip"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"

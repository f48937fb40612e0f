"""An app's backend for the browser tests of the backend hooks: a Tornado
app on a loopback port, in a thread with its own event loop (Playwright's
sync API holds the test's thread). It logs a user in with a ``session``
cookie (``GET /login?user=NAME``), serves the control page and the
client (``/page/control``, ``/torchannels/torchannel.js``), and answers
the hub's connect hook (``POST /connect``) from that cookie, after
checking the call's signature.

The hub runs on another port of the same host: cookies are per host, not
per port, so the browser sends the backend's cookie to the hub too (the
two origins are same-site; the hub allows the backend's origin, with
credentials)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any

import tornado.httpserver
import tornado.testing
import tornado.web

import torchannels
from torchannels.proxy_signature import SIGNATURE_HEADER, verify_signature

HERE = os.path.dirname(os.path.abspath(__file__))


class Backend:
    """The running backend. ``calls``: every hook call, as (body, whether
    its signature was good)."""

    def __init__(self, secret: str, channels: list[str], publish: list[str]) -> None:
        self.secret = secret
        #: What a logged-in user may read and publish to (the connect answer).
        self.channels = channels
        self.publish = publish
        self.calls: list[tuple[dict[str, Any], bool]] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the backend did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = tornado.web.Application(
            [
                (r"/connect", ConnectHook, {"backend": self}),
                (r"/login", Login),
                (r"/page/(\w+)", Page),
                torchannels.static_route(),
            ],
            template_path=os.path.join(HERE, "pages"),
        )
        sock, self.port = tornado.testing.bind_unused_port()
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.add_sockets([sock])
        self._ready.set()
        self.loop.run_forever()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        user = body["cookies"].get("session")
        if user is None:
            return {"error": {"code": "login_required", "message": "log in first"}}
        return {"result": {"user": user, "info": {"name": user.title()},
                           "channels": self.channels, "publish": self.publish}}  # fmt: skip

    def calls_of(self, user: str) -> list[dict[str, Any]]:
        """The signed calls that carried ``user``'s session cookie."""
        calls = list(self.calls)  # appended to by the backend's thread
        return [body for body, signed in calls if signed and body["cookies"].get("session") == user]

    def close(self) -> None:
        def stop() -> None:
            self.server.stop()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self._thread.join(10)
        self.loop.close()


class ConnectHook(tornado.web.RequestHandler):
    def initialize(self, backend: Backend) -> None:
        self.backend = backend

    def post(self) -> None:
        body = json.loads(self.request.body)
        signed = verify_signature(
            self.request.body, self.request.headers.get(SIGNATURE_HEADER), self.backend.secret
        )
        self.backend.calls.append((body, signed))
        if signed:
            answer = self.backend.connect_answer(body)
        else:
            answer = {"error": {"code": "bad_signature", "message": "not signed by the hub"}}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(answer))


class Login(tornado.web.RequestHandler):
    def get(self) -> None:
        user = self.get_query_argument("user")
        self.set_cookie("session", user, path="/", httponly=True, samesite="Lax")
        self.finish(f"logged in as {user}")


class Page(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        self.render(f"{name}.html")

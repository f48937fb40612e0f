"""A publish API on a loopback socket that records every request and answers
it as its script says, for the publisher's retry tests.

Request number n gets ``script[n]`` (those after the script, ``"ok"``):

- ``"ok"``: published, as a hub answers (``channel``, ``epoch``, ``offset``,
  ``ts``; a key this stand-in already stored in that channel gets the first
  one's position and ``"duplicate": true``, as docs/api.md says);
- ``"hold"``: published (stored, as ``"ok"``), then no answer until the
  stand-in closes: the test cuts the connection, or lets the client time out;
- ``"close"``: published, then the connection closed (FIN) without an answer;
- ``"503"``, ``"500"``, ``"400"``: that status with an API error body, nothing
  stored; ``"502"``: a proxy's HTML page.

It is no hub: what the real one does with keys is tested against it
(test_client_exactly_once.py). This one shows what the client sends, each
attempt, which a hub does not tell.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import tornado.http1connection
import tornado.httpserver
import tornado.netutil
import tornado.web

ERRORS = {
    "503": (503, {"error": "broker_unavailable", "message": "the broker is down"}),
    "500": (500, {"error": "internal", "message": "a bug"}),
    "400": (400, {"error": "invalid_message", "message": "bad data"}),
}


@dataclass(frozen=True)
class Seen:
    """One request as it came: its ``Idempotency-Key`` header (None without
    one) and its JSON body."""

    key: str | None
    body: dict[str, Any]


@dataclass
class _Store:
    """What "ok" and "hold" stored: each channel's last offset and its keys."""

    offsets: dict[str, int] = field(default_factory=dict)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)

    def publish(self, channel: str, key: str | None) -> dict[str, Any]:
        first = self.keys.get((channel, key)) if key is not None else None
        if first is not None:
            return {"channel": channel, "epoch": "e", "offset": first, "ts": 1.0,
                    "duplicate": True}  # fmt: skip
        offset = self.offsets[channel] = self.offsets.get(channel, 0) + 1
        if key is not None:
            self.keys[(channel, key)] = offset
        return {"channel": channel, "epoch": "e", "offset": offset, "ts": 1.0}

    def answer(self, body: dict[str, Any], key: str | None) -> dict[str, Any]:
        if "messages" in body:
            return {"results": [self.publish(m["channel"], m.get("idempotency_key"))
                                for m in body["messages"]]}  # fmt: skip
        if "channels" in body:
            return {"results": [self.publish(c, key) for c in dict.fromkeys(body["channels"])]}
        return self.publish(body["channel"], key)


class RecordingAPI:
    """``async with RecordingAPI("503", "ok") as api``: ``api.base`` is its
    URL, ``api.seen`` the requests so far, ``api.held`` set when a ``"hold"``
    request has been stored."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.seen: list[Seen] = []
        self.held = asyncio.Event()
        self._closing = asyncio.Event()
        self._store = _Store()
        self._server: tornado.httpserver.HTTPServer | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def keys(self) -> list[str | None]:
        return [seen.key for seen in self.seen]

    async def __aenter__(self) -> RecordingAPI:
        app = tornado.web.Application([("/api/publish", _Handler, {"api": self})])
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sock.getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets([sock])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()

    async def handle(self, handler: tornado.web.RequestHandler) -> None:
        body = json.loads(handler.request.body)
        key = handler.request.headers.get("Idempotency-Key")
        n = len(self.seen)
        self.seen.append(Seen(key, body))
        what = self.script[n] if n < len(self.script) else "ok"
        if what in ERRORS:
            status, doc = ERRORS[what]
            handler.set_status(status)
            handler.finish(doc)
        elif what == "502":
            handler.set_status(502)
            handler.finish("<html><body>502 Bad Gateway</body></html>")
        elif what == "hold":
            self._store.answer(body, key)
            self.held.set()
            await self._closing.wait()  # the answer is lost: no answer at all
        elif what == "close":
            self._store.answer(body, key)
            connection = handler.request.connection
            assert isinstance(connection, tornado.http1connection.HTTP1Connection)
            connection.detach().close()
        else:
            assert what == "ok", what
            handler.finish(self._store.answer(body, key))


class _Handler(tornado.web.RequestHandler):
    def initialize(self, api: RecordingAPI) -> None:
        self.api = api

    async def post(self) -> None:
        await self.api.handle(self)

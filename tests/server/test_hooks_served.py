"""The backend hooks on a real server process (issue 20): a small app in the
test answers the connect, subscribe and publish hooks by its session cookie,
and can be slowed, stopped or made to answer garbage
(docs/api.md#backend-hooks-proxies)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web
import tornado.websocket

from server.processes import KEY, WAIT, ServerProcess, api, as_json, fetch
from torchannels.proxy_signature import verify_signature

SECRET = "hook-secret"
CONFIG = """
[channels."hp:*"]
publish = "proxy"
[channels."room:*"]
publish = "token"
[channels."extra:hp*"]
publish = "proxy"
"""


class App:
    """The app's backend: sessions by cookie, and a mode for its failures."""

    def __init__(self) -> None:
        self.mode = "ok"  # "ok" | "slow" | "garbage" | "error500"
        self.calls: list[tuple[str, dict[str, Any], bool]] = []
        self.release = asyncio.Event()
        handlers = [(r"/(connect|subscribe|publish)", Hook, {"app": self})]
        sock, self.port = tornado.testing.bind_unused_port()
        self.server = tornado.httpserver.HTTPServer(tornado.web.Application(handlers))
        self.server.add_sockets([sock])

    def url(self, hook: str) -> str:
        return f"http://127.0.0.1:{self.port}/{hook}"

    def stop(self) -> None:
        self.release.set()
        self.server.stop()

    def answer(self, hook: str, body: dict[str, Any]) -> dict[str, Any]:
        if hook == "connect":
            user = body["cookies"].get("session")
            if user is None:
                return {"error": {"code": "login_required", "message": "log in first"}}
            return {"result": {"user": user, "info": {"name": user.title()},
                               "channels": ["room:*"], "publish": ["room:*"]}}  # fmt: skip
        if hook == "subscribe":
            if body["user"] == "alice" and body["channel"].startswith("extra:"):
                return {"result": {}}
            return {"error": {"code": "not_a_member", "message": "not in this room"}}
        if body["data"].get("text") == "spam":
            return {"error": {"code": "spam", "message": "no spam here"}}
        return {"result": {"data": {**body["data"], "checked": True}}}


class Hook(tornado.web.RequestHandler):
    def initialize(self, app: App) -> None:
        self.app = app

    async def post(self, hook: str) -> None:
        signed = verify_signature(
            self.request.body, self.request.headers.get("X-Torchannels-Signature"), SECRET
        )
        body = json.loads(self.request.body)
        self.app.calls.append((hook, body, signed))
        mode = self.app.mode
        if mode == "slow":
            await self.app.release.wait()
        if mode == "error500":
            self.set_status(500)
            self.finish("oops")
            return
        self.set_header("Content-Type", "application/json")
        if mode == "garbage":
            self.finish(b'["not", "an", "object"]')
            return
        self.finish(json.dumps(self.app.answer(hook, body)))


@pytest.fixture
async def app() -> AsyncIterator[App]:
    backend = App()
    yield backend
    backend.stop()


async def start(spawn: Callable[..., ServerProcess], app: App, log_dir: Path) -> ServerProcess:
    config = log_dir / "hooks.toml"
    config.write_text(CONFIG)
    flags = ["--no-demo", "--api-key", KEY, "--proxy-secret", SECRET, "--proxy-timeout", "0.5",
             "--proxy-connect", app.url("connect"), "--proxy-subscribe", app.url("subscribe"),
             "--proxy-publish", app.url("publish"), "--config", str(config),
             "--proxy-headers", "User-Agent"]  # fmt: skip
    # In a thread: the app answers on this loop while the server starts.
    return await asyncio.to_thread(spawn, *flags)


async def socket_frames(
    hub: ServerProcess, channels: list[str], cookie: str | None, until: int
) -> list[dict[str, Any]]:
    """The first ``until`` content frames of a WebSocket (with ``cookie``)."""
    headers = {"Cookie": f"session={cookie}"} if cookie else {}
    request = tornado.httpclient.HTTPRequest(hub.ws_url(channel=channels), headers=headers)
    conn = await tornado.websocket.websocket_connect(request)
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(WAIT):
            while len(frames) < until:
                raw = await conn.read_message()
                assert raw is not None, frames
                frame = json.loads(raw)
                if frame["type"] not in ("connected", "ping"):
                    frames.append(frame)
    finally:
        conn.close()
    return frames


async def test_a_session_cookie_alone_authorizes_a_page(
    spawn: Callable[..., ServerProcess], app: App, log_dir: Path, http: Any
) -> None:
    hub = await start(spawn, app, log_dir)
    frames = await socket_frames(hub, ["room:1", "private:x"], "alice", until=2)
    assert [(f["type"], f.get("channel")) for f in frames] == [
        ("subscribed", "room:1"), ("error", "private:x")]  # fmt: skip
    assert frames[1]["code"] == "not_a_member"  # the subscribe hook was asked, and said no
    hook, body, signed = app.calls[0]
    assert (hook, signed) == ("connect", True)
    assert set(body) == {"client", "transport", "cookies", "headers"}
    assert body["cookies"] == {"session": "alice"} and body["transport"] == "websocket"
    assert "user-agent" in body["headers"]
    refused = await socket_frames(hub, ["room:1"], None, until=1)
    assert (refused[0]["type"], refused[0]["code"]) == ("error", "login_required")


async def test_the_subscribe_hook_decides_what_nothing_else_covers(
    spawn: Callable[..., ServerProcess], app: App, log_dir: Path
) -> None:
    hub = await start(spawn, app, log_dir)
    frames = await socket_frames(hub, ["extra:1"], "alice", until=1)
    assert (frames[0]["type"], frames[0]["channel"]) == ("subscribed", "extra:1")
    asked = [body for hook, body, _ in app.calls if hook == "subscribe"]
    assert asked[0]["user"] == "alice" and asked[0]["channel"] == "extra:1"
    assert asked[0]["info"] == {"name": "Alice"}


async def test_the_publish_hook_replaces_or_refuses(
    spawn: Callable[..., ServerProcess], app: App, log_dir: Path, http: Any
) -> None:
    hub = await start(spawn, app, log_dir)
    headers = {"Content-Type": "application/json", "Cookie": "session=bob"}
    # hp:* is not readable by bob, but publish = "proxy": the backend alone decides.
    body = json.dumps({"channel": "hp:1", "data": {"text": "hi"}})
    answer = await fetch(http, hub.url(), "POST", body, headers)
    assert answer.code == 200, answer.body
    spam = json.dumps({"channel": "hp:1", "data": {"text": "spam"}})
    refused = await fetch(http, hub.url(), "POST", spam, headers)
    assert (refused.code, as_json(refused)) == (403, {"error": "spam", "message": "no spam here"})
    history = await api(http, hub, "/api/channels/hp:1", method="GET")
    assert as_json(history)["offset"] == 1
    asked = [body for hook, body, _ in app.calls if hook == "publish"]
    assert asked[0] == {"client": asked[0]["client"], "user": "bob", "channel": "hp:1",
                        "data": {"text": "hi"}}  # fmt: skip
    token_policy = json.dumps({"channel": "room:2", "data": {"n": 1}})  # the connect's publish
    assert (await fetch(http, hub.url(), "POST", token_policy, headers)).code == 200


async def test_the_replacement_is_what_subscribers_get(
    spawn: Callable[..., ServerProcess], app: App, log_dir: Path
) -> None:
    hub = await start(spawn, app, log_dir)
    reader = await open_socket(hub, ["extra:hp1"], "alice")  # the subscribe hook lets her in
    writer = await open_socket(hub, [], "bob")
    try:
        await next_frame(reader, "subscribed")
        command = {"type": "publish", "channel": "extra:hp1", "data": {"text": "yo"}, "id": 1}
        await writer.write_message(json.dumps(command))
        assert (await next_frame(writer, "published"))["id"] == 1
        got = (await next_frame(reader, "message"))["data"]
        assert (got["text"], got["checked"]) == ("yo", True)  # the backend's replacement
        assert got["sender"]["user"] == "bob"
    finally:
        reader.close()
        writer.close()


async def open_socket(
    hub: ServerProcess, channels: list[str], cookie: str
) -> tornado.websocket.WebSocketClientConnection:
    request = tornado.httpclient.HTTPRequest(
        hub.ws_url(channel=channels) if channels else hub.ws_url(),
        headers={"Cookie": f"session={cookie}"},
    )
    return await tornado.websocket.websocket_connect(request)


async def next_frame(
    conn: tornado.websocket.WebSocketClientConnection, kind: str
) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            raw = await conn.read_message()
            assert raw is not None, f"closed before {kind}"
            frame: dict[str, Any] = json.loads(raw)
            if frame["type"] == kind:
                return frame


FAILURES = [("slow", "proxy_unavailable"), ("error500", "proxy_unavailable"),
            ("garbage", "proxy_error"), ("down", "proxy_unavailable")]  # fmt: skip


@pytest.mark.parametrize(("mode", "code"), FAILURES)
async def test_a_failing_backend_is_never_a_silent_allow(
    spawn: Callable[..., ServerProcess], app: App, log_dir: Path, http: Any, mode: str, code: str
) -> None:
    hub = await start(spawn, app, log_dir)
    if mode == "down":
        app.stop()
    else:
        app.mode = mode
    started = time.monotonic()
    frames = await socket_frames(hub, ["room:1"], "alice", until=1)
    assert (frames[0]["type"], frames[0]["code"]) == ("error", code), frames
    headers = {"Content-Type": "application/json", "Cookie": "session=alice"}
    body = json.dumps({"channel": "hp:1", "data": {}})
    answer = await fetch(http, hub.url(), "POST", body, headers)
    assert (answer.code, as_json(answer)["error"]) == (503, code)
    assert time.monotonic() - started < 5  # each call bounded by --proxy-timeout (0.5 s)
    if mode == "garbage":  # logged (at most once a minute per hook), never silent
        deadline = time.monotonic() + WAIT
        while "not a JSON object" not in hub.log():
            assert time.monotonic() < deadline, hub.log()
            await asyncio.sleep(0.05)

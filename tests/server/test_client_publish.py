"""Client publish on the standalone server (issue 20): the WebSocket command
and the HTTP POST, each channel policy, the stamped sender, the limits and
bad input (docs/protocol.md#publishing, docs/api.md)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.websocket

from redis_servers import shared_redis
from server.processes import (
    KEY,
    SECRET,
    WAIT,
    ServerProcess,
    api,
    as_json,
    fetch,
    jwt,
)

CONFIG = """
[channels."ps:*"]
publish = "subscribers"
[channels."pt:*"]
publish = "token"
"""
ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def hub(log_dir: Path) -> Iterator[ServerProcess]:
    config = log_dir / "publish.toml"
    config.write_text(CONFIG)
    process = ServerProcess(
        log_dir,
        ["--port", "0", "--no-demo", "--api-key", KEY, "--token-secret", SECRET,
         "--config", str(config), "--anonymous", "ps:open*,pn:*",
         "--client-publish-rate", "5", "--max-client-publish-bytes", "200",
         "--allowed-origins", ORIGIN],
        None,
    )  # fmt: skip
    yield process
    process.close()


def token(user: str, *, channels: tuple[str, ...] = ("ps:*", "pt:*"), **claims: Any) -> str:
    body = {"sub": user, "exp": time.time() + 300, "channels": list(channels)}
    return jwt({**body, **claims})


class Ws:
    """A WebSocket that sends commands and reads frames."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self._reading: Any = None

    async def _next(self, left: float) -> dict[str, Any]:
        """The next frame, waiting at most ``left`` seconds (a read still
        pending then is kept for the next call)."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self.conn.read_message())
        raw = await asyncio.wait_for(asyncio.shield(self._reading), left)
        self._reading = None
        assert raw is not None, f"closed; frames: {self.frames}"
        frame: dict[str, Any] = json.loads(raw)
        return frame

    @classmethod
    async def open(cls, hub: ServerProcess, **query: Any) -> Ws:
        conn = await tornado.websocket.websocket_connect(hub.ws_url(**query))
        return cls(conn)

    async def until(self, kind: str, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            for frame in self.frames:
                if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                    self.frames.remove(frame)
                    return frame
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind} {match}: {self.frames}"
            self.frames.append(await self._next(left))

    async def publish(self, channel: Any, data: Any, ident: Any = 1) -> dict[str, Any]:
        await self.conn.write_message(
            json.dumps({"type": "publish", "channel": channel, "data": data, "id": ident})
        )
        while True:
            frame = await self.until_any(("published", "publish_error"))
            if frame.get("id") == ident:
                return frame

    async def until_any(self, kinds: tuple[str, ...]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            for frame in self.frames:
                if frame["type"] in kinds:
                    self.frames.remove(frame)
                    return frame
            left = deadline - time.monotonic()
            assert left > 0, f"no {kinds}: {self.frames}"
            self.frames.append(await self._next(left))

    def close(self) -> None:
        self.conn.close()


async def post(http: Any, hub: ServerProcess, body: Any, *, tok: str | None = None,
               headers: dict[str, str] | None = None, raw: bytes | None = None) -> Any:  # fmt: skip
    query = {"token": tok} if tok else {}
    sent = raw if raw is not None else json.dumps(body).encode()
    return await fetch(
        http, hub.url(**query), "POST", sent,
        {"Content-Type": "application/json", **(headers or {})},
    )  # fmt: skip


async def test_a_websocket_publish_reaches_subscribers_with_its_sender(hub: ServerProcess) -> None:
    reader = await Ws.open(hub, channel="ps:room", token=token("bob"))
    writer = await Ws.open(hub, token=token("ann"))
    try:
        await reader.until("subscribed", channel="ps:room")
        connected = await writer.until("connected")
        answer = await writer.publish("ps:room", {"text": "hi"}, ident="a-1")
        assert answer["type"] == "published", answer
        assert (answer["id"], answer["channel"]) == ("a-1", "ps:room") and answer["offset"] >= 1
        got = await reader.until("message")
        client = connected["client"].partition("~")[0]
        assert got["data"]["sender"] == {"user": "ann", "client": client}
        assert (got["data"]["text"], got["data"]["offset"]) == ("hi", answer["offset"])
    finally:
        reader.close()
        writer.close()


async def test_an_http_publish_is_answered_with_its_position(hub: ServerProcess, http: Any) -> None:
    reader = await Ws.open(hub, channel="ps:http", token=token("bob"))
    try:
        await reader.until("subscribed", channel="ps:http")
        response = await post(http, hub, {"channel": "ps:http", "data": {"n": 1}}, tok=token("cy"))
        answer = as_json(response)
        assert response.code == 200 and set(answer) == {"channel", "epoch", "offset"}, answer
        got = await reader.until("message")
        assert got["data"]["sender"]["user"] == "cy" and got["data"]["n"] == 1
        anonymous = as_json(await post(http, hub, {"channel": "ps:open", "data": {"n": 2}}))
        assert anonymous["channel"] == "ps:open"
    finally:
        reader.close()


POLICY_CASES: list[tuple[str, tuple[str, ...] | None, str]] = [  # (channel, token's channels)
    ("pn:x", ("ps:*", "pt:*"), "publish_forbidden"),  # readable, no publish option: nobody
    ("pt:x", ("ps:*", "pt:*"), "publish_forbidden"),  # token policy, no publish claim
    ("ps:x", ("other:*",), "publish_forbidden"),  # may not read it
    ("pt:x", None, "token_required"),
]


@pytest.mark.parametrize(("channel", "channels", "code"), POLICY_CASES)
async def test_each_policy_refuses_who_it_should(
    hub: ServerProcess, http: Any, channel: str, channels: tuple[str, ...] | None, code: str
) -> None:
    tok = None if channels is None else token("dee", channels=channels)  # made now: fresh
    response = await post(http, hub, {"channel": channel, "data": {}}, tok=tok)
    assert (response.code, as_json(response)["error"]) == (403, code), response.body
    sock = await Ws.open(hub, **({"token": tok} if tok else {}))
    try:
        answer = await sock.publish(channel, {})
        assert (answer["type"], answer["code"], answer["retry"]) == ("publish_error", code, False)
    finally:
        sock.close()


async def test_the_token_policy_follows_the_publish_claim(hub: ServerProcess, http: Any) -> None:
    allowed = token("eve", publish=["pt:ok*"])
    assert (await post(http, hub, {"channel": "pt:ok1", "data": {}}, tok=allowed)).code == 200
    refused = await post(http, hub, {"channel": "pt:no", "data": {}}, tok=allowed)
    assert as_json(refused)["error"] == "publish_forbidden"
    bad = await post(http, hub, {"channel": "pt:ok1", "data": {}}, tok=token("e", publish="x"))
    assert as_json(bad)["error"] == "token_malformed"


BAD_BODIES: list[tuple[Any, int, str]] = [
    ({"channel": "ps:x", "data": {"sender": {"user": "root"}}}, 400, "invalid_message"),
    ({"channel": "ps:x", "data": {"ts": 1}}, 400, "invalid_message"),
    ({"channel": "ps:x", "data": [1]}, 400, "invalid_message"),
    ({"channel": "a b", "data": {}}, 400, "invalid_channel"),
    ({"channel": "ps:x"}, 400, "bad_json"),
    ([1], 400, "bad_json"),
    (b"{", 400, "bad_json"),
    ({"channel": "ps:x", "data": {"p": "x" * 300}}, 413, "publish_too_large"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
async def test_bad_publishes_get_a_clear_error(
    hub: ServerProcess, http: Any, body: Any, status: int, code: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    response = await post(http, hub, body, tok=token("fay"), raw=raw)
    answer = as_json(response)
    assert (response.code, answer["error"]) == (status, code), answer
    assert answer["message"]


async def test_a_body_that_is_not_json_typed_is_refused(hub: ServerProcess, http: Any) -> None:
    body = json.dumps({"channel": "ps:x", "data": {}})
    response = await fetch(http, hub.url(token=token("g")), "POST", body,
                           {"Content-Type": "text/plain"})  # fmt: skip
    assert (response.code, as_json(response)["error"]) == (400, "bad_json")


async def test_the_api_refuses_a_forged_sender(hub: ServerProcess, http: Any) -> None:
    body = {"channel": "ps:x", "data": {"sender": {"user": "root"}}}
    response = await api(http, hub, "/api/publish", body)
    assert (response.code, as_json(response)["error"]) == (400, "invalid_message")


async def test_the_rate_limit_answers_when_to_come_back(hub: ServerProcess) -> None:
    sock = await Ws.open(hub, token=token("gus"))
    try:
        answers = [await sock.publish("ps:rate", {"n": n}, ident=n) for n in range(8)]
        kinds = [a["type"] for a in answers]
        assert kinds[:5] == ["published"] * 5 and "publish_error" in kinds[5:], answers
        limited = next(a for a in answers if a["type"] == "publish_error")
        assert (limited["code"], limited["retry"]) == ("rate_limited", True)
        assert 0 < limited["retry_after"] <= 1
    finally:
        sock.close()


async def test_an_http_rate_limit_sends_retry_after(hub: ServerProcess, http: Any) -> None:
    tok = token("hal")
    # At once, so the bucket (5 a second, a burst of 5) cannot refill between them.
    sent = [post(http, hub, {"channel": "ps:r2", "data": {}}, tok=tok) for _ in range(8)]
    codes = sorted(r.code for r in await asyncio.gather(*sent))
    assert codes.count(200) >= 5 and 429 in codes, codes
    response = await post(http, hub, {"channel": "ps:r2", "data": {}}, tok=tok)
    assert response.code == 429 and int(response.headers["Retry-After"]) >= 1


async def test_cross_origin_publishes_follow_the_cors_policy(hub: ServerProcess, http: Any) -> None:
    body = {"channel": "ps:cors", "data": {}}
    allowed = await post(http, hub, body, tok=token("ida"), headers={"Origin": ORIGIN})
    assert allowed.code == 200 and allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    foreign = await post(http, hub, body, tok=token("ida"), headers={"Origin": "http://evil"})
    assert (foreign.code, as_json(foreign)["error"]) == (403, "forbidden")
    preflight = await fetch(http, hub.url(), "OPTIONS", None, {
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})  # fmt: skip
    assert preflight.code in (200, 204)
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "content-type" in preflight.headers["Access-Control-Allow-Headers"].lower()


async def test_a_subscriber_on_another_process_gets_the_sender(
    spawn: Callable[..., ServerProcess], log_dir: Path
) -> None:
    config = log_dir / "publish-redis.toml"
    config.write_text(CONFIG)
    prefix = f"tc-pub-{uuid.uuid4().hex[:10]}"
    flags = ["--no-demo", "--api-key", KEY, "--token-secret", SECRET, "--config", str(config),
             "--broker", shared_redis(), "--redis-prefix", prefix]  # fmt: skip
    a, b = spawn(*flags), spawn(*flags)
    reader = await Ws.open(b, channel="ps:far", token=token("kay"))
    writer = await Ws.open(a, token=token("lee"))
    try:
        await reader.until("subscribed", channel="ps:far")
        connected = await writer.until("connected")
        answer = await writer.publish("ps:far", {"text": "across"})
        got = await reader.until("message")
        client = connected["client"].partition("~")[0]
        assert got["data"]["sender"] == {"user": "lee", "client": client}
        assert (got["data"]["epoch"], got["data"]["offset"]) == (answer["epoch"], answer["offset"])
    finally:
        reader.close()
        writer.close()

"""The control API on one server process: disconnect, unsubscribe and revoke
reach live connections on every transport and polling clients on their next
request, and bad requests get a clear 400 (docs/api.md#control)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.control_support import (
    LIVE,
    Open,
    attached,
    ended,
    got,
    held_poll,
    open_live,
    polled,
    subscribers,
    token,
)
from server.processes import (
    KEY,
    SECRET,
    ServerProcess,
    api,
    as_json,
    assert_error,
    poll,
    until,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def hub(log_dir: Path) -> Iterator[ServerProcess]:
    """One process for the file: tests use users and channels of their own."""
    process = ServerProcess(
        log_dir, ["--port", "0", "--no-demo", "--api-key", KEY, "--token-secret", SECRET], None
    )
    yield process
    process.close()


@pytest.mark.parametrize("transport", LIVE)
@pytest.mark.parametrize("reconnect", [False, True])
async def test_disconnect_ends_the_users_connection_with_a_frame(
    hub: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str, reconnect: bool
) -> None:
    channel = f"c:{transport}-{reconnect}"
    await api(http, hub, "/api/publish", {"channel": channel, "data": {"n": 1}})
    ann = f"ann-{transport}-{reconnect}"
    mine = await open_live(http, lives, sockets, hub, transport, token(ann), [channel])
    other = await open_live(http, lives, sockets, hub, "websocket", token("bob"), [channel])
    await attached(http, hub, channel, 2)
    answer = as_json(await api(http, hub, "/api/disconnect", {"user": ann, "reconnect": reconnect}))
    assert answer == {"connections": 1, "processes": 1, "answered": 1}
    frames = await ended(mine)
    assert frames[-1] == {
        "type": "disconnect", "reason": "disconnected_by_server", "reconnect": reconnect,
    }  # fmt: skip
    if transport == "websocket":
        assert mine.close_code == (4004 if reconnect else 4003)
    # Bob's connection is untouched: it still gets what is published.
    await api(http, hub, "/api/publish", {"channel": channel, "data": {"n": 2}})
    await until(lambda: got(other, 2), "bob's message")
    assert other.close_code is None


async def test_disconnect_of_one_client_leaves_the_users_other_connections(
    hub: ServerProcess, http: Any, lives: Any, sockets: Any
) -> None:
    channel = "c:by-client"
    first = await open_live(http, lives, sockets, hub, "websocket", token("cy"), [channel])
    second = await open_live(http, lives, sockets, hub, "websocket", token("cy"), [channel])
    await attached(http, hub, channel, 2)
    sock_client = await _client_of(hub, http, token("cy"), channel)
    assert sock_client  # a third, polling, connection of the same user
    answer = as_json(await api(http, hub, "/api/disconnect", {"client": sock_client}))
    assert answer["connections"] == 0  # polling clients between requests are not counted
    await api(http, hub, "/api/publish", {"channel": channel, "data": {"n": 7}})
    await until(lambda: got(first, 7), "first socket still served")
    await until(lambda: got(second, 7), "second socket still served")


async def _client_of(hub: ServerProcess, http: Any, tok: str, channel: str) -> str:
    doc = await poll(http, hub, [channel], token=tok)
    client = str(doc["client"])
    return client.rpartition(".")[0].partition("~")[0]  # the id, without time and signature


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
async def test_a_polling_client_is_told_on_its_next_request(
    hub: ServerProcess, http: Any, transport: str
) -> None:
    channel = f"c:next-{transport}"
    tok = token(f"dee-{transport}")
    first = await poll(http, hub, [channel], transport=transport, token=tok, timeout=5)
    answer = as_json(await api(http, hub, "/api/disconnect", {"user": f"dee-{transport}"}))
    assert answer["connections"] == 0
    query = {"token": tok, "cursor": first["cursor"], "client": first["client"]}
    told = await polled(http, hub, [channel], transport, **query)
    assert told["frames"] == [
        {"type": "disconnect", "reason": "disconnected_by_server", "reconnect": False}
    ]
    assert told["cursor"] == first["cursor"]
    # A client that starts again (no client id) is served: disconnect ends, revoke bars.
    fresh = await polled(http, hub, [channel], transport, token=tok)
    assert [f["type"] for f in fresh["frames"]] == ["subscribed"]
    again = {**query, "client": fresh["client"], "cursor": fresh["cursor"]}
    later = await polled(http, hub, [channel], transport, **again)
    assert all(f["type"] != "disconnect" for f in later["frames"])


@pytest.mark.parametrize("transport", LIVE)
async def test_unsubscribe_stops_one_channel_and_leaves_the_others(
    hub: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    gone, kept = f"c:gone-{transport}", f"c:kept-{transport}"
    for channel in (gone, kept):
        await api(http, hub, "/api/publish", {"channel": channel, "data": {"n": 0}})
    opened = await open_live(
        http, lives, sockets, hub, transport, token(f"eve-{transport}"), [gone, kept]
    )
    await attached(http, hub, kept, 1)
    answer = as_json(
        await api(http, hub, "/api/unsubscribe", {"user": f"eve-{transport}", "channel": gone})
    )
    assert answer == {"connections": 1, "processes": 1, "answered": 1}
    error = {"type": "error", "channel": gone, "code": "unsubscribed",
             "message": "unsubscribed by the server"}  # fmt: skip
    if transport == "longpoll":
        assert opened.task is not None
        doc = await asyncio.wait_for(opened.task, 10)
        assert doc["frames"] == [error]
        return
    await until(lambda: _has(opened, error), "the unsubscribed error")
    await until(lambda: _no_subscriber(http, hub, gone), "the channel detached")
    await api(http, hub, "/api/publish", {"channel": gone, "data": {"n": 1}})
    await api(http, hub, "/api/publish", {"channel": kept, "data": {"n": 2}})
    await until(lambda: got(opened, 2), "the kept channel still flows")
    assert not any(f.get("channel") == gone and f["type"] == "message" for f in opened.current())


async def _has(opened: Open, frame: dict[str, Any]) -> bool:
    return frame in opened.current()


async def _no_subscriber(http: Any, hub: ServerProcess, channel: str) -> bool:
    return await subscribers(http, hub, channel) == 0


@pytest.mark.parametrize("transport", LIVE)
async def test_revoking_a_users_tokens_ends_their_connections_and_refuses_them(
    hub: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    user, channel = f"fay-{transport}", f"c:revoke-{transport}"
    await api(http, hub, "/api/publish", {"channel": channel, "data": {"n": 0}})
    old = token(user, iat=int(time.time()) - 60)
    opened = await open_live(http, lives, sockets, hub, transport, old, [channel])
    await attached(http, hub, channel, 1)
    before = int(time.time()) - 30
    answer = as_json(await api(http, hub, "/api/revoke", {"user": user, "before": before}))
    assert answer == {"connections": 1, "processes": 1, "answered": 1, "expires": before + 86400}
    frames = await ended(opened)
    assert frames[-1] == {"type": "disconnect", "reason": "token_revoked", "reconnect": False}
    refused = await polled(http, hub, [channel], "poll", token=old)
    assert [(f["type"], f.get("code")) for f in refused["frames"]] == [("error", "token_revoked")]
    newer = token(user, iat=int(time.time()))
    served = await polled(http, hub, [channel], "poll", token=newer)
    assert [f["type"] for f in served["frames"]] == ["subscribed", "message"]


async def test_revoking_one_token_by_jti(hub: ServerProcess, http: Any, sockets: Any) -> None:
    channel = "c:jti"
    revoked, kept = token("gus", jti="t-1"), token("gus", jti="t-2")
    sock = await sockets(hub.ws_url(channel=channel, token=revoked))
    other = await sockets(hub.ws_url(channel=channel, token=kept))
    for s in (sock, other):
        await s.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    body = {"jti": "t-1", "expires": time.time() + 300}
    answer = as_json(await api(http, hub, "/api/revoke", body))
    assert answer["connections"] == 1
    await sock.until_closed()
    assert sock.conn.close_code == 4003
    assert sock.frames[-1] == {"type": "disconnect", "reason": "token_revoked", "reconnect": False}
    refused = await polled(http, hub, [channel], "poll", token=revoked)
    assert refused["frames"][0]["code"] == "token_revoked"
    served = await polled(http, hub, [channel], "poll", token=kept)
    assert served["frames"][0]["type"] == "subscribed"
    assert not other.closed


async def test_an_unknown_user_is_not_an_error(hub: ServerProcess, http: Any) -> None:
    for path, body in (
        ("/api/disconnect", {"user": "nobody"}),
        ("/api/unsubscribe", {"user": "nobody", "channel": "c:x"}),
    ):
        assert as_json(await api(http, hub, path, body)) == {
            "connections": 0, "processes": 1, "answered": 1,
        }  # fmt: skip


NOW = time.time()

BAD: list[tuple[str, Any, int, str, str]] = [
    ("/api/disconnect", b"{", 400, "bad_json", "not valid JSON"),
    ("/api/disconnect", [1], 400, "bad_json", "JSON object"),
    ("/api/disconnect", {"user": "a", "force": True}, 400, "unknown_field", "'force'"),
    ("/api/disconnect", {}, 400, "invalid_field", "exactly one of user and client"),
    ("/api/disconnect", {"user": "a", "client": "b"}, 400, "invalid_field", "exactly one"),
    ("/api/disconnect", {"user": 42}, 400, "invalid_field", "non-empty string"),
    ("/api/disconnect", {"user": ""}, 400, "invalid_field", "non-empty string"),
    ("/api/disconnect", {"user": "x" * 257}, 400, "invalid_field", "at most 256"),
    ("/api/disconnect", {"user": "a", "reconnect": "yes"}, 400, "invalid_field", "true or false"),
    ("/api/unsubscribe", {"user": "a"}, 400, "invalid_channel", "channel"),
    ("/api/unsubscribe", {"user": "a", "channel": "a b"}, 400, "invalid_channel", "a b"),
    ("/api/revoke", {"user": "a"}, 400, "invalid_field", "needs before"),
    ("/api/revoke", {"user": "a", "before": "now"}, 400, "invalid_field", "a number"),
    ("/api/revoke", {"user": "a", "before": NOW * 1000}, 400, "invalid_field", "give seconds"),
    ("/api/revoke", {"user": "a", "before": NOW, "expires": NOW - 10}, 400, "invalid_field",
     "not in the future"),
    ("/api/revoke", {"jti": "t"}, 400, "invalid_field", "needs expires"),
    ("/api/revoke", {"jti": "t", "expires": (NOW + 60) * 1000}, 400, "invalid_field",
     "milliseconds"),
    ("/api/revoke", {"jti": "t", "before": NOW, "expires": NOW + 60}, 400, "invalid_field",
     "before goes with user"),
    ("/api/revoke", {"user": "a", "jti": "t", "before": NOW}, 400, "invalid_field", "exactly one"),
    ("/api/disconnect", {"user": "a" * 5000}, 413, "payload_too_large", "4096"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "code", "hint"), BAD)
async def test_bad_control_requests_get_a_clear_error(
    hub: ServerProcess, http: Any, path: str, body: Any, status: int, code: str, hint: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    error = assert_error(await api(http, hub, path, raw=raw), status, code)
    assert hint in error["message"], error


@pytest.mark.parametrize("path", ["/api/disconnect", "/api/unsubscribe", "/api/revoke"])
async def test_control_calls_need_the_api_key(hub: ServerProcess, http: Any, path: str) -> None:
    assert_error(await api(http, hub, path, {"user": "a"}, key=None), 401, "unauthorized")
    assert_error(await api(http, hub, path, {"user": "a"}, key="wrong"), 403, "forbidden")


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
async def test_a_polling_client_is_told_of_an_unsubscribe_once(
    hub: ServerProcess, http: Any, transport: str
) -> None:
    user, gone, kept = f"hex-{transport}", f"c:once-{transport}", f"c:stays-{transport}"
    tok = token(user)
    first = await polled(http, hub, [gone, kept], transport, token=tok)
    await api(http, hub, "/api/unsubscribe", {"user": user, "channel": gone})
    query = {"token": tok, "client": first["client"]}
    told = await polled(http, hub, [gone, kept], transport, cursor=first["cursor"], **query)
    assert told["frames"][0] == {"type": "error", "channel": gone, "code": "unsubscribed",
                                 "message": "unsubscribed by the server"}  # fmt: skip
    assert gone not in told["cursor"] and kept in told["cursor"]
    # The app subscribes to it again (no position held): checked like any, and served,
    # and later requests with the position it got are not told again.
    query["client"] = told["client"]
    again = await polled(http, hub, [gone, kept], transport, cursor=told["cursor"], **query)
    assert [(f["type"], f.get("channel")) for f in again["frames"]] == [("subscribed", gone)]
    query["client"] = again["client"]
    later = await polled(http, hub, [gone, kept], transport, cursor=again["cursor"], **query)
    assert later["frames"] == [] and set(later["cursor"].split(",")) == set(
        again["cursor"].split(",")
    )


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
async def test_a_polling_client_with_a_revoked_token_is_disconnected(
    hub: ServerProcess, http: Any, transport: str
) -> None:
    user, channel = f"ida-{transport}", f"c:revoked-poll-{transport}"
    old = token(user, iat=int(time.time()) - 60)
    first = await polled(http, hub, [channel], transport, token=old)
    await api(http, hub, "/api/revoke", {"user": user, "before": int(time.time()) - 30})
    query = {"token": old, "client": first["client"], "cursor": first["cursor"]}
    told = await polled(http, hub, [channel], transport, **query)
    assert told["frames"] == [{"type": "disconnect", "reason": "token_revoked", "reconnect": False}]
    fresh = await polled(http, hub, [channel], transport, token=old)  # a new client: per channel
    assert [f.get("code") for f in fresh["frames"]] == ["token_revoked"]


async def test_a_held_longpoll_told_of_an_unsubscribe_is_not_told_again(
    hub: ServerProcess, http: Any
) -> None:
    """The live path tells a held long-poll; its answer's client id carries
    that time (rounded up: a time a fraction of a millisecond after the
    command must not read as before it), so a re-subscribe stays served."""
    user, gone, kept = "jin", "c:held-gone", "c:held-kept"
    tok = token(user)
    first = await polled(http, hub, [gone, kept], "longpoll", token=tok)
    query = {"token": tok, "client": first["client"], "cursor": first["cursor"]}
    held = asyncio.ensure_future(held_poll(http, hub, [gone, kept], **query))
    await attached(http, hub, gone, 1)
    await api(http, hub, "/api/unsubscribe", {"user": user, "channel": gone})
    told = await held
    assert [f["code"] for f in told["frames"]] == ["unsubscribed"]
    for _ in range(3):  # subscribed again, then later requests with its position
        query = {"token": tok, "client": told["client"], "cursor": told["cursor"]}
        told = await polled(http, hub, [kept, gone], "longpoll", **query)
        assert all(f["type"] != "error" for f in told["frames"]), told
    assert gone in told["cursor"]

"""``POST /admin/api/disconnect`` on a real ``torchannels serve`` process:
the admin page's way to end a user's (or a client's) connections, behind
its session cookie, XSRF and same-origin check (issue 19). The page's
buttons run in Chromium: tests/e2e/test_admin_page_disconnect.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.processes import (
    KEY,
    SECRET,
    ServerProcess,
    Socket,
    api,
    as_json,
    assert_error,
    jwt,
)
from server.test_admin import PASSWORD, Browser
from support import messages

DISCONNECT = "/admin/api/disconnect"


@pytest.fixture(scope="module")
def hub(log_dir: Path) -> Iterator[ServerProcess]:
    """One process for the file: tests use users and channels of their own."""
    process = ServerProcess(
        log_dir,
        ["--port", "0", "--no-demo", "--api-key", KEY, "--token-secret", SECRET,
         "--admin-password", PASSWORD],
        None,
    )  # fmt: skip
    yield process
    process.close()


def token(user: str, channel: str) -> str:
    return jwt({"sub": user, "exp": time.time() + 300, "channels": [channel]})


async def subscribed(sockets: Any, hub: ServerProcess, user: str, channel: str) -> Socket:
    """A WebSocket of ``user`` subscribed to ``channel``."""
    sock: Socket = await sockets(hub.ws_url(channel=channel, token=token(user, channel)))
    await sock.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    return sock


async def admin(http: Any, hub: ServerProcess) -> tuple[Browser, dict[str, str]]:
    """A logged-in browser and its XSRF header."""
    browser = Browser(http, hub)
    assert (await browser.login()).code == 303
    return browser, {"X-XSRFToken": browser.cookies["_xsrf"]}


async def still_served(http: Any, hub: ServerProcess, sock: Socket, channel: str) -> None:
    """``sock`` is open: a message published now reaches it."""
    n = time.monotonic_ns()
    await api(http, hub, "/api/publish", {"channel": channel, "data": {"n": n}})
    await sock.wait(lambda fs: any(m.get("n") == n for m in messages(fs)))
    assert not sock.closed


async def test_disconnect_ends_every_connection_of_the_user(
    hub: ServerProcess, http: Any, sockets: Any
) -> None:
    channel = "room:admin-user"
    first, second = [await subscribed(sockets, hub, "ann", channel) for _ in range(2)]
    bob = await subscribed(sockets, hub, "bob", channel)
    browser, xsrf = await admin(http, hub)
    answer = await browser.request(DISCONNECT, "POST", json.dumps({"user": "ann"}), xsrf)
    assert answer.code == 200
    assert as_json(answer) == {"connections": 2, "processes": 1, "answered": 1}
    frame = {"type": "disconnect", "reason": "disconnected_by_server", "reconnect": False}
    for sock in (first, second):
        await sock.until_closed()
        assert sock.frames[-1] == frame, sock.frames
        assert (sock.conn.close_code, sock.conn.close_reason) == (4003, "disconnected_by_server")
    await still_served(http, hub, bob, channel)


async def test_disconnect_of_one_client_with_reconnect(
    hub: ServerProcess, http: Any, sockets: Any
) -> None:
    channel = "room:admin-client"
    first, second = [await subscribed(sockets, hub, "cy", channel) for _ in range(2)]
    [connected] = [f for f in first.frames if f["type"] == "connected"]
    # The id, without the time it began and the signature (CLIENT~SINCE.SIG).
    client = connected["client"].rpartition(".")[0].partition("~")[0]
    browser, xsrf = await admin(http, hub)
    body = json.dumps({"client": client, "reconnect": True})
    answer = as_json(await browser.request(DISCONNECT, "POST", body, xsrf))
    assert answer == {"connections": 1, "processes": 1, "answered": 1}
    await first.until_closed()
    assert first.frames[-1] == {
        "type": "disconnect", "reason": "disconnected_by_server", "reconnect": True,
    }  # fmt: skip
    assert first.conn.close_code == 4004
    await still_served(http, hub, second, channel)
    # Nobody of that id any more: a count of 0, not an error.
    answer = as_json(await browser.request(DISCONNECT, "POST", body, xsrf))
    assert answer == {"connections": 0, "processes": 1, "answered": 1}


async def test_disconnect_needs_the_session_xsrf_and_the_page_origin(
    hub: ServerProcess, http: Any, sockets: Any
) -> None:
    channel = "room:admin-refused"
    dee = await subscribed(sockets, hub, "dee", channel)
    body = json.dumps({"user": "dee"})
    browser = Browser(http, hub)
    assert_error(await browser.request(DISCONNECT, "POST", body), 401, "unauthorized")
    # The API key is not a session: the admin route answers the page only.
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert_error(await browser.request(DISCONNECT, "POST", body, bearer), 401, "unauthorized")
    browser, xsrf = await admin(http, hub)
    assert_error(await browser.request(DISCONNECT, "POST", body), 403, "xsrf")
    forged = {"X-XSRFToken": "2|00|" + "0" * 32 + "|1"}
    assert_error(await browser.request(DISCONNECT, "POST", body, forged), 403, "xsrf")
    elsewhere = {**xsrf, "Origin": "http://127.0.0.1:1"}
    answer = await browser.request(DISCONNECT, "POST", body, elsewhere)
    assert answer.code == 403 and as_json(answer)["error"] == "forbidden"
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert (await browser.request(DISCONNECT, "GET")).code == 405
    # None of those reached dee; the page's own origin does.
    await still_served(http, hub, dee, channel)
    own = {**xsrf, "Origin": hub.base}
    answer = await browser.request(DISCONNECT, "POST", body, own)
    assert as_json(answer)["connections"] == 1
    await dee.until_closed()
    assert dee.conn.close_code == 4003


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        ("nope", 400, "bad_json", "not valid JSON"),
        ('["ann"]', 400, "bad_json", "JSON object"),
        ("{}", 400, "invalid_field", "exactly one of user and client"),
        ('{"user": "a", "client": "b"}', 400, "invalid_field", "exactly one"),
        ('{"user": ""}', 400, "invalid_field", "user"),
        ('{"user": 42}', 400, "invalid_field", "user"),
        ('{"user": "' + "u" * 257 + '"}', 400, "invalid_field", "user"),
        ('{"user": "a", "reconnect": "yes"}', 400, "invalid_field", "reconnect"),
        ('{"user": "a", "channel": "room:1"}', 400, "unknown_field", "'channel'"),
        ('{"user": "' + "u" * 5000 + '"}', 413, "payload_too_large", "4096 bytes"),
    ],
)
async def test_bad_bodies_are_refused_with_a_code(
    hub: ServerProcess, http: Any, sockets: Any, body: str, status: int, code: str, says: str
) -> None:
    channel = "room:admin-bad"
    # "a" is the user most bad bodies would reach if they were not refused.
    held = await subscribed(sockets, hub, "a", channel)
    browser, xsrf = await admin(http, hub)
    error = assert_error(await browser.request(DISCONNECT, "POST", body, xsrf), status, code)
    assert says in error["message"], error
    await still_served(http, hub, held, channel)

"""A page authorized by its session cookie alone (issue 20, backend hooks):
the app's backend (hook_backend.py) logs the browser in with a ``session``
cookie and serves the page; the hub, on another port of the same host,
asks the backend's connect hook about every connection and request that
carries no token, and the backend answers from the cookie the browser
sent: the user, the channels it may read (``ck:*``) and publish to
(``ck:rw:*``, on channels with ``publish = "token"``, where a connect
answer's patterns count as a token's claim). The page subscribes and
publishes over every transport with no token at all; without the cookie
it is refused with the backend's own code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from e2e.control_pages import Hub, each_process, query_of
from e2e.e2e_helpers import TRANSPORTS, unique, wait_js, wait_until
from e2e.hook_backend import Backend
from e2e.publish_pages import Publishing

SECRET = "e2e-hook-secret"
CONFIG = """
[channels."ck:*"]
publish = "token"
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    app = Backend(SECRET, channels=["ck:*"], publish=["ck:rw:*"])
    yield app
    app.close()


@pytest.fixture(scope="module")
def hub(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    config: Path = tmp_path_factory.mktemp("cookie-e2e") / "channels.toml"
    config.write_text(CONFIG)
    flags = ("--cors-credentials", "--config", str(config), "--proxy-secret", SECRET,
             "--proxy-connect", f"{backend.base}/connect")  # fmt: skip
    with each_process(backend.base, flags) as [process]:
        yield process


def open_page(page: Page, backend: Backend, hub: Hub, transport: str, channel: str) -> Publishing:
    """The backend's control page, with no token, sending its cookies to the hub."""
    w = Publishing(page, backend.base, hub)
    w.open(transport, [channel], "", withCredentials="1")
    return w


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_session_cookie_alone_lets_a_page_subscribe_and_publish(
    page: Page, backend: Backend, hub: Hub, transport: str
) -> None:
    user, channel = unique("sue"), f"ck:rw:{unique('room')}"
    page.goto(f"{backend.base}/login?user={user}")
    w = open_page(page, backend, hub, transport, channel)
    if transport != "poll":
        wait_until(lambda: hub.subscribers(channel) == 1, what=f"{channel} served", page=page)

    outcome = w.publish(channel, {"n": 1, "text": "hi"})
    assert outcome["ok"], outcome
    w.wait_for(channel, 1)
    got = w.message(channel, 1)
    assert got["sender"]["user"] == user and got["offset"] == outcome["result"]["offset"], got
    readonly = w.publish(f"ck:ro:{unique('x')}", {"n": 2})  # readable, not in its publish
    assert not readonly["ok"] and readonly["error"]["code"] == "publish_forbidden", readonly

    # The backend was asked, by signed calls, with the cookie the browser sent:
    # for the subscription, and for each publish that was a POST.
    calls = backend.calls_of(user)
    assert calls and calls[0]["transport"] == transport, calls
    for body in calls:
        assert set(body) == {"client", "transport", "cookies", "headers"}, body
        assert body["cookies"] == {"session": user}, body
    posts = [c for c in calls if c["transport"] == "http"]
    assert len(posts) == len(w.posts) == (0 if transport == "websocket" else 2), (calls, w.posts)
    sent = [*w.urls(), *w.posts]
    assert not [url for url in sent if "token" in query_of(url)], sent  # no token at all
    state = w.state()
    assert state["errors"] == [] and state["failures"] == [], state
    assert state["state"] == "connected" and state["transports"] == [transport], state


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
def test_without_the_cookie_the_backend_refuses_the_page(
    browser: Browser, backend: Backend, hub: Hub, transport: str
) -> None:
    """The subscription gets the backend's code; so does a publish."""
    context = browser.new_context()  # no cookie in it
    try:
        channel = f"ck:rw:{unique('shut')}"
        w = Publishing(context.new_page(), backend.base, hub)
        w.open(transport, [channel], "", withCredentials="1")
        wait_js(w.page, "() => window.client.state === 'disconnected'",
                what="the page refused, with nothing left to serve")  # fmt: skip
        errors = w.state()["errors"]
        assert errors == [{"channel": channel, "code": "login_required",
                           "message": "log in first"}], w.state()  # fmt: skip
        outcome = w.publish(channel, {"n": 1})  # not connected: a POST
        assert not outcome["ok"], outcome
        error = outcome["error"]
        assert (error["code"], error["status"], error["retry"]) == ("login_required", 403, False)
        assert error["message"] == "log in first", error
    finally:
        context.close()

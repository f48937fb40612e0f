"""The admin page's Disconnect buttons in Chromium (issue 19): users' WebSockets
held by a second page are listed in "Who is here"; clicking a user's button
ends that user's connections (the ``disconnect`` frame, close code 4003),
the page shows the count and the list drops the user."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import served, unique, wait_js
from e2e.test_admin_page import API_KEY, MEMBER_ROWS, PASSWORD, TEXT_OF, login
from torchannels.tokens import encode_token

SECRET = "e2e-admin-disconnect-secret"
#: Opens a WebSocket per [name, token] of ``a[1]`` to channel ``a[0]``, each
#: recording its frames and how it closed in ``window.held[name]``.
HOLD = """([channel, tokens]) => {
  window.held = window.held || {};
  for (const [name, token] of tokens) {
    const q = new URLSearchParams({channel: channel, token: token});
    const ws = new WebSocket(location.origin.replace('http', 'ws') + '/channels/ws?' + q);
    const held = window.held[name] = {ws: ws, frames: [], close: null};
    ws.onmessage = (e) => held.frames.push(JSON.parse(e.data));
    ws.onclose = (e) => { held.close = {code: e.code, reason: e.reason}; };
  }
}"""
SUBSCRIBED = (
    "(names) => names.every(n => window.held[n] &&"
    " window.held[n].frames.some(f => f.type === 'subscribed'))"
)


@pytest.fixture(scope="module")
def hub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``room:*`` channels have presence; a user who went leaves after 1 s."""
    config = tmp_path_factory.mktemp("admin-disconnect") / "hub.toml"
    config.write_text('[channels."room:*"]\npresence = true\n')
    with served("--api-key", API_KEY, "--admin-password", PASSWORD, "--token-secret", SECRET,
                "--no-demo", "--presence-grace", "1", "--config", str(config)) as url:  # fmt: skip
        yield url


def token(user: str, channel: str) -> str:
    claims = {"exp": int(time.time()) + 600, "channels": [channel], "sub": user}
    return encode_token(claims, SECRET)


def hold(users_page: Page, base: str, channel: str, sockets: dict[str, str]) -> None:
    """Users connect from ``users_page`` (a page of the hub's origin), one
    WebSocket per entry of ``sockets``: its name -> its user."""
    if users_page.url == "about:blank":
        users_page.goto(f"{base}/health")
    tokens = [[name, token(user, channel)] for name, user in sockets.items()]
    users_page.evaluate(HOLD, [channel, tokens])
    wait_js(users_page, SUBSCRIBED, list(sockets), what=f"{list(sockets)} subscribed")


def new_page(page: Page) -> Page:
    """A page in a context of its own: no admin cookie."""
    browser = page.context.browser
    assert browser is not None
    return browser.new_page()


def show_members(page: Page, channel: str, users: list[str]) -> None:
    page.fill("#members-channel", channel)
    page.click("#members button[type=submit]")
    wait_js(
        page,
        "(users) => JSON.stringify([...document.querySelectorAll('#members-list tr')]"
        ".map(tr => tr.dataset.user)) === JSON.stringify(users)",
        users,
        what=f"{users} listed",
    )


def test_disconnect_button_ends_the_users_connections(page: Page, hub_url: str) -> None:
    channel = unique("room:kick")
    users_page = new_page(page)
    try:
        hold(users_page, hub_url, channel, {"ann": "ann", "ann2": "ann", "bob": "bob"})
        page.set_viewport_size({"width": 1200, "height": 900})
        login(page, hub_url)
        show_members(page, channel, ["ann", "bob"])
        assert page.evaluate(MEMBER_ROWS) == [
            ["ann", "2", "", "Disconnect"], ["bob", "1", "", "Disconnect"]]  # fmt: skip
        button = page.locator('#members-list tr[data-user="ann"] button')
        assert button.get_attribute("aria-label") == "Disconnect user ann"
        button.click()
        wait_js(
            page,
            "() => " + TEXT_OF.format("disconnect-result") + " === "
            "'disconnected 2 connections of user ann'",
            what="the count shown",
        )
        assert page.get_attribute("#disconnect-result", "class") == "muted"
        # Both of ann's sockets got the frame and close code 4003; bob's is open.
        for held in ("ann", "ann2"):
            wait_js(users_page, "(u) => window.held[u].close !== null", held, what=f"{held} closed")
            ended = users_page.evaluate(
                "(u) => ({last: window.held[u].frames.at(-1), close: window.held[u].close})", held
            )
            assert ended == {
                "last": {"type": "disconnect", "reason": "disconnected_by_server",
                         "reconnect": False},
                "close": {"code": 4003, "reason": "disconnected_by_server"},
            }, held  # fmt: skip
        assert users_page.evaluate("() => window.held.bob.ws.readyState") == 1
        # ann leaves the list once the presence grace is over (the page reads it every 5 s).
        wait_js(
            page,
            "() => [...document.querySelectorAll('#members-list tr')]"
            ".map(tr => tr.dataset.user).join() === 'bob'",
            timeout=15,
            what="ann gone from the list",
        )
        assert "1 user · 1 client" in (page.text_content("#members-status") or "")
        page.screenshot(path=_output("admin-disconnect.png"), full_page=True)
    finally:
        users_page.close()


def test_user_ids_stay_text_and_errors_show(page: Page, hub_url: str) -> None:
    channel = unique("room:odd")
    odd = '<img src=x onerror="window.pwned=1">'
    users_page = new_page(page)
    try:
        hold(users_page, hub_url, channel, {odd: odd})
        page.set_viewport_size({"width": 390, "height": 844})
        login(page, hub_url)
        show_members(page, channel, [odd])
        page.locator("#members-list tr button").click()
        wait_js(
            page,
            "(u) => " + TEXT_OF.format("disconnect-result") + " === "
            "'disconnected 1 connection of user ' + u",
            odd,
            what="the count shown, the id as text",
        )
        assert page.evaluate("() => document.querySelectorAll('main img').length") == 0
        assert page.evaluate("() => window.pwned") is None
        wait_js(users_page, "(u) => window.held[u].close !== null", odd, what="closed")
        assert users_page.evaluate("(u) => window.held[u].close.code", odd) == 4003
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways: {width}px wide"
        # A refusal by the server is shown as an error: red, announced.
        hold(users_page, hub_url, channel, {"zed": "zed"})
        show_members(page, channel, ["zed"])
        zed = page.locator('#members-list tr[data-user="zed"] button')
        page.context.clear_cookies(name="_xsrf")
        zed.click()
        wait_js(
            page,
            "() => " + TEXT_OF.format("disconnect-result") + ".startsWith('xsrf: ')",
            what="the refusal shown",
        )
        result = page.locator("#disconnect-result")
        assert result.get_attribute("role") == "alert"
        assert result.evaluate("el => getComputedStyle(el).color") == "rgb(179, 38, 30)"
        # The session ended meanwhile (logged out in another tab): back to the login form.
        page.context.clear_cookies()
        zed.click()
        wait_js(page, "() => !!document.getElementById('password')", what="the login form")
        assert users_page.evaluate("() => window.held.zed.ws.readyState") == 1
    finally:
        users_page.close()


def _output(name: str) -> str:
    from e2e.e2e_helpers import OUTPUT

    os.makedirs(OUTPUT, exist_ok=True)
    return os.path.join(OUTPUT, name)

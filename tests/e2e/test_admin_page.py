"""The admin page of a real ``torchannels serve`` process in Chromium: login,
live stats, the channel list, a live tail of a channel that needs a token
elsewhere, the publish box, logout, and a phone-width layout (issue 12)."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import OUTPUT, PYTHON, Process, served, unique, wait_js

API_KEY = "e2e-admin-key"
PASSWORD = "e2e-admin-password"


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    # Demo on: its ticker publishes every second, so the rates move.
    with served("--api-key", API_KEY, "--admin-password", PASSWORD) as url:
        yield url


def api_publish(base: str, channel: str, data: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/api/publish",
        data=json.dumps({"channel": channel, "data": data}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def login(page: Page, base: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/admin")
    page.fill("#password", password)
    page.click("#login button")


#: True once a tailed line contains the argument.
IN_TAIL = (
    "(t) => [...document.querySelectorAll('#tail-log li')].some(li => li.textContent.includes(t))"
)
TEXT_OF = "document.getElementById('{}').textContent"


def tail_lines(page: Page) -> list[str]:
    lines: list[str] = page.eval_on_selector_all(
        "#tail-log li", "els => els.map(e => e.textContent)"
    )
    return lines


def test_login_tail_publish_and_logout(page: Page, hub_url: str) -> None:
    page.set_viewport_size({"width": 1200, "height": 900})
    login(page, hub_url, "not the password")
    wait_js(page, "() => !!document.getElementById('login-error')", what="the login error")
    assert "Wrong password" in (page.text_content("#login-error") or "")
    assert page.context.cookies() and not [
        c for c in page.context.cookies() if c["name"] == "torchannels_admin"
    ]

    login(page, hub_url)
    wait_js(page, "() => !!document.getElementById('channels')", what="the dashboard")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "torchannels_admin"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert PASSWORD not in page.url and PASSWORD not in page.content()

    # Live stats: one process, and the demo ticker's publishes drawn as a rate.
    wait_js(page, "() => document.getElementById('processes').textContent === '1 process'")
    wait_js(
        page,
        "() => parseFloat(document.getElementById('v-publish-rate').textContent) > 0"
        " && document.querySelector('#c-publish-rate polyline').getAttribute('points') !== ''",
        timeout=15,
        what="a publish rate above 0, charted",
    )
    # The channel list, refreshed by the page: the ticker's channel is there.
    wait_js(
        page,
        "() => !!document.querySelector('#channels tr[data-channel=\"demo:ticker\"]')",
        what="demo:ticker listed",
    )

    # Tail a channel that needs a token on the public endpoint: the admin path reads it.
    channel = unique("private:admin")
    page.fill("#tail-channel", channel)
    page.click("#tail button[type=submit]")
    wait_js(
        page,
        "(c) => document.getElementById('tail-status').textContent === "
        "'Tailing ' + c + ' over websocket.'",
        channel,
        what="tailing over websocket",
    )
    wait_js(
        page, "() => /websocket [1-9]/.test(document.getElementById('v-transports').textContent)"
    )

    # The publish box: its message arrives in the tail.
    page.fill("#publish-channel", channel)
    page.fill("#publish-data", '{"text": "from the box"}')
    page.click("#publish button[type=submit]")
    wait_js(
        page,
        "() => /^published at offset 1 /.test(" + TEXT_OF.format("publish-result") + ")",
        what="the publish box's answer",
    )
    wait_js(page, IN_TAIL, "from the box", what="the box's message in the tail")
    # A message published through the API arrives too, in order.
    api_publish(hub_url, channel, {"text": "from the api"})
    wait_js(page, "() => document.querySelectorAll('#tail-log li').length >= 2")
    lines = [json.loads(line) for line in tail_lines(page)]
    assert [(m["text"], m["offset"], m["channel"]) for m in lines] == [
        ("from the box", 1, channel), ("from the api", 2, channel)]  # fmt: skip

    # The channel list shows it with its subscriber (the tail) and position.
    page.fill("#prefix", channel)
    page.click("#filter button[type=submit]")
    wait_js(
        page,
        '(c) => { const r = document.querySelector(`#channels tr[data-channel="${c}"]`);'
        " return r && r.children[1].textContent === '1 (1 here)'"
        " && r.children[2].textContent === '2'; }",
        channel,
        what="the tailed channel listed with 1 subscriber at offset 2",
    )
    # An invalid JSON in the publish box is caught on the page.
    page.fill("#publish-data", "{nope")
    page.click("#publish button[type=submit]")
    wait_js(
        page, "() => document.getElementById('publish-result').textContent.startsWith('not JSON')"
    )
    assert_error_shown(page)
    # So is a refusal by the server: red, and announced, not a grey note.
    page.fill("#publish-channel", "bad name")
    page.fill("#publish-data", '{"text": "x"}')
    page.click("#publish button[type=submit]")
    wait_js(
        page,
        "() => document.getElementById('publish-result').textContent.startsWith("
        "'invalid_channel: ')",
        what="the server's refusal",
    )
    assert_error_shown(page)
    page.fill("#publish-channel", channel)
    page.click("#publish button[type=submit]")
    wait_js(page, "() => /^published at offset 3 /.test(" + TEXT_OF.format("publish-result") + ")")
    result = page.locator("#publish-result")
    assert result.get_attribute("role") is None and result.get_attribute("class") == "muted"

    # Stop, then log out: back to the form, and the session is gone.
    page.click("#tail-stop")
    wait_js(page, "() => document.getElementById('tail-status').textContent === 'Not tailing.'")
    page.click("#logout button")
    wait_js(page, "() => !!document.getElementById('password')", what="the login form again")
    assert not [c for c in page.context.cookies() if c["name"] == "torchannels_admin"]
    assert page.request.get(f"{hub_url}/admin/api/stats").status == 401


def assert_error_shown(page: Page) -> None:
    """The publish box's answer reads as an error: red, and role=alert."""
    result = page.locator("#publish-result")
    assert result.get_attribute("role") == "alert"
    color = result.evaluate("el => getComputedStyle(el).color")
    assert color == "rgb(179, 38, 30)", color  # .error's #b3261e, not .muted's grey


def test_desktop_screenshot(page: Page, hub_url: str) -> None:
    page.set_viewport_size({"width": 1200, "height": 900})
    login(page, hub_url)
    wait_js(
        page,
        "() => document.querySelector('#c-publish-rate polyline').getAttribute('points') !== ''",
        timeout=15,
    )
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1200
    page.screenshot(path=_output("admin-desktop.png"), full_page=True)


def test_phone_width_has_no_horizontal_scroll(page: Page, hub_url: str) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    long_name = "phone:" + "x" * 122  # the longest name there is: 128 characters
    api_publish(hub_url, long_name, {"text": "a long channel name"})
    page.goto(f"{hub_url}/admin")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    login(page, hub_url)
    wait_js(
        page,
        '(c) => !!document.querySelector(`#channels tr[data-channel="${c}"]`)',
        long_name,
        what="the long-named channel listed",
    )
    wait_js(page, "() => document.getElementById('processes').textContent === '1 process'")
    # The tail and the publish box work here too.
    page.fill("#tail-channel", long_name)
    page.click("#tail button[type=submit]")
    wait_js(
        page, "() => /^Tailing .* over websocket\\.$/.test(" + TEXT_OF.format("tail-status") + ")"
    )
    page.fill("#publish-channel", long_name)
    page.fill("#publish-data", '{"text": "small screen"}')
    page.click("#publish button[type=submit]")
    wait_js(page, IN_TAIL, "small screen", what="the message in the tail")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways: {width}px wide at a 390px viewport"
    for selector in ("#tail-channel", "#publish button[type=submit]", "#logout button", "#next"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    page.screenshot(path=_output("admin-phone.png"), full_page=True)


def _output(name: str) -> str:
    os.makedirs(OUTPUT, exist_ok=True)
    return os.path.join(OUTPUT, name)


SECRET = "e2e-admin-token-secret"
HOLDERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presence_holders.py")


@pytest.fixture(scope="module")
def presence_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hub whose ``room:*`` channels have presence, tokens signed with SECRET."""
    config = tmp_path_factory.mktemp("admin-presence") / "hub.toml"
    config.write_text('[channels."room:*"]\npresence = true\n')
    with served("--api-key", API_KEY, "--admin-password", PASSWORD, "--token-secret", SECRET,
                "--no-demo", "--anonymous", "room:*", "--config", str(config)) as url:  # fmt: skip
        yield url


#: True once channel ``a[0]``'s row shows ``a[1]`` in its presence column.
PRESENCE_CELL = (
    '(a) => { const r = document.querySelector(`#channels tr[data-channel="${a[0]}"]`);'
    " return !!r && r.children[5].textContent === a[1]; }"
)
#: The text of the cells of the members table, row by row.
MEMBER_ROWS = (
    "() => [...document.querySelectorAll('#members-list tr')]"
    ".map(tr => [...tr.children].map(td => td.textContent))"
)


def test_presence_column_and_member_list(page: Page, presence_url: str) -> None:
    channel = unique("room:admin")
    users = [f"u{i:02d}" for i in range(55)]
    # 55 users, u00 with two connections, and one anonymous connection.
    holders = Process([PYTHON, HOLDERS, presence_url, SECRET, channel, *users, "u00", "-"])
    try:
        holders.wait_for_line(lambda line: line.startswith("ready 57"), timeout=30)
        page.set_viewport_size({"width": 1200, "height": 900})
        login(page, presence_url)
        page.fill("#prefix", channel)
        page.click("#filter button[type=submit]")
        wait_js(page, PRESENCE_CELL, [channel, "55 users · 57 clients"],
                what="the presence counts in the channel's row")  # fmt: skip
        # The row of a channel without presence has an empty presence cell.
        api_publish(presence_url, "plain-" + channel, {"n": 1})
        page.fill("#prefix", "plain-" + channel)
        page.click("#filter button[type=submit]")
        wait_js(page, PRESENCE_CELL, ["plain-" + channel, ""], what="the plain channel listed")

        # Clicking a presence channel's row lists its users, 50 a page.
        page.fill("#prefix", channel)
        page.click("#filter button[type=submit]")
        wait_js(page, PRESENCE_CELL, [channel, "55 users · 57 clients"])
        page.click(f'#channels tr[data-channel="{channel}"]')
        wait_js(page, "() => document.querySelectorAll('#members-list tr').length === 50")
        rows = page.evaluate(MEMBER_ROWS)
        assert rows[:2] == [["u00", "2", "", "Disconnect"], ["u01", "1", "", "Disconnect"]]
        assert [r[0] for r in rows] == users[:50]
        status = page.text_content("#members-status")
        assert status == f"{channel}: 55 users · 57 clients"
        page.click("#members-next")
        wait_js(page, "() => document.querySelectorAll('#members-list tr').length === 5")
        assert [r[0] for r in page.evaluate(MEMBER_ROWS)] == users[50:]
        assert page.is_disabled("#members-next") and not page.is_disabled("#members-first")
        # The list is read again every 5 s: a user who joins now shows up on this page.
        late = Process([PYTHON, HOLDERS, presence_url, SECRET, channel, "zz"])
        try:
            late.wait_for_line(lambda line: line.startswith("ready 1"), timeout=30)
            wait_js(page, "() => document.querySelectorAll('#members-list tr').length === 6",
                    timeout=15, what="the late user listed without a click")  # fmt: skip
            assert [r[0] for r in page.evaluate(MEMBER_ROWS)] == [*users[50:], "zz"]
            assert page.text_content("#members-status") == f"{channel}: 56 users · 58 clients"
        finally:
            late.stop()
        page.click("#members-first")
        wait_js(page, "() => document.querySelectorAll('#members-list tr').length === 50")
        page.screenshot(path=_output("admin-presence.png"), full_page=True)

        # A channel without presence: the server's refusal, not an empty list.
        page.fill("#members-channel", "plain-" + channel)
        page.click("#members button[type=submit]")
        wait_js(
            page,
            "() => document.getElementById('members-status').textContent"
            ".startsWith('error: channel ')",
            what="presence_disabled shown",
        )
        assert "has no presence" in (page.text_content("#members-status") or "")
        assert page.evaluate("() => document.querySelectorAll('#members-list tr').length") == 0
    finally:
        holders.stop()

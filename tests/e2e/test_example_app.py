"""examples/seed_app.py as a real process: its page in Chromium on every
transport, and its safety as an attacker would try it (issue 9, finding 2):
forged cookies, cross-site posts, bad input, channels created at will."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import PYTHON, ROOT, TRANSPORTS, Process, free_port, unique, wait_until


@dataclass
class App:
    base: str
    proc: Process

    def log(self) -> str:
        return "".join(self.proc.output)


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    """The example app on a free port, as ``make example`` runs it."""
    port = free_port()
    proc = Process([PYTHON, os.path.join(ROOT, "examples", "seed_app.py"), "--port", str(port)])
    try:
        proc.wait_for_line(lambda line: line.startswith("seed app on "))
        yield App(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.stop()


class Visitor:
    """An HTTP client with its own cookie jar, as one browser would be.
    Answers of every status are returned, not raised."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(
        self,
        path: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        body = None if fields is None else urllib.parse.urlencode(fields).encode()
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=10) as res:
                return res.status, res.read().decode()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode()

    def xsrf(self) -> str:
        """The XSRF token, from the cookie the login page sets ("" if none)."""
        if not any(c.name == "_xsrf" for c in self.jar):
            self.request("/login")
        return next((c.value or "" for c in self.jar if c.name == "_xsrf"), "")

    def login(self, name: str) -> None:
        status, page = self.request("/login", {"_xsrf": self.xsrf(), "name": name})
        assert status == 200 and f">{name}</b>" in page, (status, page)

    def publish(self, channel: str, text: str) -> tuple[int, dict[str, Any]]:
        status, body = self.request(f"/publish/{channel}", {"_xsrf": self.xsrf(), "text": text})
        try:
            return status, json.loads(body)
        except ValueError:  # not the app's JSON: an error page (a 500, say)
            return status, {"message": None, "body": body[-300:]}

    def poll(self, channel: str) -> list[dict[str, Any]]:
        status, body = self.request(f"/channels?transport=poll&channel={channel}")
        assert status == 200, (status, body)
        frames: list[dict[str, Any]] = json.loads(body)["frames"]
        return frames


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"].get("text") for f in frames if f["type"] == "message"]


def test_unsigned_cookie_cannot_read_a_private_channel(app: App) -> None:
    # The old app took the user name from a plain cookie anyone can write.
    forged = Visitor(app.base)
    status, body = forged.request(
        "/channels?transport=poll&channel=private:alice", headers={"Cookie": "user=alice"}
    )
    assert status == 200, body
    frames = json.loads(body)["frames"]
    assert [(f["type"], f.get("code")) for f in frames] == [("error", "forbidden")], frames

    # Alice herself, with the signed cookie of a login, reads it; the forger still cannot.
    alice = Visitor(app.base)
    alice.login("alice")
    secret = unique("secret")
    assert alice.publish("private:alice", secret)[0] == 200
    assert secret in texts(alice.poll("private:alice"))
    status, body = forged.request(
        "/channels?transport=poll&channel=private:alice", headers={"Cookie": "user=alice"}
    )
    assert secret not in body
    # A signed cookie of another user is not alice's either.
    mallory = Visitor(app.base)
    mallory.login("mallory")
    assert [f["type"] for f in mallory.poll("private:alice")] == ["error"]
    status, page = forged.request("/", headers={"Cookie": "user=alice"})
    assert status == 200 and "Not logged in" in page


def test_cross_site_post_without_xsrf_token_is_refused(app: App) -> None:
    # A form on another site posting into the app: no _xsrf field.
    evil = {"Origin": "http://evil.example", "Referer": "http://evil.example/"}
    anonymous = Visitor(app.base)
    status, _ = anonymous.request("/publish/ticker", {"text": "crash!"}, evil)
    assert status == 403
    # With the victim's (signed) login cookie, as the browser would send it.
    victim = Visitor(app.base)
    victim.login("victim")
    text = unique("forged")
    for path in ("/publish/chat", "/publish/private:victim", "/logout"):
        status, body = victim.request(path, {"text": text}, evil)
        assert status == 403, (path, status, body)
        assert "_xsrf" in json.loads(body)["message"]
    # A token that is not the cookie's is refused too.
    status, _ = victim.request("/publish/chat", {"_xsrf": "2|0|00|0", "text": text}, evil)
    assert status == 403
    assert text not in texts(victim.poll("chat"))
    assert "Logged in as" in victim.request("/")[1]  # the forged logout did nothing
    # The subscription endpoint stays readable without a token.
    assert anonymous.poll("chat")[0]["type"] == "subscribed"


def test_bad_input_gets_400_with_a_message_and_no_traceback(app: App) -> None:
    visitor = Visitor(app.base)
    long_name = "a" * 129
    status, answer = visitor.publish(long_name, "hi")
    assert status == 400, answer
    assert "invalid channel name" in answer["message"]

    visitor.login("carol")
    cases = {
        long_name: "invalid channel name",
        "": "invalid channel name",
        "bad%20name": "invalid channel name",
        "chat": "",  # empty text
    }
    for channel, message in cases.items():
        status, answer = visitor.publish(channel, "")
        assert status == 400 and message in answer["message"], (channel, answer)
    status, answer = visitor.publish("chat", "x" * 501)
    assert status == 400 and "longer than 500" in answer["message"]
    status, body = visitor.request("/publish/chat", {"_xsrf": visitor.xsrf()})  # no text
    assert status == 400 and json.loads(body)["message"] == "empty message"
    fresh = Visitor(app.base)
    status, page = fresh.request("/login", {"_xsrf": fresh.xsrf(), "name": "<script>x"})
    assert status == 400 and "A name is" in page and "<script>x" not in page
    # A subscriber's bad name is the library's 400, as before.
    status, body = visitor.request(f"/channels?transport=poll&channel={long_name}")
    assert status == 400 and json.loads(body)["error"] == "invalid_channel"

    wait_until(lambda: "400 POST /login" in app.log(), what="the app to log the last 400")
    assert "Traceback" not in app.log()
    assert not re.search(r" 500 (GET|POST) ", app.log()), app.log()


def test_anonymous_callers_cannot_create_channels(app: App) -> None:
    anonymous = Visitor(app.base)
    for name in (unique("made-up"), unique("spam:room"), "chat", "ticker", "private:alice"):
        status, answer = anonymous.publish(name, "hi")
        assert status == 403, (name, answer)
        assert answer["message"] == "log in to publish"
    # Logged in, a user writes the shared chat and their own channel only.
    dave = Visitor(app.base)
    dave.login("dave")
    for name in (unique("made-up"), "ticker", "private:alice", "private:dave:extra"):
        status, answer = dave.publish(name, "hi")
        assert status == 403, (name, answer)
    assert dave.publish("chat", "hi")[0] == 200
    assert dave.publish("private:dave", "hi")[0] == 200
    # Reading is deny-by-default: unknown channels are not served.
    assert [f["type"] for f in anonymous.poll(unique("made-up"))] == ["error"]


def wait_line(page: Page, list_id: str, line: str) -> None:
    page.wait_for_function(
        "([id, line]) => [...document.querySelectorAll('#' + id + ' li.chat-message')]"
        ".some((li) => li.textContent === line)",
        arg=[list_id, line],
        timeout=10_000,
    )


def shown(page: Page, list_id: str) -> list[str]:
    lines: list[str] = page.eval_on_selector_all(
        f"#{list_id} li.chat-message", "els => els.map(e => e.textContent)"
    )
    return lines


def wait_connected(page: Page) -> None:
    page.wait_for_function(
        "() => document.getElementById('state').textContent === 'connected'", timeout=10_000
    )


def test_anonymous_page_reads_but_cannot_write(page: Page, app: App) -> None:
    page.goto(app.base)
    wait_connected(page)
    assert page.locator("#login-link").is_visible()
    assert page.locator("#say").count() == 0 and page.locator("#notes").count() == 0
    bob = Visitor(app.base)
    bob.login("bob")
    text = unique("to anonymous readers")
    assert bob.publish("chat", text)[0] == 200
    wait_line(page, "chat", f"bob: {text}")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_example_page_shows_chat_ticker_and_private_channel(
    page: Page, app: App, transport: str
) -> None:
    # Log in through the page's form.
    user = unique("alice")
    page.goto(f"{app.base}/login")
    page.fill("#name", user)
    page.click("#login button")
    page.wait_for_url(f"{app.base}/")
    assert page.text_content("#user") == user

    page.goto(f"{app.base}/?transport={transport}")
    wait_connected(page)
    assert page.text_content("#transport") == f"({transport})"

    # The ticker keeps its last price as channel state: it shows at once.
    page.wait_for_function(
        "() => /^\\d+\\.\\d\\d$/.test(document.getElementById('price').textContent)",
        timeout=10_000,
    )
    assert re.fullmatch(r"\d\d:\d\d:\d\d", page.text_content("#at") or "")

    # Another user says something through the app's publishing handler.
    other = Visitor(app.base)
    other.login("bob")
    text = unique(f"hello over {transport}")
    assert other.publish("chat", text)[0] == 200
    line = f"bob: {text}"
    wait_line(page, "chat", line)

    # The page's own form posts to the same endpoint, XSRF token included.
    typed = unique(f"typed over {transport}")
    page.fill("#text", typed)
    page.click("#say button")
    wait_line(page, "chat", f"{user}: {typed}")
    lines = shown(page, "chat")
    assert lines.count(line) == 1, lines
    assert lines.index(line) < lines.index(f"{user}: {typed}")

    # The user's private channel: written by the page, read by the page only.
    note = unique(f"note over {transport}")
    page.fill("#note-text", note)
    page.click("#note button")
    wait_line(page, "notes", f"{user}: {note}")
    assert page.text_content("#error") == ""
    assert texts(other.poll(f"private:{user}")) == []

    # The ticker keeps moving (a tick a second): a later price replaces it.
    first_at = page.text_content("#at")
    page.wait_for_function(
        "(t) => document.getElementById('at').textContent !== t", arg=first_at, timeout=10_000
    )

    # Logging out (a form with the token) ends the private subscription's right.
    page.click("#logout button")
    page.wait_for_selector("#login-link", timeout=10_000)
    assert page.locator("#notes").count() == 0


def test_cookie_secret_comes_from_the_environment(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unset (as in the fixture): a random secret, and a log line that says so.
    assert "SEED_APP_COOKIE_SECRET is not set" in app.log()
    # Set: a login signed by one process is good in the next (a restart).
    monkeypatch.setenv("SEED_APP_COOKIE_SECRET", "test-" + unique("secret"))
    erin = None
    for _ in range(2):
        port = free_port()
        proc = Process([PYTHON, os.path.join(ROOT, "examples", "seed_app.py"), "--port", str(port)])
        try:
            proc.wait_for_line(lambda line: line.startswith("seed app on "))
            if erin is None:
                erin = Visitor(f"http://127.0.0.1:{port}")
                erin.login("erin")
            else:
                erin.base = f"http://127.0.0.1:{port}"  # same cookies, new process
                assert 'Logged in as <b id="user">erin</b>' in erin.request("/")[1]
                assert erin.publish("private:erin", "still me")[0] == 200
        finally:
            proc.stop()
        assert "is not set" not in "".join(proc.output)
    # The fixture's app (another random secret) does not take those cookies.
    assert erin is not None
    erin.base = app.base
    assert "Not logged in" in erin.request("/")[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_example_cleanly(sig: signal.Signals) -> None:
    """Issue 17: Ctrl-C on ``make example`` ended in a KeyboardInterrupt
    traceback. It stops gracefully now, with a subscriber connected."""
    port = free_port()
    proc = Process([PYTHON, os.path.join(ROOT, "examples", "seed_app.py"), "--port", str(port)])
    try:
        proc.wait_for_line(lambda line: line.startswith("seed app on "))
        url = f"http://127.0.0.1:{port}/channels?transport=stream&channel=ticker"
        with urllib.request.urlopen(url, timeout=10) as stream:  # a live subscriber
            assert b'"connected"' in stream.readline()
            assert b'"subscribed"' in stream.readline()
            proc.proc.send_signal(sig)
            proc.wait_for_line(lambda line: line.startswith("seed app stopped"))
            code = proc.proc.wait(10)
    finally:
        proc.stop()
    output = "".join(proc.output)
    assert code == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output

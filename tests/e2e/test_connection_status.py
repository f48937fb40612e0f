"""The connection status tells the truth (issue 11, finding 1): a real hub
process is killed under an open page, the page says "reconnecting (why)…",
the hub comes back on the same port, and the page is live again, says the
history was reset (an in-memory hub forgets it), and delivers.

Both pages that show a status are checked: the hub's demo page
(``torchannels serve``) and examples/seed_app.py's page. The browser is the
real torchannel.js in Debian's Chromium; the processes are real."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import PYTHON, ROOT, Process, free_port, unique, wait_js

API_KEY = "e2e-status-key"
#: Every wait is bounded by this (s); what the page took is printed, not asserted.
WAIT = 20.0


class Restartable:
    """A server process on a fixed port, which a test may kill and start again."""

    def __init__(self, args: list[str], ready: str) -> None:
        self.port = free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.ready = ready
        self.proc: Process | None = None
        self.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = Process(self.args)
        self.proc.wait_for_line(lambda line: self.ready in line, timeout=WAIT)

    def kill(self) -> None:
        """SIGKILL: the hub dies as in a crash, without a goodbye to its clients."""
        assert self.proc is not None
        self.proc.proc.kill()
        self.proc.proc.wait(10)
        self.proc.stop()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture
def hub() -> Iterator[Restartable]:
    server = Restartable(
        [PYTHON, "-m", "torchannels", "serve", "--port", "{port}", "--api-key", API_KEY],
        "torchannels server listening on",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seed_app() -> Iterator[Restartable]:
    server = Restartable(
        [PYTHON, os.path.join(ROOT, "examples", "seed_app.py"), "--port", "{port}"],
        "seed app on ",
    )
    try:
        yield server
    finally:
        server.stop()


def publish_chat(base: str, text: str) -> None:
    body = json.dumps({"channel": "demo:chat", "data": {"name": "api", "text": text}}).encode()
    request = urllib.request.Request(
        f"{base}/api/publish",
        data=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200, answer.status


def text_of(page: Page, selector: str) -> str:
    return page.text_content(selector) or ""


def timed_wait(page: Page, expression: str, arg: object, what: str) -> float:
    """Wait (bounded by WAIT) for ``expression``; return the seconds it took."""
    start = time.monotonic()
    wait_js(page, expression, arg, timeout=WAIT, what=what)
    return time.monotonic() - start


@pytest.mark.parametrize(
    "transport", ["", "sse", "longpoll"], ids=["negotiated", "sse", "longpoll"]
)
def test_demo_page_says_reconnecting_when_the_hub_dies_and_live_when_it_is_back(
    page: Page, hub: Restartable, transport: str
) -> None:
    expected = transport or "websocket"
    page.goto(f"{hub.base}/" + (f"?transport={transport}" if transport else ""))
    live = "(t) => document.getElementById('status').textContent === 'live over ' + t"
    wait_js(page, live, expected, timeout=WAIT, what=f"live over {expected}")
    # The ticker gives the page positions, which the restarted hub cannot serve.
    wait_js(page, "() => /^\\d+\\.\\d\\d$/.test(document.getElementById('price').textContent)")
    assert text_of(page, "#notice") == ""

    hub.kill()
    took = timed_wait(
        page,
        "() => /^reconnecting \\(.+\\)…$/.test(document.getElementById('status').textContent)",
        None,
        "the status to say reconnecting",
    )
    status = text_of(page, "#status")
    print(f"\n{expected}: '{status}' {took:.2f} s after the hub was killed")
    # Plain words (docs/client.md, Reasons), no close code or HTTP jargon.
    plain = {"reconnecting (connection lost)…", "reconnecting (server unreachable)…"}
    assert status in plain, status
    assert page.evaluate("() => document.getElementById('status').className") == "reconnecting"

    hub.start()  # the same port
    took = timed_wait(page, live, expected, f"live over {expected} again")
    print(f"{expected}: live again {took:.2f} s after the hub was back")
    wait_js(
        page,
        "() => /^history was reset \\(epoch changed\\): demo:(chat|ticker) starts over$/"
        ".test(document.getElementById('notice').textContent)",
        what="the history-reset notice",
    )
    text = unique("after the restart")
    publish_chat(hub.base, text)
    wait_js(
        page,
        "(line) => [...document.querySelectorAll('#messages li.chat-message')]"
        ".some((li) => li.textContent === line)",
        f"api: {text}",
        timeout=WAIT,
        what="delivery after the restart",
    )


@pytest.mark.parametrize("transport", ["", "sse"], ids=["negotiated", "sse"])
def test_demo_page_says_server_restarting_in_plain_words_when_the_hub_stops(
    page: Page, hub: Restartable, transport: str
) -> None:
    """A hub stopped cleanly (SIGTERM) tells its clients it is shutting down;
    the client's replacement connection then finds nothing listening. The
    status says so in plain words, where it said "refused or unreachable
    (close 1006 before open)"; the technical words are the `detail`."""
    expected = transport or "websocket"
    page.goto(f"{hub.base}/" + (f"?transport={transport}" if transport else ""))
    live = "(t) => document.getElementById('status').textContent === 'live over ' + t"
    wait_js(page, live, expected, timeout=WAIT, what=f"live over {expected}")
    wait_js(page, "() => /^\\d+\\.\\d\\d$/.test(document.getElementById('price').textContent)")

    hub.stop()  # SIGTERM: the hub sends `reconnect` (shutdown) and exits
    took = timed_wait(
        page,
        "() => document.getElementById('status').textContent.startsWith('reconnecting')",
        None,
        "the status to say reconnecting",
    )
    status = text_of(page, "#status")
    print(f"\n{expected}: '{status}' {took:.2f} s after the hub was stopped")
    assert status == "reconnecting (server restarting)…", status
    hub.start()
    took = timed_wait(page, live, expected, f"live over {expected} again")
    print(f"{expected}: live again {took:.2f} s after the hub was back")


def test_demo_page_status_never_says_reconnecting_while_the_connection_is_fine(
    page: Page, hub: Restartable
) -> None:
    """The negative side: with the hub up, the status stays live (checked
    against the page's own record of every status it showed)."""
    page.add_init_script(
        """window.__shown = [];
        new MutationObserver(() => {
          const s = document.getElementById('status');
          if (s) window.__shown.push(s.textContent);
        }).observe(document, {subtree: true, childList: true, characterData: true});"""
    )
    page.goto(f"{hub.base}/")
    wait_js(page, "() => document.getElementById('status').textContent === 'live over websocket'")
    text = unique("fine")
    publish_chat(hub.base, text)
    wait_js(
        page,
        "(line) => [...document.querySelectorAll('#messages li.chat-message')]"
        ".some((li) => li.textContent === line)",
        f"api: {text}",
    )
    shown = [s for s in page.evaluate("() => window.__shown") if s]
    assert not [s for s in shown if s.startswith("reconnecting")], shown
    assert shown[-1] == "live over websocket", shown


@pytest.mark.parametrize("transport", ["", "stream"], ids=["negotiated", "stream"])
def test_seed_page_says_reconnecting_when_the_app_dies_and_connected_when_it_is_back(
    page: Page, seed_app: Restartable, transport: str
) -> None:
    page.goto(f"{seed_app.base}/" + (f"?transport={transport}" if transport else ""))
    connected = "() => document.getElementById('state').textContent === 'connected'"
    wait_js(page, connected, timeout=WAIT, what="connected")
    wait_js(page, "() => document.getElementById('at').textContent !== ''", what="a tick")
    assert text_of(page, "#transport") == f"({transport or 'websocket'})"

    seed_app.kill()
    took = timed_wait(
        page,
        "() => /^reconnecting \\(.+\\)…$/.test(document.getElementById('state').textContent)",
        None,
        "the state to say reconnecting",
    )
    print(f"\nseed: '{text_of(page, '#state')}' {took:.2f} s after the app was killed")
    assert "undefined" not in text_of(page, "#state")

    seed_app.start()
    timed_wait(page, connected, None, "connected again")
    assert re.fullmatch(r"\((websocket|stream)\)", text_of(page, "#transport"))
    wait_js(
        page,
        "() => /^history of ticker was reset \\(epoch_changed\\)$/"
        ".test(document.getElementById('reset').textContent)",
        what="the history-reset line",
    )
    # Delivery: the ticker moves on after the restart.
    before = text_of(page, "#at")
    wait_js(
        page,
        "(t) => document.getElementById('at').textContent !== t",
        before,
        what="a tick after the restart",
    )


def test_demo_page_says_reconnecting_offline_when_the_browser_goes_offline(
    page: Page, hub: Restartable
) -> None:
    page.goto(f"{hub.base}/")
    live = "() => document.getElementById('status').textContent === 'live over websocket'"
    wait_js(page, live, timeout=WAIT, what="live over websocket")
    page.context.set_offline(True)
    try:
        took = timed_wait(
            page,
            "() => document.getElementById('status').textContent === 'reconnecting (offline)…'",
            None,
            "the status to say reconnecting (offline)",
        )
        print(f"\noffline: shown {took:.2f} s after the browser went offline")
    finally:
        page.context.set_offline(False)
    took = timed_wait(page, live, None, "live again once online")
    print(f"online: live again {took:.2f} s after the browser was back online")
    text = unique("back online")
    publish_chat(hub.base, text)
    wait_js(
        page,
        "(line) => [...document.querySelectorAll('#messages li.chat-message')]"
        ".some((li) => li.textContent === line)",
        f"api: {text}",
        timeout=WAIT,
        what="delivery after going online",
    )

"""examples/seed_app.py as a real process, its page in Chromium, on every transport."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import PYTHON, ROOT, TRANSPORTS, Process, free_port, unique


@pytest.fixture(scope="module")
def app() -> Iterator[str]:
    """The example app on a free port; yields its base URL."""
    port = free_port()
    proc = Process([PYTHON, os.path.join(ROOT, "examples", "seed_app.py"), "--port", str(port)])
    try:
        proc.wait_for_line(lambda line: line.startswith("seed app on "))
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def post_chat(base: str, text: str) -> int:
    """Say ``text`` through the app's own publishing handler, as a form would."""
    body = urllib.parse.urlencode({"text": text}).encode()
    with urllib.request.urlopen(f"{base}/publish/chat", data=body, timeout=10) as res:
        assert res.status == 200
        offset: int = json.load(res)["offset"]
        return offset


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_example_page_shows_chat_and_ticker(page: Page, app: str, transport: str) -> None:
    page.goto(f"{app}/?transport={transport}")
    page.wait_for_function(
        "() => document.getElementById('state').textContent === 'connected'", timeout=10_000
    )
    assert page.text_content("#transport") == f"({transport})"

    # The ticker keeps its last price as channel state: it shows at once.
    page.wait_for_function(
        "() => /^\\d+\\.\\d\\d$/.test(document.getElementById('price').textContent)",
        timeout=10_000,
    )
    assert re.fullmatch(r"\d\d:\d\d:\d\d", page.text_content("#at") or "")

    text = unique(f"hello over {transport}")
    post_chat(app, text)
    line = f"guest: {text}"
    page.wait_for_function(
        "(line) => [...document.querySelectorAll('#chat li.chat-message')]"
        ".some((li) => li.textContent === line)",
        arg=line,
        timeout=10_000,
    )

    # The page's own form posts to the same endpoint.
    typed = unique(f"typed over {transport}")
    page.fill("#text", typed)
    page.click("#say button")
    page.wait_for_function(
        "(line) => [...document.querySelectorAll('#chat li.chat-message')]"
        ".some((li) => li.textContent === line)",
        arg=f"guest: {typed}",
        timeout=10_000,
    )
    shown = page.eval_on_selector_all("#chat li.chat-message", "els => els.map(e => e.textContent)")
    assert shown.count(line) == 1, shown
    assert shown.index(line) < shown.index(f"guest: {typed}")

    # The ticker keeps moving (a tick a second): a later price replaces it.
    first_at = page.text_content("#at")
    page.wait_for_function(
        "(t) => document.getElementById('at').textContent !== t", arg=first_at, timeout=10_000
    )

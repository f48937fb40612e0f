"""`python -m torchannels serve` as a real process: its demo page in Chromium
shows a chat message published with curl, and the live ticker chart; it
holds no API key, and its chat box publishes only where the configuration
lets pages publish."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import OUTPUT, TRANSPORTS, served, unique

API_KEY = "e2e-demo-key"


@pytest.fixture(scope="module")
def hub_url() -> Iterator[str]:
    with served("--api-key", API_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def open_chat_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hub (not in dev mode) whose configuration lets pages publish to demo:chat."""
    config = tmp_path_factory.mktemp("open-chat") / "hub.toml"
    config.write_text('[channels."demo:chat"]\npublish = "subscribers"\n')
    with served("--api-key", API_KEY, "--config", str(config)) as url:
        yield url


def curl_publish(base: str, text: str) -> dict[str, object]:
    body = json.dumps({"channel": "demo:chat", "data": {"name": "curl", "text": text}})
    done = subprocess.run(
        [
            "curl", "-s", "--max-time", "10",
            "-H", f"Authorization: Bearer {API_KEY}",
            "-d", body,
            f"{base}/api/publish",
        ],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    )  # fmt: skip
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def wait_chat_line(page: Page, line: str) -> None:
    page.wait_for_function(
        "(line) => [...document.querySelectorAll('#messages li.chat-message')]"
        ".some((li) => li.textContent === line)",
        arg=line,
        timeout=10_000,
    )


def chart_points(page: Page) -> str:
    return page.get_attribute("#line", "points") or ""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_curl_publish_reaches_the_demo_page_on_every_transport(
    page: Page, hub_url: str, transport: str
) -> None:
    page.goto(f"{hub_url}/?transport={transport}")
    page.wait_for_function(
        "(t) => document.getElementById('status').textContent === 'live over ' + t",
        arg=transport,
        timeout=10_000,
    )
    text = unique(f"curl over {transport}")
    curl_publish(hub_url, text)
    wait_chat_line(page, f"curl: {text}")
    page.wait_for_function(
        "() => /^\\d+\\.\\d\\d$/.test(document.getElementById('price').textContent)",
        timeout=10_000,
    )


def test_curl_publish_appears_on_the_demo_page(page: Page, hub_url: str) -> None:
    page.set_viewport_size({"width": 1200, "height": 800})
    page.goto(f"{hub_url}/")
    page.wait_for_function(
        "() => document.getElementById('status').textContent === 'live over websocket'",
        timeout=10_000,
    )

    text = f"hello from curl ({unique('e2e')})"
    answer = curl_publish(hub_url, text)
    assert isinstance(answer.get("offset"), int), answer
    wait_chat_line(page, f"curl: {text}")

    # The ticker: a price, and a chart that grows as ticks arrive.
    page.wait_for_function(
        "() => /^\\d+\\.\\d\\d$/.test(document.getElementById('price').textContent)",
        timeout=10_000,
    )
    # The chart is drawn from the channel's state (recent points) plus ticks.
    page.wait_for_function(
        "() => document.getElementById('line').getAttribute('points').split(' ').length >= 6",
        timeout=10_000,
    )
    before = chart_points(page)
    page.wait_for_function(
        "(p) => document.getElementById('line').getAttribute('points') !== p",
        arg=before,
        timeout=10_000,
    )
    points = chart_points(page).split(" ")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?,-?\d+(\.\d+)?", p) for p in points), points

    # The page holds no key. Without dev mode, demo:chat has no publish
    # option: the chat box is off, and says why. No name to take either.
    assert API_KEY not in page.content()
    assert API_KEY not in page.request.get(f"{hub_url}/").text()
    assert page.is_disabled("#text") and page.is_disabled("#say button")
    off = page.text_content("#chat-off") or ""
    assert "this hub gives demo:chat no publish option" in off, off
    assert page.is_hidden("#name") and page.is_hidden("#here")

    os.makedirs(OUTPUT, exist_ok=True)
    shot = os.path.join(OUTPUT, "hub-demo.png")
    page.screenshot(path=shot, full_page=True)
    assert os.path.getsize(shot) > 10_000


def test_a_configured_chat_publishes_from_anonymous_pages(page: Page, open_chat_url: str) -> None:
    """`publish = "subscribers"` lets every reader of demo:chat publish:
    anonymous pages too, whose lines the page names "anonymous" (there is
    no name to take without dev mode, and a name inside a message is
    never shown as its sender's)."""
    page.goto(f"{open_chat_url}/")
    page.wait_for_function(
        "() => document.getElementById('status').textContent === 'live over websocket'",
        timeout=10_000,
    )
    assert page.is_enabled("#text") and page.is_hidden("#chat-off")
    text = unique("anonymous says")
    page.fill("#text", text)
    page.click("#say button")
    wait_chat_line(page, f"anonymous: {text}")
    forged = unique("forged")
    page.evaluate("(t) => demoClient.publish('demo:chat', {name: 'curl', text: t})", forged)
    wait_chat_line(page, f"anonymous: {forged}")
    assert API_KEY not in page.content()

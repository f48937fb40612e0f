"""`python -m torchannels serve` as a real process: its demo page in Chromium
shows a chat message published with curl, and the live ticker chart."""

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

    # Say something with the page's own form, too.
    page.fill("#name", "browser")
    page.fill("#text", "hi from the page")
    page.click("#say button")
    wait_chat_line(page, "browser: hi from the page")

    os.makedirs(OUTPUT, exist_ok=True)
    shot = os.path.join(OUTPUT, "hub-demo.png")
    page.screenshot(path=shot, full_page=True)
    assert os.path.getsize(shot) > 10_000

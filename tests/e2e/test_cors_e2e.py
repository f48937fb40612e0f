"""A page on one origin, the hub on another: every transport and the publish
API work across origins when the hub lists the page's origin in
``--allowed-origins``, and none of the HTTP ones do when it does not.

The page is tests/e2e/pages/client.html served by the e2e site
(http://127.0.0.1:A); the hub is a ``torchannels serve`` process on
http://127.0.0.1:B, another origin. The client is forced to each transport.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import (
    PYTHON,
    TRANSPORTS,
    Process,
    failure_count,
    received,
    unique,
    wait_count,
    wait_js,
    wait_until,
)

if TYPE_CHECKING:
    from e2e.conftest import Site

KEY = "e2e-cors-key"


def start_hub(*flags: str) -> tuple[Process, str]:
    proc = Process([PYTHON, "-m", "torchannels", "serve", "--port", "0", "--no-demo",
                    "--api-key", KEY, *flags])  # fmt: skip
    line = proc.wait_for_line(lambda line: "torchannels server listening on" in line)
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert match, line
    return proc, f"http://127.0.0.1:{match.group(1)}"


@pytest.fixture(scope="module")
def cors_hub(site: Site) -> Iterator[str]:
    proc, base = start_hub("--allowed-origins", site.base)
    yield base
    proc.stop()


@pytest.fixture(scope="module")
def closed_hub() -> Iterator[str]:
    proc, base = start_hub()
    yield base
    proc.stop()


def open_page(page: Page, site: Site, hub: str, transport: str, channel: str) -> None:
    query = {"transport": transport, "url": f"{hub}/channels", "channels": channel,
             "pollInterval": "300", "maxDelay": "1000"}  # fmt: skip
    page.goto(f"{site.base}/page/client?{urlencode(query)}")


PUBLISH = """async ([hub, key, channel, n]) => {
  try {
    const response = await fetch(hub + '/api/publish', {
      method: 'POST',
      headers: {'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'},
      body: JSON.stringify({channel: channel, data: {n: n}})
    });
    return {status: response.status, body: await response.json()};
  } catch (e) {
    return {blocked: String(e)};
  }
}"""


def publish_from_page(page: Page, hub: str, channel: str, n: int) -> dict[str, Any]:
    """A cross-origin POST with an Authorization header: the browser sends a
    preflight first."""
    answer: dict[str, Any] = page.evaluate(PUBLISH, [hub, KEY, channel, n])
    return answer


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_transport_and_the_api_work_across_origins(
    page: Page, site: Site, cors_hub: str, transport: str
) -> None:
    channel = unique(f"demo:cors-{transport}")
    assert not cors_hub.startswith(site.base)  # two origins
    open_page(page, site, cors_hub, transport, channel)
    wait_js(page, "() => window.transports.length > 0", what="connected")
    assert page.evaluate("() => window.transports") == [transport]
    for n in (1, 2, 3):
        answer = publish_from_page(page, cors_hub, channel, n)
        assert answer.get("status") == 200, answer
        assert answer["body"]["channel"] == channel
    wait_count(page, channel, 3)
    assert [m["n"] for m in received(page, channel)] == [1, 2, 3]
    assert failure_count(page) == 0, page.evaluate("() => window.failures")


@pytest.mark.parametrize("transport", ["sse", "stream", "longpoll", "poll"])
def test_without_allowed_origins_the_browser_blocks_them(
    page: Page, site: Site, closed_hub: str, transport: str
) -> None:
    """The control: the same page and hub, minus ``--allowed-origins``."""
    channel = unique(f"demo:closed-{transport}")
    open_page(page, site, closed_hub, transport, channel)
    wait_until(lambda: failure_count(page) > 0, what="a blocked request", page=page)
    assert page.evaluate("() => window.transports") == []
    assert "blocked" in publish_from_page(page, closed_hub, channel, 1)
    assert received(page, channel) == []

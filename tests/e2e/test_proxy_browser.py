"""The demo page in Chromium through a real nginx in front of ``torchannels serve``.

nginx runs the deployment guide's config without its Host line (as
nginx.org's WebSocket example has none): the hub then sees the upstream's
name as Host, and only X-Forwarded-Host names the page's host. A hub that
trusts nginx (``--trusted-proxies 127.0.0.1``) accepts the page's WebSocket;
one that does not refuses it (403) and the client falls back to SSE.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import PYTHON, Process, unique, wait_js
from nginx_proxy import HOST_LINE, Nginx

API_KEY = "e2e-proxy-key"


class Deployment:
    """A hub process and nginx in front of it."""

    def __init__(self, workdir: Path, *flags: str) -> None:
        self.hub = Process([PYTHON, "-m", "torchannels", "serve", "--port", "0",
                            "--api-key", API_KEY, *flags])  # fmt: skip
        try:
            line = self.hub.wait_for_line(lambda line: "torchannels server listening on" in line)
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            assert match, line
            no_host = (HOST_LINE, "# no Host line")
            self.nginx = Nginx(workdir, int(match.group(1)), no_host)
        except BaseException:
            self.hub.stop()
            raise

    def publish_chat(self, text: str) -> None:
        """Publish through nginx, as a backend behind it would."""
        body = json.dumps({"channel": "demo:chat", "data": {"name": "api", "text": text}})
        request = urllib.request.Request(
            self.nginx.base + "/api/publish",
            data=body.encode(),
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def close(self) -> None:
        self.nginx.close()
        self.hub.stop()


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Deployment]]:
    made: dict[str, Deployment] = {}
    try:
        made["trusting"] = Deployment(
            tmp_path_factory.mktemp("nginx-trusting"), "--trusted-proxies", "127.0.0.1"
        )
        made["plain"] = Deployment(tmp_path_factory.mktemp("nginx-plain"))
        yield made
    finally:
        for deployment in made.values():
            deployment.close()


def live_over(page: Page) -> str:
    status: str = page.text_content("#status") or ""
    return status


@pytest.mark.parametrize(("name", "transport"), [("trusting", "websocket"), ("plain", "sse")])
def test_demo_page_through_nginx(
    page: Page, deployments: dict[str, Deployment], name: str, transport: str
) -> None:
    deployment = deployments[name]
    # What Chromium itself saw of WebSockets: frames received per socket URL.
    received: dict[str, int] = {}

    def on_websocket(ws: Any) -> None:
        received.setdefault(ws.url, 0)

        def count(_: Any) -> None:
            received[ws.url] += 1

        ws.on("framereceived", count)

    page.on("websocket", on_websocket)
    page.goto(deployment.nginx.base + "/")
    wait_js(
        page,
        "() => document.getElementById('status').textContent.startsWith('live over ')",
        what="the demo page to go live",
    )
    # The client tries WebSocket first; it stays on it only when the hub
    # accepted the handshake.
    assert live_over(page) == f"live over {transport}"
    text = unique(f"through nginx to a {name} hub")
    deployment.publish_chat(text)
    wait_js(
        page,
        "(line) => [...document.querySelectorAll('#messages li.chat-message')]"
        ".some((li) => li.textContent === line)",
        arg=f"api: {text}",
        what="the chat line",
    )
    assert live_over(page) == f"live over {transport}"
    sockets = [url for url in received if "/channels/ws" in url]
    assert sockets, received  # the client tried WebSocket first in both cases
    if transport == "websocket":
        assert all(received[url] > 0 for url in sockets), received
    else:
        assert all(received[url] == 0 for url in sockets), received

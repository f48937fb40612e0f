"""Streams behind a proxy that cuts idle connections (issue 13, defect 3), in
Chromium: a TCP proxy here closes any connection whose server side has been
silent for 3 s, shorter than the hub's 15 s ping. The client sees the cuts at
a consistent age and asks for quicker pings (``ping=5``), reconnects each
time inside ``reconnectingDelay`` so the page never sees ``reconnecting``,
and loses and repeats nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Page, WebSocket

from e2e.e2e_helpers import offsets, page_state, unique, wait_count, wait_js, wait_until
from e2e.test_step_up import Server

IDLE = 3.0  # the proxy's read timeout, s


class IdleCuttingProxy:
    """A TCP proxy on its own loop that closes a connection once the server
    side has sent nothing for ``IDLE`` seconds (as nginx's proxy_read_timeout)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cuts = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    async def _serve(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        heard = [time.monotonic()]

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, from_server: bool) -> None:
            while data := await r.read(65536):
                if from_server:
                    heard[0] = time.monotonic()
                w.write(data)
                await w.drain()

        tasks = [
            asyncio.ensure_future(pump(down_r, up_w, False)),
            asyncio.ensure_future(pump(up_r, down_w, True)),
        ]
        try:
            while not any(t.done() for t in tasks):
                await asyncio.sleep(0.1)
                if time.monotonic() - heard[0] > IDLE:
                    self.cuts += 1
                    break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (up_w, down_w):
                w.close()

    async def _shutdown(self) -> None:
        """Stop listening, end every connection, and wait for their tasks."""
        self.server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server(ping_interval=15.0)
    yield s
    s.close()


@pytest.fixture
def proxy(server: Server) -> Iterator[IdleCuttingProxy]:
    p = IdleCuttingProxy(server.port)
    yield p
    p.close()


@pytest.mark.parametrize("transport", ["websocket", "sse", "stream"])
def test_idle_cuts_ask_for_quicker_pings_without_status_flicker_or_loss(
    page: Page, server: Server, proxy: IdleCuttingProxy, transport: str
) -> None:
    channel = unique(f"idle-{transport}")
    pings: list[str] = []  # the `ping` of every subscribe request or socket ("-": none)

    def note(url: str) -> None:
        parts = urlsplit(url)
        if parts.path in ("/channels", "/channels/ws"):
            pings.append(parse_qs(parts.query).get("ping", ["-"])[0])

    page.on("request", lambda r: note(r.url) if r.resource_type != "websocket" else None)
    page.on("websocket", lambda ws: note(ws.url) if isinstance(ws, WebSocket) else None)
    page.add_init_script(
        "window.__states = []; addEventListener('DOMContentLoaded', () => "
        "window.client.on('state', (e) => window.__states.push(e.to)));"
    )
    page.goto(
        f"http://127.0.0.1:{proxy.port}/page/client?"
        + urlencode({"channels": channel, "transport": transport})
    )
    server.publish(channel, 1)
    wait_count(page, channel, 1)
    wait_until(lambda: "5" in pings, timeout=30, what="a request asking for ping=5", page=page)
    assert pings[:2] == ["-", "-"], pings
    assert proxy.cuts >= 2
    for n in (2, 3):
        server.publish(channel, n)
    wait_count(page, channel, 3)
    assert offsets(page, channel) == [1, 2, 3], page_state(page)
    wait_js(page, "() => window.client.state === 'connected'")
    states = page.evaluate("() => window.__states")
    assert "reconnecting" not in states, states
    reasons = {f["reason"] for f in page.evaluate("() => window.failures")}
    assert reasons <= {"connection lost", "closed"}, reasons

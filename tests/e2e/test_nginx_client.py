"""The browser client through a real nginx that is not set up right (issue 13).

Chromium loads torchannel.js through Debian's nginx (tests/nginx_proxy.py:
the deployment guide's config with a few lines changed) in front of a hub
with the default keep-alive (15 s) and long-poll hold (25 s):

- without the WebSocket upgrade lines, the client falls back to SSE at once
  and says why (``transport_failed``);
- with buffering forced (gzip, the hub's ``X-Accel-Buffering`` ignored) the
  streams deliver nothing, so the client steps down to long-poll; after
  ``nginx -s reload`` to the guide's config it steps back up to WebSocket,
  with no message lost or repeated;
- with a ``proxy_read_timeout`` shorter than both, long-poll shortens its
  hold and the streams ask for quicker pings, with no status flicker.

The measured figures (fallback time, step-up time, latency after a quiet
period) are printed (``pytest -s``) and written to
test-output/nginx-client.json; the tests bound them only loosely.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Page, WebSocket
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from e2e.e2e_helpers import OUTPUT, unique, wait_until
from e2e.test_step_up import Server
from nginx_proxy import BUFFERING_OFF, NO_UPGRADE, READ_TIMEOUT, Nginx

#: nginx's read timeout in the timeout test, s: below the hub's ping (15 s)
#: and hold (25 s), above the shortest ping a client may ask for (5 s).
SHORT_TIMEOUT = 6
#: Buffering forced as a shared config might: buffered, gzipped streams, the
#: hub's ``X-Accel-Buffering: no`` ignored. nginx then holds every byte of a
#: stream (docs/deployment.md); a WebSocket is a tunnel nginx never buffers,
#: so this site also lacks the upgrade lines, or the client would stay on it.
BUFFERING_FORCED = (
    BUFFERING_OFF,
    "proxy_buffering on; gzip on; gzip_types text/event-stream application/x-ndjson;"
    " proxy_ignore_headers X-Accel-Buffering;",
)
MEASURED = Path(OUTPUT) / "nginx-client.json"


def record(name: str, figures: dict[str, Any]) -> None:
    """Print a test's measurements and keep them in test-output/."""
    print(f"\n{name}: {json.dumps(figures)}")
    os.makedirs(OUTPUT, exist_ok=True)
    known = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    known[name] = figures
    MEASURED.write_text(json.dumps(known, indent=2) + "\n")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server(ping_interval=15.0)  # the hub's defaults: 15 s pings, 25 s holds
    yield s
    s.close()


def publish(server: Server, channel: str, n: int) -> None:
    """Publish ``{n, sent}`` (``sent``: the wall clock in ms, which the page
    compares with its own on arrival: the same machine's clock)."""
    done = threading.Event()

    def send() -> None:
        server.hub.channel(channel).send({"n": n, "sent": time.time() * 1000})
        done.set()

    server.loop.call_soon_threadsafe(send)
    assert done.wait(10)


def open_page(page: Page, nginx: Nginx, specs: list[dict[str, Any]]) -> None:
    """Load pages/nginx.html through nginx: one client per spec; the page,
    the script and the channels all go through nginx."""
    page.goto(f"{nginx.base}/page/nginx?{urlencode({'specs': json.dumps(specs)})}")


def rec(page: Page, name: str) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate("(n) => window.recs[n]", name)
    return found


def numbers(page: Page, name: str) -> list[int]:
    return [m["n"] for m in rec(page, name)["got"]]


def wait_for(page: Page, expression: str, what: str, timeout: float = 10.0) -> None:
    """e2e_helpers.wait_js, failing with what every client of the page recorded."""
    try:
        page.wait_for_function(expression, timeout=timeout * 1000, polling=50)
    except PlaywrightTimeout:
        seen = page.evaluate("() => window.recs")
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; the page saw {json.dumps(seen)}"
        ) from None


def is_on(name: str, transport: str) -> str:
    """JS: client ``name`` is connected over ``transport``."""
    return (
        f"() => window.clients[{name!r}].state === 'connected' && "
        f"window.clients[{name!r}].transport === {transport!r}"
    )


def test_no_upgrade_falls_back_to_sse_at_once_and_says_why(
    page: Page, server: Server, tmp_path: Path
) -> None:
    nginx = Nginx(tmp_path, server.port, *NO_UPGRADE)
    try:
        channel = unique("noupgrade")
        open_page(page, nginx, [{"name": "c", "options": {}, "channel": channel}])
        wait_for(page, is_on("c", "sse"), "live over sse")
        publish(server, channel, 1)
        wait_for(page, "() => window.recs.c.got.length >= 1", "message 1")
        seen = rec(page, "c")
        assert [m["n"] for m in seen["got"]] == [1]
        assert [c["transport"] for c in seen["connected"]] == ["sse"], seen
        failed = seen["failed"]
        assert [(f["transport"], f["next"]) for f in failed] == [("websocket", "sse")], failed
        assert failed[0]["code"] == 1006, failed
        assert failed[0]["reason"] == "server unreachable", failed
        assert "refused" in failed[0]["detail"], failed
        assert [e["transport"] for e in seen["errors"]] == ["websocket"], seen["errors"]
        fallback_ms = seen["connected"][0]["t"]
        record("no_upgrade", {"sse_connected_ms_after_page_start": round(fallback_ms)})
        # The issue asks for "within 1 s"; a loaded machine gets a wide margin.
        assert fallback_ms < 3000, f"connected over sse only {fallback_ms:.0f} ms after page start"
    finally:
        nginx.close()


class Publisher:
    """Publishes 1, 2, 3... on ``channel`` every ``every`` s from a thread."""

    def __init__(self, server: Server, channel: str, every: float = 0.1) -> None:
        self.server, self.channel, self.every = server, channel, every
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sent += 1
            publish(self.server, self.channel, self.sent)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.sent


def test_buffering_steps_down_to_longpoll_then_back_up_after_reload_without_loss(
    page: Page, server: Server, tmp_path: Path
) -> None:
    nginx = Nginx(tmp_path, server.port, *NO_UPGRADE, BUFFERING_FORCED)
    publisher: Publisher | None = None
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    try:
        channel = unique("buffered")
        options = {"connectTimeout": 1500, "probeDelay": 1000, "maxProbeDelay": 2000}
        open_page(page, nginx, [{"name": "c", "options": options, "channel": channel}])
        wait_for(page, is_on("c", "longpoll"), "the step-down to long-poll", timeout=15)
        publisher = pub = Publisher(server, channel)
        failed = rec(page, "c")["failed"]
        assert [(f["transport"], f["next"]) for f in failed] == [
            ("websocket", "sse"),
            ("sse", "longpoll"),  # past stream, which the same proxy buffers
        ], failed
        # Probes while nginx still buffers fail, silently: the client stays.
        # (A round tries websocket, sse, stream: a second round's WebSocket
        # means the first one failed.)
        first = len(sockets)
        wait_until(lambda: len(sockets) >= first + 2, timeout=15, what="2 probes", page=page)
        wait_for(page, "() => window.recs.c.got.length >= 5", "messages over long-poll")
        assert page.evaluate("() => window.clients.c.transport") == "longpoll"

        nginx.reload()  # the guide's config
        reloaded_ms: float = page.evaluate("() => performance.now()")
        wait_for(page, is_on("c", "websocket"), "the step back up to websocket", timeout=20)
        sent_before = pub.sent
        wait_until(lambda: pub.sent >= sent_before + 5, what="5 more messages")
        last = pub.stop()
        wait_for(page, f"() => window.recs.c.got.length >= {last}", f"{last} messages")
        seen = rec(page, "c")
        assert [m["n"] for m in seen["got"]] == list(range(1, last + 1)), seen["got"]
        transports = [c["transport"] for c in seen["connected"]]
        # Straight to websocket, or through sse or stream first (when the
        # round in flight during the reload had already tried websocket).
        assert transports[0] == "longpoll" and transports[-1] == "websocket", transports
        assert set(transports[1:-1]) <= {"sse", "stream"}, transports
        assert [s["to"] for s in seen["states"]] == ["connecting", "connected"], seen["states"]
        assert len(seen["failed"]) == 2, "a step-up probe is silent"
        step_up_ms = seen["connected"][-1]["t"] - reloaded_ms
        record(
            "buffering_then_reload",
            {
                "longpoll_connected_ms_after_page_start": round(seen["connected"][0]["t"]),
                "websocket_connected_ms_after_reload": round(step_up_ms),
                "messages": last,
            },
        )
    finally:
        if publisher is not None:
            publisher.stop()
        nginx.close()


def subscribe_request(url: str) -> tuple[str, str] | None:
    """(transport, ping or "-") of a subscribe request or socket, else None."""
    parts = urlsplit(url)
    if parts.path not in ("/channels", "/channels/ws"):
        return None
    query = parse_qs(parts.query)
    transport = query.get("transport", ["websocket" if parts.path.endswith("/ws") else "?"])[0]
    return transport, query.get("ping", query.get("timeout", ["-"]))[0]


STREAMS = ["websocket", "sse", "stream"]


def test_short_read_timeout_longpoll_and_streams_adapt_without_flicker_or_loss(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """Four clients in one page, one per transport, forced, through one nginx
    whose read timeout is shorter than the hub's hold and ping."""
    nginx = Nginx(tmp_path, server.port, (READ_TIMEOUT, f"proxy_read_timeout {SHORT_TIMEOUT}s;"))
    # Per transport: (ms since the test began, ping or long-poll timeout asked).
    asked: dict[str, list[tuple[float, str]]] = {name: [] for name in [*STREAMS, "longpoll"]}
    began = time.monotonic()

    def note(url: str) -> None:
        found = subscribe_request(url)
        if found and found[0] in asked:
            asked[found[0]].append((time.monotonic() - began, found[1]))

    page.on("request", lambda r: note(r.url) if r.resource_type != "websocket" else None)
    page.on("websocket", lambda ws: note(ws.url) if isinstance(ws, WebSocket) else None)
    try:
        channel = unique("readtimeout")
        specs = [
            {"name": name, "options": {"transport": name}, "channel": channel}
            for name in [*STREAMS, "longpoll"]
        ]
        open_page(page, nginx, specs)
        for name in asked:
            wait_for(page, is_on(name, name), f"{name} connected")
        publish(server, channel, 1)
        wait_for(
            page, "() => Object.values(window.recs).every((r) => r.got.length >= 1)", "message 1"
        )
        quiet_from = time.monotonic() - began

        def adapted() -> bool:
            return all(any(ping == "5" for _, ping in asked[name]) for name in STREAMS)

        wait_until(adapted, timeout=30, what="every stream asking for ping=5", page=page)
        # Quiet for about three read timeouts, and for one and a half with the
        # quicker pings in force.
        last_ask = max(t for name in STREAMS for t, ping in asked[name] if ping == "5")
        quiet_until = max(quiet_from + 3 * SHORT_TIMEOUT, last_ask + 1.5 * SHORT_TIMEOUT)
        wait_until(lambda: time.monotonic() - began >= quiet_until, timeout=60, page=page)

        publish(server, channel, 2)
        wait_for(
            page, "() => Object.values(window.recs).every((r) => r.got.length >= 2)", "message 2"
        )
        latencies: dict[str, int] = {}
        for name in asked:
            seen = rec(page, name)
            assert [m["n"] for m in seen["got"]] == [1, 2], (name, seen["got"])
            latencies[name] = round(seen["got"][1]["at"] - seen["got"][1]["sent"])
            states = [s["to"] for s in seen["states"]]
            assert states == ["connecting", "connected"], (name, seen["states"])
            assert page.evaluate(f"() => window.clients[{name!r}].state") == "connected"
        # Long-poll: the proxy's 504 shortened the hold, with no error.
        holds = [hold for _, hold in asked["longpoll"]]
        assert holds[0] == "25", holds
        shortened = [h for h in holds[1:] if h != "25"]
        assert len(shortened) >= 3, holds  # polled again and again at the shorter hold
        assert all(float(h) < SHORT_TIMEOUT for h in shortened), holds
        assert rec(page, "longpoll")["errors"] == [], rec(page, "longpoll")["errors"]
        for name in STREAMS:
            pings = [ping for _, ping in asked[name]]
            # Cut twice at the proxy's timeout, then asked for 5 s pings and
            # kept that connection through the rest of the quiet period.
            assert pings[:2] == ["-", "-"] and pings[2:] == ["5"], (name, asked[name])
            reasons = {e["reason"] for e in rec(page, name)["errors"]}
            assert reasons <= {"connection lost", "closed"}, (name, reasons)
        record(
            "short_read_timeout",
            {
                "proxy_read_timeout_s": SHORT_TIMEOUT,
                "quiet_s": round(quiet_until - quiet_from, 1),
                "latency_ms_after_quiet": latencies,
                "longpoll_timeouts_asked": holds,
                "stream_pings_asked": {name: [p for _, p in asked[name]] for name in STREAMS},
            },
        )
        # Promptly: a wide margin over the "within 1 s" for a loaded machine.
        assert max(latencies.values()) < 3000, latencies
    finally:
        nginx.close()

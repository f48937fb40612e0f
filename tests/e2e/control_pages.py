"""What test_control_e2e.py drives: ``torchannels serve`` processes with a
token secret and an API key, reached over their HTTP API, and
tests/e2e/pages/control.html, served by the e2e site and talking to a
process on another origin (which allows the site's), with every request
and WebSocket the page opens to the process counted.

Why not the process's own origin: the process serves no test page, and a
page Playwright fulfils there counts as public to Chromium, whose local
network access checks then block its WebSockets to 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from playwright.sync_api import Page, Request, WebSocket

from e2e.e2e_helpers import PYTHON, Process, page_state, wait_js
from server.processes import jwt

KEY = "e2e-control-key"
SECRET = "e2e-control-secret"
FLAGS = ("--no-demo", "--api-key", KEY, "--token-secret", SECRET)


def token(user: str, iat: float | None = None, **extra: Any) -> str:
    """An HS256 subscription token of ``user`` for the channels ``c:*``,
    issued now unless ``iat``; ``extra``: more claims."""
    now = int(time.time())
    claims = {"sub": user, "exp": now + 600, "channels": ["c:*"], "iat": int(iat or now)}
    return jwt({**claims, **extra}, SECRET)


class Hub:
    """One ``torchannels serve`` process, by its base URL."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """An API request with the key: (status, JSON answer)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call("POST", path, body)
        assert status == 200, (path, body, status, answer)
        return dict(answer)

    def publish(self, channel: str, n: object) -> None:
        self.post("/api/publish", {"channel": channel, "data": {"n": n}})

    def subscribers(self, channel: str) -> int:
        """``local_subscribers`` of ``channel`` on this process."""
        status, answer = self.call("GET", f"/api/channels/{channel}")
        assert status == 200, (channel, status, answer)
        return int(answer["local_subscribers"])


@contextlib.contextmanager
def hub_processes(count: int, origin: str, *flags: str) -> Iterator[list[Hub]]:
    """``count`` processes, started side by side, that serve pages of ``origin``."""
    with each_process(origin, *[flags] * count) as hubs:
        yield hubs


@contextlib.contextmanager
def each_process(origin: str, *flag_sets: tuple[str, ...]) -> Iterator[list[Hub]]:
    """One process per set of flags, started side by side, that serve pages of ``origin``."""
    args = [PYTHON, "-m", "torchannels", "serve", "--port", "0", *FLAGS, "--allowed-origins"]
    procs: list[Process] = []
    try:
        procs += [Process([*args, origin, *flags]) for flags in flag_sets]
        hubs = []
        for proc in procs:
            line = proc.wait_for_line(lambda line: "torchannels server listening on" in line)
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            assert match, line
            hubs.append(Hub(match.group(0).rstrip("/")))
        yield hubs
    finally:
        for proc in procs:
            proc.stop()


class Watched:
    """A control page of the site at ``origin`` whose client talks to
    ``hub``, and what it opened there: HTTP requests (poll, long-poll,
    stream, SSE) and WebSockets."""

    def __init__(self, page: Page, origin: str, hub: Hub) -> None:
        self.page = page
        self.origin = origin
        self.hub = hub
        self.requests: list[str] = []
        self.sockets: list[WebSocket] = []
        #: WebSocket frames, parsed, across every socket: from the server, to it.
        self.frames: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        #: Uncaught exceptions in the page.
        self.page_errors: list[str] = []
        page.on("request", self._on_request)
        page.on("websocket", self._on_socket)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def _on_request(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.netloc == urlsplit(self.hub.base).netloc and parts.path == "/channels":
            self.requests.append(request.url)

    def _on_socket(self, ws: WebSocket) -> None:
        self.sockets.append(ws)
        ws.on("framereceived", lambda payload: self.frames.append(json.loads(payload)))
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))

    def opened(self) -> int:
        """Requests and WebSockets opened to the server so far."""
        return len(self.requests) + len(self.sockets)

    def urls(self) -> list[str]:
        """What was opened, in order within each kind (requests, then sockets)."""
        return self.requests + [ws.url for ws in self.sockets]

    def mark(self) -> tuple[int, int]:
        """Where the page is now, for :meth:`since`."""
        return len(self.requests), len(self.sockets)

    def since(self, mark: tuple[int, int]) -> list[str]:
        """What was opened after ``mark``."""
        return self.requests[mark[0] :] + [ws.url for ws in self.sockets[mark[1] :]]

    def open(self, transport: str, channels: list[str], tok: str, **params: str) -> None:
        """Load the page subscribed to ``channels``; wait until it is connected."""
        query = {"url": f"{self.hub.base}/channels", "transport": transport,
                 "channels": ",".join(channels), "token": tok, **params}  # fmt: skip
        if transport == "poll":
            query.setdefault("pollInterval", "500")
        self.page.goto(f"{self.origin}/page/control?{urlencode(query)}")
        wait_js(self.page, "() => window.transports.length >= 1", what="the first connection")

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def state(self) -> dict[str, Any]:
        """What the page saw, for assertions and failure messages."""
        seen = page_state(self.page)
        seen.update(
            self.js(
                """() => ({states: window.states, disconnects: window.disconnects,
                           tokenCalls: window.tokenCalls, closes: window.closes,
                           transport: window.client.transport})"""
            )
        )
        seen["opened"] = self.urls()
        seen["page_errors"] = self.page_errors
        return seen

    def got(self, channel: str) -> list[Any]:
        """The ``n`` of each message ``channel`` delivered, in order."""
        messages: list[dict[str, Any]] = self.js("(c) => window.received[c] || []", channel)
        return [m["n"] for m in messages]

    def offsets(self, channel: str) -> list[int]:
        messages: list[dict[str, Any]] = self.js("(c) => window.received[c] || []", channel)
        return [m["offset"] for m in messages]

    def wait_for(self, channel: str, n: object, timeout: float = 10.0) -> None:
        """Wait until ``channel`` delivered the message ``{"n": n}``."""
        wait_js(
            self.page,
            "([c, n]) => (window.received[c] || []).some((m) => m.n === n)",
            [channel, n],
            timeout,
            f"{n!r} on {channel}",
        )

    def wait_disconnected(self, reason: str, timeout: float = 10.0) -> None:
        """Wait until the client is ``disconnected``; check it was for the
        server's ``reason``."""
        wait_js(
            self.page,
            "() => window.client.state === 'disconnected'",
            timeout=timeout,
            what=f"state disconnected ({reason})",
        )
        state = self.state()
        assert state["states"][-1]["reason"] == reason, state


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)

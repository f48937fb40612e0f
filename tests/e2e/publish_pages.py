"""What the client publish browser tests share: a control page
(tests/e2e/pages/control.html, see control_pages.py) that publishes with
``client.publish`` and reports how each call settled, and what the page
sent to its process for it: ``publish`` commands on its WebSockets, POSTs
to ``/channels``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Page, Request

from e2e.control_pages import Hub, Watched

#: The page's client.publish(), settled: {ok: true, result} or {ok: false, error}.
PUBLISH = """([channel, data]) => window.client.publish(channel, data).then(
  (result) => ({ok: true, result}),
  (e) => ({ok: false, error: {
    publishError: e instanceof TorChannels.PublishError, name: e.name, code: e.code,
    message: e.message, retry: e.retry, retryAfter: e.retryAfter, status: e.status,
    channel: e.channel}}))"""
#: ``count`` publishes at once: every outcome, in the order they were called.
PUBLISH_MANY = """([channel, count]) => Promise.all(Array.from({length: count}, (_, n) =>
  window.client.publish(channel, {n}).then(
    (result) => ({ok: true, result}),
    (e) => ({ok: false, error: {code: e.code, retry: e.retry, retryAfter: e.retryAfter,
                                status: e.status}}))))"""


class Publishing(Watched):
    """A control page that publishes, and the publishes it sent."""

    def __init__(self, page: Page, origin: str, hub: Hub) -> None:
        super().__init__(page, origin, hub)
        #: The URL of each POST to the process's ``/channels``.
        self.posts: list[str] = []
        #: The CORS preflights of those, as Chromium saw them: status and
        #: headers (lowercase names). Playwright does not report preflights;
        #: the DevTools protocol does.
        self.preflights: list[dict[str, Any]] = []
        page.on("request", self._on_post)
        self._cdp = page.context.new_cdp_session(page)
        self._cdp.on("Network.responseReceived", self._on_response)
        self._cdp.send("Network.enable")

    def _ours(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.netloc == urlsplit(self.hub.base).netloc and parts.path == "/channels"

    def _on_post(self, request: Request) -> None:
        if request.method == "POST" and self._ours(request.url):
            self.posts.append(request.url)

    def _on_response(self, event: dict[str, Any]) -> None:
        response = event["response"]
        if event.get("type") == "Preflight" and self._ours(response["url"]):
            headers = {k.lower(): v for k, v in response["headers"].items()}
            self.preflights.append({"status": response["status"], "headers": headers})

    def publish(self, channel: str, data: Any) -> dict[str, Any]:
        """``client.publish(channel, data)``, settled."""
        outcome: dict[str, Any] = self.js(PUBLISH, [channel, data])
        return outcome

    def publish_many(self, channel: str, count: int) -> list[dict[str, Any]]:
        outcomes: list[dict[str, Any]] = self.js(PUBLISH_MANY, [channel, count])
        return outcomes

    def commands(self) -> list[dict[str, Any]]:
        """The ``publish`` commands the page sent on its WebSockets."""
        return [f for f in self.sent if f.get("type") == "publish"]

    def answers(self) -> list[dict[str, Any]]:
        """The ``published`` and ``publish_error`` frames it received."""
        return [f for f in self.frames if f.get("type") in ("published", "publish_error")]

    def client_id(self) -> str:
        """The page's client id as the server named it, bare (before ``~``)."""
        full: str = self.js("() => window.client._clientId")
        assert isinstance(full, str) and full, self.state()
        return full.partition("~")[0]

    def message(self, channel: str, n: object) -> dict[str, Any]:
        """The message ``{"n": n}`` of ``channel`` the page received."""
        got = [m for m in self.js("(c) => window.received[c] || []", channel) if m.get("n") == n]
        assert len(got) == 1, self.state()
        message: dict[str, Any] = got[0]
        return message

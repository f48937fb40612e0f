"""Client publish (issue 20) from the real browser client: a page of
torchannel.js in Chromium, on another origin than the hub, publishes with
``client.publish`` over every transport it can be forced to (over the
WebSocket the ``publish`` command, otherwise a cross-origin POST after its
CORS preflight); a subscriber page on ANOTHER ``torchannels serve``
process, on the shared Redis, receives the message with the ``sender``
the server stamped, at the position the publish resolved with. Then what
the page sees of each refusal (a ``PublishError``): a channel without the
``publish`` option, the ``token`` policy without the token's ``publish``
claim (and with it: published), the size limit, the rate limit (on a
process of its own with ``--client-publish-rate 2``), and a reserved key,
refused before any request.

Three processes serve the file; each test has users and channels of its
own. Pages: tests/e2e/pages/control.html (see control_pages.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Page

from e2e.control_pages import Hub, each_process, query_of, token
from e2e.e2e_helpers import TRANSPORTS, unique, wait_until
from e2e.publish_pages import Publishing
from redis_servers import shared_redis

if TYPE_CHECKING:  # the fixture's type; pytest has already imported conftest
    from e2e.conftest import Site

CONFIG = """
[channels."c:pub:*"]
publish = "subscribers"
[channels."c:tok:*"]
publish = "token"
"""
#: ``--max-client-publish-bytes`` of every process here.
MAX_BYTES = 200
HTTP_TRANSPORTS = [t for t in TRANSPORTS if t != "websocket"]
#: The two ways a publish travels: the command, a POST (the same from every
#: HTTP transport).
PATHS = ["websocket", "longpoll"]


class Hubs:
    """The file's processes: ``a`` and ``b`` share a Redis; ``limited``
    (a memory broker) allows 2 publishes a second per client."""

    def __init__(self, hubs: list[Hub]) -> None:
        self.a, self.b, self.limited = hubs


@pytest.fixture(scope="module")
def hubs(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hubs]:
    config: Path = tmp_path_factory.mktemp("publish-e2e") / "channels.toml"
    config.write_text(CONFIG)
    common = ("--config", str(config), "--max-client-publish-bytes", str(MAX_BYTES))
    redis = ("--broker", shared_redis(), "--redis-prefix", f"tc-e2e-pub-{uuid.uuid4().hex[:10]}")
    limited = (*common, "--client-publish-rate", "2")
    with each_process(site.base, (*common, *redis), (*common, *redis), limited) as started:
        yield Hubs(started)


def channel_name(policy: str, what: str) -> str:
    """A channel of ``policy``: ``pub`` (subscribers), ``tok`` (token) or ``none``."""
    return f"c:{policy}:{unique(what)}"


def opened(page: Page, site: Site, hub: Hub, transport: str, channels: list[str],
           tok: str) -> Publishing:  # fmt: skip
    """The control page on ``transport``, subscribed to ``channels`` on
    ``hub`` with ``tok``, connected and served."""
    w = Publishing(page, site.base, hub)
    w.open(transport, channels, tok)
    if transport != "poll":  # a poll, between two requests, is served by nobody
        for channel in channels:
            served(hub, page, channel)
    return w


def served(hub: Hub, page: Page, channel: str) -> None:
    wait_until(lambda: hub.subscribers(channel) == 1, what=f"{channel} served", page=page)


def status(transport: str, http: int) -> int:
    """A PublishError's ``status``: the HTTP one, 0 over the WebSocket."""
    return 0 if transport == "websocket" else http


def refused(outcome: dict[str, Any], code: str, http_status: int) -> dict[str, Any]:
    """Check ``outcome`` is a PublishError ``code`` with ``http_status``; its error."""
    assert not outcome["ok"], outcome
    error: dict[str, Any] = outcome["error"]
    assert error["publishError"] and error["name"] == "PublishError", error
    assert (error["code"], error["status"]) == (code, http_status), error
    assert error["message"], error
    return error


def assert_path(w: Publishing, transport: str, publishes: int) -> None:
    """The page's ``publishes`` publishes went as ``publish`` commands over
    its WebSocket, or as POSTs, the first after a preflight that allowed it."""
    if transport == "websocket":
        wait_until(lambda: len(w.answers()) >= publishes, what="the answers", page=w.page)
        commands = w.commands()
        assert len(commands) == publishes and w.posts == [], w.state()
        answers = {a["id"]: a["type"] for a in w.answers()}
        assert sorted(answers) == sorted(c["id"] for c in commands), (commands, answers)
        return
    assert w.commands() == [] and len(w.posts) == publishes, w.posts
    tok = w.js("() => window.nextToken")
    assert all(query_of(url)["token"] == [tok] for url in w.posts), w.posts
    wait_until(lambda: bool(w.preflights), what="the CORS preflight", page=w.page)
    preflight = w.preflights[0]
    assert preflight["status"] in (200, 204), preflight
    headers = preflight["headers"]
    assert "POST" in headers["access-control-allow-methods"], headers
    assert "content-type" in headers["access-control-allow-headers"].lower(), headers
    assert headers["access-control-allow-origin"] == w.origin, headers


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_publish_reaches_a_subscriber_on_another_process(
    page: Page, site: Site, hubs: Hubs, transport: str
) -> None:
    user, channel = unique("pam"), channel_name("pub", "room")
    reader = opened(page.context.new_page(), site, hubs.b, transport, [channel], token(unique("r")))
    writer = opened(page, site, hubs.a, transport, [channel], token(user))

    outcome = writer.publish(channel, {"n": 1, "text": "hi"})
    assert outcome["ok"], outcome
    reader.wait_for(channel, 1)
    writer.wait_for(channel, 1)  # its own message comes back to it too

    got = reader.message(channel, 1)
    assert outcome["result"] == {"channel": channel, "epoch": got["epoch"],
                                 "offset": got["offset"]}  # fmt: skip
    assert (got["text"], got["channel"]) == ("hi", channel), got
    sender = got["sender"]
    assert set(sender) == {"user", "client"} and sender["user"] == user, got
    assert isinstance(sender["client"], str) and sender["client"], got
    assert "~" not in sender["client"], got  # the bare id
    assert writer.message(channel, 1) == got, writer.state()
    if transport == "websocket":  # the command on the page's own connection
        assert sender["client"] == writer.client_id(), (sender, writer.state())
    assert_path(writer, transport, 1)
    for w in (reader, writer):
        state = w.state()
        assert state["errors"] == [] and state["failures"] == [], state
        assert state["transports"] == [transport], state


@pytest.mark.parametrize("transport", HTTP_TRANSPORTS)
def test_the_sender_of_an_http_publish_is_the_publishing_page(
    page: Page, site: Site, hubs: Hubs, transport: str
) -> None:
    """docs/client.md: subscribers receive ``sender.client``, "the
    publisher's bare client id"; docs/protocol.md: "the part of the
    `connected` frame's `client` before `~`". The page knows its client id
    (from `connected`, or a poll answer); over the WebSocket the message
    carries it (the test above)."""
    channel = channel_name("pub", "mine")
    writer = opened(page, site, hubs.a, transport, [channel], token(unique("ned")))
    assert writer.publish(channel, {"n": 1})["ok"]
    writer.wait_for(channel, 1)
    sender = writer.message(channel, 1)["sender"]
    assert sender["client"] == writer.client_id(), (sender, writer.state())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_refusal_reaches_the_page(page: Page, site: Site, hubs: Hubs, transport: str) -> None:
    channel = channel_name("pub", "here")
    w = opened(page, site, hubs.a, transport, [channel], token(unique("oli")))

    nobody = w.publish(channel_name("none", "x"), {"n": 1})
    no_claim = w.publish(channel_name("tok", "x"), {"n": 1})
    large = w.publish(channel, {"p": "x" * MAX_BYTES})
    nobody = refused(nobody, "publish_forbidden", status(transport, 403))
    no_claim = refused(no_claim, "publish_forbidden", status(transport, 403))
    large = refused(large, "publish_too_large", status(transport, 413))
    for error in (nobody, no_claim, large):
        assert (error["retry"], error["retryAfter"]) == (False, None), error
    assert large["channel"] == channel, large

    sent = len(w.commands()) + len(w.posts)
    forged = w.publish(channel, {"n": 2, "sender": {"user": "root", "client": "x"}})
    error = refused(forged, "invalid_message", 0)  # the client's own check: no answer
    assert (error["retry"], error["channel"]) == (False, channel), error
    assert "sender" in error["message"], error
    # Nothing was sent for it: the next publish is the only one that goes out.
    assert w.publish(channel, {"n": 3})["ok"]
    w.wait_for(channel, 3)
    wait_until(lambda: len(w.commands()) + len(w.posts) > sent, what="the next publish sent",
               page=page)  # fmt: skip
    assert len(w.commands()) + len(w.posts) == sent + 1, (w.commands(), w.posts)
    assert_path(w, transport, 4)

    state = w.state()  # a refused publish touches no subscription
    assert w.got(channel) == [3], state
    assert state["errors"] == [] and state["failures"] == [], state
    assert state["transports"] == [transport] and state["state"] == "connected", state


@pytest.mark.parametrize("transport", PATHS)
def test_the_publish_claim_lets_a_page_publish(
    page: Page, site: Site, hubs: Hubs, transport: str
) -> None:
    user, channel = unique("pia"), channel_name("tok", "claimed")
    reader = opened(page.context.new_page(), site, hubs.b, "websocket", [channel],
                    token(unique("r")))  # fmt: skip
    writer = opened(page, site, hubs.a, transport, [channel], token(user, publish=["c:tok:*"]))
    outcome = writer.publish(channel, {"n": 1})
    assert outcome["ok"], outcome
    reader.wait_for(channel, 1)
    got = reader.message(channel, 1)
    assert (got["offset"], got["sender"]["user"]) == (outcome["result"]["offset"], user), got
    # The claim is for the token policy: a channel without the option stays closed.
    closed = writer.publish(channel_name("none", "y"), {"n": 2})
    refused(closed, "publish_forbidden", status(transport, 403))


@pytest.mark.parametrize("transport", PATHS)
def test_the_rate_limit_says_when_to_come_back(
    page: Page, site: Site, hubs: Hubs, transport: str
) -> None:
    """2 a second, a burst of 2 (per connection; per user for a POST
    without a client id): of 8 publishes at once, the burst passes, and
    the rest (but the tokens that refilled meanwhile) are refused. Over the
    WebSocket in the order they were sent; POSTs may arrive in any order."""
    channel = channel_name("pub", "fast")
    w = opened(page, site, hubs.limited, transport, [channel], token(unique("rio")))
    outcomes = w.publish_many(channel, 8)
    passed = [o["ok"] for o in outcomes]
    limited = [o["error"] for o in outcomes if not o["ok"]]
    assert passed.count(True) >= 2 and len(limited) >= 3, outcomes
    if transport == "websocket":
        assert passed[:2] == [True, True], outcomes
    for error in limited:
        expected = ("rate_limited", True, status(transport, 429))
        assert (error["code"], error["retry"], error["status"]) == expected, error
        assert 0 < error["retryAfter"] <= 1, error
    # After retryAfter seconds, the bucket has a token again.
    wait = max(e["retryAfter"] for e in limited)
    again = w.js(
        "([c, s]) => new Promise((r) => setTimeout(r, s * 1000)).then(() => "
        "window.client.publish(c, {n: 'again'})).then((r) => r.offset, (e) => e.code)",
        [channel, wait],
    )
    assert isinstance(again, int), again
    w.wait_for(channel, "again")
    state = w.state()
    assert state["errors"] == [] and state["failures"] == [], state

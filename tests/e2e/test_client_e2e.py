"""torchannel.js in headless Chromium against a real server, on every transport.

Each test opens tests/e2e/pages/client.html with ``?transport=NAME`` (so the
client uses that transport only) and checks what the page's callbacks got:
every message exactly once and in order (offsets consecutive), through
subscribe, unsubscribe, a connection cut by the server, and a reset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Page, Request, WebSocket

from e2e.e2e_helpers import (
    TRANSPORTS,
    failure_count,
    offsets,
    page_state,
    received,
    unique,
    wait_count,
    wait_js,
    wait_until,
)

if TYPE_CHECKING:  # the fixture's type; pytest has already imported conftest
    from e2e.conftest import Site


@pytest.fixture(autouse=True)
def unblocked(site: Site) -> Iterator[None]:
    """A test that fails while the site is blocked must not block the next."""
    site.block(False)
    yield
    site.block(False)


def open_client(
    page: Page, site: Site, transport: str | None, channels: list[str], **params: str
) -> None:
    """Open the client page subscribed to ``channels`` and wait until it is connected."""
    query = {"channels": ",".join(channels), **params}
    if transport:
        query["transport"] = transport
    if transport == "poll":
        query.setdefault("pollInterval", "500")
    page.goto(f"{site.base}/page/client?{urlencode(query)}")
    wait_js(page, "() => window.transports.length >= 1", timeout=10, what="the first connection")


def publish(site: Site, channel: str, n: int) -> None:
    site.publish(channel, {"n": n, "for": channel})


def check_exactly(page: Page, site: Site, expected: dict[str, list[int]]) -> None:
    """Publish one more message to each channel and wait for it, then check
    that each channel delivered exactly the ``n`` values in ``expected`` plus
    that sentinel, with consecutive offsets: nothing lost, nothing repeated."""
    for channel in expected:
        site.publish(channel, {"n": "sentinel"})
    for channel, ns in expected.items():
        wait_count(page, channel, len(ns) + 1)
    page.wait_for_timeout(300)  # room for a stray duplicate to show up
    for channel, ns in expected.items():
        messages = received(page, channel)
        got = [m["n"] for m in messages]
        assert got == [*ns, "sentinel"], f"{channel}: {page_state(page)}"
        offs = [m["offset"] for m in messages]
        assert offs == list(range(offs[0], offs[0] + len(offs))), f"{channel}: offsets {offs}"
        assert len({m["epoch"] for m in messages}) == 1
        assert all(m["channel"] == channel for m in messages)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_subscribes_to_several_channels_and_receives_each_message_once(
    page: Page, site: Site, transport: str
) -> None:
    a, b, c = unique("many-a"), unique("many-b"), unique("many-c")
    publish(site, a, 1)  # already in history: a fresh join gets it
    publish(site, a, 2)
    open_client(page, site, transport, [a, b, c])
    for n in range(3, 8):
        publish(site, a, n)
        publish(site, b, n)
        publish(site, c, n)
    wait_count(page, a, 7)
    wait_count(page, b, 5)
    wait_count(page, c, 5)
    check_exactly(page, site, {a: list(range(1, 8)), b: list(range(3, 8)), c: list(range(3, 8))})
    assert offsets(page, a)[0] == 1 and offsets(page, b)[0] == 1
    first = received(page, b)[0]
    assert set(first) >= {"n", "for", "channel", "ts", "epoch", "offset"}
    assert isinstance(first["ts"], int | float)
    state = page_state(page)
    assert state["transports"] == [transport], state
    assert state["failures"] == [] and state["resets"] == [] and state["errors"] == [], state


def channels_of(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query).get("channel", [])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unsubscribe_stops_one_channel_and_the_others_continue(
    page: Page, site: Site, transport: str
) -> None:
    a, b, c = unique("unsub-a"), unique("unsub-b"), unique("unsub-c")
    requests: list[str] = []  # subscribe requests of the HTTP transports
    sockets: list[WebSocket] = []
    sent: list[dict[str, Any]] = []  # WebSocket commands, client to server
    frames: list[dict[str, Any]] = []  # WebSocket frames, server to client

    def on_request(request: Request) -> None:
        if urlsplit(request.url).path == "/channels":
            requests.append(request.url)

    def on_socket(ws: WebSocket) -> None:
        sockets.append(ws)
        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("request", on_request)
    page.on("websocket", on_socket)
    open_client(page, site, transport, [a, b, c])
    for channel in (a, b, c):
        publish(site, channel, 1)
    for channel in (a, b, c):
        wait_count(page, channel, 1)
    if transport != "poll":
        wait_until(
            lambda: site.local_subscribers(b) == 1, what=f"the server serving {b}", page=page
        )
    asked_before = len(requests)

    assert page.evaluate("(c) => window.unsub(c)", b) is True
    for channel in (a, b, c):  # while the client is leaving b
        publish(site, channel, 2)

    if transport == "websocket":
        wait_until(
            lambda: {"type": "unsubscribe", "channels": [b]} in sent,
            what=f"an unsubscribe command for {b}",
            page=page,
        )
        wait_until(
            lambda: {"type": "unsubscribed", "channel": b} in frames,
            what=f"the server's unsubscribed frame for {b}",
            page=page,
        )
    else:
        wait_until(
            lambda: any(b not in channels_of(u) for u in requests[asked_before:]),
            what=f"a subscribe request without {b}",
            page=page,
        )
    if transport != "poll":
        wait_until(
            lambda: site.local_subscribers(b) == 0, what=f"the server to drop {b}", page=page
        )

    for n in (3, 4):
        for channel in (a, b, c):
            publish(site, channel, n)
    wait_count(page, a, 4)
    wait_count(page, c, 4)
    check_exactly(page, site, {a: [1, 2, 3, 4], c: [1, 2, 3, 4]})
    assert [m["n"] for m in received(page, b)] == [1], page_state(page)

    if transport == "websocket":
        assert len(sockets) == 1, "unsubscribing must not replace the socket"
        left = frames.index({"type": "unsubscribed", "channel": b})
        late = [
            f for f in frames[left:] if f.get("type") == "message" and f["data"]["channel"] == b
        ]
        assert late == [], f"the server kept sending {b} after unsubscribed: {late}"
        gone = sent.index({"type": "unsubscribe", "channels": [b]})
        again = [cmd for cmd in sent[gone:] if b in cmd.get("channels", [])][1:]
        assert again == [], f"{b} was asked for again: {again}"
    else:
        first_without = next(
            i for i, u in enumerate(requests) if i >= asked_before and b not in channels_of(u)
        )
        later = requests[first_without:]
        assert all(b not in channels_of(u) for u in later), later
        assert all({a, c} <= set(channels_of(u)) for u in later), later
    state = page_state(page)
    assert state["transports"] == [transport], f"the other channels were disturbed: {state}"
    assert state["failures"] == [], state


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_resumes_after_the_server_cuts_the_connection(
    page: Page, site: Site, transport: str
) -> None:
    a, b = unique("resume-a"), unique("resume-b")
    open_client(page, site, transport, [a, b])
    for n in (1, 2):
        publish(site, a, n)
        publish(site, b, n)
    wait_count(page, a, 2)
    wait_count(page, b, 2)
    if transport not in ("poll", "longpoll"):
        wait_until(lambda: site.connection_count() >= 1, what="a live connection", page=page)
    failures = failure_count(page)

    site.block(True)  # the client cannot come back until unblock
    dropped = site.drop_connections()
    if transport not in ("poll", "longpoll"):
        assert dropped >= 1
    for n in range(3, 9):  # published during the outage
        publish(site, a, n)
        publish(site, b, n)
    # The client notices: its connection ended, or its next poll was refused.
    wait_js(
        page,
        "(n) => window.failures.length > n",
        failures,
        timeout=10,
        what="the client to notice the outage",
    )
    assert offsets(page, a) == [1, 2] and offsets(page, b) == [1, 2], page_state(page)
    site.block(False)

    wait_count(page, a, 8, timeout=15)
    wait_count(page, b, 8, timeout=15)
    for n in (9, 10):  # live again
        publish(site, a, n)
        publish(site, b, n)
    check_exactly(page, site, {a: list(range(1, 11)), b: list(range(1, 11))})
    state = page_state(page)
    assert len(state["transports"]) >= 2, f"never reconnected: {state}"
    assert set(state["transports"]) == {transport}, state
    assert state["resets"] == [], state


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reset_when_the_history_it_needs_is_gone_then_the_state(
    page: Page, site: Site, transport: str
) -> None:
    r, other = unique("reset"), unique("kept")
    site.configure_history(r, 3)
    open_client(page, site, transport, [r, other])
    publish(site, r, 1)
    publish(site, r, 2)
    publish(site, other, 1)
    wait_count(page, r, 2)
    wait_count(page, other, 1)
    if transport not in ("poll", "longpoll"):
        wait_until(lambda: site.connection_count() >= 1, what="a live connection", page=page)
    failures = failure_count(page)

    site.block(True)
    site.drop_connections()
    for n in range(3, 9):  # 6 messages; r keeps 3, so 3..5 are gone
        publish(site, r, n)
    publish(site, other, 2)
    site.set_state(r, [{"n": "state-1"}, {"n": "state-2"}])  # stands for offset 8
    publish(site, r, 9)
    publish(site, r, 10)
    wait_js(
        page,
        "(n) => window.failures.length > n",
        failures,
        timeout=10,
        what="the client to notice the outage",
    )
    site.block(False)

    wait_count(page, r, 6, timeout=15)  # 1, 2, state-1, state-2, 9, 10
    publish(site, r, 11)
    wait_count(page, r, 7)
    wait_count(page, other, 2)
    page.wait_for_timeout(300)

    events: list[dict[str, Any]] = page.evaluate("() => window.events")
    seen = [
        ("reset", e["reason"])
        if e["kind"] == "reset"
        else (e["message"]["n"], e["message"]["offset"])
        for e in events
        if (e["kind"] == "message" and e["channel"] == r)
        or (e["kind"] == "reset" and e["channel"] == r)
    ]
    assert seen == [
        (1, 1),
        (2, 2),
        ("reset", "history_trimmed"),
        ("state-1", 8),
        ("state-2", 8),
        (9, 9),
        (10, 10),
        (11, 11),
    ], page_state(page)
    assert [m["n"] for m in received(page, other)] == [1, 2]
    assert offsets(page, other) == [1, 2]
    state = page_state(page)
    assert state["resets"] == [r], state
    assert len(state["transports"]) >= 2, state


def test_negotiation_picks_websocket(page: Page, site: Site) -> None:
    channel = unique("auto")
    sockets: list[WebSocket] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    open_client(page, site, None, [channel])
    publish(site, channel, 1)
    wait_count(page, channel, 1)
    state = page_state(page)
    assert state["transports"] == ["websocket"], state
    assert state["failures"] == [], state
    assert len(sockets) == 1 and sockets[0].url.endswith("/channels/ws")
    assert page.evaluate("() => window.client.transport") == "websocket"


@pytest.mark.parametrize(
    "params",
    [{"url": "/nows/channels"}, {"ws": "/no-such-socket"}],
    ids=["server-without-ws-route", "ws-url-404"],
)
def test_falls_back_to_sse_when_websocket_is_unavailable(
    page: Page, site: Site, params: dict[str, str]
) -> None:
    channel = unique("fallback")
    open_client(page, site, None, [channel], **params)
    publish(site, channel, 1)
    publish(site, channel, 2)
    wait_count(page, channel, 2)
    check_exactly(page, site, {channel: [1, 2]})
    state = page_state(page)
    assert state["transports"] == ["sse"], state
    assert [f["transport"] for f in state["failures"]] == ["websocket"], state
    assert page.evaluate("() => window.client.transport") == "sse"


@pytest.mark.parametrize("transport", ["websocket", "stream"])
def test_the_es_module_alone_connects_and_delivers(page: Page, site: Site, transport: str) -> None:
    """pages/module.html imports torchannel.mjs with no <script> tag for
    torchannel.js before it: the module brings the client and defines no
    global name."""
    channel = unique("module")
    publish(site, channel, 1)  # in history before the page loads
    page.goto(f"{site.base}/page/module?{urlencode({'channel': channel, 'transport': transport})}")
    wait_count(page, channel, 1)
    publish(site, channel, 2)
    check_exactly(page, site, {channel: [1, 2]})
    assert page.evaluate("() => window.leaked") == []
    assert page.evaluate("() => window.sameApi") is True
    state = page_state(page)
    assert state["transports"] == [transport], state
    assert state["failures"] == [], state

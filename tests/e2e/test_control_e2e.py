"""The control API (issue 19) against the real browser client: a page of
torchannel.js in Chromium, on every transport, subscribed with a user's
token to a real ``torchannels serve`` process, is ended by ``POST
/api/disconnect`` for good (state ``disconnected``, reason
``disconnected_by_server``, and nothing reopened: every request and
WebSocket the page opens is counted) or made to reconnect and resume with a
fresh token; loses one channel to ``POST /api/unsubscribe`` while the other
flows; is ended by ``POST /api/revoke`` with ``token_revoked``; and, across
three processes on one Redis, pages on each process are all ended by one
call to one of them.

One memory-broker process serves the file; each test has users and
channels of its own. The page is tests/e2e/pages/control.html, served by
the e2e site on another origin (see control_pages.py)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page

from e2e.control_pages import Hub, Watched, hub_processes, query_of, token
from e2e.e2e_helpers import TRANSPORTS, unique, wait_js, wait_until
from redis_servers import shared_redis

if TYPE_CHECKING:  # the fixture's type; pytest has already imported conftest
    from e2e.conftest import Site

#: Seconds a disconnected page is watched for a reconnect: longer than the
#: client's quickest one (a connection that lived is retried within
#: minReconnectDelay, 0.5 s; poll asks every 0.5 s here).
WINDOW = 2.0
POLLING = ("poll", "longpoll")


@pytest.fixture(scope="module")
def hub(site: Site) -> Iterator[Hub]:
    with hub_processes(1, site.base) as [process]:
        yield process


@pytest.fixture
def watched(page: Page, site: Site, hub: Hub) -> Watched:
    return Watched(page, site.base, hub)


def channel_name(what: str) -> str:
    return f"c:{unique(what)}"


def attached(hub: Hub, page: Page, channel: str, n: int = 1) -> None:
    """Wait until ``hub`` serves ``channel`` to ``n`` live connections."""
    wait_until(
        lambda: hub.subscribers(channel) == n, what=f"{n} subscribers of {channel}", page=page
    )


def reached(transport: str) -> int:
    """The ``connections`` a control call counts for one page: a poll
    between two requests is not counted (told on its next request)."""
    return 0 if transport == "poll" else 1


def nothing_reopens(pages: list[Watched], served: list[tuple[Hub, str]]) -> None:
    """For WINDOW seconds, polled every 50 ms: no page opens a request or a
    WebSocket, each stays ``disconnected``, and no process in ``served``
    serves its channel to anyone."""
    counts = [w.opened() for w in pages]
    deadline = time.monotonic() + WINDOW
    while True:
        for w, count in zip(pages, counts, strict=True):
            assert w.opened() == count, f"reconnected after the disconnect: {w.state()}"
            assert w.js("() => window.client.state") == "disconnected", w.state()
        for process, channel in served:
            assert process.subscribers(channel) == 0, f"{channel} served again on {process.base}"
        if time.monotonic() > deadline:
            return
        pages[0].page.wait_for_timeout(50)  # lets Playwright deliver the pages' events


def assert_ended(w: Watched, reason: str) -> None:
    """The page went connecting, connected, then ``disconnected`` with the
    frame's ``reason``, quietly: no error event, no onError, no transport."""
    state = w.state()
    moves = [(s["to"], s["reason"]) for s in state["states"]]
    assert moves[-1] == ("disconnected", reason), state
    assert [to for to, _ in moves] == ["connecting", "connected", "disconnected"], state
    assert state["states"][-1]["detail"] == f"disconnect frame ({reason})", state
    assert [d["reason"] for d in state["disconnects"]] == [reason], state
    assert state["failures"] == [] and state["errors"] == [], state
    assert state["transport"] is None and state["page_errors"] == [], state


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_disconnect_ends_the_page_for_good(
    page: Page, hub: Hub, watched: Watched, transport: str
) -> None:
    user, channel = unique("ann"), channel_name("ended")
    w = watched
    w.open(transport, [channel], token(user))
    hub.publish(channel, 1)
    w.wait_for(channel, 1)
    if transport != "poll":
        attached(hub, page, channel)

    answer = hub.post("/api/disconnect", {"user": user})
    assert answer == {"connections": reached(transport), "processes": 1, "answered": 1}
    w.wait_disconnected("disconnected_by_server")
    hub.publish(channel, 2)  # for nobody now
    nothing_reopens([w], [(hub, channel)])

    assert w.got(channel) == [1], w.state()
    assert_ended(w, "disconnected_by_server")
    if transport == "websocket":
        assert len(w.sockets) == 1 and w.sockets[0].is_closed()
        assert w.frames[-1] == {
            "type": "disconnect", "reason": "disconnected_by_server", "reconnect": False,
        }  # fmt: skip
        assert w.state()["closes"] == [{"code": 4003, "reason": "disconnected_by_server"}]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_disconnect_with_reconnect_resumes_with_a_fresh_token(
    page: Page, hub: Hub, watched: Watched, transport: str
) -> None:
    """The gap is made by holding the client's getToken(), which a
    ``reconnect: true`` disconnect calls first: what is published meanwhile
    arrives once the fresh token is given, exactly once."""
    user, channel = unique("bo"), channel_name("again")
    w = watched
    w.open(transport, [channel], token(user), getToken="1")
    hub.publish(channel, 1)
    w.wait_for(channel, 1)
    if transport != "poll":
        attached(hub, page, channel)
    old_clients = {c for url in w.requests for c in query_of(url).get("client", [])}
    w.js("() => { window.holdToken = true; }")

    answer = hub.post("/api/disconnect", {"user": user, "reconnect": True})
    assert answer == {"connections": reached(transport), "processes": 1, "answered": 1}
    wait_js(page, "() => window.releaseToken !== null", what="getToken() asked for a fresh token")
    if transport != "poll":
        attached(hub, page, channel, 0)
    in_gap = w.mark()
    hub.publish(channel, 2)  # while the page has no connection
    hub.publish(channel, 3)
    fresh = token(user, jti=uuid.uuid4().hex)
    assert w.since(in_gap) == [], f"opened while getToken() was pending: {w.state()}"
    w.js("(t) => window.releaseToken(t)", fresh)
    w.wait_for(channel, 3)
    hub.publish(channel, 4)  # live again
    w.wait_for(channel, 4)

    state = w.state()
    assert w.got(channel) == [1, 2, 3, 4], state
    first = w.offsets(channel)[0]
    assert w.offsets(channel) == list(range(first, first + 4)), state
    assert state["tokenCalls"] == 1, state
    assert state["disconnects"] == [] and state["resets"] == [], state
    assert state["failures"] == [] and state["errors"] == [], state
    assert "disconnected" not in [s["to"] for s in state["states"]], state
    assert state["transports"] == [transport, transport], state
    assert w.js("() => window.client.state") == "connected", state
    after = w.since(in_gap)
    assert after and all(query_of(url)["token"] == [fresh] for url in after), after
    if transport == "websocket":
        assert len(w.sockets) == 2, state
        assert {"type": "disconnect", "reason": "disconnected_by_server", "reconnect": True} in (
            w.frames
        )
        assert state["closes"] == [{"code": 4004, "reason": "disconnected_by_server"}], state
    if transport in POLLING:
        # The old client id is dropped: the first request after has none,
        # the next ones carry the new one the server gave.
        assert old_clients, "the polls carried no client id"
        assert "client" not in query_of(after[0]), after
        new = {c for url in after for c in query_of(url).get("client", [])}
        assert new and not new & old_clients, (old_clients, new)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unsubscribe_stops_one_channel_and_the_other_flows(
    page: Page, hub: Hub, watched: Watched, transport: str
) -> None:
    user, gone, kept = unique("cy"), channel_name("gone"), channel_name("kept")
    w = watched
    w.open(transport, [gone, kept], token(user))
    hub.publish(gone, 1)
    hub.publish(kept, 1)
    w.wait_for(gone, 1)
    w.wait_for(kept, 1)
    if transport != "poll":
        attached(hub, page, gone)
        attached(hub, page, kept)

    answer = hub.post("/api/unsubscribe", {"user": user, "channel": gone})
    assert answer == {"connections": reached(transport), "processes": 1, "answered": 1}
    wait_js(
        page,
        "(c) => window.errors.some((e) => e.channel === c && e.code === 'unsubscribed')",
        gone,
        what=f"onError unsubscribed for {gone}",
    )
    told, told_sent = len(w.requests), len(w.sent)
    if transport != "poll":
        attached(hub, page, gone, 0)
    hub.publish(gone, 2)
    hub.publish(kept, 2)
    w.wait_for(kept, 2)
    hub.publish(kept, 3)
    w.wait_for(kept, 3)

    state = w.state()
    assert w.got(gone) == [1] and w.got(kept) == [1, 2, 3], state
    assert [(e["channel"], e["code"]) for e in state["errors"]] == [(gone, "unsubscribed")]
    failures = [(f["type"], f["channel"], f["code"]) for f in state["failures"]]
    assert failures == [("channel", gone, "unsubscribed")], state
    assert [s["to"] for s in state["states"]] == ["connecting", "connected"], state
    assert state["transports"] == [transport], f"the other channel was disturbed: {state}"
    if transport != "poll":
        assert hub.subscribers(kept) == 1
    if transport == "websocket":
        assert len(w.sockets) == 1, state
        sent = w.sent[told_sent:]
        again = [f for f in sent if f.get("type") == "subscribe" and gone in f["channels"]]
        assert again == [], f"{gone} asked for again: {again}"
    later = w.requests[told:]
    if transport in POLLING:
        assert later, "no request after the unsubscribe"
    for url in later:  # not asked for again; the other one is
        assert query_of(url)["channel"] == [kept], later


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_channel_unsubscribed_by_the_server_can_be_subscribed_again(
    page: Page, hub: Hub, watched: Watched, transport: str
) -> None:
    """SPEC19: "A later explicit subscribe by the app is checked like any"
    (docs/client.md: "A later subscribe() of the channel asks the server
    again"); the token grants it, so it is served."""
    user, gone, kept = unique("di"), channel_name("back"), channel_name("stay")
    w = watched
    w.open(transport, [gone, kept], token(user))
    hub.publish(kept, 1)
    w.wait_for(kept, 1)
    if transport != "poll":
        attached(hub, page, gone)
    hub.post("/api/unsubscribe", {"user": user, "channel": gone})
    wait_js(page, "() => window.errors.length === 1", what="onError unsubscribed")

    w.js("(c) => window.resub(c)", gone)
    hub.publish(gone, 2)  # live, or in the history a fresh join gets
    wait_js(
        page,
        "(c) => window.received[c].length > 0 || window.errors.length > 1",
        gone,
        what=f"{gone} served again (or refused again)",
    )
    refused = [(e["channel"], e["code"]) for e in w.state()["errors"]]
    assert refused == [(gone, "unsubscribed")], f"refused again: {w.state()}"
    w.wait_for(gone, 2)
    hub.publish(kept, 3)
    w.wait_for(kept, 3)
    state = w.state()
    assert w.got(gone).count(2) == 1 and w.got(kept) == [1, 3], state


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_revoke_ends_the_page_with_token_revoked(
    page: Page, hub: Hub, watched: Watched, transport: str
) -> None:
    user, channel = unique("kim"), channel_name("revoked")
    w = watched
    w.open(transport, [channel], token(user, iat=time.time() - 60))
    hub.publish(channel, 1)
    w.wait_for(channel, 1)
    if transport != "poll":
        attached(hub, page, channel)

    answer = hub.post("/api/revoke", {"user": user, "before": int(time.time()) - 30})
    assert answer.pop("expires") > time.time()
    assert answer == {"connections": reached(transport), "processes": 1, "answered": 1}
    w.wait_disconnected("token_revoked")
    hub.publish(channel, 2)
    nothing_reopens([w], [(hub, channel)])

    assert w.got(channel) == [1], w.state()
    assert_ended(w, "token_revoked")
    if transport == "websocket":
        assert w.state()["closes"] == [{"code": 4003, "reason": "token_revoked"}]


@contextlib.contextmanager
def three_processes(origin: str) -> Iterator[list[Hub]]:
    """Three processes on the shared Redis, with a key prefix of their own."""
    flags = ("--broker", shared_redis(), "--redis-prefix", f"tc-e2e-ctl-{uuid.uuid4().hex[:10]}")
    with hub_processes(3, origin, *flags) as hubs:
        yield hubs


def test_one_disconnect_ends_pages_on_three_processes(page: Page, site: Site) -> None:
    user, channel = unique("hal"), channel_name("everywhere")
    with three_processes(site.base) as hubs:
        context = page.context
        placed = list(zip(hubs, ["websocket", "sse", "longpoll"], strict=True))
        pages: list[Watched] = []
        for process, transport in placed:
            w = Watched(page if not pages else context.new_page(), site.base, process)
            w.open(transport, [channel], token(user))
            pages.append(w)
        bystander = Watched(context.new_page(), site.base, hubs[2])
        bystander.open("websocket", [channel], token(unique("ivy")))
        hubs[0].publish(channel, 1)
        for w in [*pages, bystander]:
            w.wait_for(channel, 1)
        attached(hubs[0], page, channel)
        attached(hubs[1], page, channel)
        attached(hubs[2], page, channel, 2)

        answer = hubs[1].post("/api/disconnect", {"user": user})
        assert answer == {"connections": 3, "processes": 3, "answered": 3}
        for w in pages:
            w.wait_disconnected("disconnected_by_server")
        hubs[2].publish(channel, 2)
        bystander.wait_for(channel, 2)
        nothing_reopens(pages, [(hubs[0], channel), (hubs[1], channel)])

        assert hubs[2].subscribers(channel) == 1  # the bystander only
        for w in pages:
            assert w.got(channel) == [1], w.state()
            assert_ended(w, "disconnected_by_server")
        state = bystander.state()
        assert bystander.got(channel) == [1, 2], state
        assert state["state"] == "connected" and state["page_errors"] == [], state

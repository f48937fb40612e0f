"""Who is here, in the demo chat of ``serve --dev`` in Chromium: two pages
take names, each lists the other live, and a page that closes leaves the
other's list once the presence grace has passed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import Process, free_port
from e2e.test_demo_first_run import start_dev_hub, wait_live

GRACE = "1"  # --presence-grace, s: a closed page leaves a second after it went

MEMBERS = "() => [...document.querySelectorAll('#members li')].map((li) => li.textContent)"


@pytest.fixture(scope="module")
def hub() -> Iterator[str]:
    proc: Process
    proc, base, _ = start_dev_hub("--port", "0", "--presence-grace", GRACE)
    yield base
    proc.stop()


def open_page(browser: Any, errors: list[str]) -> tuple[Any, Page]:
    """A page in a context of its own (its own storage, as another person)."""
    context = browser.new_context()
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page


def join(page: Page, base: str, name: str, transport: str) -> None:
    """Open the demo and take `name` (the name field's change event)."""
    page.goto(f"{base}/?transport={transport}")
    wait_live(page)
    page.fill("#name", name)
    page.press("#name", "Tab")


def wait_members(page: Page, members: list[str], timeout: float = 15) -> None:
    """Wait until the page's member list is exactly `members`, in order."""
    try:
        page.wait_for_function(
            f"(want) => JSON.stringify(({MEMBERS})()) === JSON.stringify(want)",
            arg=members,
            timeout=timeout * 1000,
        )
    except Exception:
        raise AssertionError(f"members {page.evaluate(MEMBERS)}, expected {members}") from None


@pytest.mark.parametrize("transport", ["websocket", "sse", "longpoll"])
def test_a_second_page_joins_then_leaves(browser: Any, hub: str, transport: str) -> None:
    errors: list[str] = []
    first_context, first = open_page(browser, errors)
    second_context, second = open_page(browser, errors)
    try:
        join(first, hub, f"alice-{transport}", transport)
        wait_members(first, [f"alice-{transport} (you)"])
        assert first.text_content("#here-count") == "1 person here"

        join(second, hub, f"bob-{transport}", transport)
        # Each lists both, by the name each took; the guest names they
        # started with have left after the grace.
        wait_members(first, [f"alice-{transport} (you)", f"bob-{transport}"])
        wait_members(second, [f"alice-{transport}", f"bob-{transport} (you)"])
        assert first.text_content("#here-count") == "2 people here"

        second_context.close()
        wait_members(first, [f"alice-{transport} (you)"])
        assert first.text_content("#here-count") == "1 person here"
    finally:
        second_context.close()
        first_context.close()
    assert not errors, f"uncaught errors in the pages: {errors}"


READS = """async () => {
  const outcome = (read) => read.then(
    (page) => ({members: page.members.map((m) => m.info.name), next: page.next, users: page.users}),
    (err) => [err.name, err.code, err.status]);
  const polling = new TorChannels.Client({url: '/channels', transport: 'poll'});  // never connects
  // HTTP reads show in the resource timings; the socket's do not.
  const gets = () => performance.getEntriesByType('resource')
    .filter((e) => e.name.includes('presence=')).length;
  const socket = await outcome(demoClient.presence('demo:chat', {limit: 5}));
  const socketGets = gets();
  const http = await outcome(polling.presence('demo:chat'));
  return {
    transport: demoClient.transport,
    members: demoClient.members('demo:chat').map((m) => m.info.name),
    socket, socketGets, http, httpGets: gets(),
    disabled: await outcome(demoClient.presence('demo:ticker')),
    disabledHttp: await outcome(polling.presence('demo:ticker')),
    tampered: await outcome(demoClient.presence('demo:chat', {after: 'bm9ib2R5.forged'})),
    tooMany: await outcome(polling.presence('demo:chat', {limit: 1001})),
  };
}"""


def test_one_off_reads_over_websocket_and_http(browser: Any, hub: str) -> None:
    errors: list[str] = []
    context, page = open_page(browser, errors)
    try:
        join(page, hub, "carol", "websocket")
        wait_members(page, ["carol (you)"])
        got = page.evaluate(READS)
        assert got == {
            "transport": "websocket",
            "members": ["carol"],
            "socket": {"members": ["carol"], "next": None, "users": 1},
            "socketGets": 0,
            "http": {"members": ["carol"], "next": None, "users": 1},
            "httpGets": 1,
            "disabled": ["PresenceError", "presence_disabled", None],
            "disabledHttp": ["PresenceError", "presence_disabled", 400],
            "tampered": ["PresenceError", "invalid_cursor", None],
            "tooMany": ["PresenceError", "invalid_limit", 400],
        }, got
        # The refused reads touched no subscription: the chat is still live.
        assert page.evaluate("demoClient.members('demo:chat').length") == 1
    finally:
        context.close()
    assert not errors, f"uncaught errors in the pages: {errors}"


def test_the_page_joins_again_after_a_restart_with_a_new_key(browser: Any) -> None:
    """A restarted dev hub with a generated key signs with a new token
    secret: the page's token no longer names it (it would be anonymous, and
    missing from its own list) until it takes a new one and joins again."""
    port = str(free_port())
    proc, base, _ = start_dev_hub("--port", port, "--presence-grace", GRACE)
    errors: list[str] = []
    context, page = open_page(browser, errors)
    try:
        join(page, base, "dora", "websocket")
        wait_members(page, ["dora (you)"])
        proc.stop()
        proc, _, _ = start_dev_hub("--port", port, "--presence-grace", GRACE)
        page.wait_for_selector("#reset-notice", state="visible", timeout=45_000)
        wait_members(page, ["dora (you)"], timeout=30)
        assert page.evaluate("demoClient.members('demo:chat')[0].info.name") == "dora"
    finally:
        context.close()
        proc.stop()
    assert not errors, f"uncaught errors in the page: {errors}"


def test_a_long_polling_page_stays_one_client(browser: Any, hub: str) -> None:
    """Each long-poll sends back the client id of the answer before it, so
    the hub counts the page once across its requests."""
    errors: list[str] = []
    context, page = open_page(browser, errors)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "transport=longpoll" in r.url else None)
    try:
        join(page, hub, "erin", "longpoll")
        wait_members(page, ["erin (you)"])
        deadline = 100  # the ticker answers a held poll every second
        while len(polls) < 6 and deadline:
            page.wait_for_timeout(200)
            deadline -= 1
        assert len(polls) >= 6, polls
        ids = [parse_qs(urlsplit(url).query).get("client", [None])[0] for url in polls]
        assert ids[0] is None, ids  # the first request has none yet
        later = set(ids[-3:])
        assert len(later) == 1 and None not in later, ids
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"

"""A page reload makes no webhook event (issue 21, "Done when"): the real
torchannel.js in Chromium, on each transport, subscribes as a user to a
channel with presence and one without on a ``torchannels serve`` process
that posts its lifecycle events to a receiver in the test
(tests/webhook_receiver.py, on a loop of its own). The receiver gets one
``user_online``, ``channel_occupied`` per channel and ``member_joined``;
the reload adds nothing; closing the page brings the off events, once each.

"Nothing" is checked by a marker user who polls once after the reload:
its off events are due a grace after that poll, so any off event of the
reloaded page's first connection (due a grace after it went, earlier)
would have been queued, and posted, before them.

The page is tests/e2e/pages/control.html, served by the e2e site on another
origin (see control_pages.py); one memory-broker process serves the file.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Route

from e2e.control_pages import Hub, Watched, hub_processes, token
from e2e.e2e_helpers import unique, wait_js
from torchannels.brokers.lifecycle import EVENT_TYPES
from torchannels.lifecycle_hub import SWEEP
from webhook_receiver import Spec, ThreadedReceiver, spec, threaded_receiver

if TYPE_CHECKING:  # the fixture's type; pytest has already imported conftest
    from e2e.conftest import Site

HOOK_SECRET = "e2e-webhook-secret"
#: Seconds the reloaded page waits for its script: two sweeps of the process
#: (lifecycle_hub.SWEEP), so only the grace keeps its keys held meanwhile.
RELOAD = 2 * SWEEP
GRACE = RELOAD + 1.5  # --presence-grace: longer than the reload


@pytest.fixture(scope="module")
def receiver() -> Iterator[ThreadedReceiver]:
    with threaded_receiver(HOOK_SECRET) as hook:
        yield hook


@pytest.fixture(scope="module")
def hub(
    site: Site, receiver: ThreadedReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    config = Path(tmp_path_factory.mktemp("webhooks")) / "presence.toml"
    config.write_text('[channels."c:room-*"]\npresence = true\n')
    flags = ("--config", str(config), "--presence-grace", str(GRACE),
             "--webhook-url", receiver.url, "--webhook-secret", HOOK_SECRET,
             "--webhook-events", ",".join(EVENT_TYPES))  # fmt: skip
    with hub_processes(1, site.base, *flags) as [process]:
        yield process


def slow(route: Route) -> None:
    """Answer a request after RELOAD s (the scenario, not a check)."""
    time.sleep(RELOAD)
    route.continue_()


def marker_poll(hub: Hub, user: str, channel: str) -> None:
    """One poll request of ``user`` on ``channel``: online for a grace."""
    query = urlencode({"transport": "poll", "channel": channel, "token": token(user)})
    with urllib.request.urlopen(f"{hub.base}/channels?{query}", timeout=10) as answer:
        assert answer.status == 200 and json.loads(answer.read())["frames"]


@pytest.mark.parametrize("transport", ["websocket", "sse", "longpoll", "poll"])
def test_a_reload_makes_no_event_and_closing_the_page_the_off_events(
    browser: Browser, site: Site, hub: Hub, receiver: ThreadedReceiver, transport: str
) -> None:
    name = unique(transport)
    user, room, plain = f"u-{name}", f"c:room-{name}", f"c:plain-{name}"
    marker, marked = f"m-{name}", f"c:mark-{name}"

    def mine() -> list[Spec]:
        return [s for s in receiver.specs() if name in s[1]]

    on = [
        spec("user_online", user=user), spec("channel_occupied", channel=room),
        spec("channel_occupied", channel=plain),
        spec("member_joined", channel=room, user=user, info={"name": "Page"}),
    ]  # fmt: skip
    off = [
        spec("user_offline", user=user), spec("channel_vacated", channel=room),
        spec("channel_vacated", channel=plain), spec("member_left", channel=room, user=user),
    ]  # fmt: skip
    marks = [
        spec("user_online", user=marker), spec("channel_occupied", channel=marked),
        spec("user_offline", user=marker), spec("channel_vacated", channel=marked),
    ]  # fmt: skip
    context = browser.new_context()
    try:
        page = context.new_page()
        w = Watched(page, site.base, hub)
        w.open(transport, [room, plain], token(user, info={"name": "Page"}))
        receiver.arrived(*on)

        # A slow reload: torchannel.js takes RELOAD s to come (routing
        # bypasses the cache), so the page is away two sweeps of the process.
        page.route("**/torchannels/torchannel.js", slow)
        page.reload()
        wait_js(page, "() => window.transports.length >= 1", what="connected after the reload")
        marker_poll(hub, marker, marked)
        receiver.arrived(*marks)
        assert sorted(mine()) == sorted(on + marks), mine()
        assert w.page_errors == [], w.page_errors
    finally:
        context.close()
    receiver.arrived(*off)
    receiver.check()
    got = mine()
    assert sorted(got) == sorted(on + marks + off), got
    for first, then in zip(on, off, strict=True):
        assert got.index(first) < got.index(then), got

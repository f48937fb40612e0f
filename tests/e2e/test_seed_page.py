"""The seed README's page, verbatim (jQuery from node_modules), in Chromium.

tests/e2e/pages/seed.html carries the seed's three script tags (jQuery,
json2.js, torchannel.js) and its `$.torChannels(...).subscribe(...)` call;
only jQuery's URL differs. jQuery is the npm package, a test fixture.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Response

from e2e.e2e_helpers import ROOT, unique, wait_until

if TYPE_CHECKING:  # the fixture's type; pytest has already imported conftest
    from e2e.conftest import Site

CHANNEL = "seed-channel"  # the seed page's own, fixed name


@pytest.fixture(scope="module", autouse=True)
def jquery() -> None:
    """jQuery comes from the npm registry (package-lock.json); install it if missing."""
    if not os.path.exists(os.path.join(ROOT, "node_modules", "jquery", "dist", "jquery.min.js")):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=ROOT,
            check=True,
            timeout=120,
        )


def messages(page: Page) -> list[str]:
    texts: list[str] = page.eval_on_selector_all(
        "#messages li.msg", "els => els.map(e => e.textContent)"
    )
    return texts


def test_seed_page_receives_through_jquery_then_unsubscribes(page: Page, site: Site) -> None:
    responses: list[Response] = []
    failed: list[str] = []
    page.on("response", lambda r: responses.append(r))
    page.on("requestfailed", lambda r: failed.append(r.url))
    before, first, second, after = (unique(w) for w in ("before", "first", "second", "after"))
    site.publish(CHANNEL, {"text": before})  # in history before the page loads

    page.goto(f"{site.base}/page/seed")
    page.wait_for_selector(f"#messages li.msg:text-is('{before}')", timeout=10_000)

    # Every script tag of the seed page loaded, json2.js included.
    scripts = {
        urlsplit(r.url).path: r.status for r in responses if r.request.resource_type == "script"
    }
    assert scripts == {
        "/vendor/jquery.min.js": 200,
        "/static/json2.js": 200,
        "/static/torchannel.js": 200,
    }, scripts
    assert [r.url for r in responses if r.status >= 400] == [] and failed == []
    assert page.evaluate("() => typeof $.torChannels") == "function"
    assert page.evaluate("() => subscriptions instanceof TorChannels.Client")
    assert page.evaluate("() => typeof subtoken") == "number"

    site.publish(CHANNEL, {"text": first})
    site.publish(CHANNEL, {"text": second})
    page.wait_for_selector(f"#messages li.msg:text-is('{second}')", timeout=10_000)
    assert messages(page)[-3:] == [before, first, second]
    assert messages(page).count(first) == 1
    assert site.local_subscribers(CHANNEL) == 1

    # The seed's unsubscribe call, as the README writes it.
    assert page.evaluate("() => subscriptions.unsubscribe(subtoken)") is True
    assert page.evaluate("() => subscriptions.unsubscribe(subtoken)") is False
    wait_until(
        lambda: site.local_subscribers(CHANNEL) == 0,
        what="the server to stop serving the seed page",
        page=page,
    )
    assert page.evaluate("() => subscriptions.state") == "disconnected"
    shown = messages(page)
    site.publish(CHANNEL, {"text": after})
    page.wait_for_timeout(1000)
    assert messages(page) == shown, "a message arrived after unsubscribe"
    assert after not in messages(page)

"""The admin page's outbox section in Chromium, against ``torchannels serve
--outbox`` on real PostgreSQL: rows waiting while the broker refuses them
(a channel limit), their age, the error, then drained once it stops."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from playwright.sync_api import Page

from e2e.e2e_helpers import served, wait_js
from postgres_servers import fresh_database
from torchannels.outbox import ddl, enqueue

PASSWORD = "e2e-outbox-password"


@pytest.fixture
def outbox_dsn() -> Iterator[str]:
    with fresh_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(ddl())
        yield dsn


def text(page: Page, id_: str) -> str:
    return page.text_content(f"#{id_}") or ""


def test_the_admin_page_shows_the_outbox_backlog(page: Page, outbox_dsn: str) -> None:
    # One channel at most: the row of a second one fails its batch, again and again.
    flags = ("--no-demo", "--admin-password", PASSWORD, "--channel-limit", "1")
    with served(*flags, "--outbox", outbox_dsn) as url:
        with psycopg.connect(outbox_dsn) as conn:
            enqueue(conn, "first", {"n": 1})
            enqueue(conn, "second", {"n": 1})
        page.goto(f"{url}/admin")
        page.fill("#password", PASSWORD)
        page.click("#login button")
        wait_js(page, "() => !document.getElementById('outbox').hidden", what="the section")
        wait_js(
            page,
            "() => /^2 rows waiting, the oldest for [0-9.]+ s$/"
            ".test(document.getElementById('v-ob-backlog').textContent)",
            what="the backlog",
        )
        wait_js(
            page,
            "() => document.getElementById('v-ob-error').textContent.includes('ChannelLimitError')",
            what="the error",
        )
        assert text(page, "v-ob-connected") == "1 of 1 process"
        assert text(page, "v-ob-counts") == "0 / 0"
        # The row of the channel that cannot be made goes; the other is published.
        with psycopg.connect(outbox_dsn) as conn:
            conn.execute("DELETE FROM torchannels_outbox WHERE channel = 'second'")
        wait_js(
            page,
            "() => document.getElementById('v-ob-backlog').textContent === '0 rows waiting'"
            " && document.getElementById('v-ob-counts').textContent === '1 / 0'",
            what="the drained backlog",
        )

"""``torchannels serve --outbox DSN`` against real PostgreSQL: committed rows
reach a subscriber; ``/health``, ``/metrics`` and the admin stats show the
consumer; an unreachable PostgreSQL shows ``connected: false`` and never
makes ``/health`` fail; the DSN's password is never logged."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from postgres_servers import fresh_database
from redis_servers import free_port
from server.processes import KEY, Live, ServerProcess, as_json, cli, fetch, until
from server.test_admin import PASSWORD, Browser
from support import messages
from torchannels.outbox import ddl, enqueue


@pytest.fixture
def outbox_dsn() -> Iterator[str]:
    with fresh_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(ddl("served_outbox"))
        yield dsn


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


async def test_serve_publishes_the_outbox_and_reports_it(
    spawn: Callable[..., ServerProcess],
    http: Any,
    lives: Callable[..., Live],
    outbox_dsn: str,
) -> None:
    hub = spawn(
        "--no-demo", "--api-key", KEY, "--admin-password", PASSWORD, "--metrics",
        "--outbox", outbox_dsn, "--outbox-table", "served_outbox", "--outbox-batch", "2",
    )  # fmt: skip
    live = lives(hub.url(transport="sse", channel="demo:outbox"))
    await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    with psycopg.connect(outbox_dsn) as conn:
        for n in range(5):
            enqueue(conn, "demo:outbox", {"n": n}, table="served_outbox")
        conn.execute("INSERT INTO served_outbox (channel, data) VALUES ('demo:outbox', 'oops')")
    frames = await live.wait(lambda fs: len(messages(fs)) == 5)
    assert [m["n"] for m in messages(frames)] == list(range(5))

    async def reported() -> bool:
        body = as_json(await fetch(http, hub.base + "/health"))
        return bool(body["outbox"] == {"connected": True, "backlog": 0, "oldest": None})

    await until(reported, "/health shows the outbox drained")
    health = await fetch(http, hub.base + "/health")
    assert health.code == 200 and as_json(health)["status"] == "ok"
    text = (await fetch(http, hub.base + "/metrics")).body.decode()
    assert metric(text, "torchannels_outbox_published_total") == 5
    assert metric(text, "torchannels_outbox_dead_total") == 1
    assert metric(text, "torchannels_outbox_backlog_rows") == 0
    assert metric(text, "torchannels_outbox_oldest_seconds") == 0
    assert metric(text, "torchannels_outbox_connected") == 1
    assert metric(text, "torchannels_published_total") == 5
    browser = Browser(http, hub)
    await browser.login()
    outbox = as_json(await browser.request("/admin/api/stats"))["outbox"]
    assert outbox == {
        "consumers": 1, "connected": 1, "backlog": 0, "oldest": None, "published": 5,
        "duplicates": 0, "dead": 1, "partitions": 16, "last_error": None,
    }  # fmt: skip
    page = (await browser.request("/admin")).body
    assert b'id="outbox"' in page and b"v-ob-backlog" in page
    # A clean stop closes the consumer: its session and locks go.
    hub.signal(signal.SIGTERM)
    assert await hub.exited(10) == 0
    with psycopg.connect(outbox_dsn) as conn:
        sessions = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()"
        )
        assert conn.execute(sessions, ("torchannels-outbox",)).fetchone() == (0,)
        dead = conn.execute("SELECT data, error FROM served_outbox_dead").fetchall()
    assert dead == [("oops", dead[0][1])] and "data is not JSON" in dead[0][1]


async def test_an_unreachable_postgresql_shows_and_never_fails_health(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    dsn = f"postgresql://app:pw-not-to-log@127.0.0.1:{free_port()}/app"
    hub = spawn("--no-demo", "--api-key", KEY, "--admin-password", PASSWORD, "--metrics",
                "--outbox", dsn)  # fmt: skip
    browser = Browser(http, hub)
    await browser.login()

    async def failed() -> bool:
        outbox = as_json(await browser.request("/admin/api/stats"))["outbox"]
        return outbox["last_error"] is not None

    await until(failed, "the admin stats show the failure")
    health = await fetch(http, hub.base + "/health")
    body = as_json(health)
    assert health.code == 200 and body["status"] == "ok"
    assert body["outbox"] == {"connected": False, "backlog": 0, "oldest": None}
    outbox = as_json(await browser.request("/admin/api/stats"))["outbox"]
    assert outbox["connected"] == 0 and outbox["last_error"]["error"].startswith("PostgreSQL: ")
    text = (await fetch(http, hub.base + "/metrics")).body.decode()
    assert metric(text, "torchannels_outbox_connected") == 0
    assert "pw-not-to-log" not in hub.log() + outbox["last_error"]["error"]
    assert "PostgreSQL: OperationalError" in hub.log()  # warned, with what failed


def test_serve_refuses_a_dsn_it_cannot_read_without_showing_it() -> None:
    done = cli("serve", "--port", "0", env={"TORCHANNELS_OUTBOX": "host=db password=sec ret"})
    assert done.returncode == 2
    assert done.stderr.startswith("torchannels: --outbox: the outbox DSN is not a PostgreSQL")
    assert "ret" not in done.stderr  # psycopg's own message: missing "=" after "ret"

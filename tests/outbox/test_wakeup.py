"""The consumer wakes on the table's NOTIFY at once, and polls too, so a
notification that never comes delays a row and never loses it."""

from __future__ import annotations

import time

import psycopg

from outbox.helpers import TABLE, published, ready, rows, unnotified, until
from support import user_keys
from torchannels import Hub
from torchannels.outbox import enqueue


async def test_a_notification_wakes_the_consumer_well_before_its_poll(
    dsn: str, outbox_hub: Hub
) -> None:
    consumer = outbox_hub.consume_outbox(dsn, poll_interval=60)
    await ready(consumer)
    for n in range(3):  # each time waiting for a notification, not a poll
        started = time.monotonic()
        with psycopg.connect(dsn) as conn:
            enqueue(conn, "wake", {"n": n})
        await published(outbox_hub, "wake", {"n": n})
        assert time.monotonic() - started < 2.0


async def test_polling_alone_delivers_when_no_notification_comes(dsn: str, outbox_hub: Hub) -> None:
    await unnotified(outbox_hub, dsn, poll_interval=0.3)
    with psycopg.connect(dsn) as conn:
        enqueue(conn, "quiet", {"n": 1})
    got = await published(outbox_hub, "quiet", {"n": 1})
    assert [user_keys(m) for m in got] == [{"n": 1}]


async def test_without_notification_nothing_comes_before_the_poll(
    dsn: str, outbox_hub: Hub
) -> None:
    """The contrast of the two above: with the trigger off and a long poll
    interval, a row waits (shown in the backlog) until the next poll."""
    consumer = await unnotified(outbox_hub, dsn, poll_interval=60)
    with psycopg.connect(dsn) as conn:
        enqueue(conn, "late", {"n": 1})
    # The backlog is read every second, without claiming anything.
    await until(lambda: consumer.stats.backlog_rows == 1)
    await until(lambda: (consumer.stats.oldest_age or 0) > 0.5)
    assert consumer.stats.published == 0
    assert rows(dsn, f"SELECT count(*) FROM {TABLE}") == [(1,)]
    with psycopg.connect(dsn) as conn:  # a notified row takes the waiting one along
        conn.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER {TABLE}_notify")
        enqueue(conn, "late", {"n": 2})
    got = await published(outbox_hub, "late", {"n": 2})
    assert [user_keys(m) for m in got] == [{"n": 1}, {"n": 2}]
    await until(lambda: consumer.stats.backlog_rows == 0 and consumer.stats.oldest_age is None)

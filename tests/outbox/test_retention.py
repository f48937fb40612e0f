"""With a retention, published rows are marked (``published_at``), left out of
the backlog and never published again, then deleted once older than it."""

from __future__ import annotations

import psycopg

from outbox.helpers import published, ready, rows, until
from support import user_keys
from torchannels import Hub
from torchannels.outbox import enqueue

TABLE = "torchannels_outbox"


async def test_retention_marks_then_deletes(dsn: str, outbox_hub: Hub) -> None:
    consumer = outbox_hub.consume_outbox(dsn, retention=1.5, poll_interval=0.2)
    await ready(consumer)
    with psycopg.connect(dsn) as conn:
        ids = [enqueue(conn, "kept", {"n": n}) for n in range(3)]
    got = await published(outbox_hub, "kept", {"n": 2})
    await until(lambda: consumer.stats.published == 3)
    marked = rows(dsn, f"SELECT id FROM {TABLE} WHERE published_at IS NOT NULL ORDER BY id")
    assert marked == [(i,) for i in ids]
    await until(lambda: consumer.stats.backlog_rows == 0)
    # Polled again and again meanwhile: marked rows are never published twice.
    with psycopg.connect(dsn) as conn:
        enqueue(conn, "kept", {"n": 3})
    got = await published(outbox_hub, "kept", {"n": 3})
    assert [user_keys(m) for m in got] == [{"n": n} for n in range(4)]
    await until(lambda: rows(dsn, f"SELECT count(*) FROM {TABLE}") == [(0,)], timeout=10)
    assert [user_keys(m) for m in await published(outbox_hub, "kept", {"n": 3})] == [
        {"n": n} for n in range(4)
    ]

"""Rows that cannot be published (written by hand, or by another writer) go to
the dead-letter table with their error, in the transaction that claimed them,
and the rows behind them are published in order."""

from __future__ import annotations

import psycopg

from outbox.helpers import published, ready, rows, until
from support import user_keys
from torchannels import Hub

TABLE = "torchannels_outbox"
BAD = [
    ("bad channel!", '{"a": 1}', None, "invalid channel name 'bad channel!'"),
    ("news", "not json", None, "data is not JSON"),
    ("news", "[1, 2]", None, "data must be a JSON object, not an array"),
    ("news", '{"a": 1, "a": 2}', None, "data is not JSON: duplicate key"),
    ("news", '{"offset": 7}', None, "reserved key(s) ['offset']"),
    ("news", '{"x": NaN}', None, "data is not JSON: NaN is not JSON"),
    ("news", '{"x": 1e999}', None, "not JSON-serialisable"),
    ("news", '{"x": "\\ud800"}', None, "lone surrogate"),
    ("news", '{"a": 1}', "", "idempotency key must be 1-128 printable ASCII"),
    ("news", '{"a": 1}', "caf\u00e9", "idempotency key must be 1-128 printable ASCII"),
]


async def test_invalid_rows_are_moved_aside_and_never_block_the_rows_behind(
    dsn: str, outbox_hub: Hub
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"INSERT INTO {TABLE} (channel, data) VALUES ('news', %s)", ('{"n": 0}',))
        for channel, data, key, _ in BAD:
            conn.execute(
                f"INSERT INTO {TABLE} (channel, data, idempotency_key) VALUES (%s, %s, %s)",
                (channel, data, key),
            )
            conn.execute(f"INSERT INTO {TABLE} (channel, data) VALUES ('news', %s)", ('{"n": 1}',))
    # Small batches: bad rows are at the head of several transactions.
    consumer = outbox_hub.consume_outbox(dsn, batch=2)
    await ready(consumer)
    await until(lambda: consumer.stats.published == 1 + len(BAD))
    got = await published(outbox_hub, "news", {"n": 1})
    assert [user_keys(m) for m in got] == [{"n": 0}] + [{"n": 1}] * len(BAD)
    dead = rows(
        dsn,
        f"SELECT channel, data, idempotency_key, error, failed_at >= created_at"
        f" FROM {TABLE}_dead ORDER BY id",
    )
    assert [d[:3] for d in dead] == [b[:3] for b in BAD]
    for (*_, error, later), (*_, expected) in zip(dead, BAD, strict=True):
        assert expected in error and later
    assert rows(dsn, f"SELECT count(*) FROM {TABLE}") == [(0,)]
    assert consumer.stats.dead == len(BAD) and consumer.stats.last_error is None

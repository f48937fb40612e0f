"""Rows are published with idempotency keys, so publishing one again stores
nothing: after a consumer that stopped between publishing and committing,
after a batch the broker failed halfway, for a key the app chose."""

from __future__ import annotations

import psycopg

from outbox.helpers import history, published, ready, rows, until
from support import user_keys
from torchannels import Hub, MemoryBroker
from torchannels.outbox import enqueue

TABLE = "torchannels_outbox"


async def test_rows_published_before_a_crash_are_not_stored_twice(
    dsn: str, outbox_hub: Hub
) -> None:
    with psycopg.connect(dsn) as conn:
        ids = [enqueue(conn, "crash", {"n": n}) for n in range(4)]
        enqueue(conn, "crash", {"n": 4}, "my-key")
    # What a consumer killed after publishing the first rows, before its
    # commit, left: those rows in the broker (with their keys), and in the table.
    keys = [f"outbox:{TABLE}:{i}" for i in ids[:2]] + ["my-key"]
    await outbox_hub.broker.publish_many(
        [("crash", {"n": 0}), ("crash", {"n": 1}), ("crash", {"n": 4})], keys=keys
    )
    consumer = outbox_hub.consume_outbox(dsn)
    await ready(consumer)
    await until(lambda: consumer.stats.published == 5)
    got = [user_keys(m) for m in await history(outbox_hub, "crash")]
    assert got == [{"n": 0}, {"n": 1}, {"n": 4}, {"n": 2}, {"n": 3}]
    assert consumer.stats.duplicates == 3
    assert outbox_hub.stats.published == 2  # duplicates are not counted as published
    assert rows(dsn, f"SELECT count(*) FROM {TABLE}") == [(0,)]


async def test_a_batch_the_broker_fails_is_retried_and_stored_once(dsn: str) -> None:
    broker = MemoryBroker(channel_limit=1)  # the second channel fails the batch
    hub = Hub(broker)
    try:
        with psycopg.connect(dsn) as conn:
            enqueue(conn, "first", {"n": 1})
            enqueue(conn, "second", {"n": 1})
        consumer = hub.consume_outbox(dsn, poll_interval=0.2)
        await until(lambda: consumer.stats.last_error is not None)
        failed = consumer.stats.last_error
        assert failed is not None and "ChannelLimitError" in failed[1]
        await until(lambda: consumer.stats.last_error != failed)  # retried: failed again
        await until(lambda: consumer.stats.backlog_rows == 2)  # both rows wait
        assert (consumer.stats.oldest_age or 0) > 0 and consumer.stats.connected
        assert consumer.stats.published == 0
        broker.channel_limit = 2
        await published(hub, "second", {"n": 1})
        await until(lambda: consumer.stats.published == 2)
        assert [user_keys(m) for m in await history(hub, "first")] == [{"n": 1}]
        assert consumer.stats.duplicates == 1  # "first": stored by the first failed try
        await until(lambda: consumer.stats.backlog_rows == 0)
    finally:
        await hub.close()

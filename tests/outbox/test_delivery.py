"""The outbox's point: a committed row is delivered once, a rolled-back one
never; enqueue works from synchronous and async psycopg, inside the
caller's transaction, and refuses what could not be published."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from outbox.helpers import history, published, ready, rows, until
from support import Server, messages, user_keys
from torchannels import ChannelNameError, Hub, MessageError
from torchannels.outbox import aenqueue, ddl, enqueue

TABLE = "torchannels_outbox"


async def test_a_committed_row_is_delivered_once(
    dsn: str, outbox_hub: Hub, make_server: Callable[..., Server]
) -> None:
    server = make_server(hub_=outbox_hub)
    stream = server.stream("sse", channel="orders:1")
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    consumer = outbox_hub.consume_outbox(dsn)
    await ready(consumer)
    with psycopg.connect(dsn) as conn:  # commits on the way out
        row_id = enqueue(conn, "orders:1", {"status": "paid", "total": 12.5})
    frames = await stream.wait_frames(lambda fs: len(messages(fs, "orders:1")) == 1)
    [message] = messages(frames, "orders:1")
    assert user_keys(message) == {"status": "paid", "total": 12.5}
    # Once: a later row arrives behind it, and the first is still alone.
    with psycopg.connect(dsn) as conn:
        enqueue(conn, "orders:1", {"marker": True})
    frames = await stream.wait_frames(lambda fs: len(messages(fs, "orders:1")) == 2)
    assert [user_keys(m) for m in messages(frames, "orders:1")] == [
        {"status": "paid", "total": 12.5},
        {"marker": True},
    ]
    assert [m["offset"] for m in await history(outbox_hub, "orders:1")] == [1, 2]
    await until(lambda: consumer.stats.published == 2)  # counted once committed
    assert row_id >= 1 and rows(dsn, f"SELECT count(*) FROM {TABLE}") == [(0,)]
    assert consumer.stats.dead == 0 and outbox_hub.stats.published == 2


async def test_a_rolled_back_row_is_never_delivered(dsn: str, outbox_hub: Hub) -> None:
    consumer = outbox_hub.consume_outbox(dsn, poll_interval=0.1)
    await ready(consumer)
    with psycopg.connect(dsn) as conn:
        enqueue(conn, "orders:2", {"status": "refunded"})
        conn.rollback()
        with pytest.raises(ZeroDivisionError), conn.transaction():  # an app's failed unit
            enqueue(conn, "orders:2", {"status": "lost"})
            _ = 1 / 0
        enqueue(conn, "orders:2", {"marker": True})
        conn.commit()
    got = await published(outbox_hub, "orders:2", {"marker": True})
    assert [user_keys(m) for m in got] == [{"marker": True}]


async def test_enqueue_from_synchronous_psycopg(dsn: str, outbox_hub: Hub) -> None:
    with psycopg.connect(dsn) as conn:
        first = enqueue(conn, "sync", {"n": 1})
        with conn.cursor() as cursor:
            second = enqueue(cursor, "sync", {"n": 2}, "key-2")
        with conn.cursor(row_factory=dict_row) as cursor:  # any row factory
            third = enqueue(cursor, "sync", {"n": 3})
    assert first < second < third
    assert rows(dsn, f"SELECT id, idempotency_key, data FROM {TABLE} ORDER BY id") == [
        (first, None, '{"n":1}'),
        (second, "key-2", '{"n":2}'),
        (third, None, '{"n":3}'),
    ]
    consumer = outbox_hub.consume_outbox(dsn)
    await ready(consumer)
    got = await published(outbox_hub, "sync", {"n": 3})
    assert [user_keys(m) for m in got] == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_enqueue_from_async_psycopg(dsn: str, outbox_hub: Hub) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        first = await aenqueue(conn, "async", {"n": 1})
        async with conn.cursor() as cursor:
            second = await aenqueue(cursor, "async", {"n": 2})
    assert first < second
    consumer = outbox_hub.consume_outbox(dsn)
    await ready(consumer)
    got = await published(outbox_hub, "async", {"n": 2})
    assert [user_keys(m) for m in got] == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("channel", "data", "key", "error", "text"),
    [
        ("bad name", {"a": 1}, None, ChannelNameError, "invalid channel name 'bad name'"),
        ("c", ["a"], None, MessageError, "a message must be a dict, not list"),
        ("c", {"offset": 3}, None, MessageError, "reserved key(s) ['offset']"),
        ("c", {"x": float("nan")}, None, MessageError, "not JSON-serialisable"),
        ("c", {"x": "\ud800"}, None, MessageError, "lone surrogate"),
        ("c", {"a": 1}, "", MessageError, "1-128 printable ASCII"),
        ("c", {"a": 1}, "k" * 129, MessageError, "1-128 printable ASCII"),
        ("c", {"a": 1}, "caf\u00e9", MessageError, "1-128 printable ASCII"),
    ],
)
def test_enqueue_refuses_what_cannot_be_published(
    dsn: str, channel: str, data: Any, key: str | None, error: type[Exception], text: str
) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(error) as info:
            enqueue(conn, channel, data, key)
        assert isinstance(info.value, ValueError) and text in str(info.value)
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (0,)


async def test_enqueue_and_aenqueue_take_their_own_kind_of_connection(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as aconn:
        with pytest.raises(TypeError, match="use aenqueue"):
            enqueue(aconn, "c", {"a": 1})
    with psycopg.connect(dsn) as conn:
        with pytest.raises(TypeError, match="use enqueue"):
            await aenqueue(conn, "c", {"a": 1})
        with pytest.raises(ValueError, match="invalid outbox table name"):
            enqueue(conn, "c", {"a": 1}, table="x; DROP TABLE y")
    assert rows(dsn, f"SELECT count(*) FROM {TABLE}") == [(0,)]


async def test_close_releases_the_connection_and_its_partitions(dsn: str) -> None:
    hub = Hub()
    consumer = hub.consume_outbox(dsn, poll_interval=30)
    await ready(consumer)
    # This database's only: other tests may run against the same server.
    sessions = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'torchannels-outbox' AND datname = current_database()"
    )
    locks = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    assert rows(dsn, sessions) == [(1,)] and rows(dsn, locks) == [(17,)]  # 16 + membership
    await hub.close()  # in the middle of its wait for a notification
    assert not consumer.stats.connected
    await until(lambda: rows(dsn, sessions) == [(0,)] and rows(dsn, locks) == [(0,)])


async def test_the_consumer_follows_the_tables_partition_count(
    database: str, outbox_hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(ddl(partitions=4))
        for n in range(20):  # over every partition
            enqueue(conn, f"spread:{n}", {"n": n})
    consumer = outbox_hub.consume_outbox(database)  # partitions=16 by default
    await ready(consumer, partitions=4)
    await until(lambda: consumer.stats.published == 20)
    assert "table torchannels_outbox has 4 partitions, not 16: following the table's 4" in (
        caplog.text
    )


async def test_a_missing_table_is_said_and_waited_for(
    database: str, outbox_hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = outbox_hub.consume_outbox(database, poll_interval=0.1)
    await until(lambda: consumer.stats.last_error is not None)
    assert consumer.stats.last_error is not None
    assert "torchannels outbox init" in consumer.stats.last_error[1]
    assert not consumer.stats.connected
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(ddl())
        enqueue(conn, "late-table", {"n": 1})
    await ready(consumer)  # it reconnects with backoff, at most 5 s apart
    got = await published(outbox_hub, "late-table", {"n": 1})
    assert [user_keys(m) for m in got] == [{"n": 1}]

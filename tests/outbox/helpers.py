"""For the outbox tests: reading what the outbox published and the tables'
rows, starting a consumer without notifications, and a writer that rides
out a PostgreSQL restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from torchannels import Hub
from torchannels.outbox import OutboxConsumer, aenqueue

#: Seconds a test waits for what must happen.
WAIT = 10.0
#: The outbox table ``ddl()`` makes by default.
TABLE = "torchannels_outbox"


async def history(hub: Hub, channel: str) -> list[dict[str, Any]]:
    """The messages ``channel`` holds, oldest first, as delivered (stamped)."""
    result = await hub.broker.read(channel, None)
    return [pub.data for pub in result.publications]


async def until(predicate: Callable[[], Any], timeout: float = WAIT) -> None:
    """Wait in small steps until ``predicate()`` is true (awaited if a
    coroutine function's result), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def published(hub: Hub, channel: str, marker: dict[str, Any]) -> list[dict[str, Any]]:
    """``channel``'s history once ``marker`` (a message's user keys) is in it."""

    async def arrived() -> bool:
        return any(marker.items() <= m.items() for m in await history(hub, channel))

    await until(arrived)
    return await history(hub, channel)


async def ready(consumer: OutboxConsumer, partitions: int = 16) -> None:
    """Wait until ``consumer`` is connected and holds ``partitions`` partitions."""
    await until(lambda: consumer.stats.connected and consumer.stats.partitions == partitions)


def rows(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows ``sql`` selects in the database at ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()


async def unnotified(hub: Hub, dsn: str, poll_interval: float) -> OutboxConsumer:
    """A ready consumer of ``hub`` on ``dsn`` that polls every
    ``poll_interval`` seconds and is never notified: the table's notify
    trigger is disabled first."""
    with psycopg.connect(dsn) as conn:
        conn.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER {TABLE}_notify")
    consumer = hub.consume_outbox(dsn, poll_interval=poll_interval)
    await ready(consumer)
    # Past its first pass (which claims whatever is there), so a row
    # inserted now waits for the next poll.
    await until(lambda: consumer.waiting)
    return consumer


class RestartWriter:
    """Inserts one row a transaction over ``channels`` in turn, ``seq``
    counting up per channel, pausing ``pause`` seconds after each,
    reconnecting while PostgreSQL is away; knows which rows surely committed
    and which may have (the commit's answer was lost)."""

    def __init__(self, dsn: str, channels: Sequence[str], pause: float) -> None:
        self.dsn = dsn
        self.channels = list(channels)
        self.pause = pause
        self.sure: list[tuple[str, int]] = []
        self.maybe: list[tuple[str, int]] = []
        self.stop = asyncio.Event()

    def sure_of(self, channel: str) -> set[int]:
        return {seq for c, seq in self.sure if c == channel}

    def maybe_of(self, channel: str) -> set[int]:
        return {seq for c, seq in self.maybe if c == channel}

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=2)
            except psycopg.OperationalError:
                await asyncio.sleep(0.05)
                continue
            async with conn:
                while not self.stop.is_set():
                    row = (self.channels[n % len(self.channels)], n // len(self.channels))
                    n += 1
                    try:
                        await aenqueue(conn, row[0], {"seq": row[1]})
                        await conn.commit()
                    except psycopg.OperationalError:
                        self.maybe.append(row)
                        break
                    self.sure.append(row)
                    await asyncio.sleep(self.pause)

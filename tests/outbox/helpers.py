"""Reading what the outbox published, and the tables' rows, for the outbox tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg

from torchannels import Hub
from torchannels.outbox import OutboxConsumer

#: Seconds a test waits for what must happen.
WAIT = 10.0


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

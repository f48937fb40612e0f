"""Two consumers on one table share its partitions and keep every channel's
rows in order, while rows stream in, a second consumer joins (partitions
move to it) and the first leaves (they all move back); on the memory
broker, and on Redis with a broker (a connection and publish queue) per
consumer, as two processes would have, so two consumers publishing one
channel at once would interleave."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator

import psycopg
import pytest

from outbox.helpers import history, ready, until
from redis_servers import shared_redis
from torchannels import Hub
from torchannels.brokers.redis import RedisBroker
from torchannels.outbox import OutboxConsumer, aenqueue

CHANNELS = [f"order:{i}" for i in range(8)]
#: Rows written in each phase: one consumer, two, the second alone.
PHASE = 300


async def write(dsn: str, written: list[int], stop: asyncio.Event) -> None:
    """Insert rows over CHANNELS until ``stop`` is set, in transactions of
    1-40 rows, each row's ``seq`` counting up per channel; ``written[0]``:
    rows committed."""
    rng = random.Random(22)
    seq = dict.fromkeys(CHANNELS, 0)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        while not stop.is_set():
            size = rng.randint(1, 40)
            async with conn.transaction():
                for _ in range(size):
                    channel = rng.choice(CHANNELS)
                    await aenqueue(conn, channel, {"seq": seq[channel]})
                    seq[channel] += 1
            written[0] += size
            await asyncio.sleep(0.01)


@pytest.fixture(params=["memory", "redis"])
async def hubs(request: pytest.FixtureRequest, outbox_hub: Hub) -> AsyncIterator[list[Hub]]:
    """Two hubs: the memory broker's (twice), or two on the shared Redis
    with one prefix (its own), each with a broker of its own."""
    if request.param == "memory":
        yield [outbox_hub, outbox_hub]
        return
    url, prefix = shared_redis(), "outbox" + secrets.token_hex(4)
    made = [Hub(RedisBroker.from_url(url, prefix=prefix)) for _ in range(2)]
    yield made
    for hub in made:
        await hub.close()


async def test_two_consumers_keep_each_channel_in_order(dsn: str, hubs: list[Hub]) -> None:
    outbox_hub = hubs[0]
    first = OutboxConsumer(hubs[0], dsn, batch=5, poll_interval=0.2)
    second = OutboxConsumer(hubs[1], dsn, batch=5, poll_interval=0.2)
    try:
        first.start()
        await ready(first)
        written, stop = [0], asyncio.Event()
        writer = asyncio.ensure_future(write(dsn, written, stop))
        await until(lambda: written[0] >= PHASE)
        second.start()  # partitions move to it mid-stream
        await until(lambda: first.stats.partitions == second.stats.partitions == 8)
        mark = written[0]
        await until(lambda: written[0] >= mark + PHASE)
        await first.close()  # and all of them back to the second
        await until(lambda: second.stats.partitions == 16)
        mark = written[0]
        await until(lambda: written[0] >= mark + PHASE)
        stop.set()
        await writer
        rows = written[0]

        async def total() -> int:
            return sum([len(await history(outbox_hub, c)) for c in CHANNELS])

        await until(lambda: total(), timeout=30)
        await until(lambda: second.stats.backlog_rows == 0, timeout=30)
        assert await total() == rows
        for channel in CHANNELS:
            seqs = [m["seq"] for m in await history(outbox_hub, channel)]
            assert seqs == list(range(len(seqs))), channel
        assert first.stats.published > 0 and second.stats.published > 0
        assert first.stats.published + second.stats.published == rows
        assert first.stats.duplicates == second.stats.duplicates == 0
    finally:
        await first.close()
        await second.close()

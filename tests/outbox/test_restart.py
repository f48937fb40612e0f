"""PostgreSQL restarted mid-stream (a cluster of the test's own): the consumer
says it is disconnected, reconnects with backoff, and every committed row is
published once, in order; nothing is lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

from outbox.helpers import RestartWriter, history, ready, until
from postgres_servers import PostgresCluster, own_cluster
from torchannels import Hub
from torchannels.outbox import ddl

CHANNEL = "restart"


async def test_a_postgresql_restart_mid_stream_loses_and_duplicates_nothing() -> None:
    with own_cluster() as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute(ddl())
        hub = Hub()
        writer = RestartWriter(cluster.dsn, [CHANNEL], pause=0.005)
        writing = asyncio.ensure_future(writer.run())
        try:
            consumer = hub.consume_outbox(cluster.dsn, poll_interval=0.2)
            await ready(consumer)
            await until(lambda: len(writer.sure) >= 100)
            await restart(cluster, consumer_connected=lambda: consumer.stats.connected)
            assert consumer.stats.last_error is not None
            assert "PostgreSQL" in consumer.stats.last_error[1]
            mark = len(writer.sure)
            await until(lambda: len(writer.sure) >= mark + 100, timeout=30)
            writer.stop.set()
            await writing
            await ready(consumer)

            async def all_sure() -> bool:
                seqs = {m["seq"] for m in await history(hub, CHANNEL)}
                return seqs >= writer.sure_of(CHANNEL)

            await until(all_sure, timeout=30)
            await until(lambda: consumer.stats.backlog_rows == 0, timeout=30)
            seqs = [m["seq"] for m in await history(hub, CHANNEL)]
            assert seqs == sorted(set(seqs))  # in order, each once
            sure, maybe = writer.sure_of(CHANNEL), writer.maybe_of(CHANNEL)
            assert sure <= set(seqs) <= sure | maybe
        finally:
            writer.stop.set()
            with contextlib.suppress(Exception):
                await writing
            await hub.close()


async def restart(cluster: PostgresCluster, consumer_connected: object) -> None:
    """Stop ``cluster`` (fast: sessions end), see the consumer notice, start it again."""
    assert callable(consumer_connected)
    await asyncio.to_thread(cluster.stop)
    await until(lambda: not consumer_connected())
    await asyncio.to_thread(cluster.start)

"""The outbox as deployed: ``torchannels serve --outbox DSN`` processes on
one Redis (a key prefix of the test's own) and a real PostgreSQL (a database
of the test's own; a cluster of its own for the restart).

What a subscriber can read back through the server (a fresh poll of every
channel: its retained history) is checked against what was committed: each
channel's offsets are exactly 1..n for its n rows and its rows come in the
order one writer inserted them, so a row lost, published twice or out of
order fails. Three processes share a table; a consumer SIGKILLed in the
middle of a batch leaves rows that the next one publishes again as no-ops
(their idempotency keys); a PostgreSQL restart is ridden out; the backlog
shows on /health and /metrics while rows wait.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tornado.httpclient

from outbox.helpers import RestartWriter, rows
from postgres_servers import own_cluster
from redis_servers import shared_redis
from server.processes import KEY, ServerProcess, as_json, fetch, until
from torchannels.brokers.redis import RedisBroker
from torchannels.outbox import aenqueue, ddl

TABLE = "torchannels_outbox"
#: The channels of the three-process test; subscribers may read ``ob:*``.
CHANNELS = [f"ob:{i}" for i in range(50)]
#: Seconds a test waits for the outbox to be drained.
DRAIN = 30.0

Spawn = Callable[..., ServerProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(dsn, prefix, *flags)``: a ``serve --outbox DSN`` process on the
    shared Redis under ``prefix``, stopped at teardown."""
    started: list[ServerProcess] = []

    def start(dsn: str, prefix: str, *flags: str) -> ServerProcess:
        args = ["--port", "0", "--no-demo", "--api-key", KEY, "--anonymous", "ob:*",
                "--metrics", "--broker", shared_redis(), "--redis-prefix", prefix,
                "--history-ttl", "300", "--history-meta-ttl", "300",
                "--outbox", dsn, *flags]  # fmt: skip
        server = ServerProcess(tmp_path, args, None)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of the test's own."""
    return "tc-outbox-" + secrets.token_hex(6)


@pytest.fixture
async def http() -> AsyncIterator[tornado.httpclient.AsyncHTTPClient]:
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    yield client
    client.close()


# -- reading back ----------------------------------------------------------------------


async def histories(http: Any, server: ServerProcess, channels: Sequence[str]) -> dict[str, Any]:
    """Every message of ``channels`` a fresh subscriber of ``server`` gets
    (the retained history: polls from a fresh join until nothing new comes),
    per channel in the order received."""
    got: dict[str, list[dict[str, Any]]] = {c: [] for c in channels}
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"transport": "poll", "channel": list(channels)}
        if cursor is not None:
            query["cursor"] = cursor
        response = await fetch(http, server.url(**query), timeout=30)
        doc = as_json(response)
        assert response.code == 200, doc
        messages = [f["data"] for f in doc["frames"] if f["type"] == "message"]
        unexpected = [f for f in doc["frames"] if f["type"] not in ("message", "subscribed")]
        assert not unexpected, unexpected
        for message in messages:
            got[message["channel"]].append(message)
        if cursor is not None and not messages:
            return got
        cursor = doc["cursor"]


def check_once_in_order(got: dict[str, list[dict[str, Any]]], counts: dict[str, int]) -> None:
    """Each channel holds its rows once, in insertion order: offsets 1..n
    and ``seq`` 0..n-1, n its committed rows."""
    for channel, n in counts.items():
        messages = got[channel]
        assert [m["offset"] for m in messages] == list(range(1, n + 1)), channel
        assert [m["seq"] for m in messages] == list(range(n)), channel
        assert len({m["epoch"] for m in messages}) <= 1, channel


async def health(http: Any, server: ServerProcess) -> tuple[int, dict[str, Any]]:
    response = await fetch(http, server.base + "/health")
    return response.code, as_json(response)


async def metrics(http: Any, server: ServerProcess) -> dict[str, float]:
    """``{'name': value}`` of the unlabelled samples of ``/metrics``."""
    response = await fetch(http, server.base + "/metrics")
    assert response.code == 200
    samples: dict[str, float] = {}
    for line in response.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def scrape_when(http: Any, servers: Sequence[ServerProcess], total: int) -> list[Any]:
    """Every process's ``/metrics`` once their ``torchannels_outbox_published_total``
    add up to ``total`` (a consumer counts rows just after the commit that
    took them off the outbox, a moment after the table shows it)."""
    scrapes: list[dict[str, float]] = []

    async def added_up() -> bool:
        scrapes[:] = [await metrics(http, s) for s in servers]
        return sum(m["torchannels_outbox_published_total"] for m in scrapes) == total

    try:
        await until(added_up, "the published rows add up")
    except AssertionError:
        raise AssertionError([m["torchannels_outbox_published_total"] for m in scrapes]) from None
    return scrapes


def partition_holders(dsn: str) -> list[int]:
    """How many partitions each session holding one holds (PostgreSQL's
    own view of the consumers' advisory locks), largest first."""
    found = rows(
        dsn,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND objsubid = 2 AND objid < 2147483647 GROUP BY pid ORDER BY 1 DESC",
    )
    return [int(r[0]) for r in found]


def make_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl())


def bulk_insert(dsn: str, channels: Sequence[str], total: int) -> dict[str, int]:
    """``total`` rows in one transaction, round-robin over ``channels``, each
    ``{"seq": k}`` counting up per channel in id order; rows per channel."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            f"INSERT INTO {TABLE} (channel, data)"
            " SELECT (%(ch)s::text[])[i %% %(n)s + 1], json_build_object('seq', i / %(n)s)::text"
            " FROM generate_series(0, %(last)s) AS i ORDER BY i",
            {"ch": list(channels), "n": len(channels), "last": total - 1},
        )
    return {c: total // len(channels) + (i < total % len(channels)) for i, c in enumerate(channels)}


async def write(dsn: str, channels: Sequence[str], per_channel: int, tx_rows: int) -> None:
    """One writer's rows, with :func:`aenqueue`: ``per_channel`` rows on each
    of ``channels`` (round-robin, ``seq`` counting up), ``tx_rows`` a
    transaction."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        order = [(c, seq) for seq in range(per_channel) for c in channels]
        for start in range(0, len(order), tx_rows):
            async with conn.transaction():
                for channel, seq in order[start : start + tx_rows]:
                    await aenqueue(conn, channel, {"seq": seq})


# -- the tests ---------------------------------------------------------------------------


async def test_three_processes_deliver_10000_rows_of_50_channels_once_in_order(
    database: str, spawn: Spawn, prefix: str, http: Any
) -> None:
    make_table(database)
    servers = [spawn(database, prefix) for _ in range(3)]

    async def shared() -> bool:  # every process holds its share of the 16 partitions
        held = partition_holders(database)
        return len(held) == 3 and sum(held) == 16 and min(held) >= 4

    await until(shared, "the three processes share the partitions")
    started = time.monotonic()
    # Five writers at once, ten channels each, 40 rows a transaction: 200
    # rows per channel, 10,000 in all.
    await asyncio.gather(
        *(write(database, CHANNELS[w::5], per_channel=200, tx_rows=40) for w in range(5))
    )

    async def drained() -> bool:
        return rows(database, f"SELECT count(*) FROM {TABLE}") == [(0,)]

    await until(drained, "the outbox is drained", timeout=DRAIN)
    elapsed = time.monotonic() - started
    got = await histories(http, servers[1], CHANNELS)
    check_once_in_order(got, dict.fromkeys(CHANNELS, 200))
    scrapes = await scrape_when(http, servers, 10_000)
    published = [m["torchannels_outbox_published_total"] for m in scrapes]
    assert min(published) > 0, published  # all three took part
    assert rows(database, f"SELECT count(*) FROM {TABLE}_dead") == [(0,)]
    assert elapsed < DRAIN, elapsed


async def test_a_consumer_killed_mid_batch_loses_and_duplicates_nothing(
    database: str, spawn: Spawn, prefix: str, http: Any
) -> None:
    make_table(database)
    channels = CHANNELS[:40]
    counts = bulk_insert(database, channels, 20_000)
    broker = RedisBroker.from_url(shared_redis(), prefix=prefix)
    try:
        # Large batches: the first transaction claims up to 1,000 rows of each
        # partition and publishes them all before it deletes any and commits.
        first = spawn(database, prefix, "--outbox-batch", "1000")

        async def some_stored() -> bool:
            positions = await broker.positions(channels)
            return sum(p.offset for p in positions.values()) > 0

        await until(some_stored, "the first rows are published")
        first.signal(signal.SIGKILL)
        assert await first.exited(10) == -signal.SIGKILL
        [(left,)] = rows(database, f"SELECT count(*) FROM {TABLE}")
        # (Read last: a script call Redis had whole when the process died still runs.)
        stored = sum(p.offset for p in (await broker.positions(channels)).values())
        # Mid-batch: rows published that are still in the outbox.
        assert stored + left > 20_000, (stored, left)
        assert 0 < stored < 20_000, stored
    finally:
        await broker.close()
    second = spawn(database, prefix, "--outbox-batch", "1000")

    async def drained() -> bool:
        return rows(database, f"SELECT count(*) FROM {TABLE}") == [(0,)]

    await until(drained, "the new process drains the outbox", timeout=DRAIN)
    check_once_in_order(await histories(http, second, channels), counts)
    # It took every row left off the outbox (counted once its transaction
    # has committed); the ones already stored were duplicates, stored and
    # delivered nothing.
    [scraped] = await scrape_when(http, [second], left)
    assert scraped["torchannels_publish_duplicates_total"] == stored + left - 20_000
    assert scraped["torchannels_published_total"] == 20_000 - stored


async def test_a_postgresql_restart_mid_stream_is_ridden_out(
    spawn: Spawn, prefix: str, http: Any
) -> None:
    channels = CHANNELS[:10]
    with own_cluster() as cluster:
        make_table(cluster.dsn)
        servers = [spawn(cluster.dsn, prefix) for _ in range(2)]
        writer = RestartWriter(cluster.dsn, channels, pause=0.002)
        writing = asyncio.ensure_future(writer.run())
        try:

            async def connected(state: bool) -> bool:
                answers = [await health(http, s) for s in servers]
                # PostgreSQL away never makes /health fail: it shows connected false.
                assert all(code == 200 for code, _ in answers), answers
                return all(body["outbox"]["connected"] is state for _, body in answers)

            await until(lambda: connected(True), "both consumers connect")
            await until(lambda: _at_least(writer, 200), "rows are written", timeout=DRAIN)
            await asyncio.to_thread(cluster.stop)
            await until(lambda: connected(False), "both consumers see PostgreSQL go")
            await asyncio.to_thread(cluster.start)
            await until(lambda: connected(True), "both consumers reconnect", timeout=DRAIN)
            mark = len(writer.sure)
            await until(lambda: _at_least(writer, mark + 200), "rows are written again", DRAIN)
        finally:
            writer.stop.set()
            await writing

        async def drained() -> bool:
            return rows(cluster.dsn, f"SELECT count(*) FROM {TABLE}") == [(0,)]

        await until(drained, "the outbox is drained", timeout=DRAIN)
        got = await histories(http, servers[0], channels)
        for channel in channels:
            messages = got[channel]
            assert [m["offset"] for m in messages] == list(range(1, len(messages) + 1))
            seqs = [m["seq"] for m in messages]
            assert seqs == sorted(set(seqs)), channel  # in order, each once
            sure, maybe = writer.sure_of(channel), writer.maybe_of(channel)
            assert sure <= set(seqs) <= sure | maybe, channel

        async def settled() -> bool:
            bodies = [(await health(http, s))[1]["outbox"] for s in servers]
            return all(b == {"connected": True, "backlog": 0, "oldest": None} for b in bodies)

        await until(settled, "both consumers show an empty backlog")


async def _at_least(writer: RestartWriter, count: int) -> bool:
    return len(writer.sure) >= count


async def test_health_and_metrics_show_the_backlog_while_rows_wait(
    database: str, spawn: Spawn, prefix: str, http: Any
) -> None:
    make_table(database)
    counts = bulk_insert(database, CHANNELS[:5], 50)
    inserted = time.monotonic()
    # Another transaction holds the rows (as a stuck consumer would):
    # the consumer, started after them, skips them and they wait.
    holder = psycopg.connect(database)
    try:
        holder.execute(f"SELECT id FROM {TABLE} FOR UPDATE")
        server = spawn(database, prefix)

        async def waiting() -> bool:
            code, body = await health(http, server)
            assert code == 200 and body["status"] == "ok", body
            outbox = body["outbox"]
            return (
                outbox["connected"] is True
                and outbox["backlog"] == 50
                and (outbox["oldest"] is not None and outbox["oldest"] >= 1.0)
            )

        await until(waiting, "/health shows the 50 rows waiting for a second")
        _, body = await health(http, server)
        assert body["outbox"]["oldest"] <= time.monotonic() - inserted + 1.0
        scraped = await metrics(http, server)
        assert scraped["torchannels_outbox_backlog_rows"] == 50
        assert scraped["torchannels_outbox_oldest_seconds"] >= 1.0
        assert scraped["torchannels_outbox_published_total"] == 0
        assert scraped["torchannels_outbox_connected"] == 1.0
    finally:
        holder.rollback()  # the rows are free
        holder.close()

    async def drained() -> bool:
        _, body = await health(http, server)
        return bool(body["outbox"] == {"connected": True, "backlog": 0, "oldest": None})

    await until(drained, "/health shows the backlog gone")
    scraped = await metrics(http, server)
    assert scraped["torchannels_outbox_backlog_rows"] == 0
    assert scraped["torchannels_outbox_oldest_seconds"] == 0
    assert scraped["torchannels_outbox_published_total"] == 50
    check_once_in_order(await histories(http, server, CHANNELS[:5]), counts)

"""Claiming outbox rows: the partitions a consumer holds, and the SQL of one batch.

Every row of a channel lies in one partition (the table computes it from
the channel). A consumer publishes only the partitions whose advisory
lock it holds (``pg_try_advisory_lock(K, partition)``, K =
``hashtext(TABLE) & 2147483647``, session locks of its connection), so one
process at a time publishes a channel. Consumers share the partitions:
each also holds the shared lock ``(K, 2147483647)``, counts the sessions
holding it (``pg_locks``) and keeps its fair share, ceil(partitions /
consumers), releasing extra partitions between transactions and taking
free ones. A consumer that dies loses its connection, so its locks, and
the others take its partitions over within a second or so.

Within its partitions a consumer claims the oldest rows of each
(``ORDER BY id LIMIT batch FOR UPDATE SKIP LOCKED``, one query for all),
in one transaction that also moves invalid rows to the dead-letter table
and deletes (or marks) the published ones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .rows import Row
from .schema import PARTITION_EXPRESSION_SQL, dead_table, partitions_of

if TYPE_CHECKING:
    from psycopg import AsyncConnection

#: The second key of the shared advisory lock every consumer of a table holds.
MEMBER = 2147483647
#: The first key of a table's advisory locks, in SQL (``%(table)s``: its name).
KEY = "hashtext(%(table)s) & 2147483647"
#: Published rows deleted per statement with a retention.
CLEANUP_ROWS = 10_000


class SetupError(Exception):
    """The outbox table is missing or not as the consumer expects (said in the message)."""


class Partitions:
    """The partitions of ``table`` this consumer holds on its connection."""

    def __init__(self, table: str, count: int) -> None:
        self.table = table
        self.count = count
        #: The partitions held now, sorted.
        self.held: list[int] = []

    async def join(self, conn: AsyncConnection[Any]) -> None:
        """Count this connection among the table's consumers (a fresh
        connection holds no partition yet)."""
        self.held = []
        await conn.execute(
            f"SELECT pg_advisory_lock_shared({KEY}, %(member)s)",
            {"table": self.table, "member": MEMBER},
        )

    async def rebalance(self, conn: AsyncConnection[Any]) -> None:
        """Release partitions beyond this consumer's fair share, or take
        free ones up to it. Outside a transaction only: a partition is
        released with nothing of it claimed."""
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            f" AND classid = ({KEY})::bigint::oid AND objid = %(member)s AND objsubid = 2",
            {"table": self.table, "member": MEMBER},
        )
        row = await cursor.fetchone()
        members = max(1, int(row[0]) if row is not None else 1)
        share = -(-self.count // members)
        if len(self.held) > share:
            extra = self.held[share:]
            await conn.execute(
                f"SELECT pg_advisory_unlock({KEY}, p) FROM unnest(%(parts)s::int[]) AS p",
                {"table": self.table, "parts": extra},
            )
            self.held = self.held[:share]
        elif len(self.held) < share:
            start = random.randrange(self.count)  # newcomers try different ones first
            order = [(start + i) % self.count for i in range(self.count)]
            free = [p for p in order if p not in self.held]
            cursor = await conn.execute(
                f"SELECT p FROM unnest(%(parts)s::int[]) AS p"
                f" WHERE pg_try_advisory_lock({KEY}, p) LIMIT %(want)s",
                {"table": self.table, "parts": free, "want": share - len(self.held)},
            )
            got = [int(r[0]) for r in await cursor.fetchall()]
            self.held = sorted(self.held + got)


async def table_partitions(conn: AsyncConnection[Any], table: str) -> int | None:
    """The partition count ``table`` was made with (None: not readable);
    :class:`SetupError` if there is no such table."""
    cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    found = await cursor.fetchone()
    if found is None or not found[0]:
        raise SetupError(
            f"the outbox table {table!r} does not exist in this database: create it with "
            f"`torchannels outbox init --dsn DSN --table {table}` or the DDL of docs/outbox.md"
        )
    cursor = await conn.execute(PARTITION_EXPRESSION_SQL, (table,))
    row = await cursor.fetchone()
    return None if row is None else partitions_of(str(row[0]))


async def claim(
    conn: AsyncConnection[Any], table: str, partitions: Sequence[int], batch: int
) -> list[Row]:
    """Lock and return the oldest ``batch`` rows of each of ``partitions``
    not yet published and not locked by another transaction, by id."""
    cursor = await conn.execute(
        "SELECT r.id, r.channel, r.data, r.idempotency_key"
        " FROM unnest(%s::smallint[]) AS p(n) CROSS JOIN LATERAL ("
        f"  SELECT id, channel, data, idempotency_key FROM {table}"
        "   WHERE partition = p.n AND published_at IS NULL"
        "   ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
        " ) AS r ORDER BY r.id",
        (list(partitions), batch),
    )
    return [Row(int(r[0]), r[1], r[2], r[3]) for r in await cursor.fetchall()]


async def bury(conn: AsyncConnection[Any], table: str, errors: dict[int, str]) -> None:
    """Move the rows ``errors`` names (id -> why) to the dead-letter table."""
    await conn.execute(
        "WITH bad(id, error) AS (SELECT * FROM unnest(%s::bigint[], %s::text[])),"
        f" moved AS (DELETE FROM {table} AS o USING bad WHERE o.id = bad.id"
        "  RETURNING o.id, o.channel, o.data, o.idempotency_key, o.created_at, bad.error)"
        f" INSERT INTO {dead_table(table)} (id, channel, data, idempotency_key, created_at, error)"
        " SELECT id, channel, data, idempotency_key, created_at, error FROM moved",
        (list(errors), list(errors.values())),
    )


async def finish(conn: AsyncConnection[Any], table: str, ids: list[int], mark: bool) -> None:
    """Take published rows off the outbox: delete them, or with ``mark``
    (a retention) set their ``published_at``."""
    if mark:
        await conn.execute(
            f"UPDATE {table} SET published_at = now() WHERE id = ANY(%s::bigint[])", (ids,)
        )
    else:
        await conn.execute(f"DELETE FROM {table} WHERE id = ANY(%s::bigint[])", (ids,))


async def backlog(conn: AsyncConnection[Any], table: str) -> tuple[int, float | None]:
    """Rows waiting, and seconds since the oldest of them was inserted (None: none)."""
    cursor = await conn.execute(
        "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8"
        f" FROM {table} WHERE published_at IS NULL"
    )
    row = await cursor.fetchone()
    if row is None:
        return 0, None
    return int(row[0]), None if row[1] is None else max(0.0, float(row[1]))


async def clean(conn: AsyncConnection[Any], table: str, retention: float) -> int:
    """Delete at most :data:`CLEANUP_ROWS` rows published more than
    ``retention`` seconds ago; how many were deleted."""
    cursor = await conn.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"
        " WHERE published_at < now() - make_interval(secs => %s) LIMIT %s)",
        (retention, CLEANUP_ROWS),
    )
    return cursor.rowcount

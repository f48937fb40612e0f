"""The outbox consumer: rows committed in PostgreSQL, published through the hub's broker.

One task, one PostgreSQL connection. It holds advisory locks on its share
of the table's partitions (:mod:`.claiming`) and, in a loop:

- claims the oldest rows of its partitions in one transaction
  (``FOR UPDATE SKIP LOCKED``), moves invalid ones to the dead-letter
  table, publishes the others with ``broker.publish_many`` and their
  idempotency keys, then deletes them (or, with a retention, marks them
  published and deletes them ``retention`` seconds later), and commits;
- claims again at once while rows come, else waits for a ``NOTIFY`` of
  the table (``LISTEN``) or ``poll_interval`` seconds, whichever is first,
  so a lost notification delays a row and never loses it;
- every second, reads the backlog (:class:`~.stats.OutboxStats`) and
  rebalances its partitions with the other consumers.

A publish the broker fails rolls the transaction back and is tried again
after a jittered backoff; what the broker stored before failing is a
duplicate the second time (its idempotency key), so nothing is stored
twice. Any PostgreSQL failure closes the connection (its locks go with
it) and reconnects after a jittered backoff of 0.1 s doubling to 5 s.
Warnings are rate-limited to one a minute of each kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ..cancelling import cancel_and_wait
from ..frames import Duplicate
from ..webhook_post import Warnings, backoff
from . import claiming
from .driver import connect_options, psycopg
from .rows import Row, message_of
from .schema import DEFAULT_PARTITIONS, DEFAULT_TABLE, check_partitions, check_table, dead_table
from .stats import OutboxStats

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from ..hub import Hub

log = logging.getLogger("torchannels.outbox")

#: Seconds between two reads of the backlog and two rebalances.
UPKEEP_INTERVAL = 1.0
#: Seconds one claim-publish-commit transaction may take before the
#: connection is given up (a frozen server, a broker that never answers).
PASS_TIMEOUT = 30.0
#: Seconds :meth:`OutboxConsumer.close` lets a transaction in flight finish.
CLOSE_GRACE = 5.0
#: Reconnect and retry delays: 0.1 s doubling to 5 s, jittered.
BACKOFF_BASE, BACKOFF_CAP = 0.1, 5.0


class _BrokerFailed(Exception):
    """The broker failed a batch's publish (the transaction was rolled back)."""


class OutboxConsumer:
    """Publishes the rows committed to the outbox ``table`` at ``dsn``
    through ``hub``'s broker (docs/outbox.md).

    ``batch``: rows claimed per partition per transaction; ``poll_interval``:
    seconds between two looks at the table without a notification;
    ``retention``: seconds a published row is kept (marked) before it is
    deleted, 0 to delete it at once; ``partitions``: the table's partition
    count (as given to ``ddl()``; the table's own is followed, with a
    warning, where they differ). ImportError without psycopg; ValueError for
    a bad option or a DSN that cannot be parsed (the message never quotes it).
    """

    def __init__(
        self,
        hub: Hub,
        dsn: str,
        *,
        table: str = DEFAULT_TABLE,
        batch: int = 100,
        poll_interval: float = 1.0,
        retention: float = 0.0,
        partitions: int = DEFAULT_PARTITIONS,
    ) -> None:
        connect_options(dsn)  # ImportError naming the extra, ValueError: now, not in the task
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError("batch must be an integer >= 1")
        if not poll_interval > 0:
            raise ValueError("poll_interval must be > 0")
        if not retention >= 0:
            raise ValueError("retention must be >= 0")
        self.hub = hub
        self.dsn = dsn
        self.table = check_table(table)
        self.batch = batch
        self.poll_interval = float(poll_interval)
        self.retention = float(retention)
        self.partitions = check_partitions(partitions)
        self.stats = OutboxStats()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._waiting = False  # in a wait close() may cut short
        self._failures = 0  # PostgreSQL failures since the connection last worked
        self._next_clean = 0.0
        self._warnings = Warnings(log)

    @property
    def waiting(self) -> bool:
        """True while it waits (for a notification, the next poll or a
        backoff) with nothing claimed: what it found has been published."""
        return self._waiting

    def start(self) -> None:
        """Start consuming (inside a running event loop); again: no-op."""
        if self._task is None and not self._closing:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Stop: let a transaction in flight commit (at most
        :data:`CLOSE_GRACE` seconds), then close the connection, which
        releases the partitions. Rows claimed but not committed go back."""
        self._closing = True
        task = self._task
        if task is None:
            return
        if not self._waiting:
            await asyncio.wait({task}, timeout=CLOSE_GRACE)
        await cancel_and_wait(task)

    # -- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            conn: AsyncConnection[Any] | None = None
            try:
                conn = await psycopg().AsyncConnection.connect(
                    self.dsn, autocommit=True, **connect_options(self.dsn)
                )
                await self._serve(conn)
            except Exception as exc:
                self._failures += 1
                self._failed("postgres", f"PostgreSQL: {_describe(exc)}; reconnecting")
            finally:
                self.stats.connected = False
                self.stats.partitions = 0
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await self._sleep(backoff(max(1, self._failures), BACKOFF_BASE, BACKOFF_CAP))

    async def _serve(self, conn: AsyncConnection[Any]) -> None:
        """Consume on ``conn`` until closing; raises when PostgreSQL fails."""
        count = await claiming.table_partitions(conn, self.table) or self.partitions
        if count != self.partitions:
            self._warnings.warn(
                "setup",
                f"outbox: table {self.table} has {count} partitions, not {self.partitions}: "
                f"following the table's {count}",
            )
        parts = claiming.Partitions(self.table, count)
        await conn.execute(f"LISTEN {self.table}")
        await parts.join(conn)
        self.stats.connected = True
        log.info("outbox: consuming %s", self.table)
        loop = asyncio.get_running_loop()
        next_upkeep = next_poll = loop.time()
        claim_now = True
        broker_failures = 0
        while not self._closing:
            if loop.time() >= next_upkeep:
                held = len(parts.held)
                await self._upkeep(conn, parts)
                self._failures = 0  # the connection works
                next_upkeep = loop.time() + UPKEEP_INTERVAL
                claim_now = claim_now or len(parts.held) > held
            if claim_now or loop.time() >= next_poll:
                next_poll = loop.time() + self.poll_interval
                try:
                    claim_now = await self._pass(conn, parts.held) > 0
                    broker_failures = 0
                except _BrokerFailed as exc:
                    broker_failures += 1
                    self._failed("broker", f"outbox: publishing failed: {exc}; retrying")
                    await self._sleep(backoff(broker_failures, BACKOFF_BASE, BACKOFF_CAP))
                    claim_now = True
            # Busy: only take the notifications that came (psycopg keeps
            # them until asked, so they must not pile up while rows flow).
            wait = 0.0 if claim_now else min(next_poll, next_upkeep) - loop.time()
            claim_now = await self._wait(conn, wait) or claim_now

    async def _upkeep(self, conn: AsyncConnection[Any], parts: claiming.Partitions) -> None:
        await parts.rebalance(conn)
        self.stats.partitions = len(parts.held)
        if self.retention > 0 and time.monotonic() >= self._next_clean:
            deleted = await claiming.clean(conn, self.table, self.retention)
            # Again soon while there is more; else after a tenth of the retention.
            pause = UPKEEP_INTERVAL if deleted >= claiming.CLEANUP_ROWS else self.retention / 10
            self._next_clean = time.monotonic() + min(60.0, pause)
        self.stats.backlog_rows, self.stats.oldest_age = await claiming.backlog(conn, self.table)

    async def _pass(self, conn: AsyncConnection[Any], partitions: list[int]) -> int:
        """One transaction over ``partitions``; the rows it claimed."""
        if not partitions:
            return 0
        async with asyncio.timeout(PASS_TIMEOUT), conn.transaction():
            rows = await claiming.claim(conn, self.table, partitions, self.batch)
            if not rows:
                return 0
            good, errors = self._check(rows)
            if errors:
                await claiming.bury(conn, self.table, errors)
            duplicates = 0
            if good:
                try:
                    results = await self.hub.broker.publish_many(
                        [(c, m) for _, c, m, _ in good], keys=[k for *_, k in good]
                    )
                except Exception as exc:
                    raise _BrokerFailed(_describe(exc)) from exc
                duplicates = sum(1 for r in results if isinstance(r, Duplicate))
                await claiming.finish(conn, self.table, [i for i, *_ in good], self.retention > 0)
        stats = self.stats
        stats.published += len(good)
        stats.duplicates += duplicates
        stats.dead += len(errors)
        self.hub.stats.published += len(good) - duplicates
        self.hub.stats.publish_duplicates += duplicates
        return len(rows)

    def _check(
        self, rows: list[Row]
    ) -> tuple[list[tuple[int, str, dict[str, Any], str]], dict[int, str]]:
        """Rows split into ``(id, channel, message, key)`` to publish and
        ``{id: error}`` for the dead-letter table."""
        good: list[tuple[int, str, dict[str, Any], str]] = []
        errors: dict[int, str] = {}
        for row in rows:
            try:
                good.append((row.id, *message_of(row, self.table, self.hub.broker.check_channel)))
            except ValueError as exc:
                errors[row.id] = str(exc)
                self._warnings.warn(
                    "dead",
                    f"outbox: row {row.id} (channel {row.channel!r}) moved to "
                    f"{dead_table(self.table)}: {exc}",
                )
        return good, errors

    async def _wait(self, conn: AsyncConnection[Any], timeout: float) -> bool:
        """Wait for a notification at most ``timeout`` seconds; True if one came."""
        if self._closing:
            return False
        notified = False
        self._waiting = True
        try:
            notifies = conn.notifies(timeout=max(0.0, timeout), stop_after=1)
            async with contextlib.aclosing(notifies):
                async for _ in notifies:
                    notified = True
        finally:
            self._waiting = False
        return notified

    async def _sleep(self, seconds: float) -> None:
        if self._closing:
            return
        self._waiting = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._waiting = False

    def _failed(self, kind: str, text: str) -> None:
        self.stats.last_error = (time.time(), text)
        if not self._closing:
            self._warnings.warn(kind, text)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__

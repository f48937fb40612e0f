"""Counts across every server process: connections, rates and subscribers.

With the in-memory broker there is one process, and :class:`LocalCounts`
reads its hub. With Redis, :class:`RedisFleet` also shares this process's
counts with the others: every ``interval`` seconds it writes, under the
hash tag ``{PREFIX}`` (one Cluster slot),

====================================  =============================================
``{PREFIX}:procs``                    sorted set: process id -> when its counts expire
``{PREFIX}:proc:ID``                  hash, ``stats``: the totals as JSON
``{PREFIX}:proc:ID:subs``             hash: channel -> local subscribers
====================================  =============================================

each with an expiry of three intervals, so a process that died stops
counting within seconds, and one that stops cleanly removes its keys at
once. Readers add this process's live counts to the others' last ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ..cancelling import cancel_and_wait
from ..hub import Hub
from . import webhook_health

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

log = logging.getLogger("torchannels.server")

#: Seconds a stopping process gives Redis to remove its counts.
STOP_TIMEOUT = 2.0
#: Counters summed over processes (the hub's :class:`~torchannels.stats.Stats`).
COUNTERS = ("published", "delivered", "resets", "slow_dropped", "failed_publishes")


def local_stats(hub: Hub) -> dict[str, Any]:
    """This process's connections by transport, subscriptions and counters."""
    stats = hub.stats
    return {
        "connections": hub.connection_counts(),
        "subscriptions": hub.subscription_count(),
        "published": stats.published,
        "delivered": stats.delivered,
        "resets": stats.resets,
        "slow_dropped": stats.slow_dropped,
        "failed_publishes": hub.broker.failed_publishes,
        "webhooks": None if hub.lifecycle is None else webhook_health.health(hub.lifecycle.stats),
    }


def add_stats(total: dict[str, Any], more: dict[str, Any]) -> None:
    """Add the counts of ``more`` (one process's) into ``total``."""
    for transport, count in dict(more.get("connections") or {}).items():
        if isinstance(count, int):
            total["connections"][transport] = total["connections"].get(transport, 0) + count
    for key in ("subscriptions", *COUNTERS):
        value = more.get(key)
        if isinstance(value, int):
            total[key] += value
    webhook_health.merge(total, more)


class LocalCounts:
    """The counts of this process alone (the in-memory broker)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def start(self) -> None:
        """Begin sharing counts (nothing to share here)."""

    async def stop(self) -> None:
        """Stop sharing counts and withdraw them."""

    async def totals(self) -> dict[str, Any]:
        """Connections, subscriptions and counters summed over every process,
        with ``processes``, how many were counted."""
        return {**local_stats(self.hub), "processes": 1}

    async def subscribers(self, channels: Sequence[str]) -> dict[str, int]:
        """Live subscribers of each of ``channels`` over every process."""
        return {c: self.hub.local_subscribers(c) for c in channels}


class RedisFleet(LocalCounts):
    """This process's counts shared through Redis, and everyone's read back."""

    def __init__(
        self, hub: Hub, client: Redis | RedisCluster, prefix: str, *, interval: float = 2.0
    ) -> None:
        super().__init__(hub)
        self.client = client
        self.id = secrets.token_hex(8)
        self.interval = interval
        self._procs = f"{{{prefix}}}:procs"
        self._head = f"{{{prefix}}}:proc:"
        self._written: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def _stats_key(self, proc: str) -> str:
        return self._head + proc

    def _subs_key(self, proc: str) -> str:
        return self._head + proc + ":subs"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.share()
            except Exception as exc:  # Redis away: the broker reports it; retry
                log.debug("sharing counts failed: %r", exc)
                self._written = {}
            await asyncio.sleep(self.interval)

    async def share(self) -> None:
        """Write this process's counts once (the loop does it every interval)."""
        ttl_ms = max(1, round(self.interval * 3000))
        now = time.time()
        subs = self.hub.local_channels()
        changed = {c: n for c, n in subs.items() if self._written.get(c) != n}
        gone = [c for c in self._written if c not in subs]
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self._procs, {self.id: now + ttl_ms / 1000})
        pipe.zremrangebyscore(self._procs, "-inf", now)
        pipe.hset(self._stats_key(self.id), "stats", json.dumps(local_stats(self.hub)))
        pipe.pexpire(self._stats_key(self.id), ttl_ms)
        pipe.pexpire(self._procs, ttl_ms)
        # Only the changes: a reader never sees a half-written table.
        pipe.exists(self._subs_key(self.id))
        if changed:
            pipe.hset(self._subs_key(self.id), mapping=changed)  # type: ignore[arg-type]
        if gone:
            pipe.hdel(self._subs_key(self.id), *gone)
        pipe.pexpire(self._subs_key(self.id), ttl_ms)
        replies = await pipe.execute()
        # The table was lost (flushed, expired) if it did not exist though
        # something was written before: write all of it again next time.
        self._written = {} if self._written and not replies[5] else subs

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self._procs, self.id)
            pipe.delete(self._stats_key(self.id))
            pipe.delete(self._subs_key(self.id))
            # Bounded: an unreachable Redis must not hold up the shutdown.
            await asyncio.wait_for(pipe.execute(), STOP_TIMEOUT)
        except Exception as exc:  # they expire anyway
            log.debug("withdrawing counts failed: %r", exc)

    async def _others(self) -> list[str]:
        procs = await self.client.zrangebyscore(self._procs, time.time(), "+inf")
        names = [p.decode() for p in cast(list[bytes], procs)]
        return [p for p in names if p != self.id]

    async def totals(self) -> dict[str, Any]:
        try:
            return await self._totals()
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def subscribers(self, channels: Sequence[str]) -> dict[str, int]:
        try:
            return await self._subscribers(channels)
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def _totals(self) -> dict[str, Any]:
        total = await super().totals()
        others = await self._others()
        if others:
            pipe = self.client.pipeline(transaction=False)
            for proc in others:
                pipe.hget(self._stats_key(proc), "stats")
            for blob in await pipe.execute():
                if blob is not None:
                    add_stats(total, json.loads(blob))
                    total["processes"] += 1
        return total

    async def _subscribers(self, channels: Sequence[str]) -> dict[str, int]:
        counts = await super().subscribers(channels)
        others = await self._others()
        if others and channels:
            pipe = self.client.pipeline(transaction=False)
            for proc in others:
                pipe.hmget(self._subs_key(proc), list(channels))
            for values in await pipe.execute():
                for channel, value in zip(channels, values, strict=True):
                    if value is not None:
                        counts[channel] += int(value)
        return counts


def _unavailable(exc: BaseException) -> BaseException:
    """A redis-py error as the broker's error (503 ``broker_unavailable``)."""
    from ..brokers.redis_errors import broker_error, unreachable

    return broker_error(exc, "counts") if unreachable(exc) else exc


def make_counts(hub: Hub) -> LocalCounts:
    """The counts for ``hub``: shared through Redis when its broker is Redis."""
    from ..brokers.memory import MemoryBroker

    if isinstance(hub.broker, MemoryBroker):
        return LocalCounts(hub)
    from ..brokers.redis import RedisBroker

    if isinstance(hub.broker, RedisBroker):
        return RedisFleet(hub, hub.broker.client, hub.broker.prefix)
    return LocalCounts(hub)

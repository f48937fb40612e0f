"""Lifecycle in Redis: the :class:`~.redis.RedisBroker`'s store, shared by
every process on one Redis (or Cluster).

Under the broker's hash tag ``{PREFIX}`` (one Cluster slot):

- ``{PREFIX}:lc:procs``, a sorted set of the known processes, scored by
  their expiry (unix ms);
- ``{PREFIX}:lc:p:PROC``, the set of keys process ``PROC`` holds;
- ``{PREFIX}:lc:n``, a hash: key -> how many processes hold it;
- ``{PREFIX}:lc:s:PROC``, the keys a swept process held that are not
  released yet, and ``{PREFIX}:lc:swept``, the set of such processes;
- ``{PREFIX}:lc:q``, the queue: a Stream, an entry per event (fields
  ``t`` the type, ``f`` the fields JSON), its id the event's;
- ``{PREFIX}:lc:lease``, the sender's lease (its owner, with a TTL);
- ``{PREFIX}:lc:dropped``, events dropped at the queue bound, ever.

Hold, release, sweep, ack and lease are each one Lua script call
(:mod:`.lifecycle_lua`), atomic with the ``XADD`` of the events they make;
each call does bounded work (at most :data:`CHUNK` keys, a sweep at most
:data:`SWEEP_KEYS` releases of :data:`SWEEP_PROCESSES` processes), so a
long sweep is several calls, none of which blocks Redis for long. None of
these keys expires: the holdings of a cluster whose processes all died
are swept, and their off events queued, by the first process to start
again; the queue waits for a sender.

:meth:`RedisLifecycle.wait` blocks on ``XREAD`` after the last event
:meth:`~RedisLifecycle.head` returned, on a connection of the client's pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import lifecycle_lua as lua
from .lifecycle import Hold, LifecycleStore, Queued, QueuedEvent

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

#: Runs a script: (script, keys, args, where) -> its reply.
Run = Callable[[str, list[str], list[Any], str], Awaitable[Any]]

#: Most keys (or ids) one hold, release or ack call takes.
CHUNK = 500
#: Most keys one sweep call releases, and most processes it looks at.
SWEEP_KEYS = 1000
SWEEP_PROCESSES = 10
#: Longest one blocking XREAD of wait() (under any client's socket timeout).
BLOCK_MAX = 1.0


def _ms(t: float) -> str:
    return str(round(t * 1000))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class RedisLifecycle(LifecycleStore):
    """The lifecycle store under ``tag`` (the broker's ``{PREFIX}``), through
    the broker's client: ``run`` runs a script (EVALSHA, loading it when
    Redis lacks it) and ``failed`` turns a redis-py error into the
    broker's."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        tag: str,
        run: Run,
        failed: Callable[[BaseException, str], BaseException],
    ) -> None:
        super().__init__()
        self._client = client
        self._run = run
        self._failed = failed
        self._tag = tag
        self._procs = f"{tag}:lc:procs"
        self._swept = f"{tag}:lc:swept"
        self._queue = f"{tag}:lc:q"
        self._lease = f"{tag}:lc:lease"
        #: The keys and arguments every hold, release and sweep starts with.
        self._common_keys = [f"{tag}:lc:n", self._queue, f"{tag}:lc:dropped"]
        #: The id of the last event head() returned: wait() waits for a later one.
        self._after = "0-0"

    def _held(self, process: str) -> str:
        return f"{self._tag}:lc:p:{process}"

    def _common_args(self) -> list[Any]:
        return [self.queue_max, ",".join(sorted(self.events))]

    async def _command(self, call: Awaitable[Any], where: str) -> Any:
        """A plain command's reply, its failure as the broker's."""
        try:
            return await call
        except Exception as exc:
            raise self._failed(exc, where) from exc

    # -- holdings -----------------------------------------------------------------

    async def hold(self, process: str, holds: Sequence[Hold], expires: float) -> Queued:
        keys = [*self._common_keys, self._procs, self._held(process)]
        done = Queued()
        for start in range(0, max(1, len(holds)), CHUNK):
            args = [*self._common_args(), _bytes(process), _ms(expires)]
            for h in holds[start : start + CHUNK]:
                args += [_bytes(h.key), h.on_type, _bytes(h.on_fields)]
            queued, dropped = await self._run(lua.HOLD, keys, args, "lifecycle hold")
            done += Queued(int(queued), int(dropped))
        return done

    async def release(self, process: str, keys: Sequence[str]) -> Queued:
        names = [*self._common_keys, self._held(process)]
        done = Queued()
        for start in range(0, len(keys), CHUNK):
            args = [*self._common_args(), *map(_bytes, keys[start : start + CHUNK])]
            queued, dropped = await self._run(lua.RELEASE, names, args, "lifecycle release")
            done += Queued(int(queued), int(dropped))
        return done

    async def heartbeat(self, process: str, expires: float) -> bool:
        added = await self._command(
            self._client.zadd(self._procs, {_bytes(process): _ms(expires)}),
            "lifecycle heartbeat",
        )
        return not added

    async def sweep(self, now: float) -> Queued:
        """A script call per :data:`SWEEP_KEYS` keys released (one when
        nobody expired), until no expired or swept process is left."""
        done = Queued()
        candidates: list[bytes] = []
        while True:
            keys = [*self._common_keys, self._procs, self._swept]
            for proc in candidates:
                keys += [self._held(_text(proc)), f"{self._tag}:lc:s:{_text(proc)}"]
            args = [*self._common_args(), _ms(now), SWEEP_KEYS, SWEEP_PROCESSES, *candidates]
            queued, dropped, candidates = await self._run(lua.SWEEP, keys, args, "lifecycle sweep")
            done += Queued(int(queued), int(dropped))
            if not candidates:
                return done

    # -- the queue ----------------------------------------------------------------

    async def head(self, count: int) -> list[QueuedEvent]:
        entries = await self._command(
            self._client.xrange(self._queue, count=count), "lifecycle head"
        )
        events = []
        for entry_id, fields in entries:
            event_id = _text(entry_id)
            ms = int(event_id.partition("-")[0])
            events.append(
                QueuedEvent(event_id, _text(fields[b"t"]), ms / 1000, _text(fields[b"f"]))
            )
        self._after = events[-1].id if events else "0-0"
        return events

    async def ack(self, owner: str, ids: Sequence[str]) -> bool:
        keys = [self._lease, self._queue]
        for start in range(0, max(1, len(ids)), CHUNK):
            args = [_bytes(owner), *ids[start : start + CHUNK]]
            if not await self._run(lua.ACK, keys, args, "lifecycle ack"):
                return False
        return True

    async def length(self) -> int:
        return int(await self._command(self._client.xlen(self._queue), "lifecycle length"))

    async def dropped(self) -> int:
        count = await self._command(self._client.get(self._common_keys[2]), "lifecycle dropped")
        return int(count or 0)

    async def lease(self, owner: str, ttl: float) -> bool:
        args = [_bytes(owner), _ms(ttl)]
        return bool(await self._run(lua.LEASE, [self._lease], args, "lifecycle lease"))

    async def unlease(self, owner: str) -> None:
        await self._run(lua.UNLEASE, [self._lease], [_bytes(owner)], "lifecycle unlease")

    async def wait(self, timeout: float) -> None:
        """XREAD BLOCK after the last event head() returned (any event when
        it returned none), at most :data:`BLOCK_MAX` seconds at a time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            block = max(1, round(min(left, BLOCK_MAX) * 1000))
            got = await self._command(
                self._client.xread({self._queue: self._after}, count=1, block=block),
                "lifecycle wait",
            )
            if got:
                return

"""Lifecycle in one process: the :class:`~.memory.MemoryBroker`'s store.

It follows the rules of :mod:`.lifecycle` exactly as the Redis store
(:mod:`.lifecycle_redis`) does, so both pass one contract suite: per key
the processes holding it, per process its keys and expiry, and the queue
of events, bounded (an event past ``queue_max`` is dropped and counted).
An event's id is ``MS-SEQ`` as a Redis stream entry's: the queueing time
in unix milliseconds (never going back) and a sequence number within it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence

from .lifecycle import Hold, LifecycleStore, Queued, QueuedEvent, off_event


class MemoryLifecycle(LifecycleStore):
    """Holdings and the event queue of one process.

    >>> import asyncio
    >>> from torchannels.brokers.lifecycle import user_hold
    >>> store = MemoryLifecycle()
    >>> store.configure(["user_online"])
    >>> asyncio.run(store.hold("p1", [user_hold("ann")], expires=time.time() + 30))
    Queued(queued=1, dropped=0)
    """

    def __init__(self) -> None:
        super().__init__()
        self._expiry: dict[str, float] = {}  # process -> expires (unix seconds)
        self._held: dict[str, set[str]] = {}  # process -> keys
        self._counts: dict[str, int] = {}  # key -> processes holding it
        self._queue: deque[QueuedEvent] = deque()
        self._last = (0, -1)  # the last id's (ms, seq)
        self._dropped = 0
        self._lease: tuple[str, float] | None = None  # owner, monotonic deadline
        #: Set when an event is queued that the last head() did not return.
        self._more = asyncio.Event()

    # -- holdings -----------------------------------------------------------------

    async def hold(self, process: str, holds: Sequence[Hold], expires: float) -> Queued:
        self._expiry[process] = expires
        held = self._held.setdefault(process, set())
        done = Queued()
        for h in holds:
            if h.key in held:
                continue
            held.add(h.key)
            count = self._counts.get(h.key, 0) + 1
            self._counts[h.key] = count
            if count == 1 and h.on_type in self.events:
                done += self._put(h.on_type, h.on_fields)
        return done

    async def release(self, process: str, keys: Sequence[str]) -> Queued:
        held = self._held.get(process)
        if held is None:
            return Queued()
        return self._release(held, keys)

    def _release(self, held: set[str], keys: Sequence[str] | set[str]) -> Queued:
        done = Queued()
        for key in list(keys):
            if key not in held:
                continue
            held.discard(key)
            count = self._counts[key] - 1
            if count:
                self._counts[key] = count
                continue
            del self._counts[key]
            kind, fields = off_event(key)
            if kind in self.events:
                done += self._put(kind, fields)
        return done

    async def heartbeat(self, process: str, expires: float) -> bool:
        known = process in self._expiry
        self._expiry[process] = expires
        return known

    async def sweep(self, now: float) -> Queued:
        done = Queued()
        for process in [p for p, expires in self._expiry.items() if expires <= now]:
            del self._expiry[process]
            held = self._held.pop(process, set())
            done += self._release(held, held)
        return done

    # -- the queue ----------------------------------------------------------------

    def _put(self, kind: str, fields: str) -> Queued:
        if len(self._queue) >= self.queue_max:
            self._dropped += 1
            return Queued(dropped=1)
        ms = max(round(time.time() * 1000), self._last[0])
        seq = self._last[1] + 1 if ms == self._last[0] else 0
        self._last = (ms, seq)
        self._queue.append(QueuedEvent(f"{ms}-{seq}", kind, ms / 1000, fields))
        self._more.set()
        return Queued(queued=1)

    async def head(self, count: int) -> list[QueuedEvent]:
        events = [self._queue[i] for i in range(min(count, len(self._queue)))]
        if len(events) < len(self._queue):
            self._more.set()
        else:
            self._more.clear()
        return events

    def _leased(self, owner: str) -> bool:
        """``owner`` holds the lease (and it has not expired)."""
        lease = self._lease
        return lease is not None and lease[0] == owner and lease[1] > time.monotonic()

    async def ack(self, owner: str, ids: Sequence[str]) -> bool:
        if not self._leased(owner):
            return False
        gone = set(ids)
        queue = self._queue
        while queue and gone and queue[0].id in gone:  # the usual case: the head
            gone.discard(queue.popleft().id)
        if gone:
            self._queue = deque(e for e in queue if e.id not in gone)
        return True

    async def length(self) -> int:
        return len(self._queue)

    async def dropped(self) -> int:
        return self._dropped

    async def lease(self, owner: str, ttl: float) -> bool:
        lease = self._lease
        if lease is not None and lease[0] != owner and lease[1] > time.monotonic():
            return False
        self._lease = (owner, time.monotonic() + ttl)
        return True

    async def unlease(self, owner: str) -> None:
        if self._lease is not None and self._lease[0] == owner:
            self._lease = None

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._more.wait(), timeout)

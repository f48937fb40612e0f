"""One loop timer for the deadlines of many connections.

Each live connection has a few deadlines (the next keep-alive tick, the
write watchdog, the expiry of its authorization, the cut after ``end``).
An ``asyncio.TimerHandle`` per deadline costs a handle, a ``Context`` and
a bound method each, for every idle connection. The :class:`TimerWheel`
instead keeps each connection, once, in the bucket of its next deadline,
rounded up to :attr:`TimerWheel.resolution` (50 ms), and runs one loop
timer for the earliest bucket. When a bucket is due, each connection in it
is told (:meth:`Timed.on_timer`) and schedules its next deadline itself.

A deadline is never met early, and late by at most the resolution plus
the loop's own lateness.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Protocol


class Timed(Protocol):
    """What a :class:`TimerWheel` schedules."""

    #: The wheel's bookkeeping: the bucket this item is in (None: none).
    timer_slot: int | None

    def on_timer(self, now: float) -> None:
        """A deadline of this item is due (``now``: the loop's time);
        schedule the next one, if any, from here."""


class TimerWheel:
    """Deadlines of many items on one loop timer, in buckets of
    :attr:`resolution` seconds (the loop's clock).

    The wheel binds to the running loop when it is first used; used from
    another loop later (a hub reused across test loops), it starts afresh.
    """

    __slots__ = ("_buckets", "_due", "_handle", "_loop", "resolution")

    def __init__(self, resolution: float = 0.05) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self.resolution = resolution
        #: Items by bucket (a bucket is due at ``slot * resolution``). An
        #: emptied bucket stays until due, so a slot is pushed on the heap
        #: once.
        self._buckets: dict[int, set[Timed]] = {}
        #: The slots of the buckets, earliest first.
        self._due: list[int] = []
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """Items scheduled now."""
        return sum(len(b) for b in self._buckets.values())

    def schedule(self, item: Timed, when: float) -> None:
        """Tell ``item`` at loop time ``when`` (or up to :attr:`resolution`
        later); replaces what ``item`` had scheduled."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._restart(loop)
        slot = math.ceil(when / self.resolution)
        old = item.timer_slot
        if old == slot:
            return
        if old is not None:
            self.cancel(item)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
            heapq.heappush(self._due, slot)
            if self._due[0] == slot:
                self._arm()
        bucket.add(item)
        item.timer_slot = slot

    def cancel(self, item: Timed) -> None:
        """Forget what ``item`` had scheduled, if anything."""
        slot = item.timer_slot
        if slot is None:
            return
        item.timer_slot = None
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.discard(item)

    def _restart(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for bucket in self._buckets.values():
            for item in bucket:
                item.timer_slot = None
        self._buckets.clear()
        self._due.clear()
        self._loop = loop

    def _arm(self) -> None:
        assert self._loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(self._due[0] * self.resolution, self._fire)

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        due: list[tuple[int, set[Timed]]] = []
        heap = self._due
        while heap and heap[0] * self.resolution <= now:
            slot = heapq.heappop(heap)
            due.append((slot, self._buckets.pop(slot)))
        # Items reschedule themselves into new buckets as they are told;
        # one cancelled or moved meanwhile (by another's) is skipped.
        for slot, bucket in due:
            for item in bucket:
                if item.timer_slot != slot:
                    continue
                item.timer_slot = None
                try:
                    item.on_timer(now)
                except Exception as exc:
                    loop.call_exception_handler(
                        {"message": "a timer wheel deadline failed", "exception": exc}
                    )
        if heap and self._handle is None:
            self._arm()

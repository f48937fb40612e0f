"""Broker reads shared by the sessions that ask for the same thing at once.

A burst of joins, or every session re-reading after a resync, asks the
broker for one channel from one position many times over; one read answers
them all. The hub decides which reads may be shared (see ``Hub.read``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .brokers.base import Broker, ReadResult
from .protocol import Position

#: channel, position read from, the channel's attach generation
Key = tuple[str, Position | None, int]


class _Read:
    __slots__ = ("future", "waiters")

    def __init__(self) -> None:
        self.future: asyncio.Future[ReadResult] | None = None
        self.waiters = 0


def retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as seen: its waiters re-raise it."""
    if not future.cancelled():
        future.exception()


class SharedReads:
    """The reads in progress, by key; a read leaves the table the moment it
    completes, and is cancelled when every waiter stopped waiting."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._reads: dict[Key, _Read] = {}

    async def read(self, key: Key) -> ReadResult:
        shared = self._reads.get(key)
        if shared is None:
            shared = self._reads[key] = _Read()
            shared.future = asyncio.ensure_future(self._read_once(key, shared))
            shared.future.add_done_callback(retrieve)
        future = shared.future
        assert future is not None
        shared.waiters += 1
        try:
            return await asyncio.shield(future)
        finally:
            shared.waiters -= 1
            if not shared.waiters and not future.done():
                self._forget(key, shared)
                future.cancel()

    async def _read_once(self, key: Key, shared: _Read) -> ReadResult:
        try:
            return await self.broker.read(key[0], key[1])
        finally:
            self._forget(key, shared)  # before any waiter wakes: none joins it now

    def _forget(self, key: Key, shared: _Read) -> None:
        if self._reads.get(key) is shared:
            del self._reads[key]

"""Presence writes of one process, gathered into one store call per batch.

A join storm attaches thousands of clients at once; one store call each
would take a broker connection each (Redis: its client pool runs out while
Redis idles). :class:`PresenceBatches` gathers the adds and releases made
while the previous batch was in flight (or within one event-loop
iteration) and sends them in one :meth:`~.brokers.presence.PresenceStore.apply`,
at most :data:`MAX_BATCH` entries, one batch in flight at a time; each
caller awaits its own entry's outcome.

The batch, not the caller, announces the joins its adds made, so a caller
that stops waiting (a client that goes at once) loses no join.

:class:`SharedPages` lets the first-page reads of one channel that are in
flight at once share one store read, when no batch was applied since it
began (so a snapshot read after one's own add always shows it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .brokers.presence import (
    Applied,
    Member,
    PresenceAdd,
    PresenceEvent,
    PresencePage,
    PresenceRelease,
    PresenceStore,
)
from .shared_reads import retrieve

log = logging.getLogger("torchannels.presence")

#: Most adds and releases one store call takes.
MAX_BATCH = 1000


class PresenceBatches:
    """The adds and releases waiting for the next store call.

    ``store`` gives the store, ``announce`` publishes the joins a batch made.
    """

    def __init__(
        self, store: Callable[[], PresenceStore], announce: Callable[[PresenceEvent], None]
    ) -> None:
        self._store = store
        self._announce = announce
        self._adds: list[tuple[PresenceAdd, asyncio.Future[bool]]] = []
        self._releases: dict[tuple[str, str], tuple[PresenceRelease, asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        #: How many batches were applied (whatever their outcome).
        self.applied = 0

    def add(self, add: PresenceAdd) -> Awaitable[bool]:
        """Queue ``add``: the awaitable tells whether its user joined, or
        raises the store's error (then the add may not be done)."""
        waiting = self._releases.pop((add.channel, add.identity.client), None)
        if waiting is not None:  # superseded by this add, which comes later
            _resolve(waiting[1], None)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._adds.append((add, future))
        self._kick()
        return asyncio.shield(future)

    def release(self, release: PresenceRelease) -> Awaitable[None]:
        """Queue ``release`` (after any add of the client queued before it)."""
        key = (release.channel, release.client)
        waiting = self._releases.pop(key, None)
        if waiting is not None:
            _resolve(waiting[1], None)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._releases[key] = (release, future)
        self._kick()
        return asyncio.shield(future)

    def _kick(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def drain(self) -> None:
        """Wait until every queued entry went to the store."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._adds or self._releases:
                await asyncio.sleep(0)  # gather what this loop iteration queues
                adds, self._adds = self._adds[:MAX_BATCH], self._adds[MAX_BATCH:]
                releases = []
                for key in list(self._releases)[: MAX_BATCH - len(adds)]:
                    releases.append(self._releases.pop(key))
                await self._apply(adds, releases)
        finally:
            self._task = None

    async def _apply(
        self,
        adds: list[tuple[PresenceAdd, asyncio.Future[bool]]],
        releases: list[tuple[PresenceRelease, asyncio.Future[None]]],
    ) -> None:
        done: Mapping[str, Applied]
        try:
            done = await self._store().apply([a for a, _ in adds], [r for r, _ in releases])
        except Exception as exc:
            done = {a.channel: exc for a, _ in adds} | {r.channel: exc for r, _ in releases}
        except BaseException:  # cancelled (the loop is closing): nobody waits forever
            for _, added in adds:
                added.cancel()
            for _, released in releases:
                released.cancel()
            raise
        finally:
            self.applied += 1
        flags = {c: iter(d) for c, d in done.items() if not isinstance(d, Exception)}
        for add, future in adds:
            outcome = done.get(add.channel)
            if isinstance(outcome, Exception):
                _fail(future, outcome)
                continue
            joined = next(flags.get(add.channel, iter(())), False)
            user = add.identity.user
            if joined and user is not None:
                self._announce(PresenceEvent(add.channel, (Member(user.id, user.info, 1),), ()))
            _resolve(future, joined)
        for release, waiter in releases:
            outcome = done.get(release.channel)
            if isinstance(outcome, Exception):
                _fail(waiter, outcome)
            else:
                _resolve(waiter, None)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
        future.add_done_callback(retrieve)


class SharedPages:
    """First-page reads in flight, by channel and the batch count they began at."""

    def __init__(
        self, read: Callable[[str], Awaitable[PresencePage]], applied: Callable[[], int]
    ) -> None:
        self._read = read
        self._applied = applied
        self._reads: dict[tuple[str, int], asyncio.Future[PresencePage]] = {}

    async def first_page(self, channel: str) -> PresencePage:
        key = (channel, self._applied())
        future = self._reads.get(key)
        if future is None:
            future = self._reads[key] = asyncio.ensure_future(self._read(channel))
            future.add_done_callback(lambda f: self._forget(key, f))
        return await asyncio.shield(future)

    def _forget(self, key: tuple[str, int], future: asyncio.Future[PresencePage]) -> None:
        retrieve(future)
        if self._reads.get(key) is future:
            del self._reads[key]

"""Presence in one process: the :class:`~.memory.MemoryBroker`'s store.

It follows the same rules as the Redis store (:mod:`.presence_redis`), so
both pass one contract suite. Per channel it keeps each present client's
user and expiry, each user's client count and info, the users sorted (for
paging), and a heap of expiries, so a sweep costs O(log n) per client it
removes and counts cost O(1).

A read (``counts``, ``page``) removes the clients expired at its time, so
it is exact; the users who left that way are kept as *pending leaves*,
returned by the next ``sweep`` or ``remove`` (so every leave is announced
once), unless the user comes back first (then there is no leave and no
join).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from ..identity import Identity
from .presence import Member, PresencePage, PresenceStore, check_limit


class _Present:
    __slots__ = ("clients", "counts", "expiries", "info", "pending", "users")

    def __init__(self) -> None:
        self.clients: dict[str, tuple[str | None, float]] = {}  # client -> (user, expires)
        self.counts: dict[str, int] = {}  # user -> clients present
        self.info: dict[str, Mapping[str, Any] | None] = {}
        self.users: list[str] = []  # sorted
        self.expiries: list[tuple[float, str]] = []  # a heap; stale entries are skipped
        self.pending: set[str] = set()  # leaves a read found, for the next sweep

    def add_user(self, user: str) -> bool:
        """Count one more client of ``user``; True when this is a join."""
        count = self.counts.get(user, 0) + 1
        self.counts[user] = count
        if count > 1:
            return False
        bisect.insort(self.users, user)
        if user in self.pending:  # gone and back before anybody announced it
            self.pending.discard(user)
            return False
        return True

    def drop(self, client: str) -> str | None:
        """Remove ``client``; its user when that was the user's last client."""
        user, _ = self.clients.pop(client)
        if user is None:
            return None
        count = self.counts[user] - 1
        if count:
            self.counts[user] = count
            return None
        del self.counts[user]
        self.info.pop(user, None)
        del self.users[bisect.bisect_left(self.users, user)]
        return user

    def expire(self, now: float) -> list[str]:
        """Remove the clients expired at ``now``; the users who left."""
        left: list[str] = []
        heap = self.expiries
        while heap and heap[0][0] <= now:
            expires, client = heapq.heappop(heap)
            present = self.clients.get(client)
            if present is not None and present[1] == expires:
                user = self.drop(client)
                if user is not None:
                    left.append(user)
        return left

    def set_expiry(self, client: str, user: str | None, expires: float) -> None:
        self.clients[client] = (user, expires)
        heapq.heappush(self.expiries, (expires, client))
        if len(self.expiries) > 2 * len(self.clients) + 64:  # drop the stale entries
            self.expiries = [(e, c) for c, (_, e) in self.clients.items()]
            heapq.heapify(self.expiries)

    def take_pending(self, left: list[str]) -> list[str]:
        if self.pending:
            left = sorted(self.pending) + left
            self.pending.clear()
        return left


class MemoryPresence(PresenceStore):
    """Who is present in each channel of one process.

    >>> import asyncio
    >>> from torchannels.identity import Identity, User
    >>> store = MemoryPresence()
    >>> me = Identity("c1", User("ann"), "websocket", 0.0)
    >>> asyncio.run(store.add("room", me, expires=30.0))
    True
    """

    def __init__(self) -> None:
        self._channels: dict[str, _Present] = {}

    def _get(self, channel: str) -> _Present:
        present = self._channels.get(channel)
        if present is None:
            present = self._channels[channel] = _Present()
        return present

    def _forget_if_empty(self, channel: str, present: _Present) -> None:
        if not present.clients and not present.pending:
            self._channels.pop(channel, None)

    async def add(self, channel: str, identity: Identity, expires: float) -> bool:
        present = self._get(channel)
        client = identity.client
        user = identity.user.id if identity.user is not None else None
        old = present.clients.get(client)
        joined = False
        if old is None or old[0] != user:
            if old is not None:  # the same client as another user: it moves
                gone = present.drop(client)
                if gone is not None:
                    present.pending.add(gone)
            if user is not None:
                joined = present.add_user(user)
        if identity.user is not None:
            present.info[identity.user.id] = identity.user.info
        present.set_expiry(client, user, expires)
        return joined

    async def release(self, channel: str, client: str, expires: float) -> None:
        present = self._channels.get(channel)
        if present is not None and client in present.clients:
            present.set_expiry(client, present.clients[client][0], expires)

    async def heartbeat(self, entries: Mapping[str, Sequence[str]], expires: float) -> None:
        for channel, clients in entries.items():
            present = self._channels.get(channel)
            if present is None:
                continue
            for client in clients:
                old = present.clients.get(client)
                if old is not None and old[1] < expires:
                    present.set_expiry(client, old[0], expires)

    async def sweep(self, channel: str, now: float) -> list[str]:
        present = self._channels.get(channel)
        if present is None:
            return []
        left = present.take_pending(present.expire(now))
        self._forget_if_empty(channel, present)
        return left

    async def remove(self, channel: str, clients: Sequence[str]) -> list[str]:
        present = self._channels.get(channel)
        if present is None:
            return []
        left: list[str] = []
        for client in clients:
            if client in present.clients:
                user = present.drop(client)
                if user is not None:
                    left.append(user)
        left = present.take_pending(left)
        self._forget_if_empty(channel, present)
        return left

    def _read(self, channel: str, now: float) -> _Present | None:
        present = self._channels.get(channel)
        if present is not None:
            present.pending.update(present.expire(now))
        return present

    async def counts(self, channel: str, now: float) -> tuple[int, int]:
        present = self._read(channel, now)
        if present is None:
            return 0, 0
        return len(present.clients), len(present.counts)

    async def page(self, channel: str, after: str | None, limit: int, now: float) -> PresencePage:
        check_limit(limit)
        present = self._read(channel, now)
        if present is None:
            return PresencePage([], None, 0, 0)
        users = present.users
        start = 0 if after is None else bisect.bisect_right(users, after)
        chosen = users[start : start + limit]
        members = [Member(u, present.info.get(u), present.counts[u]) for u in chosen]
        more = start + limit < len(users)
        return PresencePage(
            members, chosen[-1] if more else None, len(present.clients), len(present.counts)
        )

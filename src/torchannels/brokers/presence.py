"""The presence seam: who is in a channel, kept by the broker's store.

Presence is keyed by user: one member per user per channel, counting that
user's clients (connections). A client is present until an ``expires``
time: live clients are kept alive by heartbeats, and a client that went
(released) stays present for a grace period, so a reconnect, a reload or a
transport step-up within it makes no leave and no join. A sweep removes
the clients expired at a time and says which users left; it is atomic, so
when several processes sweep the same channel at once, each leave is
returned to exactly one of them, which announces it.

:class:`PresenceEvent` carries joins and leaves between processes, through
the broker's live delivery, in order with the channel's publications
(:meth:`~.base.Broker.publish_presence`).

The in-memory store is :class:`~.presence_memory.MemoryPresence`, the
Redis one :class:`~.presence_redis.RedisPresence`; both pass the same
contract tests (tests/test_presence_contract.py).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..identity import Identity

#: The most members one page holds.
MAX_PAGE = 1000


def check_limit(limit: int) -> None:
    """Raise ValueError unless ``limit`` is a page size, 1 to :data:`MAX_PAGE`."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1 to {MAX_PAGE}, not {limit}")


@dataclass(frozen=True, slots=True)
class Member:
    """One user in a channel's presence."""

    user: str
    info: Mapping[str, Any] | None
    #: How many of the user's clients are present (live or in grace).
    clients: int


@dataclass(frozen=True, slots=True)
class PresencePage:
    """A page of a channel's members and the counts of the whole channel."""

    #: Sorted by user id (code point order), at most the page's limit.
    members: list[Member]
    #: The last user id of this page when more follow, else None.
    next: str | None
    clients: int
    users: int


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """Joins and leaves of one channel; one per store call that changed users.

    ``Member.clients`` is 1 for a join; ``leaves`` are user ids.
    """

    channel: str
    joins: tuple[Member, ...]
    leaves: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresenceAdd:
    """One :meth:`PresenceStore.add` of a batch (:meth:`PresenceStore.apply`)."""

    channel: str
    identity: Identity
    expires: float


@dataclass(frozen=True, slots=True)
class PresenceRelease:
    """One :meth:`PresenceStore.release` of a batch (:meth:`PresenceStore.apply`)."""

    channel: str
    client: str
    expires: float


#: What :meth:`PresenceStore.apply` did in one channel: a join flag per add
#: (in order), or the error that failed the channel's part of the batch.
Applied = list[bool] | Exception


class PresenceStore(abc.ABC):
    """Who is present in each channel, shared by every process of a broker.

    Times are unix times (seconds). A client expired at ``now`` is gone for
    every read at ``now``, swept or not, so reads are exact even when no
    process is sweeping the channel.
    """

    @abc.abstractmethod
    async def add(self, channel: str, identity: Identity, expires: float) -> bool:
        """Add or refresh one client until ``expires``. True when this made
        its user join (the user had no client present); anonymous clients
        never make a join."""

    @abc.abstractmethod
    async def release(self, channel: str, client: str, expires: float) -> None:
        """The client went: it stays present until ``expires`` (the grace),
        then a sweep removes it. A client not present is ignored."""

    @abc.abstractmethod
    async def heartbeat(self, entries: Mapping[str, Sequence[str]], expires: float) -> None:
        """Extend the clients of each channel (channel -> live client ids)
        to ``expires``; clients no longer present stay gone."""

    @abc.abstractmethod
    async def sweep(self, channel: str, now: float) -> list[str]:
        """Remove the clients expired at ``now``; return the users whose last
        client went (the leaves). Atomic: two processes sweeping at once never
        both return the same leave."""

    @abc.abstractmethod
    async def remove(self, channel: str, clients: Sequence[str]) -> list[str]:
        """Remove ``clients`` at once (graceful shutdown); return the users
        that left."""

    @abc.abstractmethod
    async def counts(self, channel: str, now: float) -> tuple[int, int]:
        """``(clients, users)`` present at ``now``: O(1) or O(log n), never a
        scan of the members."""

    @abc.abstractmethod
    async def page(self, channel: str, after: str | None, limit: int, now: float) -> PresencePage:
        """Up to ``limit`` (1 to :data:`MAX_PAGE`, else ValueError) members
        with a user id after ``after`` (None: from the first), sorted by user
        id, and the channel's counts."""

    async def apply(
        self, adds: Sequence[PresenceAdd], releases: Sequence[PresenceRelease]
    ) -> dict[str, Applied]:
        """Many adds and releases, across channels, in one call: in each
        channel the adds in order, then the releases, as :meth:`add` and
        :meth:`release` would do them. Returns, per channel named, the join
        flags of its adds in order, or the exception its part failed with
        (other channels' parts may have been done). Stores make this one
        round trip (Redis: one script per channel, all pipelined); this
        default (the memory store's) calls :meth:`add` and :meth:`release`
        one by one."""
        done: dict[str, Applied] = {}
        for channel, (mine, gone) in by_channel(adds, releases).items():
            try:
                done[channel] = [await self.add(channel, a.identity, a.expires) for a in mine]
                for r in gone:
                    await self.release(channel, r.client, r.expires)
            except Exception as exc:
                done[channel] = exc
        return done


def by_channel(
    adds: Sequence[PresenceAdd], releases: Sequence[PresenceRelease]
) -> dict[str, tuple[list[PresenceAdd], list[PresenceRelease]]]:
    """A batch's adds and releases per channel, each in order."""
    parts: dict[str, tuple[list[PresenceAdd], list[PresenceRelease]]] = {}
    for add in adds:
        parts.setdefault(add.channel, ([], []))[0].append(add)
    for release in releases:
        parts.setdefault(release.channel, ([], []))[1].append(release)
    return parts

"""The hub's side of presence: this process's clients in presence channels.

The broker's :class:`~.brokers.presence.PresenceStore` holds who is present
across processes; this module keeps it true for the clients of this process:

- a live attach adds its client until ``now + presence_ttl`` (adds and
  releases go to the store in batches: :mod:`.presence_batch`), and a
  heartbeat every ``presence_ttl / 3`` extends every live client of this
  process in one call; a detach releases the client until
  ``now + presence_grace``, so a reconnect within the grace makes no leave
  and no join. A poll request adds its client until ``now + presence_grace``.
- a sweeper, once a second, sweeps each presence channel that has local
  clients (live or in grace); the store's sweep is atomic, so the process
  whose sweep removed a user's last client is the one that announces the
  leave. Joins are announced by the process whose ``add`` made them.
- :meth:`HubPresence.close` (graceful shutdown) removes this process's
  clients at once and announces the leaves.

Joins and leaves travel between processes as
:class:`~.brokers.presence.PresenceEvent` through the broker's live
delivery. For channels with ``join_leave`` the hub gathers them per channel
(:class:`Coalescer`) and sends at most one ``presence`` frame per channel
per ``presence_coalesce`` seconds to every local subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import frames as F
from .brokers.presence import (
    MAX_PAGE,
    PresenceAdd,
    PresenceEvent,
    PresencePage,
    PresenceRelease,
)
from .cancelling import cancel_and_wait
from .errors import INVALID_LIMIT, BadRequest
from .frames import Frame
from .identity import Identity
from .presence_batch import PresenceBatches, SharedPages

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("torchannels.presence")

#: Seconds between sweeps of each presence channel with local clients.
SWEEP_INTERVAL = 1.0
#: Members in the ``subscribed`` frame's snapshot (the first page).
SNAPSHOT_LIMIT = 100
#: Most members one page read may ask for.
MAX_LIMIT = MAX_PAGE


def check_page_limit(limit: object) -> int:
    """``limit`` if it is an integer 1-1000; BadRequest ``invalid_limit``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


class Coalescer:
    """Joins and leaves of one channel waiting for the next frame.

    Within one frame a user is in joins or in leaves, never both: a join
    then a leave inside the window cancel out, and so do a leave then a join.

    >>> c = Coalescer()
    >>> c.join("ann", None); c.join("bob", {"n": 1}); c.leave("ann"); c.leave("cy")
    >>> c.frame("room").envelope
    b'{"type":"presence","channel":"room","joins":[{"user":"bob","info":{"n":1}}],"leaves":[{"user":"cy"}]}'
    """

    __slots__ = ("joins", "leaves")

    def __init__(self) -> None:
        self.joins: dict[str, Mapping[str, Any] | None] = {}
        self.leaves: dict[str, None] = {}

    def join(self, user: str, info: Mapping[str, Any] | None) -> None:
        if user in self.leaves:
            del self.leaves[user]
        else:
            self.joins[user] = info

    def leave(self, user: str) -> None:
        if user in self.joins:
            del self.joins[user]
        else:
            self.leaves[user] = None

    def frame(self, channel: str) -> Frame | None:
        """The ``presence`` frame, or None when everything cancelled out."""
        if not self.joins and not self.leaves:
            return None
        joins = [{"user": user, "info": info} for user, info in self.joins.items()]
        return F.presence(channel, joins, list(self.leaves))


def page_body(page: PresencePage, cursor: Callable[[str], str]) -> dict[str, Any]:
    """A page as the wire shows it (``next`` signed by ``cursor``)."""
    return {
        "members": [{"user": m.user, "info": m.info, "clients": m.clients} for m in page.members],
        "next": None if page.next is None else cursor(page.next),
        "clients": page.clients,
        "users": page.users,
    }


class HubPresence:
    """This process's clients in presence channels (one per :class:`Hub`)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: channel -> client -> live attachments of it here.
        self.live: dict[str, dict[str, int]] = {}
        #: channel -> client -> when its grace ends (released or polled).
        self.grace: dict[str, dict[str, float]] = {}
        self._pending: dict[str, Coalescer] = {}
        self._flush: dict[str, asyncio.TimerHandle] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._closed = False
        self.batches = PresenceBatches(lambda: self.store, self._announce)
        self._pages = SharedPages(self._first_page, lambda: self.batches.applied)

    @property
    def store(self) -> Any:
        return self.hub.broker.presence

    def enabled(self, channel: str) -> bool:
        return self.hub.channel_options.get(channel).presence

    def _start(self) -> None:
        if not self._loops and not self._closed:
            self._loops = [
                asyncio.ensure_future(self._heartbeats()),
                asyncio.ensure_future(self._sweeps()),
            ]

    # -- clients ------------------------------------------------------------------

    def add(self, channel: str, identity: Identity, *, live: bool) -> Awaitable[None]:
        """Make ``identity`` present in ``channel``: live (until released,
        kept by heartbeats) or for one poll request (until the grace ends).

        Registered here at once, so a :meth:`release` that comes before the
        returned awaitable runs still finds the client; the awaitable stores it.
        """
        settings = self.hub.settings
        client = identity.client
        now = time.time()
        if live:
            clients = self.live.setdefault(channel, {})
            clients[client] = clients.get(client, 0) + 1
            expires = now + settings.presence_ttl
        else:
            expires = now + settings.presence_grace
            self.grace.setdefault(channel, {})[client] = expires
        self._start()
        return self._add(channel, identity, expires, live)

    def _announce(self, event: PresenceEvent) -> None:
        self.hub.broker.publish_presence(event)

    async def _add(self, channel: str, identity: Identity, expires: float, live: bool) -> None:
        client = identity.client
        await self.batches.add(PresenceAdd(channel, identity, expires))  # announces a join
        if live and client not in self.live.get(channel, {}):
            await self._release(channel, client)  # released while it was being added

    def release(self, channel: str, client: str) -> None:
        """One live attachment of ``client`` ended: when it was the last,
        the client stays present for the grace, then the sweeper removes it."""
        clients = self.live.get(channel)
        if clients is None or client not in clients:
            return
        clients[client] -= 1
        if clients[client] > 0:
            return
        del clients[client]
        if not clients:
            del self.live[channel]
        self.hub.spawn(self._release(channel, client))

    async def _release(self, channel: str, client: str) -> None:
        expires = time.time() + self.hub.settings.presence_grace
        self.grace.setdefault(channel, {})[client] = expires
        await self.batches.release(PresenceRelease(channel, client, expires))

    # -- loops --------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            ttl = self.hub.settings.presence_ttl
            await asyncio.sleep(ttl / 3)
            entries = {c: list(clients) for c, clients in self.live.items() if clients}
            if not entries:
                continue
            try:
                await self.store.heartbeat(entries, time.time() + ttl)
            except Exception as exc:
                log.warning("presence heartbeat failed: %s", exc)

    async def _sweeps(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            await self.sweep()

    async def sweep(self) -> None:
        """Sweep every presence channel with local clients; announce leaves."""
        now = time.time()
        for channel in {*self.grace, *self.live}:
            await self._announce_leaves(channel, self.store.sweep(channel, now), "swept")
        # Graces that ended by ``now`` were acted on by that sweep: forget them.
        for channel, graced in list(self.grace.items()):
            for client, ends in list(graced.items()):
                if ends <= now:
                    del graced[client]
            if not graced:
                del self.grace[channel]

    async def _announce_leaves(
        self, channel: str, leaves: Awaitable[list[str]], doing: str
    ) -> None:
        """Publish the leaves a sweep or removal returns (they are returned
        to one process only, which announces them)."""
        try:
            left = await leaves
        except Exception as exc:
            log.warning("presence of %r not %s: %s", channel, doing, exc)
            return
        if left:
            self.hub.broker.publish_presence(PresenceEvent(channel, (), tuple(left)))

    async def close(self) -> None:
        """Graceful shutdown: remove this process's clients at once and
        announce the leaves (before the broker closes)."""
        self._closed = True
        for task in self._loops:
            await cancel_and_wait(task)
        await self.batches.drain()
        channels = set(self.live) | set(self.grace)
        for channel in channels:
            clients = [*self.live.get(channel, {}), *self.grace.get(channel, {})]
            await self._announce_leaves(channel, self.store.remove(channel, clients), "removed")
        self.live.clear()
        self.grace.clear()
        for handle in self._flush.values():
            handle.cancel()
        self._flush.clear()

    # -- join/leave frames ----------------------------------------------------------

    def on_event(self, event: PresenceEvent) -> None:
        """An event from the broker: gather it for the channel's next frame."""
        channel = event.channel
        if not self.hub.channel_options.get(channel).join_leave:
            return
        pending = self._pending.get(channel)
        if pending is None:
            pending = self._pending[channel] = Coalescer()
        for member in event.joins:
            pending.join(member.user, member.info)
        for user in event.leaves:
            pending.leave(user)
        if channel not in self._flush:
            delay = self.hub.settings.presence_coalesce
            loop = asyncio.get_running_loop()
            self._flush[channel] = loop.call_later(delay, self._send, channel)

    def _send(self, channel: str) -> None:
        self._flush.pop(channel, None)
        pending = self._pending.pop(channel, None)
        frame = pending.frame(channel) if pending is not None else None
        if frame is not None:
            self.hub.deliver_frame(channel, frame)

    # -- reads --------------------------------------------------------------------

    async def page(self, channel: str, after: str | None, limit: int) -> PresencePage:
        page: PresencePage = await self.store.page(channel, after, limit, time.time())
        return page

    async def _first_page(self, channel: str) -> PresencePage:
        return await self.page(channel, None, SNAPSHOT_LIMIT)

    async def counts(self, channel: str) -> tuple[int, int]:
        counts: tuple[int, int] = await self.store.counts(channel, time.time())
        return counts

    async def snapshot(self, channel: str) -> dict[str, Any]:
        """The ``subscribed`` frame's ``presence``: the first page and the
        counts (snapshots in flight at once share one read)."""
        page = await self._pages.first_page(channel)
        return page_body(page, self.hub.page_cursors.sign)

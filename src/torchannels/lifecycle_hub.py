"""The hub's side of the lifecycle webhooks: what this process holds.

A session that subscribes makes this process hold the channels it serves
(``channel_vacated`` keys), its user (``user_offline``) and, in presence
channels, the user as a member (``member_left``): only the kinds whose
events are configured. The store (:mod:`.brokers.lifecycle`) counts the
processes holding each key and queues the on and off events.

Here, per key, the live holds of this process are counted. When the count
falls to zero the key stays held for the presence grace, so a reload, a
reconnect or a transport step-up within it (to this process or another)
makes no event; a polling request holds its keys for the grace after it.
Writes to the store go one call at a time, in order (holds and releases
gathered while the previous call was in flight).

Every ``presence_ttl / 3`` the process heartbeats its expiry,
``presence_ttl - SWEEP`` ahead; every :data:`SWEEP`
seconds it sweeps the store, so the keys of a process that was killed are
released, by whichever process sweeps first, at most ``presence_ttl`` after
its last heartbeat. A process the store forgot (swept after a long pause,
or Redis lost its data) holds its keys again.

On a graceful shutdown the process moves its expiry to the end of the
grace and stops: its clients that reconnect to another process within it
make no event, and the others' sweeps release the rest.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .brokers.lifecycle import (
    Hold,
    LifecycleStore,
    Queued,
    channel_hold,
    member_hold,
    user_hold,
)
from .cancelling import cancel_and_wait
from .identity import Identity
from .webhook_sender import WebhookSender
from .webhook_stats import WebhookStats

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("torchannels.webhooks")

#: Seconds between two sweeps (and grace checks) of this process.
SWEEP = 0.5
#: Seconds between two warnings about dropped events.
WARN_EVERY = 60.0


def webhooks(
    hub: Hub,
    url: str,
    secret: str,
    events: Iterable[str],
    *,
    retry_for: float,
    timeout: float,
    queue_max: int,
) -> HubLifecycle:
    """The lifecycle of ``hub`` with its sender (see :meth:`Hub.enable_webhooks`)."""
    store = hub.broker.lifecycle
    store.configure(events, queue_max)
    process = secrets.token_hex(8)
    sender = WebhookSender(
        store,
        url,
        secret,
        stats=WebhookStats(),
        owner=process,
        timeout=timeout,
        retry_for=retry_for,
    )
    return HubLifecycle(hub, store, sender, process)


class HubLifecycle:
    """This process's holdings (one per :class:`Hub`, with webhooks on)."""

    def __init__(
        self, hub: Hub, store: LifecycleStore, sender: WebhookSender, process: str
    ) -> None:
        self.hub = hub
        self.store = store
        #: Sends the queued events (started and closed with this).
        self.sender = sender
        self.stats: WebhookStats = sender.stats
        #: This process in the store (and the sender's lease owner).
        self.process = process
        events = store.events
        self._channels = bool(events & {"channel_occupied", "channel_vacated"})
        self._users = bool(events & {"user_online", "user_offline"})
        self._members = bool(events & {"member_joined", "member_left"})
        #: key -> live holds here.
        self._live: dict[str, int] = {}
        #: key -> when its grace ends (no live hold here).
        self._grace: dict[str, float] = {}
        #: Keys this process holds in the store (or has asked to), and how.
        self._held: dict[str, Hold] = {}
        self._ops: list[tuple[bool, list[Hold]]] = []
        #: A hold failed: the next heartbeat writes every hold again.
        self._stale = False
        #: Releases that failed, tried again at the next sweep.
        self._unreleased: list[Hold] = []
        self._writer: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._closed = False
        self._warned = 0.0

    # -- what a session holds -------------------------------------------------------

    def holds(
        self, identity: Identity, channels: Iterable[str], present: Iterable[str], *, user: bool
    ) -> dict[str | None, list[Hold]]:
        """The holds of ``identity`` subscribed to ``channels`` (``present``:
        those with presence) by channel, with its user's own (under None)
        if ``user``; only the kinds whose events are configured."""
        person = identity.user if self._users or self._members else None
        members = set(present) if person is not None and self._members else set()
        out: dict[str | None, list[Hold]] = {}
        for channel in channels:
            holds = [channel_hold(channel)] if self._channels else []
            if channel in members:
                assert person is not None
                holds.append(member_hold(channel, person.id, person.info))
            if holds:
                out[channel] = holds
        if person is not None and user and self._users:
            out[None] = [user_hold(person.id)]
        return out

    def enter(self, holds: Sequence[Hold], *, live: bool) -> None:
        """Hold ``holds``: live (until :meth:`leave`) or, for a polling
        request, until the grace after now."""
        if not holds or self._closed:
            return
        self.start()
        grace_ends = time.time() + self.hub.settings.presence_grace
        fresh: list[Hold] = []
        for hold in holds:
            key = hold.key
            if live:
                self._live[key] = self._live.get(key, 0) + 1
                self._grace.pop(key, None)
            elif key not in self._live:
                self._grace[key] = max(self._grace.get(key, 0.0), grace_ends)
            if key not in self._held:
                self._held[key] = hold
                fresh.append(hold)
        if fresh:
            self._write(True, fresh)

    def leave(self, keys: Iterable[str]) -> None:
        """One live hold of each of ``keys`` ended: a key with none left here
        is released once the grace has passed with no new hold."""
        grace_ends = time.time() + self.hub.settings.presence_grace
        for key in keys:
            count = self._live.get(key)
            if count is None:
                continue
            if count > 1:
                self._live[key] = count - 1
                continue
            del self._live[key]
            self._grace[key] = grace_ends

    # -- store writes, in order -----------------------------------------------------

    def _write(self, hold: bool, holds: list[Hold]) -> None:
        if self._ops and self._ops[-1][0] == hold:
            self._ops[-1][1].extend(holds)
        else:
            self._ops.append((hold, holds))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._ops:
            hold, holds = self._ops.pop(0)
            try:
                if hold:
                    queued = await self.store.hold(self.process, holds, self._expiry())
                else:
                    queued = await self.store.release(self.process, [h.key for h in holds])
            except Exception as exc:
                # Tried again: holds (all of them) at the next heartbeat,
                # releases at the next sweep.
                log.warning("webhook holdings not written: %s", exc)
                if hold:
                    self._stale = True
                else:
                    self._unreleased.extend(holds)
                continue
            self._count(queued)

    def _expiry(self) -> float:
        return time.time() + self.hub.settings.presence_ttl - SWEEP

    def _count(self, queued: Queued) -> None:
        self.stats.queued += queued.queued
        if queued.dropped:
            self.stats.dropped["queue_full"] += queued.dropped
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY:
                self._warned = now
                log.warning(
                    "webhook queue full (%d events): %d events dropped",
                    self.store.queue_max,
                    queued.dropped,
                )

    # -- loops ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender, the heartbeat and sweep loops (once, in a
        running loop)."""
        if not self._loops and not self._closed:
            self.sender.start()
            self._loops = [
                asyncio.ensure_future(self._heartbeats()),
                asyncio.ensure_future(self._sweeps()),
            ]

    async def _heartbeats(self) -> None:
        while True:
            try:
                known = await self.store.heartbeat(self.process, self._expiry())
            except Exception as exc:
                log.warning("webhook heartbeat failed: %s", exc)
                known = True
            if not known or self._stale:
                self._stale = False
                if self._held:
                    log.info("webhook holdings written again (%d keys)", len(self._held))
                    self._write(True, list(self._held.values()))
            await asyncio.sleep(self.hub.settings.presence_ttl / 3)

    async def _sweeps(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            self._release_ended(time.time())
            try:
                self._count(await self.store.sweep(time.time()))
            except Exception as exc:
                log.warning("webhook sweep failed: %s", exc)

    def _release_ended(self, now: float) -> None:
        """Release the keys whose grace ended, and those whose release failed
        (unless held again meanwhile)."""
        ended = [key for key, ends in self._grace.items() if ends <= now]
        for key in ended:
            del self._grace[key]
        releases = [h for h in self._unreleased if h.key not in self._held]
        self._unreleased.clear()
        releases.extend(self._held.pop(key) for key in ended if key in self._held)
        if releases:
            self._write(False, releases)

    async def close(self) -> None:
        """Graceful shutdown: write what is pending, then stay alive in the
        store only for the grace (see the module doc). Never raises."""
        self._closed = True
        await self.sender.close()
        for task in self._loops:
            await cancel_and_wait(task)
        if self._writer is not None:
            await asyncio.wait([self._writer])
        try:
            await self.store.heartbeat(self.process, time.time() + self.hub.settings.presence_grace)
        except Exception as exc:
            log.warning("webhook holdings not handed over: %s", exc)

"""The embedded in-memory broker: the default, one process, no dependencies.

Each channel has the epoch that was current when it was created. A new
process starts with a new epoch, so every client that resumes across a
restart gets an honest reset. A channel idle (no publish, no set_state) for
its history TTL loses its history and state but keeps its position (it
is *dormant*) until its ``meta_ttl``; then it is forgotten, and the
broker's current epoch changes when it forgets any, so a channel created
again never reuses an epoch whose offsets a client may hold.

A subscriber reading a channel creates nothing (the answer is the current
epoch at offset 0); only publishers create channels, at most
``channel_limit`` of them, dormant ones included: a publish that would
create one more forgets the dormant channels idle longest first.

Idempotency keys (:mod:`.idempotency`) are remembered for
``idempotency_window`` seconds, at most ``idempotency_max`` of them (the
oldest go first); a forgotten channel's go with it.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ChannelLimitError
from ..frames import Draft, Duplicate, Publication
from ..protocol import Position, check_idempotency_key
from .base import (
    Broker,
    ChannelInfo,
    HistoryPolicy,
    Listener,
    ReadResult,
    all_or_first_failure,
    check_unbroken,
    plan_read,
)
from .idempotency import DEFAULT_MAX, DEFAULT_WINDOW, KeyRecords, check_keys
from .presence import PresenceEvent
from .presence_memory import MemoryPresence

log = logging.getLogger("torchannels.broker")


def new_epoch() -> str:
    """A fresh random epoch (8 lowercase hex digits)."""
    return secrets.token_hex(4)


class _Channel:
    __slots__ = ("epoch", "history", "stale_warned", "state", "state_at", "top", "touched")

    def __init__(self, epoch: str, now: float) -> None:
        self.epoch = epoch
        self.top = 0
        self.history: deque[Publication] = deque()
        self.state: list[Publication] | None = None
        self.state_at = 0  # the offset the state stands for
        self.stale_warned = False
        self.touched = now  # the last publish or set_state


class MemoryBroker(Broker):
    """History and delivery inside one process.

    >>> broker = MemoryBroker(HistoryPolicy(size=100, ttl=600))
    >>> broker.publish_nowait("news", {"text": "hi"}).offset
    1
    """

    def __init__(
        self,
        history: HistoryPolicy | None = None,
        *,
        channel_limit: int = 100_000,
        clock: Callable[[], float] = time.time,
        idempotency_window: float = DEFAULT_WINDOW,
        idempotency_max: int = DEFAULT_MAX,
    ) -> None:
        super().__init__(history, clock=clock)
        if channel_limit < 1:
            raise ValueError("channel_limit must be positive")
        self.epoch = new_epoch()
        #: Channels this broker holds at most; a publish creating one more
        #: raises :class:`~torchannels.errors.ChannelLimitError`.
        self.channel_limit = channel_limit
        self._channels: dict[str, _Channel] = {}
        #: The channels' names sorted, for listing; None after a change.
        self._sorted: list[str] | None = None
        self._listeners: dict[str, list[Listener]] = {}
        self._next_sweep = clock()
        self._presence = MemoryPresence()
        #: The idempotency keys of recent publishes (:mod:`.idempotency`).
        self.idempotency = KeyRecords(idempotency_window, idempotency_max)

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    # -- synchronous core (the seed's ``send`` is synchronous) -----------------

    def publish_nowait(self, channel: str, message: dict[str, Any]) -> Publication:
        """Publish at once and return the publication (memory broker only)."""
        now = self.clock()
        return self._publish(Draft(channel, message, now), now)

    def _publish(self, draft: Draft, now: float) -> Publication:
        channel = draft.channel
        ch = self._channel(channel, now)
        pub = draft.finish(Position(ch.epoch, ch.top + 1))
        ch.top += 1
        ch.touched = now
        ch.history.append(pub)
        self._trim(channel, ch, now)
        self._deliver(channel, pub)
        return pub

    def _publish_once(self, draft: Draft, key: str, now: float) -> Publication | Duplicate:
        """:meth:`_publish`, unless ``key`` was used in the channel within the window."""
        ch = self._channel(draft.channel, now)  # forgetting channels first, keys with them
        found = self.idempotency.find(draft.channel, key, now)
        if found is not None and found.epoch == ch.epoch:
            return found
        pub = self._publish(draft, now)
        self.idempotency.record(pub, key, now)
        return pub

    def _deliver(self, channel: str, item: Publication | PresenceEvent) -> None:
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener(item)
            except Exception:  # a broken listener must not stop the others
                log.exception("listener failed for %s", channel)

    def set_state_nowait(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        now = self.clock()
        return self._set_state(channel, [Draft(channel, m, now) for m in messages], now)

    def _set_state(self, channel: str, drafts: list[Draft], now: float) -> Position:
        ch = self._channel(channel, now)
        position = Position(ch.epoch, ch.top)
        ch.state = [d.finish(position) for d in drafts]
        ch.state_at = ch.top
        ch.stale_warned = False
        ch.touched = now
        return position

    def _channel(self, channel: str, now: float) -> _Channel:
        """The channel, created if new (forgetting idle ones first when due)."""
        if now >= self._next_sweep:
            self._sweep(now)
        ch = self._channels.get(channel)
        if ch is None:
            if len(self._channels) >= self.channel_limit:
                self._sweep(now)
                self._forget_dormant(now)
                if len(self._channels) >= self.channel_limit:
                    raise ChannelLimitError(
                        f"cannot create channel {channel!r}: the broker holds "
                        f"{len(self._channels)} channels, its channel_limit"
                    )
            ch = self._channels[channel] = _Channel(self.epoch, now)
            self._sorted = None
        else:
            self._dormant(channel, ch, now)
        return ch

    def _dormant(self, name: str, ch: _Channel, now: float) -> bool:
        """Drop the history and state of a channel idle for its TTL; True if it is."""
        if now - ch.touched < self.policy_for(name).ttl:
            return False
        ch.history.clear()
        ch.state = None
        return True

    def _sweep(self, now: float) -> None:
        """Make channels idle for their TTL dormant, and forget those idle
        for their ``meta_ttl``; a new epoch if any was forgotten."""
        gone = []
        for name, ch in self._channels.items():
            if self._dormant(name, ch, now) and now - ch.touched >= self.policy_for(name).keep:
                gone.append(name)
        self._forget(gone)
        self.idempotency.trim(now)
        self._next_sweep = now + min(60.0, self.default_policy.ttl / 4)

    def _forget_dormant(self, now: float) -> None:
        """At the channel limit: forget the older half of the dormant channels."""
        dormant = [
            (ch.touched, name)
            for name, ch in self._channels.items()
            if now - ch.touched >= self.policy_for(name).ttl
        ]
        self._forget([name for _, name in heapq.nsmallest(max(1, len(dormant) // 2), dormant)])

    def _forget(self, names: list[str]) -> None:
        for name in names:
            del self._channels[name]
        self.idempotency.forget(names)
        if names:
            self.epoch = new_epoch()
            self._sorted = None

    def _trim(self, channel: str, ch: _Channel, now: float) -> None:
        policy = self.policy_for(channel)
        history = ch.history
        while len(history) > policy.size:
            history.popleft()
        horizon = now - policy.ttl
        while history and history[0].ts < horizon:
            history.popleft()

    def read_nowait(self, channel: str, since: Position | None) -> ReadResult:
        now = self.clock()
        ch = self._held(channel, now)
        if ch is None:
            ch = _Channel(self.epoch, now)  # not stored: reading creates nothing
        first = ch.history[0].offset if ch.history else ch.top + 1
        state_at = ch.state_at if ch.state is not None else None
        plan = plan_read(since, epoch=ch.epoch, top=ch.top, first=first, state_at=state_at)
        if plan.stale_state and not ch.stale_warned:
            ch.stale_warned = True
            log.warning("state of %r is older than its history; set_state more often", channel)
        pubs = [p for p in ch.history if p.offset > plan.after]
        result = ReadResult(plan.position, pubs, ch.state if plan.state else None, plan.reset)
        return check_unbroken(since, result, ch.top)

    # -- the Broker interface ---------------------------------------------------
    # Publishing stores at once, so there is no queue to wait for: ``flush``
    # and ``close`` have nothing to do.

    def publish_soon(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """Publishes at once: the copy carries ``epoch`` and ``offset`` too."""
        return self.publish_nowait(channel, message).data

    def set_state_soon(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        return self.set_state_nowait(channel, messages)

    async def _publish_message(
        self, channel: str, message: dict[str, Any], idempotency_key: str | None
    ) -> Publication | Duplicate:
        if idempotency_key is None:
            return self.publish_nowait(channel, message)
        check_idempotency_key(idempotency_key)
        now = self.clock()
        return self._publish_once(Draft(channel, message, now), idempotency_key, now)

    async def _publish_batch(
        self, messages: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str | None] | None
    ) -> list[Publication | Duplicate]:
        now = self.clock()
        drafts = [Draft(channel, message, now) for channel, message in messages]
        keys = check_keys(drafts, keys)
        outcomes: list[Publication | Duplicate | BaseException] = []
        for i, draft in enumerate(drafts):  # a failed one does not stop the others
            key = None if keys is None else keys[i]
            try:
                if key is None:
                    outcomes.append(self._publish(draft, now))
                else:
                    outcomes.append(self._publish_once(draft, key, now))
            except ChannelLimitError as exc:
                outcomes.append(exc)
        return all_or_first_failure(outcomes)

    async def set_state(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        return self.set_state_nowait(channel, messages)

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        return self.read_nowait(channel, since)

    async def positions(self, channels: Sequence[str]) -> dict[str, Position]:
        found = ((c, self._channels.get(c)) for c in channels)
        return {c: Position(ch.epoch, ch.top) for c, ch in found if ch is not None}

    async def subscribe(self, channel: str, listener: Listener) -> None:
        self._listeners.setdefault(channel, []).append(listener)

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        listeners = self._listeners.get(channel)
        if listeners and listener in listeners:
            listeners.remove(listener)
            if not listeners:
                del self._listeners[channel]

    def _held(self, channel: str, now: float) -> _Channel | None:
        """The channel if held (dormant or not), its history trimmed to now."""
        ch = self._channels.get(channel)
        if ch is not None and self._dormant(channel, ch, now):
            if now - ch.touched >= self.policy_for(channel).keep:
                self._sweep(now)
                ch = self._channels.get(channel)
        elif ch is not None:
            self._trim(channel, ch, now)
        return ch

    @property
    def presence(self) -> MemoryPresence:
        return self._presence

    def publish_presence(self, event: PresenceEvent) -> None:
        """Delivered at once, so in call order with publications."""
        self._deliver(event.channel, event)

    async def info(self, channel: str) -> ChannelInfo:
        ch = self._held(channel, self.clock())
        if ch is None:
            return ChannelInfo(channel, Position(self.epoch, 0), 0, False)
        return ChannelInfo(
            channel, Position(ch.epoch, ch.top), len(ch.history), ch.state is not None
        )

    async def channels(
        self, prefix: str = "", *, after: str | None = None, limit: int = 100
    ) -> list[str]:
        # The names are sorted once per change of the set of channels, so a
        # page is a binary search and ``limit`` steps, not a pass over all.
        if self._sorted is None:
            self._sorted = sorted(self._channels)
        names = self._sorted
        start = bisect.bisect_left(names, prefix)
        if after is not None:
            start = max(start, bisect.bisect_right(names, after))
        now = self.clock()
        page: list[str] = []
        for i in range(start, len(names)):
            name = names[i]
            if len(page) >= limit or not name.startswith(prefix):
                break
            ch = self._channels.get(name)
            if ch is not None and now - ch.touched < self.policy_for(name).ttl:
                page.append(name)  # (an idle one is skipped; the next write sweeps it)
        return page

"""The lifecycle seam: what is occupied, online or present across processes,
and the queue of webhook events its changes make.

A process *holds* a key while it has a subscriber for it (or a polling
client's grace has not ended): a channel (``channel_vacated`` key), a user
(``user_offline`` key) or a user in a presence channel (``member_left``
key). The store counts, per key, the processes holding it. The first hold
of a key by any process queues its *on* event (``channel_occupied``,
``user_online``, ``member_joined``); the release that leaves no process
holding it queues its *off* event. The grace that debounces a reload is the
hub's (:mod:`torchannels.lifecycle_hub`): a process releases a key only
once it has had no subscriber for it for the presence grace.

A key is the off event itself, ``TYPE`` TAB ``FIELDS`` (compact JSON), so
a store can make the off events of a process nobody will ever hear from
again: every process heartbeats an expiry, and a :meth:`~LifecycleStore.sweep`
by any process releases every key of a process whose expiry has passed (a
SIGKILLed one). Hold, release and sweep are atomic with the queueing of
the events they make: on Redis one Lua script does both, so an event is
queued exactly once, by exactly one process, whoever crashes when.

The queue is bounded (``queue_max``): past it an event is dropped and
counted (:attr:`Queued.dropped`), never silently. One process at a time
sends (:meth:`~LifecycleStore.lease`), so the events go out in the order
they were queued; it acknowledges what was sent (or refused for good), and
a sender that dies leaves its batch to the next one: at least once.

The in-memory store is :class:`~.lifecycle_memory.MemoryLifecycle` (one
process, the queue in memory), the Redis one
:class:`~.lifecycle_redis.RedisLifecycle` (the queue a Redis Stream, kept
across restarts and crashes of the processes); both pass the same contract
tests (tests/test_lifecycle_contract.py).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Every event type, in the order the docs list them.
EVENT_TYPES = (
    "channel_occupied",
    "channel_vacated",
    "user_online",
    "user_offline",
    "member_joined",
    "member_left",
)
#: Each on event's off event.
OFF_EVENT = {
    "channel_occupied": "channel_vacated",
    "user_online": "user_offline",
    "member_joined": "member_left",
}
#: Most events one queue holds by default.
QUEUE_MAX = 100_000


def _compact(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Hold:
    """One key to hold, with the on event its first holder queues."""

    #: The off event: ``TYPE`` TAB ``FIELDS`` (compact JSON object).
    key: str
    on_type: str
    #: The on event's fields, a compact JSON object.
    on_fields: str


def channel_hold(channel: str) -> Hold:
    """The hold of a channel: occupied while any process has a subscriber.

    >>> channel_hold("room").key
    'channel_vacated\\t{"channel":"room"}'
    """
    fields = _compact({"channel": channel})
    return Hold(f"channel_vacated\t{fields}", "channel_occupied", fields)


def user_hold(user: str) -> Hold:
    """The hold of a user: online while any process has one of their connections."""
    fields = _compact({"user": user})
    return Hold(f"user_offline\t{fields}", "user_online", fields)


def member_hold(channel: str, user: str, info: Mapping[str, Any] | None) -> Hold:
    """The hold of a user in a presence channel.

    >>> member_hold("room", "ann", {"n": 1}).on_fields
    '{"channel":"room","user":"ann","info":{"n":1}}'
    """
    off = _compact({"channel": channel, "user": user})
    on = _compact({"channel": channel, "user": user, "info": info})
    return Hold(f"member_left\t{off}", "member_joined", on)


def off_event(key: str) -> tuple[str, str]:
    """A key's off event: (type, fields JSON)."""
    kind, _, fields = key.partition("\t")
    return kind, fields


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One event in the queue."""

    #: Unique in its queue, increasing in queue order: ``MS-SEQ`` (on Redis,
    #: the stream entry id; MS the queueing time in unix milliseconds).
    id: str
    type: str
    #: Unix seconds when it was queued (millisecond precision).
    time: float
    #: The event's fields, a compact JSON object.
    fields: str

    def body(self) -> bytes:
        """The event as the webhook sends it: ``{"id", "type", "time", ...fields}``.

        >>> QueuedEvent("1764139200123-0", "user_online", 1764139200.123, '{"user":"ann"}').body()
        b'{"id":"1764139200123-0","type":"user_online","time":1764139200.123,"user":"ann"}'
        """
        head = _compact({"id": self.id, "type": self.type, "time": self.time})
        inner = self.fields[1:-1]
        return (head[:-1] + ("," + inner if inner else "") + "}").encode()


@dataclass(frozen=True, slots=True)
class Queued:
    """What one store call queued: events added, and events dropped because
    the queue was full (each also logged by the caller)."""

    queued: int = 0
    dropped: int = 0

    def __add__(self, other: Queued) -> Queued:
        return Queued(self.queued + other.queued, self.dropped + other.dropped)


class LifecycleStore(abc.ABC):
    """Holdings of every process, and the event queue (see the module doc)."""

    def __init__(self) -> None:
        #: Event types queued; the others are not (a hold still counts).
        self.events: frozenset[str] = frozenset()
        self.queue_max = QUEUE_MAX

    def configure(self, events: Iterable[str], queue_max: int = QUEUE_MAX) -> None:
        """Queue ``events`` (names from :data:`EVENT_TYPES`; ValueError
        names an unknown one), at most ``queue_max`` at once."""
        wanted = frozenset(events)
        unknown = sorted(wanted - set(EVENT_TYPES))
        if unknown:
            names = ", ".join(EVENT_TYPES)
            raise ValueError(f"unknown webhook event {unknown[0]!r}: one of {names}")
        if queue_max < 1:
            raise ValueError("queue_max must be at least 1")
        self.events = wanted
        self.queue_max = queue_max

    # -- holdings -----------------------------------------------------------------

    @abc.abstractmethod
    async def hold(self, process: str, holds: Sequence[Hold], expires: float) -> Queued:
        """``process`` holds ``holds`` (a key it already holds is no change)
        and is alive until ``expires`` (unix time); a key no other process
        held queues its on event, if that type is configured."""

    @abc.abstractmethod
    async def release(self, process: str, keys: Sequence[str]) -> Queued:
        """``process`` no longer holds ``keys`` (one it does not hold is no
        change); a key nobody holds any more queues its off event."""

    @abc.abstractmethod
    async def heartbeat(self, process: str, expires: float) -> bool:
        """``process`` is alive until ``expires``. False when the store no
        longer knew it (swept after a pause, or the store lost its data):
        it holds nothing now, and must hold again what it still has."""

    @abc.abstractmethod
    async def sweep(self, now: float) -> Queued:
        """Release every key of every process whose expiry is at or before
        ``now``, and forget those processes. Atomic: when processes sweep at
        once, each off event is queued once."""

    # -- the queue ----------------------------------------------------------------

    @abc.abstractmethod
    async def head(self, count: int) -> list[QueuedEvent]:
        """The oldest ``count`` events, oldest first (fewer if fewer are queued)."""

    @abc.abstractmethod
    async def ack(self, owner: str, ids: Sequence[str]) -> bool:
        """Remove ``ids`` from the queue, if ``owner`` holds the lease
        (False, and nothing removed, if not)."""

    @abc.abstractmethod
    async def length(self) -> int:
        """Events queued now."""

    @abc.abstractmethod
    async def dropped(self) -> int:
        """Events dropped because the queue was full, by every process
        since the store began (on Redis: kept with the queue)."""

    @abc.abstractmethod
    async def lease(self, owner: str, ttl: float) -> bool:
        """Take, or renew, the one sender's lease for ``ttl`` seconds; False
        while another owner holds it."""

    @abc.abstractmethod
    async def unlease(self, owner: str) -> None:
        """Give the lease up, if ``owner`` holds it."""

    @abc.abstractmethod
    async def wait(self, timeout: float) -> None:
        """Return once an event may have been queued since the last
        :meth:`head`, or after ``timeout`` seconds."""

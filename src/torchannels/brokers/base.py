"""The Broker seam: per-channel history, state and cross-process delivery.

A broker stores each channel's recent history (bounded by count and age),
its compressed state, and its position (epoch + offset); it delivers new
publications to the listeners a process registers. The in-memory broker is
the embedded default; the Redis broker implements the same methods, and
both pass the same contract tests (tests/test_broker_contract.py).

What a reader at a position receives is decided by one pure function,
:func:`plan_read`, which every broker calls, so no two brokers can disagree
on when to reset or whether a state is served.

Publishing is ordered per process: a process's publications keep the
order in which it made them, whatever mix of calls it used. The in-memory
broker stores each at once; a network broker queues them and stores the
queue in batches (:mod:`.publish_queue`).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from ..errors import RESET_EPOCH, RESET_INVALID, RESET_TRIMMED
from ..frames import Duplicate, Publication
from ..protocol import Position
from .control import ControlBus, MemoryControl
from .lifecycle import LifecycleStore
from .lifecycle_memory import MemoryLifecycle
from .presence import PresenceEvent, PresenceStore

log = logging.getLogger("torchannels.broker")
_T = TypeVar("_T")

#: Called with every new publication of a channel the process subscribed to,
#: and with its presence events, in order with them (tell them apart by type).
Listener = Callable[[Publication | PresenceEvent], None]
#: Called with channels whose live delivery may have missed publications (a
#: network broker lost and re-made its subscription): re-read them.
ResyncListener = Callable[[Sequence[str]], None]


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much history a channel keeps: at most ``size`` messages, none older
    than ``ttl`` seconds. ``size=0`` keeps none, so every resume is a reset.

    A channel nobody publishes to (nor sets state on) for ``ttl`` seconds
    loses its history and state, but its position (epoch and last offset)
    is kept until ``meta_ttl`` seconds (at least ``ttl``) after that last
    write: a client that had every message resumes with nothing to do, one
    that missed some gets ``history_trimmed``, and the next publication
    continues the epoch. Past ``meta_ttl`` the channel is forgotten whole,
    and its next publication starts a new epoch (resumers get an honest
    ``epoch_changed``).
    """

    size: int = 1000
    ttl: float = 3600.0
    meta_ttl: float = 7 * 86400.0

    def __post_init__(self) -> None:
        if self.size < 0 or self.ttl <= 0 or self.meta_ttl < 0:
            raise ValueError("history size must be >= 0, ttl > 0 and meta_ttl >= 0")

    @property
    def keep(self) -> float:
        """Seconds a channel's position is kept after its last write."""
        return max(self.ttl, self.meta_ttl)


@dataclass(slots=True)
class ReadResult:
    """What a subscriber at ``since`` must receive from one channel.

    ``reset`` is a reason when ``since`` could not be served (the caller then
    got the answer for a fresh join). ``position`` is where the receiver
    stands before ``publications``; ``state`` (may be empty) comes with it.
    """

    position: Position
    publications: list[Publication]
    state: Sequence[Publication] | None = None
    reset: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    channel: str
    position: Position
    history_length: int
    has_state: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What :func:`plan_read` decided: deliver ``state`` (if set) and then
    the retained publications with an offset above ``after``."""

    position: Position
    after: int
    state: bool = False
    reset: str | None = None
    #: A state exists but messages between it and the oldest retained one
    #: are gone, so it cannot be brought up to date and is not served.
    stale_state: bool = False


#: The epoch a network broker answers for a channel nobody wrote (reading
#: creates nothing). Real epochs are 8 hex digits, so no channel has it;
#: ``NO_EPOCH:0`` holds nothing, so :func:`plan_read` resumes it at offset 0
#: of whatever epoch the channel has by then.
NO_EPOCH = "0"


def plan_read(
    since: Position | None, *, epoch: str, top: int, first: int, state_at: int | None
) -> ReadPlan:
    """The one rule of what a reader at ``since`` gets from a channel.

    The channel is at ``epoch``, its last offset is ``top``, its oldest
    retained message is ``first`` (``top + 1`` when none is retained), and
    ``state_at`` is the offset its state stands for (None: no state).

    >>> plan_read(Position("e", 3), epoch="e", top=5, first=2, state_at=None).after
    3
    >>> plan_read(Position("e", 0), epoch="e", top=5, first=2, state_at=None).reset
    'history_trimmed'
    >>> plan_read(Position("old", 3), epoch="e", top=5, first=1, state_at=4).reset
    'epoch_changed'
    """
    reason: str | None = None
    if since == Position(NO_EPOCH, 0):
        since = Position(epoch, 0)  # read before the channel existed: it held nothing
    if since is not None:
        if since.epoch != epoch:
            reason = RESET_EPOCH
        elif since.offset > top:
            reason = RESET_INVALID
        elif since.offset < first - 1:
            reason = RESET_TRIMMED
        else:
            return ReadPlan(since, since.offset)
    if state_at is not None and first - 1 <= state_at:
        return ReadPlan(Position(epoch, state_at), state_at, state=True, reset=reason)
    return ReadPlan(
        Position(epoch, first - 1), first - 1, reset=reason, stale_state=state_at is not None
    )


def check_unbroken(since: Position | None, result: ReadResult, top: int | None) -> ReadResult:
    """The one rule that served history has no hole: every broker's read
    and the session that delivers it pass their answer through it.

    ``result.publications`` must run from ``result.position`` to ``top``
    (the channel's last offset; None: the last publication's) with no
    offset missing. Then ``result`` is returned as it is. Otherwise (a
    process that kept no history published in between, say) the part
    before the hole cannot be served: the answer is :func:`plan_read`'s for
    a channel whose oldest retained message starts the unbroken run that
    ends at ``top``, so a resumer gets a ``history_trimmed`` reset, a fresh
    joiner that run, and a state the hole made stale is not served.

    >>> pubs = [Publication("c", "e", n, 0.0, b"{}") for n in (3, 7)]
    >>> fixed = check_unbroken(Position("e", 2), ReadResult(Position("e", 2), pubs), 7)
    >>> fixed.reset, fixed.position.offset, [p.offset for p in fixed.publications]
    ('history_trimmed', 6, [7])
    """
    pubs = result.publications
    start = result.position.offset
    if top is None:
        top = pubs[-1].offset if pubs else start
    if len(pubs) == top - start and all(p.offset == start + i for i, p in enumerate(pubs, 1)):
        return result
    first = top + 1  # the oldest offset of the unbroken run that ends at top
    for pub in reversed(pubs):
        if pub.offset != first - 1:
            break
        first -= 1
    plan = plan_read(since, epoch=result.position.epoch, top=top, first=first, state_at=None)
    log.debug("history has a hole after %s: served from offset %d", result.position, plan.after)
    return ReadResult(plan.position, [p for p in pubs if p.offset > plan.after], None, plan.reset)


def all_or_first_failure(outcomes: Sequence[_T | BaseException]) -> list[_T]:
    """The results of a batch whose members all ended (a
    :meth:`Broker.publish_many`, a session's attaches), or its first
    failure: a failed member does not stop the others, and the caller sees
    the first error once all have ended."""
    results: list[_T] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results


class Broker(abc.ABC):
    """Abstract broker. Reads and writes are coroutines so network brokers fit.

    The interface, and the history policies every broker shares. A network
    broker keeps its publications in order with a
    :class:`~.publish_queue.PublishQueue`.
    """

    def __init__(
        self, history: HistoryPolicy | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.default_policy = history or HistoryPolicy()
        #: The time ``ts`` stamps and history ages are read from.
        self.clock = clock
        self._policies: dict[str, HistoryPolicy] = {}
        self._resync_listeners: list[ResyncListener] = []
        self._control: ControlBus | None = None
        self._lifecycle: LifecycleStore | None = None

    # -- history policies -------------------------------------------------------

    def configure_channel(
        self,
        name_or_prefix: str,
        *,
        size: int | None = None,
        ttl: float | None = None,
        meta_ttl: float | None = None,
    ) -> None:
        """Set the history policy of one channel, or of every channel starting
        with a prefix that ends in ``*`` (``"chat:*"``). The longest match wins.

        Policies live in the process that sets them: every process sharing a
        network broker must configure the same ones (from shared configuration).
        """
        base = self.policy_for(name_or_prefix.rstrip("*"))
        self._policies[name_or_prefix] = HistoryPolicy(
            base.size if size is None else size,
            base.ttl if ttl is None else ttl,
            base.meta_ttl if meta_ttl is None else meta_ttl,
        )

    def policy_for(self, channel: str) -> HistoryPolicy:
        exact = self._policies.get(channel)
        if exact is not None:
            return exact
        best: tuple[int, HistoryPolicy] | None = None
        for key, policy in self._policies.items():
            matches = key.endswith("*") and channel.startswith(key[:-1])
            if matches and (best is None or len(key) > best[0]):
                best = (len(key), policy)
        return self.default_policy if best is None else best[1]

    # -- publishing, ordered per process ------------------------------------------

    @abc.abstractmethod
    def publish_soon(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """Stamp and encode ``message`` now, store it soon, in order.

        Returns the stamped copy: ``channel`` and ``ts`` always, ``epoch``
        and ``offset`` only where the broker assigns them at once (the
        in-memory broker). Raises :class:`~torchannels.MessageError` at once
        for a message JSON cannot carry. A failure to store is logged,
        counted in ``failed_publishes`` and raised by :meth:`flush`.
        """

    @abc.abstractmethod
    def set_state_soon(self, channel: str, messages: list[dict[str, Any]]) -> Position | None:
        """:meth:`set_state`, queued like :meth:`publish_soon`; returns the
        position the state stands for where the broker knows it at once."""

    @overload
    async def publish(self, channel: str, message: dict[str, Any]) -> Publication: ...

    @overload
    async def publish(
        self, channel: str, message: dict[str, Any], *, idempotency_key: str | None
    ) -> Publication | Duplicate: ...

    async def publish(
        self, channel: str, message: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Publication | Duplicate:
        """Stamp, store and deliver ``message``; returns once it is stored.

        With an ``idempotency_key`` (1-128 printable ASCII characters, else
        :class:`~torchannels.BadRequest` ``invalid_idempotency_key``) already
        used in ``channel`` within the broker's ``idempotency_window``,
        nothing is stored or delivered and the answer is a
        :class:`~torchannels.frames.Duplicate` of the first publish
        (:mod:`.idempotency`)."""
        return await self._publish_message(channel, message, idempotency_key)

    @abc.abstractmethod
    async def _publish_message(
        self, channel: str, message: dict[str, Any], idempotency_key: str | None
    ) -> Publication | Duplicate:
        """What :meth:`publish` does; a broker implements this, so that the
        overloads that type publish's answer are written once, here."""

    @overload
    async def publish_many(
        self, messages: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[Publication]: ...

    @overload
    async def publish_many(
        self,
        messages: Sequence[tuple[str, dict[str, Any]]],
        *,
        keys: Sequence[str | None] | None,
    ) -> list[Publication | Duplicate]: ...

    async def publish_many(
        self,
        messages: Sequence[tuple[str, dict[str, Any]]],
        *,
        keys: Sequence[str | None] | None = None,
    ) -> list[Publication] | list[Publication | Duplicate]:
        """:meth:`publish` each ``(channel, message)`` in this order (channels
        may differ and repeat); returns once all are stored, one publication
        per message. Every channel is checked and every message stamped and
        encoded before any is stored, so a bad one stores none. A network
        broker stores them in one batch (one round trip, a few script calls
        on Redis); if some fail, the others are still stored and the first
        failure is raised once all have ended.

        ``keys``, when given, has one idempotency key (or None) per message,
        all checked before any is stored; a message whose key was used in
        its channel (earlier in this batch too) is answered a
        :class:`~torchannels.frames.Duplicate` instead."""
        return await self._publish_batch(messages, keys)

    @abc.abstractmethod
    async def _publish_batch(
        self, messages: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str | None] | None
    ) -> list[Publication | Duplicate]:
        """What :meth:`publish_many` does, as :meth:`_publish_message` is
        what :meth:`publish` does."""

    @abc.abstractmethod
    async def set_state(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        """Replace, for fresh joiners, all history up to now with ``messages``."""

    async def flush(self) -> None:  # noqa: B027 - nothing is queued by default
        """Wait until everything queued so far is stored; raise the first
        failure since the last flush (the others are logged and counted)."""

    @property
    def failed_publishes(self) -> int:
        """Queued publishes and set_states that failed (logged, raised by
        :meth:`flush`); 0 where nothing is queued."""
        return 0

    def check_channel(self, channel: str) -> None:  # noqa: B027 - an optional hook
        """Raise :class:`~torchannels.ChannelNameError` for a name this broker
        cannot store (beyond the protocol's rules); by default any is fine."""

    # -- reading and delivery ---------------------------------------------------

    @abc.abstractmethod
    async def read(self, channel: str, since: Position | None) -> ReadResult:
        """What a subscriber at ``since`` (None: fresh join) must receive;
        decided by :func:`plan_read`."""

    @abc.abstractmethod
    async def positions(self, channels: Sequence[str]) -> dict[str, Position]:
        """The current position (epoch and last offset) of each of
        ``channels`` that exists, in one round trip."""

    @abc.abstractmethod
    async def subscribe(self, channel: str, listener: Listener) -> None:
        """Start calling ``listener`` with every new publication of ``channel``.

        Returns once the broker delivers the channel (a network broker: its
        subscription is confirmed). If it raises, nothing stays registered.
        """

    @abc.abstractmethod
    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``channel``."""

    def add_resync_listener(self, listener: ResyncListener) -> None:
        """Call ``listener`` with the channels whose live delivery may have
        missed publications: a network broker calls it after it lost its
        pub/sub connection and subscribed again, with every channel it is
        subscribed to, once the new subscriptions are confirmed."""
        self._resync_listeners.append(listener)

    def _resync(self, channels: Sequence[str]) -> None:
        for listener in tuple(self._resync_listeners):
            try:
                listener(channels)
            except Exception:
                log.exception("resync listener failed")

    @property
    def available(self) -> bool:
        """False while the broker is known to be unreachable (for /health)."""
        return True

    async def ping(self) -> None:
        """Ask the broker whether it answers now; raise if it does not. The
        caller bounds the wait (``/health`` gives it a second). A broker in
        this process always answers."""
        return None

    async def connect(self) -> None:
        """Reach the broker now rather than on first use (the server does so
        at start-up), so an unreachable one is logged, and retried, at once.
        Never raises for an unreachable broker."""
        return None

    # -- presence -------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def presence(self) -> PresenceStore:
        """Who is present in each channel, shared by every process of this
        broker (:mod:`.presence`)."""

    @property
    def control(self) -> ControlBus:
        """How control commands (disconnect, unsubscribe, revoke) reach
        every process (:mod:`.control`): by default this process only."""
        if self._control is None:
            self._control = MemoryControl()
        return self._control

    @property
    def lifecycle(self) -> LifecycleStore:
        """What is occupied, online or present across processes, and the
        queue of webhook events its changes make (:mod:`.lifecycle`): by
        default this process only."""
        if self._lifecycle is None:
            self._lifecycle = MemoryLifecycle()
        return self._lifecycle

    @abc.abstractmethod
    def publish_presence(self, event: PresenceEvent) -> None:
        """Deliver ``event`` to the listeners of its channel in every process,
        in order with the channel's publications (fire and forget: a failure
        is logged). Nothing is stored."""

    @abc.abstractmethod
    async def info(self, channel: str) -> ChannelInfo:
        """Position and history size of ``channel``."""

    # -- listing --------------------------------------------------------------

    @abc.abstractmethod
    async def channels(
        self, prefix: str = "", *, after: str | None = None, limit: int = 100
    ) -> list[str]:
        """Names of the channels this broker holds, sorted (by code point:
        channel names are ASCII), that start with ``prefix`` and sort after
        ``after`` (None: from the first), at most ``limit`` of them.

        A channel is listed from its first publish or set_state until it
        has been idle for its history TTL (its position may be kept longer,
        for ``meta_ttl``, but it is not listed). Pages are consistent
        under change: a channel created or forgotten between two calls is
        listed or not, but no other name is skipped or repeated.
        """

    async def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Store what is queued, then release connections."""

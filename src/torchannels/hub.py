"""The hub: this process's registry of subscribers, fanning publications out.

It subscribes the broker to a channel when the first local subscriber
arrives and unsubscribes when the last one leaves, so a broker only carries
channels somebody here listens to.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .brokers.base import Broker, ChannelInfo, ReadResult
from .brokers.lifecycle import QUEUE_MAX
from .brokers.memory import MemoryBroker
from .brokers.presence import PresenceEvent, PresencePage
from .channel import Channel
from .channel_options import ChannelOptionsTable
from .control import disconnect_command, revoke_command, unsubscribe_command
from .errors import PRESENCE_DISABLED, RECONNECT_SHUTDOWN, BadRequest
from .frames import Frame, Publication
from .hub_control import HubControl, Reach
from .identity import ClientIds, Identity, PageCursors
from .lifecycle_hub import HubLifecycle, webhooks
from .presence_hub import HubPresence, check_page_limit
from .protocol import Position, check_channel
from .publish_rates import PublishRates
from .settings import Settings
from .shared_reads import SharedReads, retrieve
from .stats import Stats
from .timer_wheel import TimerWheel
from .write_batch import WriteBatch, current_batch

if TYPE_CHECKING:
    from .outbox.consumer import OutboxConsumer

log = logging.getLogger("torchannels.hub")


class Endable(Protocol):
    """What the hub registers: a live subscriber connection it can ask to
    end at shutdown (a :class:`~torchannels.transports.connection.LiveConnection`).
    Not the Python client's ``Connection``, its side of a transport."""

    @property
    def name(self) -> str:
        """The transport's name, for metrics."""

    @property
    def identity(self) -> Identity:
        """Who the connection is (what control commands match)."""

    def end(self, reason: str) -> None:
        """Send ``reconnect`` with ``reason`` and end the connection soon."""

    def disconnect(self, reason: str, reconnect: bool) -> None:
        """Send ``disconnect`` (``reason``, ``reconnect``) and end the connection soon."""

    def unsubscribe(self, channel: str) -> bool:
        """Stop delivering ``channel``, with an ``unsubscribed`` error frame;
        False if it was not delivered."""


class Subscriber(Protocol):
    """What the hub delivers to: a :class:`~torchannels.session.Session`."""

    def on_publication(self, pub: Publication, frames: tuple[Frame]) -> bool:
        """A new publication of a channel the subscriber is attached to, and
        ``(pub.frame,)`` (built once for every recipient); True if it was
        delivered (counted in ``Stats.delivered``)."""

    def on_presence(self, channel: str, frame: Frame) -> None:
        """A ``presence`` frame of a channel the subscriber is attached to."""

    def resync(self, channel: str, top: Position | None) -> None:
        """Live delivery of ``channel`` may have missed something: re-read it
        unless the subscriber already stands at or past ``top`` (None:
        re-read)."""


class _Local:
    __slots__ = ("generation", "ready", "release", "subscribers")

    def __init__(self, generation: int) -> None:
        # A tuple, replaced on change: dispatch iterates it without copying.
        self.subscribers: tuple[Subscriber, ...] = ()
        #: The broker subscription: a task of the channel's own, so that a
        #: cancelled attach cancels only its own wait, never the others'.
        self.ready: asyncio.Future[None] | None = None
        self.release: asyncio.TimerHandle | None = None
        #: Unique in the hub, renewed by every attach: a read started at an
        #: earlier generation may miss what was published just before the
        #: latest attach, so it is not shared with that subscriber.
        self.generation = generation


class Hub:
    """Fans publications from a broker out to the subscribers of this process.

    >>> hub = Hub()                      # in-memory broker, default settings
    >>> hub.channel("news").send({"text": "hello"})["offset"]
    1
    """

    def __init__(self, broker: Broker | None = None, settings: Settings | None = None) -> None:
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        self.settings = settings or Settings()
        self.stats = Stats()
        #: Options by channel pattern (presence, join_leave, history).
        self.channel_options = ChannelOptionsTable()
        #: Live connections (long-polls, streams, sockets) of this process.
        self.connections: set[Endable] = set()
        #: True once :meth:`shutdown` began: new subscribe requests get 503.
        self.closing = False
        #: The deadlines of live connections (keep-alive, write watchdog,
        #: expiry), on one loop timer.
        self.timers = TimerWheel()
        #: While a publication fans out, the loop iteration's write batch:
        #: a recipient that has nothing queued writes it at once
        #: (:meth:`Outbox.put <torchannels.transports.outbox.Outbox.put>`).
        #: None otherwise.
        self.fan_out: WriteBatch | None = None
        self._local: dict[str, _Local] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None
        self._checks: asyncio.Future[None] | None = None
        self._reads = SharedReads(self.broker)
        self._generation = 0
        self.broker.add_resync_listener(self._on_resync)
        secret = self.settings.client_id_secret or secrets.token_bytes(32)
        #: Signs the client ids polling clients carry between requests.
        self.client_ids = ClientIds(secret)
        #: Signs presence page cursors.
        self.page_cursors = PageCursors(secret)
        #: This process's clients in presence channels (presence_hub.py).
        self.presence_tracker = HubPresence(self)
        #: Disconnects, unsubscribes and revocations (hub_control.py).
        self.control = HubControl(self)
        #: How often each client may publish (client_publish.py).
        self.publish_rates = PublishRates(self.settings.client_publish_rate)
        #: What this process holds for the lifecycle webhooks, and their
        #: sender (lifecycle_hub.py); None until :meth:`enable_webhooks`.
        self.lifecycle: HubLifecycle | None = None
        #: The PostgreSQL outbox consumer; None until :meth:`consume_outbox`.
        self.outbox: OutboxConsumer | None = None

    def enable_webhooks(
        self,
        url: str,
        secret: str,
        events: Sequence[str],
        *,
        retry_for: float = 600.0,
        timeout: float = 10.0,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        """POST the lifecycle events named in ``events`` (``channel_occupied``,
        ``channel_vacated``, ``user_online``, ``user_offline``,
        ``member_joined``, ``member_left``) to ``url``, signed with
        ``secret`` (docs/api.md#webhooks). Events are retried for
        ``retry_for`` seconds; at most ``queue_max`` wait at once (on Redis,
        in Redis). Call once, before serving; ValueError names a bad event.
        Runs from the first subscribe, or at once inside a running loop."""
        if self.lifecycle is not None:
            raise RuntimeError("webhooks are already enabled on this hub")
        if not secret:
            raise ValueError("webhooks need a secret to sign with")
        self.lifecycle = webhooks(
            self,
            url,
            secret,
            events,
            retry_for=retry_for,
            timeout=timeout,
            queue_max=queue_max,
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.lifecycle.start()

    def consume_outbox(self, dsn: str, **options: Any) -> OutboxConsumer:
        """Publish the rows committed to the PostgreSQL outbox at ``dsn``
        (docs/outbox.md); ``options`` are those of
        :class:`~torchannels.outbox.OutboxConsumer` (``table``, ``batch``,
        ``poll_interval``, ``retention``, ``partitions``). Starts at once
        inside a running loop, else call ``hub.outbox.start()`` in one;
        :meth:`close` stops it. Once per hub (RuntimeError); ImportError
        without psycopg (``pip install 'torchannels[postgres]'``)."""
        if self.outbox is not None:
            raise RuntimeError("this hub already consumes an outbox")
        from .outbox.consumer import OutboxConsumer

        self.outbox = OutboxConsumer(self, dsn, **options)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self.outbox
        self.outbox.start()
        return self.outbox

    def configure_channels(self, pattern: str, **options: Any) -> None:
        """Set the options of the channels matching ``pattern`` (an exact
        name, or a prefix ending in ``*``; the most specific pattern wins,
        options are not merged across patterns).

        Keys: ``presence``, ``join_leave``, ``history_size``,
        ``history_ttl``, ``history_meta_ttl``. History options are passed on
        to the broker's history policy of the same pattern. ValueError names
        a bad key or value. Every process serving the channel must be
        configured alike: options are configuration, not stored.

        >>> hub = Hub()
        >>> hub.configure_channels("room:*", presence=True, history_size=10)
        >>> hub.channel_options.get("room:1").presence, hub.broker.policy_for("room:1").size
        (True, 10)
        """
        self.channel_options.set(pattern, **options)
        made = self.channel_options.patterns()[pattern]
        history = (made.history_size, made.history_ttl, made.history_meta_ttl)
        if any(value is not None for value in history):
            self.broker.configure_channel(
                pattern, size=history[0], ttl=history[1], meta_ttl=history[2]
            )

    def connection_opened(self, connection: Endable) -> None:
        self.connections.add(connection)
        self.control.ensure_started()

    def connection_closed(self, connection: Endable) -> None:
        self.connections.discard(connection)
        if not self.connections and self._idle is not None:
            self._idle.set()

    def connection_counts(self) -> dict[str, int]:
        """Live connections by transport name."""
        counts: dict[str, int] = {}
        for connection in self.connections:
            counts[connection.name] = counts.get(connection.name, 0) + 1
        return counts

    def subscription_count(self) -> int:
        """Live subscriptions (connection x channel) in this process."""
        return sum(len(local.subscribers) for local in self._local.values())

    async def shutdown(self, timeout: float) -> bool:
        """Tell every connection to reconnect elsewhere and wait until they
        have ended, at most ``timeout`` seconds. True if all ended in time."""
        self.closing = True
        self._idle = asyncio.Event()
        if not self.connections:
            return True
        for connection in list(self.connections):
            connection.end(RECONNECT_SHUTDOWN)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def channel(self, name: str) -> Channel:
        """The publishing handle of channel ``name`` (validated); handles of
        one hub and name are equal and hash alike."""
        return Channel(self, check_channel(name))

    def local_subscribers(self, channel: str) -> int:
        local = self._local.get(channel)
        return 0 if local is None else len(local.subscribers)

    def local_channels(self) -> dict[str, int]:
        """Channels with live subscribers in this process, and how many each."""
        return {c: len(local.subscribers) for c, local in self._local.items() if local.subscribers}

    async def info(self, channel: str) -> ChannelInfo:
        info = await self.broker.info(check_channel(channel))
        info.extra["local_subscribers"] = self.local_subscribers(channel)
        return info

    async def attach(self, channel: str, subscriber: Subscriber) -> None:
        """Deliver ``channel``'s new publications to ``subscriber`` from now on.

        If this raises (the broker failed, or the caller was cancelled), the
        subscriber is not attached; a cancelled caller does not disturb the
        others waiting for the same broker subscription.
        """
        self._generation += 1
        local = self._local.get(channel)
        if local is None:
            local = self._local[channel] = _Local(self._generation)
            local.ready = asyncio.ensure_future(self._subscribe(channel, local))
            local.ready.add_done_callback(retrieve)
            self._start_checks()
        local.generation = self._generation
        local.subscribers += (subscriber,)
        if local.release is not None:  # came back within the grace period
            local.release.cancel()
            local.release = None
        ready = local.ready
        assert ready is not None
        if ready.done():  # the common case: no yield to the loop
            return
        try:
            await asyncio.shield(ready)
        except BaseException:
            self._leave(channel, local, subscriber)
            raise

    async def _subscribe(self, channel: str, local: _Local) -> None:
        try:
            await self.broker.subscribe(channel, self._dispatch)
        except BaseException:
            if self._local.get(channel) is local:
                del self._local[channel]  # the next attach tries again
            raise

    def detach(self, channel: str, subscriber: Subscriber) -> None:
        """Stop delivering to ``subscriber``; synchronous so close paths stay
        simple. The broker subscription is released after
        ``Settings.unsubscribe_grace`` seconds without subscribers, so
        clients that reconnect at once (long-polls) do not churn it."""
        local = self._local.get(channel)
        if local is not None:
            self._leave(channel, local, subscriber)

    def _leave(self, channel: str, local: _Local, subscriber: Subscriber) -> None:
        if subscriber not in local.subscribers:
            return
        local.subscribers = tuple(s for s in local.subscribers if s is not subscriber)
        if not local.subscribers and local.release is None and self._local.get(channel) is local:
            local.release = asyncio.get_running_loop().call_later(
                self.settings.unsubscribe_grace, self._spawn_release, channel, local
            )

    def _spawn_release(self, channel: str, local: _Local) -> None:
        local.release = None
        self._spawn(self._release(channel, local))

    async def _release(self, channel: str, local: _Local) -> None:
        if self._local.get(channel) is not local or local.subscribers:
            return  # somebody came back meanwhile
        ready = local.ready
        assert ready is not None
        if not ready.done():
            await asyncio.wait([ready])
        if self._local.get(channel) is not local or local.subscribers:
            return
        del self._local[channel]
        if not ready.cancelled() and ready.exception() is None:
            await self.broker.unsubscribe(channel, self._dispatch)

    def _dispatch(self, pub: Publication | PresenceEvent) -> None:
        if isinstance(pub, PresenceEvent):
            self.presence_tracker.on_event(pub)
            return
        local = self._local.get(pub.channel)
        if local is None:
            return
        delivered = 0
        # Held for the whole loop, so every subscriber gets this one frame
        # and its framings (the publication holds it weakly).
        frames = (pub.frame,)
        try:
            batch: WriteBatch | None = current_batch()  # once, not per recipient
        except RuntimeError:  # no running loop, so no live connection either
            batch = None
        outer, self.fan_out = self.fan_out, batch
        try:
            # ``subscribers`` is replaced, never changed, by attach and detach:
            # a subscriber that leaves during this loop leaves the next one.
            for subscriber in local.subscribers:
                try:
                    if subscriber.on_publication(pub, frames):
                        delivered += 1
                except Exception:
                    log.exception("subscriber failed on %r", pub)
        finally:
            self.fan_out = outer
        self.stats.delivered += delivered

    def deliver_frame(self, channel: str, frame: Frame) -> None:
        """Hand ``frame`` (a ``presence`` frame) to every local subscriber of
        ``channel``, through the path its messages take."""
        local = self._local.get(channel)
        for subscriber in local.subscribers if local is not None else ():
            try:
                subscriber.on_presence(channel, frame)
            except Exception:
                log.exception("subscriber failed on %r", frame)

    # -- presence ---------------------------------------------------------------

    def _presence_channel(self, channel: str) -> str:
        check_channel(channel)
        if not self.channel_options.get(channel).presence:
            raise BadRequest(PRESENCE_DISABLED, f"channel {channel!r} has no presence")
        return channel

    async def presence(
        self, channel: str, after: str | None = None, limit: int = 100
    ) -> PresencePage:
        """One page of ``channel``'s members, sorted by user id, after the
        user id ``after`` (None: from the first), at most ``limit`` (1-1000),
        with the channel's counts. Raises
        :class:`~torchannels.errors.BadRequest` (``presence_disabled``) for a
        channel without presence, ``invalid_limit`` for a bad limit.

        >>> import asyncio
        >>> hub = Hub()
        >>> hub.configure_channels("room:*", presence=True)
        >>> asyncio.run(hub.presence("room:1")).users
        0
        """
        self._presence_channel(channel)
        check_page_limit(limit)
        return await self.presence_tracker.page(channel, after, limit)

    async def presence_counts(self, channel: str) -> tuple[int, int]:
        """``(clients, users)`` present in ``channel`` across processes."""
        return await self.presence_tracker.counts(self._presence_channel(channel))

    # -- control: who stays connected ---------------------------------------------

    async def disconnect(
        self, user: str | None = None, client: str | None = None, reconnect: bool = False
    ) -> Reach:
        """End every connection of ``user`` (or the one ``client``) on every
        process sharing the broker, with a ``disconnect`` frame
        (``disconnected_by_server``); ``reconnect`` tells the clients
        whether to come back. Polling clients get it on their next request
        within a minute. ValueError for bad arguments.

        >>> import asyncio
        >>> asyncio.run(Hub().disconnect(user="42")).connections
        0
        """
        return await self.control.issue(disconnect_command(user, client, reconnect))

    async def unsubscribe(
        self, channel: str, user: str | None = None, client: str | None = None
    ) -> Reach:
        """Stop delivering ``channel`` to ``user``'s (or ``client``'s)
        connections on every process, with an ``unsubscribed`` error frame;
        their other channels are untouched, and a later subscribe is checked
        like any. ValueError for bad arguments."""
        return await self.control.issue(unsubscribe_command(check_channel(channel), user, client))

    async def revoke(
        self,
        user: str | None = None,
        before: float | None = None,
        jti: str | None = None,
        expires: float | None = None,
    ) -> Reach:
        """Refuse ``user``'s tokens issued before ``before`` (Unix seconds;
        kept until ``expires``, by default a day after ``before``), or the
        one token ``jti`` until ``expires``, on every process, and end the
        live connections they authorised (``disconnect``, ``token_revoked``,
        no reconnect). Matched against ``Identity.issued``/``token_id``
        (``ChannelMixin.credential()``). ValueError for bad arguments."""
        return await self.control.issue(revoke_command(user, before, jti, expires))

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background; :meth:`close` waits for it."""
        self._spawn(coro)

    def _on_resync(self, channels: Sequence[str]) -> None:
        """The broker's live delivery of ``channels`` may have had a gap."""
        for channel in channels:
            local = self._local.get(channel)
            for subscriber in local.subscribers if local is not None else ():
                subscriber.resync(channel, None)

    def _start_checks(self) -> None:
        if self._checks is None and self.settings.position_check_interval > 0:
            self._checks = asyncio.ensure_future(self._check_positions())

    async def _check_positions(self) -> None:
        """Every ``position_check_interval``: let each subscriber that is still
        behind the broker's position of one interval ago re-read, so a quiet
        channel that lost a live message recovers. (Positions of one interval
        ago: a publication still on its way over pub/sub is no loss.)"""
        earlier: dict[str, Position] = {}
        while True:
            await asyncio.sleep(self.settings.position_check_interval)
            channels = [c for c, local in self._local.items() if local.subscribers]
            for channel, top in earlier.items():
                local = self._local.get(channel)
                for subscriber in local.subscribers if local is not None else ():
                    subscriber.resync(channel, top)
            try:
                earlier = await self.broker.positions(channels) if channels else {}
            except Exception as exc:
                log.warning("position check failed: %s", exc)
                earlier = {}

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        """``broker.read``, shared: sessions that ask for the same channel from
        the same position at the same time (a burst of joins, every session
        re-reading after a resync) wait on one broker read, which is
        cancelled if every one of them stops waiting.

        A read is shared only while the channel has had no new attach since
        it started (the attach generation is part of its key): a subscriber
        that attached later might miss a publication made between the
        read's start and its attach, which live delivery never gave it.
        A read leaves the table the moment it completes.
        """
        local = self._local.get(channel)
        return await self._reads.read((channel, since, 0 if local is None else local.generation))

    async def flush(self) -> None:
        """Wait until every queued ``send``/``set_state`` is stored; raise the
        first that failed since the last flush."""
        await self.broker.flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task failed", exc_info=task.exception())

    async def close(self) -> None:
        """Stop the outbox consumer and the position checks, release broker
        subscriptions and close the broker (after storing what is queued)."""
        if self.outbox is not None:
            await self.outbox.close()
        if self._checks is not None:
            self._checks.cancel()
        for channel, local in list(self._local.items()):
            if local.release is not None:  # release now, not after the grace period
                local.release.cancel()
                self._spawn_release(channel, local)
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        await self.presence_tracker.close()
        if self.lifecycle is not None:
            await self.lifecycle.close()
        await self.broker.close()


_default: Hub | None = None


def default_hub() -> Hub:
    """The process-wide hub used when a handler names none (in-memory broker)."""
    global _default
    if _default is None:
        _default = Hub()
    return _default

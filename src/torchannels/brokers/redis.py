"""The Redis broker: many processes share channels through one Redis.

Epochs and offsets are assigned in Redis, so positions are global: a
client resumes on any process. Per channel, under the hash tag
``{PREFIX:CHANNEL}`` (one Cluster slot), Redis holds a meta hash (epoch,
last offset), a stream (the history, trimmed to exactly ``size`` entries
and to ``ttl`` seconds of age) and a state hash; the stream and state
expire after ``ttl`` seconds without a publish or set_state, and the meta
(about 120 bytes) after ``meta_ttl``, so idle channels cost next to
nothing. An empty Redis (restart without persistence, FLUSHDB, eviction)
therefore starts new epochs: resumers get an honest ``epoch_changed``.

Reading creates nothing: a channel nobody wrote answers the epoch
``NO_EPOCH`` at offset 0, a position that resumes at offset 0 of the epoch
the channel gets, so a subscriber that joined an empty channel is not reset
when the first message arrives. A channel's meta (epoch, last offset)
outlives its history, for the policy's ``meta_ttl``, so a client that had
every message resumes after a quiet period without a reset.

Publishing, set_state and reading are each one Lua script
(:mod:`.redis_lua`), one round trip; a batch of queued publishes is one
pipelined round trip (:mod:`.redis_store`). A process holds one pub/sub
connection (one per node on a Cluster, with sharded pub/sub); when it
breaks the broker reconnects with capped, jittered backoff, resubscribes,
and asks its resync listeners to re-read every channel from their
positions, so what pub/sub dropped is read back from history
(:mod:`.redis_delivery`).

A publish with an idempotency key (:mod:`.idempotency`) is checked and
recorded in the publish script itself, so two processes publishing one key
on one channel at once store one message.

History policies come from each process's configuration: every process
sharing a Redis must configure the same ones (and the same
``idempotency_window``). Needs Redis >= 6.2, or
Redis 7 for a Cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BrokerUnavailable
from ..frames import Duplicate, Publication
from ..protocol import Position
from .base import Broker, ChannelInfo, HistoryPolicy, Listener, ReadResult
from .control_redis import RedisControl
from .idempotency import DEFAULT_WINDOW, check_window
from .lifecycle_redis import RedisLifecycle
from .presence import PresenceEvent
from .presence_redis import RedisPresence, encode_event
from .publish_queue import PublishQueue
from .redis_delivery import Delivery
from .redis_errors import redis_py
from .redis_store import Store

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

log = logging.getLogger("torchannels.broker")

#: The options of :meth:`RedisBroker.from_url` that are the broker's (the
#: others go to redis-py).
_BROKER_OPTIONS = ("clock", "ping_interval", "reconnect_cap", "subscribe_timeout")


class RedisBroker(Broker):
    """History, state and delivery in Redis, shared by many processes.

    ``client`` is a redis-py asyncio ``Redis`` or ``RedisCluster`` created
    with ``decode_responses=False``; :meth:`from_url` makes one. ``clock``
    stamps ``ts`` and ages history (tests inject one).
    ``idempotency_window``: seconds a publish's idempotency key is kept.

    >>> broker = RedisBroker.from_url("redis://127.0.0.1:6379/0", prefix="app")
    >>> broker.prefix
    'app'
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = "torchannels",
        history: HistoryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        ping_interval: float = 10.0,
        reconnect_cap: float = 2.0,
        subscribe_timeout: float = 5.0,
        owns_client: bool = False,
        idempotency_window: float = DEFAULT_WINDOW,
    ) -> None:
        super().__init__(history, clock=clock)
        r = redis_py()
        if not prefix or any(c in prefix for c in "{}*?[]\\") or not prefix.isprintable():
            raise ValueError(f"invalid Redis key prefix {prefix!r}: no braces or glob characters")
        if client.get_encoder().decode_responses:  # payloads stay bytes end to end
            raise ValueError("the Redis broker needs a client with decode_responses=False")
        self.client = client
        self.prefix = prefix
        self.cluster = isinstance(client, r.asyncio.RedisCluster)
        self._owns_client = owns_client
        self._data = Store(
            client,
            prefix=prefix,
            cluster=self.cluster,
            policy_for=self.policy_for,
            clock=self._now,
            start=lambda: self._delivery.start(),  # on the first command
            idempotency_window=check_window(idempotency_window),
        )
        self._delivery = Delivery(
            client,
            cluster=self.cluster,
            pubsub_name=self._data.pubsub_name,
            failed=self._data.failed,
            recovered=self._recovered,
            ping_interval=ping_interval,
            reconnect_cap=reconnect_cap,
            subscribe_timeout=subscribe_timeout,
        )
        #: Publications in order, stored a batch per round trip.
        self._queue = PublishQueue(
            self._data.store,
            check_channel=self.check_channel,
            clock=self._now,
            owner=type(self).__name__,
        )
        self._presence = RedisPresence(
            client,
            tag=self._data.tag,
            run=self._data._run,
            failed=self._data.failed,
            clock=self._now,
        )
        self._redis_control = RedisControl(
            client,
            tag=f"{{{prefix}}}",
            cluster=self.cluster,
            run=self._data._run,
            subscribe=self._delivery.subscribe_raw,
        )
        self._redis_lifecycle = RedisLifecycle(
            client, tag=f"{{{prefix}}}", run=self._data._run, failed=self._data.failed
        )
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "torchannels",
        history: HistoryPolicy | None = None,
        cluster: bool | None = None,
        idempotency_window: float = DEFAULT_WINDOW,
        **options: Any,
    ) -> RedisBroker:
        """A broker on the Redis at ``url``: ``redis://[:password@]HOST:PORT/DB``,
        ``rediss://`` for TLS. A Cluster is ``redis+cluster://HOST:PORT`` (any
        node), or ``cluster=True``. ``options`` go to the broker, or else to
        redis-py (``socket_timeout=...``)."""
        r = redis_py()
        scheme, sep, rest = url.partition("://")
        if scheme.endswith("+cluster"):
            scheme, cluster = scheme.removesuffix("+cluster"), True
        url = scheme + sep + rest
        mine = {k: options.pop(k) for k in _BROKER_OPTIONS if k in options}
        # RESP2 pinned: pub/sub messages are then plain arrays on our own
        # connection (RESP3 sends push frames), and every reply has one shape.
        options.setdefault("protocol", 2)
        options.setdefault("socket_connect_timeout", 3.0)
        options.setdefault("socket_timeout", 10.0)
        # No retries: redis-py would re-send a whole pipeline after a broken
        # connection, storing publishes twice. A failed publish is reported.
        options.setdefault("retry", r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0))
        options["decode_responses"] = False
        client: Redis | RedisCluster
        if cluster:
            client = r.asyncio.RedisCluster.from_url(url, **options)
        else:
            # A bounded pool whose commands wait for a free connection (up to
            # ``timeout`` s) rather than fail at once when a burst of reads
            # needs more connections than it has.
            options.setdefault("max_connections", 64)
            options.setdefault("timeout", 10.0)
            pool = r.asyncio.BlockingConnectionPool.from_url(url, **options)
            client = r.asyncio.Redis.from_pool(pool)
        return cls(
            client,
            prefix=prefix,
            history=history,
            owns_client=True,
            idempotency_window=idempotency_window,
            **mine,
        )

    # -- keys -------------------------------------------------------------------

    def check_channel(self, channel: str) -> None:
        self._data.check(channel)  # a name that would escape its hash tag raises

    # -- availability -----------------------------------------------------------

    @property
    def available(self) -> bool:
        return not self._closed and self._delivery.ok and self._data.ok

    async def ping(self) -> None:
        """A PING (to every primary of a Cluster); raises the client's error."""
        if self.cluster:
            await self.client.ping(target_nodes="primaries")
        else:
            await self.client.ping()
        self._data.ok = True  # Redis answers again, even if no command ran since it failed

    async def connect(self) -> None:
        """Open the pub/sub connection now: a Redis out of reach is logged
        and retried in the background (:mod:`.redis_delivery`)."""
        try:
            await self._delivery.start()
        except BrokerUnavailable as exc:  # a Cluster: discovery is retried on use
            log.warning("%s; retrying on the next command", exc)

    def _now(self) -> float:
        return self.clock()

    # -- publishing (through the queue) and reading --------------------------------

    def publish_soon(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        return self._queue.publish_soon(channel, message)

    def set_state_soon(self, channel: str, messages: list[dict[str, Any]]) -> None:
        self._queue.set_state_soon(channel, messages)

    async def _publish_message(
        self, channel: str, message: dict[str, Any], idempotency_key: str | None
    ) -> Publication | Duplicate:
        return await self._queue.publish(channel, message, idempotency_key)

    async def _publish_batch(
        self, messages: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str | None] | None
    ) -> list[Publication | Duplicate]:
        return await self._queue.publish_many(messages, keys)

    async def set_state(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        return await self._queue.set_state(channel, messages)

    async def flush(self) -> None:
        await self._queue.flush()

    @property
    def failed_publishes(self) -> int:
        return self._queue.failed_publishes

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        return await self._data.read(channel, since)

    async def positions(self, channels: Sequence[str]) -> dict[str, Position]:
        return await self._data.positions(channels)

    @property
    def presence(self) -> RedisPresence:
        return self._presence

    @property
    def control(self) -> RedisControl:
        return self._redis_control

    @property
    def lifecycle(self) -> RedisLifecycle:
        return self._redis_lifecycle

    def publish_presence(self, event: PresenceEvent) -> None:
        """Queued behind this process's publications, then PUBLISHed on the
        channel's pub/sub channel (:mod:`.presence_redis`)."""
        try:
            self._queue.event_soon(event.channel, encode_event(event))
        except Exception as exc:
            log.warning("presence event of %r not sent: %s", event.channel, exc)

    async def info(self, channel: str) -> ChannelInfo:
        return await self._data.info(channel)

    # -- listing ------------------------------------------------------------------

    async def channels(
        self, prefix: str = "", *, after: str | None = None, limit: int = 100
    ) -> list[str]:
        """A SCAN for the channels' meta keys (:mod:`.redis_listing`), of
        which those written within their history TTL are listed."""
        return await self._data.channels(prefix, after, limit)

    # -- delivery -----------------------------------------------------------------

    async def subscribe(self, channel: str, listener: Listener) -> None:
        await self._delivery.subscribe(channel, listener)

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        await self._delivery.unsubscribe(channel, listener)

    def _recovered(self, channels: list[str]) -> None:
        """After a reconnect: Redis answers again, and ``channels`` (those
        with listeners) may have missed publications meanwhile."""
        self._data.ok = True
        self._data.scripts_loaded = False  # Redis may have restarted empty
        if channels:
            self._resync(channels)
        self._redis_control.recovered()

    async def close(self) -> None:
        """Store what is queued, stop the pub/sub reader, close connections."""
        await self._queue.drain()
        self._closed = True
        await self._delivery.close()
        if self._owns_client:
            await self.client.aclose()

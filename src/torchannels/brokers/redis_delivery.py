"""The Redis broker's delivery: listeners by channel, over pub/sub feeds.

A channel's pub/sub channel carries its publications and its presence
events (:mod:`.presence_redis`), which listeners get in the order Redis
published them. A process holds one pub/sub connection (a :class:`.redis_feed.Feed`; one
per node on a Cluster, with sharded pub/sub), and subscribes it to a
channel while the channel has listeners. When a feed breaks, the delivery
reconnects with capped, jittered backoff, resubscribes, and then hands the
broker every channel with listeners, so that its resync listeners re-read
them from their positions and what pub/sub dropped is read back from
history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..cancelling import cancel_and_wait
from ..errors import BrokerError, BrokerUnavailable
from ..frames import Publication
from .base import Listener
from .presence import PresenceEvent
from .presence_redis import EVENT_MARK, decode_event
from .redis_errors import broker_error, redis_py
from .redis_feed import Feed

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster
    from redis.asyncio.connection import AbstractConnection

log = logging.getLogger("torchannels.broker")

#: Seconds between two "still unreachable" lines while Redis is out of reach.
SUMMARY_EVERY = 60.0


class Delivery:
    """The listeners of one :class:`~.redis.RedisBroker` and its feeds.

    ``client`` is the broker's: its address, TLS and credentials make our
    own connections, and on a Cluster its slot map routes channels to
    nodes. ``pubsub_name`` names a channel's pub/sub channel, ``failed``
    turns a redis-py error of a command into the broker's error, and
    ``recovered`` gets the channels with listeners after a reconnect.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        cluster: bool,
        pubsub_name: Callable[[str], bytes],
        failed: Callable[[BaseException, str], BaseException],
        recovered: Callable[[list[str]], None],
        ping_interval: float,
        reconnect_cap: float,
        subscribe_timeout: float,
    ) -> None:
        self.client = client
        self.cluster = cluster
        #: False from a lost feed until every feed is re-made.
        self.ok = True
        self._pubsub_name = pubsub_name
        self._failed = failed
        self._recovered = recovered
        self._ping_interval = ping_interval
        self._reconnect_cap = reconnect_cap
        self._subscribe_timeout = subscribe_timeout
        self._listeners: dict[str, list[Listener]] = {}
        #: Pub/sub channel name -> channel, for every channel with listeners.
        self._wanted: dict[bytes, str] = {}
        #: Pub/sub names of our own (the control bus) -> their callback.
        self._raw: dict[bytes, Callable[[bytes], None]] = {}
        self._feeds: dict[str, Feed] = {}  # by node name ("" on a single Redis)
        self._feed_lock = asyncio.Lock()
        self._started = False
        self._recovery: asyncio.Task[None] | None = None
        self._lost_again = False
        self._closed = False
        #: UNSUBSCRIBEs taken back after a cancelled subscribe.
        self._cleanups: set[asyncio.Task[None]] = set()

    # -- listeners ----------------------------------------------------------------

    async def subscribe(self, channel: str, listener: Listener) -> None:
        listeners = self._listeners.setdefault(channel, [])
        listeners.append(listener)
        if len(listeners) > 1:
            return
        name = self._pubsub_name(channel)
        self._wanted[name] = channel
        sent = False
        try:
            await self.start()
            feed = await self._feed_for(name)
            sent = True  # from here the SUBSCRIBE may reach Redis, confirmed or not
            await feed.subscribe([name], self._subscribe_timeout)
        except BaseException:
            if self._drop(channel, listener) and sent:
                # Cancelled (or failed) after the SUBSCRIBE went out: take it
                # back, from a task of its own since this one is cancelled.
                self._cleanup(self._unsubscribe_name(name))
            raise

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        if self._drop(channel, listener):
            await self._unsubscribe_name(self._pubsub_name(channel))

    async def _unsubscribe_name(self, name: bytes) -> None:
        """UNSUBSCRIBE ``name`` on its feed, unless it is wanted again. The
        check and the send happen in one step, so a SUBSCRIBE made later
        goes out after this UNSUBSCRIBE on the same connection."""
        feed = self._feeds.get(self._node_of(name))
        if feed is not None and not feed.lost and name not in self._wanted:
            # When the connection went meanwhile there is nothing to unsubscribe:
            # a feed that is re-made subscribes only what is wanted then.
            with contextlib.suppress(BrokerError):
                await feed.unsubscribe([name], self._subscribe_timeout)

    def _cleanup(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _drop(self, channel: str, listener: Listener) -> bool:
        """Forget ``listener``; True when it was the channel's last."""
        listeners = self._listeners.get(channel)
        if not listeners or listener not in listeners:
            return False
        listeners.remove(listener)
        if listeners:
            return False
        del self._listeners[channel]
        self._wanted.pop(self._pubsub_name(channel), None)
        return True

    async def subscribe_raw(self, name: bytes, on_message: Callable[[bytes], None]) -> None:
        """Subscribe the pub/sub connection to ``name`` for good, calling
        ``on_message`` with each message's bytes. Kept across reconnects;
        if the connection is down now, the reconnect subscribes it."""
        self._raw[name] = on_message
        try:
            await self.start()
            feed = await self._feed_for(name)
            await feed.subscribe([name], self._subscribe_timeout)
        except BrokerError as exc:
            log.debug("pub/sub subscribe of %r waits for the reconnect: %s", name, exc)

    def _deliver(self, name: bytes, data: bytes) -> None:
        raw = self._raw.get(name)
        if raw is not None:
            try:
                raw(data)
            except Exception:
                log.exception("pub/sub callback failed for %r", name)
            return
        channel = self._wanted.get(name)
        if channel is None:
            return  # arrived after the unsubscribe was sent
        item: Publication | PresenceEvent
        try:
            if data.startswith(EVENT_MARK):
                item = decode_event(channel, data)
            else:
                offset, epoch, ts, payload = data.split(b":", 3)
                item = Publication(channel, epoch.decode(), int(offset), float(ts), payload)
        except ValueError:
            log.error("malformed message on %r: %r", channel, data[:80])
            return
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener(item)
            except Exception:  # a broken listener must not stop the others
                log.exception("listener failed for %s", channel)

    # -- pub/sub connections ------------------------------------------------------

    async def start(self) -> None:
        """Open the pub/sub connection on first use: on a single Redis it is
        made at once, so a lost Redis is noticed even while nobody listens."""
        if self._started:
            return
        if self._closed:
            raise BrokerUnavailable("the Redis broker is closed")
        if self.cluster:  # the slot map, which routes our pub/sub connections
            cluster: Any = self.client
            try:
                await cluster.initialize()
            except Exception as exc:
                raise self._failed(exc, "cluster discovery") from exc
            self._started = True
            return
        self._started = True
        try:
            async with self._feed_lock:
                await self._open_feed("")
        except Exception as exc:
            self._feed_lost(None, exc)

    def _node_of(self, name: bytes) -> str:
        if not self.cluster:
            return ""
        cluster: Any = self.client
        return str(cluster.get_node_from_key(name).name)

    async def _feed_for(self, name: bytes) -> Feed:
        if not self.ok:
            raise BrokerUnavailable("the Redis pub/sub connection is down; reconnecting")
        node = self._node_of(name)
        feed = self._feeds.get(node)
        if feed is None:
            async with self._feed_lock:
                feed = self._feeds.get(node) or await self._open_feed(node)
        return feed

    async def _open_feed(self, node: str) -> Feed:
        feed = Feed(
            self._connection(node),
            sharded=self.cluster,
            on_message=self._deliver,
            on_lost=self._feed_lost,
            ping_interval=self._ping_interval,
        )
        try:
            await feed.open()
        except Exception as exc:
            await feed.close()
            raise broker_error(exc, "pub/sub connect") from exc
        self._feeds[node] = feed
        return feed

    def _connection(self, node: str) -> AbstractConnection:
        """A connection of our own, with the client's address, TLS and
        credentials, RESP2, no socket timeout (it waits for messages)."""
        if self.cluster:
            cluster: Any = self.client
            target = cluster.get_node(node_name=node)
            cls, kwargs = target.connection_class, dict(target.connection_kwargs)
        else:
            single: Any = self.client
            pool = single.connection_pool
            cls, kwargs = pool.connection_class, dict(pool.connection_kwargs)
        r = redis_py()
        kwargs.update(
            protocol=2,
            decode_responses=False,
            socket_timeout=None,
            health_check_interval=0,
            retry=r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0),
        )
        connection: AbstractConnection = cls(**kwargs)
        return connection

    # -- loss and recovery --------------------------------------------------------

    def _feed_lost(self, feed: Feed | None, exc: BaseException) -> None:
        if self._closed or (feed is not None and self._feeds.get(self._feed_key(feed)) is not feed):
            return  # a feed we already replaced
        if feed is None:  # never connected: at start-up
            log.warning(
                "%s; retrying in the background: publishes and subscriptions fail until it answers",
                exc,
            )
        else:
            log.warning(
                "Redis pub/sub connection lost (%s: %s); reconnecting", type(exc).__name__, exc
            )
        self.ok = False
        if self._recovery is None:
            self._recovery = asyncio.ensure_future(self._recover())
        else:
            self._lost_again = True

    def _feed_key(self, feed: Feed) -> str:
        for key, candidate in self._feeds.items():
            if candidate is feed:
                return key
        return "\0"

    async def _recover(self) -> None:
        """Re-make every feed and resubscribe, with capped, jittered backoff;
        then hand the broker every channel to re-read."""
        attempt = 0
        lost = said = time.monotonic()
        try:
            while not self._closed:
                self._lost_again = False
                try:
                    await self._rebuild()
                except Exception as exc:
                    delay = random.uniform(0, min(self._reconnect_cap, 0.05 * 2**attempt))
                    attempt += 1
                    log.debug("Redis pub/sub reconnect failed (%r); next in %.2f s", exc, delay)
                    if time.monotonic() - said >= SUMMARY_EVERY:
                        said = time.monotonic()
                        log.warning(
                            "Redis still unreachable after %.0f s (%d attempts; last: %s); "
                            "retrying",
                            said - lost,
                            attempt,
                            exc,
                        )
                    await asyncio.sleep(delay)
                    continue
                if not self._lost_again:
                    break
        finally:
            self._recovery = None
        if self._closed:
            return
        self.ok = True
        log.info(
            "Redis is reachable again after %.1f s; re-reading %d channels",
            time.monotonic() - lost,
            len(self._wanted),
        )
        self._recovered(sorted(set(self._wanted.values())))

    async def _rebuild(self) -> None:
        async with self._feed_lock:
            old, self._feeds = list(self._feeds.values()), {}
            for feed in old:
                await feed.close()
            if self.cluster:
                cluster: Any = self.client
                await cluster.nodes_manager.initialize()
            else:
                await self._open_feed("")
            by_node: dict[str, list[bytes]] = {}
            for name in [*self._wanted, *self._raw]:
                by_node.setdefault(self._node_of(name), []).append(name)
            for node, names in by_node.items():
                feed = self._feeds.get(node) or await self._open_feed(node)
                await feed.subscribe(names, self._subscribe_timeout)
            # An unsubscribe while this ran may have found no feed to send on
            # (its node's was not made yet), or sent before our SUBSCRIBE:
            # take back what is no longer wanted. One made from here on finds
            # its feed, and its UNSUBSCRIBE follows our SUBSCRIBE.
            for node, names in by_node.items():
                stale = [n for n in names if n not in self._wanted and n not in self._raw]
                if stale:
                    await self._feeds[node].unsubscribe(stale, self._subscribe_timeout)

    async def close(self) -> None:
        """Stop reconnecting and close every feed."""
        self._closed = True
        for task in list(self._cleanups):
            task.cancel()
        if self._recovery is not None:
            await cancel_and_wait(self._recovery)
        for feed in list(self._feeds.values()):
            await feed.close()
        self._feeds.clear()

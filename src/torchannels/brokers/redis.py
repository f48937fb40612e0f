"""The Redis broker: many processes share channels through one Redis.

Epochs and offsets are assigned in Redis, so positions are global: a
client resumes on any process. Per channel, under the hash tag
``{PREFIX:CHANNEL}`` (one Cluster slot), Redis holds a meta hash (epoch,
last offset), a stream (the history, trimmed to exactly ``size`` entries
and to ``ttl`` seconds of age) and a state hash; every key expires after
``ttl`` seconds without a publish or set_state, so idle channels cost
nothing. An empty Redis (restart without persistence, FLUSHDB, eviction)
therefore starts new epochs: resumers get an honest ``epoch_changed``.

Reading a channel that does not exist creates its meta (its epoch), as
Centrifugo does, so a subscriber that joined an empty channel is not reset
when the first message arrives; such a meta key expires with the TTL.

Publishing, set_state and reading are each one Lua script
(:mod:`.redis_lua`), one round trip; a batch of queued publishes is one
pipelined round trip. A process holds one pub/sub connection (one per
node on a Cluster, with sharded pub/sub); when it breaks the broker
reconnects with capped, jittered backoff, resubscribes, and asks its
resync listeners to re-read every channel from their positions, so what
pub/sub dropped is read back from history.

History policies come from each process's configuration: every process
sharing a Redis must configure the same ones. Needs Redis >= 6.2, or
Redis 7 for a Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BrokerError, BrokerUnavailable, ChannelNameError
from ..frames import Publication
from ..protocol import Position
from . import redis_lua as lua
from .base import Broker, ChannelInfo, HistoryPolicy, Listener, QueuedOp, ReadResult, plan_read
from .redis_feed import Feed

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster
    from redis.asyncio.connection import AbstractConnection

log = logging.getLogger("torchannels.broker")

#: Most messages one publish script call carries (it blocks Redis meanwhile).
_GROUP = 256
#: ``after`` for a read that wants no entries (info).
_NONE = 10**18


def _redis() -> Any:
    try:
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff
        import redis.exceptions
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Redis broker needs redis-py: pip install 'torchannels[redis]'"
        ) from None
    return redis


def _fail(exc: BaseException, where: str) -> BrokerError:
    """The broker error for a redis-py error: unreachable, or refused."""
    r = _redis()
    if isinstance(exc, r.exceptions.ResponseError) and not isinstance(
        exc, r.exceptions.ClusterDownError
    ):
        return BrokerError(f"Redis refused {where}: {exc}")
    return BrokerUnavailable(f"Redis is unreachable ({where}): {exc!r}")


def _unreachable(exc: BaseException) -> bool:
    r = _redis()
    return isinstance(exc, r.exceptions.RedisError | r.exceptions.RedisClusterException | OSError)


_Call = tuple[list[QueuedOp], str, list[Any]]


def _settle_all(calls: list[_Call], error: BaseException, results: dict[int, Any]) -> None:
    for ops, _script, _args in calls:
        for op in ops:
            results[id(op)] = error


class RedisBroker(Broker):
    """History, state and delivery in Redis, shared by many processes.

    ``client`` is a redis-py asyncio ``Redis`` or ``RedisCluster`` created
    with ``decode_responses=False``; :meth:`from_url` makes one. ``clock``
    stamps ``ts`` and ages history (tests inject one).

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
    ) -> None:
        super().__init__(history, clock=clock)
        r = _redis()
        if not prefix or any(c in prefix for c in "{}*?[]\\") or not prefix.isprintable():
            raise ValueError(f"invalid Redis key prefix {prefix!r}: no braces or glob characters")
        if client.get_encoder().decode_responses:  # payloads stay bytes end to end
            raise ValueError("the Redis broker needs a client with decode_responses=False")
        self.client = client
        self.prefix = prefix
        self.cluster = isinstance(client, r.asyncio.RedisCluster)
        self._owns_client = owns_client
        self._ping_interval = ping_interval
        self._reconnect_cap = reconnect_cap
        self._subscribe_timeout = subscribe_timeout
        self._publish_cmd = "SPUBLISH" if self.cluster else "PUBLISH"
        self._listeners: dict[str, list[Listener]] = {}
        #: Pub/sub channel name -> channel, for every channel with listeners.
        self._wanted: dict[bytes, str] = {}
        self._feeds: dict[str, Feed] = {}  # by node name ("" on a single Redis)
        self._feed_lock = asyncio.Lock()
        self._started = False
        self._recovery: asyncio.Task[None] | None = None
        self._lost_again = False
        self._feeds_ok = True
        self._commands_ok = True
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "torchannels",
        history: HistoryPolicy | None = None,
        cluster: bool | None = None,
        **options: Any,
    ) -> RedisBroker:
        """A broker on the Redis at ``url``: ``redis://[:password@]HOST:PORT/DB``,
        ``rediss://`` for TLS. A Cluster is ``redis+cluster://HOST:PORT`` (any
        node), or ``cluster=True``. ``options`` go to the broker, or else to
        redis-py (``socket_timeout=...``)."""
        r = _redis()
        scheme, sep, rest = url.partition("://")
        if scheme.endswith("+cluster"):
            scheme, cluster = scheme.removesuffix("+cluster"), True
        url = scheme + sep + rest
        mine = {
            k: options.pop(k) for k in ("clock", "ping_interval", "reconnect_cap") if k in options
        }
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
        return cls(client, prefix=prefix, history=history, owns_client=True, **mine)

    # -- keys -------------------------------------------------------------------

    def _keys(self, channel: str) -> list[str]:
        if "{" in channel or "}" in channel:  # the hash tag must end where we say
            raise ChannelNameError(f"invalid channel name {channel!r}: no braces")
        tag = f"{{{self.prefix}:{channel}}}"
        return [tag + ":m", tag + ":h", tag + ":s", tag + ":p"]

    def _pubsub_name(self, channel: str) -> bytes:
        return self._keys(channel)[3].encode()

    # -- availability -----------------------------------------------------------

    @property
    def available(self) -> bool:
        return not self._closed and self._feeds_ok and self._commands_ok

    def _now(self) -> float:
        return self.clock()

    def _horizon(self, channel: str) -> str:
        return repr(self._now() - self.policy_for(channel).ttl)

    def _ttl_ms(self, channel: str) -> str:
        return str(max(1, round(self.policy_for(channel).ttl * 1000)))

    async def _run(self, script: str, keys: list[str], args: list[Any], where: str) -> Any:
        """EVALSHA ``script`` (loading it when Redis lacks it)."""
        await self._start()
        r = _redis()
        try:
            try:
                reply = await self.client.evalsha(lua.sha1(script), len(keys), *keys, *args)
            except r.exceptions.NoScriptError:
                await self.client.script_load(script)
                reply = await self.client.evalsha(lua.sha1(script), len(keys), *keys, *args)
        except Exception as exc:
            raise self._failed(exc, where) from exc
        self._commands_ok = True
        return reply

    def _failed(self, exc: BaseException, where: str) -> BaseException:
        if not _unreachable(exc):
            return exc
        error = _fail(exc, where)
        if isinstance(error, BrokerUnavailable):
            self._commands_ok = False
        return error

    # -- publishing ---------------------------------------------------------------

    def check_channel(self, channel: str) -> None:
        self._keys(channel)  # a name that would escape its hash tag raises

    def _calls(self, batch: list[QueuedOp]) -> list[_Call]:
        """The script calls for ``batch``, in order: consecutive publishes to
        one channel share a call (up to ``_GROUP`` messages)."""
        calls: list[_Call] = []
        for op in batch:
            keys = self._keys(op.channel)
            ttl = self._ttl_ms(op.channel)
            stamps = [a for d in op.drafts for a in (repr(d.ts), d.head)]
            if op.state:
                calls.append(([op], lua.SET_STATE, [*keys[:3], secrets.token_hex(4), ttl, *stamps]))
                continue
            last = calls[-1] if calls else None
            if (
                last is not None
                and last[1] is lua.PUBLISH
                and last[0][0].channel == op.channel
                and len(last[0]) < _GROUP
            ):
                last[0].append(op)
                last[2].extend(stamps)
                continue
            size = str(self.policy_for(op.channel).size)
            head = [*keys, secrets.token_hex(4), ttl, self._horizon(op.channel), size]
            calls.append(([op], lua.PUBLISH, [*head, self._publish_cmd, *stamps]))
        return calls

    async def _store(self, batch: list[QueuedOp]) -> list[Publication | Position | BaseException]:
        """Every op of ``batch`` in one pipelined round trip (two when Redis
        lacked the scripts: a script cache flush between our calls could
        then reorder a channel's publishes, which needs SCRIPT FLUSH and a
        reload by someone else inside one pipeline)."""
        r = _redis()
        results: dict[int, Publication | Position | BaseException] = {}
        try:
            await self._start()
            pending = self._calls(batch)
        except BrokerError as exc:
            return [exc] * len(batch)
        for attempt in range(2):
            try:
                pipe = self.client.pipeline(transaction=False)
                for _ops, script, args in pending:
                    nkeys = 3 if script is lua.SET_STATE else 4
                    # execute_command: redis-py refuses pipe.evalsha on a Cluster,
                    # though every key of one call shares a slot.
                    pipe.execute_command("EVALSHA", lua.sha1(script), nkeys, *args)
                replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                _settle_all(pending, self._failed(exc, "publish"), results)
                break
            self._commands_ok = True
            missing = []
            for call, reply in zip(pending, replies, strict=True):
                ops = call[0]
                if isinstance(reply, r.exceptions.NoScriptError) and attempt == 0:
                    missing.append(call)
                elif isinstance(reply, Exception):
                    _settle_all([call], self._failed(reply, "publish"), results)
                else:
                    epoch, offset = reply[0].decode(), int(reply[1])
                    for i, op in enumerate(ops):
                        results[id(op)] = self._stored(op, epoch, offset + i)
            if not missing:
                break
            try:
                for script in {script for _ops, script, _args in missing}:
                    await self.client.script_load(script)
            except Exception as exc:
                _settle_all(missing, self._failed(exc, "script load"), results)
                break
            pending = missing
        return [results[id(op)] for op in batch]

    @staticmethod
    def _stored(op: QueuedOp, epoch: str, offset: int) -> Publication | Position:
        if op.state:
            return Position(epoch, offset)
        return op.drafts[0].finish(Position(epoch, offset))

    # -- reading ------------------------------------------------------------------

    async def _read_raw(self, channel: str, since: Position | None, after: int) -> list[Any]:
        keys = self._keys(channel)[:3]
        args: list[Any] = [
            secrets.token_hex(4),
            self._ttl_ms(channel),
            self._horizon(channel),
            since.epoch if since is not None else "",
            since.offset if since is not None else 0,
            after,
        ]
        reply: list[Any] = await self._run(lua.READ, keys, args, "read")
        return reply

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        after = -1
        for _ in range(3):
            reply = await self._read_raw(channel, since, after)
            epoch, top, first, _kept, state_at, count, stamps, blob, got, entries = reply
            epoch = epoch.decode()
            plan = plan_read(
                since,
                epoch=epoch,
                top=top,
                first=first,
                state_at=state_at if state_at >= 0 else None,
            )
            if plan.after >= got:
                break
            after = plan.after  # the rare reset that needs older entries: fetch them
        else:
            raise BrokerError(f"channel {channel!r} kept changing while it was read")
        if plan.stale_state:
            log.debug("state of %r is older than its history; set_state more often", channel)
        pubs = []
        for entry_id, fields in entries:
            offset = int(entry_id[2:])
            # Entries before ``first`` are older than the TTL (the script
            # found ``first`` by age): never deliver past it, never skip inside.
            if offset > plan.after and offset >= first:
                pubs.append(Publication(channel, epoch, offset, float(fields[1]), fields[3]))
        state = None
        if plan.state:
            ats = stamps.split(b"\n") if count else []
            payloads = blob.split(b"\n") if count else []
            state = [
                Publication(channel, epoch, state_at, float(t), p)
                for t, p in zip(ats, payloads, strict=True)
            ]
        return ReadResult(plan.position, pubs, state, plan.reset)

    async def positions(self, channels: Sequence[str]) -> dict[str, Position]:
        await self._start()
        pipe = self.client.pipeline(transaction=False)
        for channel in channels:
            pipe.hmget(self._keys(channel)[0], ["e", "o"])
        try:
            replies = await pipe.execute()
        except Exception as exc:
            raise self._failed(exc, "positions") from exc
        self._commands_ok = True
        return {
            c: Position(e.decode(), int(o))
            for c, (e, o) in zip(channels, replies, strict=True)
            if e is not None and o is not None
        }

    async def info(self, channel: str) -> ChannelInfo:
        reply = await self._read_raw(channel, None, _NONE)
        epoch, top, _first, kept, state_at = reply[:5]
        return ChannelInfo(channel, Position(epoch.decode(), top), kept, state_at >= 0)

    # -- delivery -----------------------------------------------------------------

    async def subscribe(self, channel: str, listener: Listener) -> None:
        listeners = self._listeners.setdefault(channel, [])
        listeners.append(listener)
        if len(listeners) > 1:
            return
        name = self._pubsub_name(channel)
        self._wanted[name] = channel
        try:
            await self._start()
            feed = await self._feed_for(name)
            await feed.subscribe([name], self._subscribe_timeout)
        except BaseException:
            self._drop(channel, listener)
            raise

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        if not self._drop(channel, listener):
            return
        name = self._pubsub_name(channel)
        feed = self._feeds.get(self._node_of(name))
        if feed is not None and not feed.lost and name not in self._wanted:
            # When the connection went meanwhile there is nothing to unsubscribe.
            with contextlib.suppress(BrokerError):
                await feed.unsubscribe([name], self._subscribe_timeout)

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

    def _deliver(self, name: bytes, data: bytes) -> None:
        channel = self._wanted.get(name)
        if channel is None:
            return  # arrived after the unsubscribe was sent
        try:
            offset, epoch, ts, payload = data.split(b":", 3)
            pub = Publication(channel, epoch.decode(), int(offset), float(ts), payload)
        except ValueError:
            log.error("malformed publication on %r: %r", channel, data[:80])
            return
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener(pub)
            except Exception:  # a broken listener must not stop the others
                log.exception("listener failed for %s", channel)

    # -- pub/sub connections ------------------------------------------------------

    async def _start(self) -> None:
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
        if not self._feeds_ok:
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
            raise _fail(exc, "pub/sub connect") from exc
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
        r = _redis()
        kwargs.update(
            protocol=2,
            decode_responses=False,
            socket_timeout=None,
            health_check_interval=0,
            retry=r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0),
        )
        connection: AbstractConnection = cls(**kwargs)
        return connection

    def _feed_lost(self, feed: Feed | None, exc: BaseException) -> None:
        if self._closed or (feed is not None and self._feeds.get(self._feed_key(feed)) is not feed):
            return  # a feed we already replaced
        log.warning("Redis pub/sub connection lost (%r); reconnecting", exc)
        self._feeds_ok = False
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
        then ask the resync listeners to re-read every channel."""
        attempt = 0
        try:
            while not self._closed:
                self._lost_again = False
                try:
                    await self._rebuild()
                except Exception as exc:
                    delay = random.uniform(0, min(self._reconnect_cap, 0.05 * 2**attempt))
                    attempt += 1
                    log.debug("Redis pub/sub reconnect failed (%r); next in %.2f s", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                if not self._lost_again:
                    break
        finally:
            self._recovery = None
        if self._closed:
            return
        self._feeds_ok = self._commands_ok = True
        log.info("Redis pub/sub reconnected; re-reading %d channels", len(self._wanted))
        channels = sorted(set(self._wanted.values()))
        if channels:
            self._resync(channels)

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
            for name in list(self._wanted):
                by_node.setdefault(self._node_of(name), []).append(name)
            for node, names in by_node.items():
                feed = self._feeds.get(node) or await self._open_feed(node)
                await feed.subscribe(names, self._subscribe_timeout)

    async def close(self) -> None:
        """Store what is queued, stop the pub/sub reader, close connections."""
        await super().close()
        self._closed = True
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        for feed in list(self._feeds.values()):
            await feed.close()
        self._feeds.clear()
        if self._owns_client:
            await self.client.aclose()

"""The Redis broker's channels in Redis: their keys, history and state.

Per channel, under the hash tag ``{PREFIX:CHANNEL}`` (one Cluster slot),
Redis holds a meta hash (epoch, last offset), a stream (the history) and a
state hash, written and read by the Lua scripts of :mod:`.redis_lua`: a
script call per read, and a batch of queued publishes and set_states as
pipelined script calls, one round trip (up to 256 publishes to any
channels share one call). A run of publishes of which some carry an
idempotency key is one PUBLISH_KEYED call instead, which also keeps the
channels' keys. ``ok`` is False from a command
that found Redis unreachable until a command reaches it again.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BrokerError, BrokerUnavailable, ChannelNameError
from ..frames import Duplicate, Publication
from ..protocol import Position
from . import redis_lua as lua
from .base import (
    NO_EPOCH,
    ChannelInfo,
    HistoryPolicy,
    ReadResult,
    check_unbroken,
    plan_read,
)
from .publish_queue import QueuedOp, Result
from .redis_errors import broker_error, redis_py, unreachable

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

log = logging.getLogger("torchannels.broker")

#: Most messages one publish script call carries (it blocks Redis meanwhile).
_GROUP = 256
#: ``after`` for a read that wants no entries (info).
_NONE = 10**18

_Call = tuple[list[QueuedOp], str, list[Any]]
#: The "script" of a call that publishes an event's payload (a plain PUBLISH).
_EVENT = "event"
#: The "script" of a run of publishes while :meth:`Store._calls` gathers it.
_RUN = "run"


def _settle_all(calls: list[_Call], error: BaseException, results: dict[int, Any]) -> None:
    for ops, _script, _args in calls:
        for op in ops:
            results[id(op)] = error


def _numkeys(ops: list[QueuedOp], script: str) -> int:
    if script is lua.SET_STATE:
        return 3
    if script is lua.PUBLISH_MANY:
        return 4 * len({op.channel for op in ops})
    if script is lua.PUBLISH_KEYED:
        return 6 * len({op.channel for op in ops})
    return 4


def _duplicate(channel: str, record: bytes) -> Duplicate:
    """The answer of a publish whose key has ``record`` (``EPOCH:OFFSET:TS``)."""
    epoch, offset, ts = record.decode().split(":", 2)
    return Duplicate(channel, epoch, int(offset), float(ts))


class Store:
    """The channels of one :class:`~.redis.RedisBroker` in Redis.

    ``policy_for`` and ``clock`` are the broker's; ``start`` opens its
    pub/sub connection, on the first command.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str,
        cluster: bool,
        policy_for: Callable[[str], HistoryPolicy],
        clock: Callable[[], float],
        start: Callable[[], Awaitable[None]],
        idempotency_window: float,
    ) -> None:
        self.client = client
        self.prefix = prefix
        #: False once a command found Redis unreachable, until one reaches it.
        self.ok = True
        self._policy_for = policy_for
        self._clock = clock
        self._start = start
        #: How long an idempotency key is kept, in ms.
        self._window_ms = str(max(1, round(idempotency_window * 1000)))
        self._publish_cmd = "SPUBLISH" if cluster else "PUBLISH"
        #: One script call publishes to several channels (not on a Cluster).
        self._many = not cluster
        #: The publish scripts are known to be loaded (on every primary): a
        #: batch with an event needs them, since an event sent before a
        #: publish that Redis then asks to be sent again would overtake it.
        #: False again after Redis lacked a script or a reconnect.
        self.scripts_loaded = False

    # -- keys -------------------------------------------------------------------

    @staticmethod
    def check(channel: str) -> None:
        """Raise for a name that would escape its hash tag."""
        if "{" in channel or "}" in channel:  # the hash tag must end where we say
            raise ChannelNameError(f"invalid channel name {channel!r}: no braces")

    def tag(self, channel: str) -> str:
        """The channel's hash tag ``{PREFIX:CHANNEL}``, which starts its keys."""
        self.check(channel)
        return f"{{{self.prefix}:{channel}}}"

    def keys(self, channel: str) -> list[str]:
        tag = self.tag(channel)
        return [tag + ":m", tag + ":h", tag + ":s", tag + ":p"]

    def key_records(self, channel: str) -> list[str]:
        """The channel's idempotency keys: the records hash, the expiry set."""
        tag = self.tag(channel)
        return [tag + ":ik", tag + ":ikx"]

    def pubsub_name(self, channel: str) -> bytes:
        return self.keys(channel)[3].encode()

    def _horizon(self, channel: str) -> str:
        return repr(self._clock() - self._policy_for(channel).ttl)

    def _ttl_ms(self, channel: str) -> str:
        return str(max(1, round(self._policy_for(channel).ttl * 1000)))

    def _expiries(self, channel: str) -> tuple[str, str, str]:
        """The history TTL, the meta TTL (ms) and the time now, for a write."""
        keep = str(max(1, round(self._policy_for(channel).keep * 1000)))
        return self._ttl_ms(channel), keep, repr(self._clock())

    async def _run(
        self, script: str, keys: list[str], args: list[Any], where: str, *, again: bool = False
    ) -> Any:
        """EVALSHA ``script`` (loading it when Redis lacks it).

        ``again``: the script writes nothing, so a broken connection is tried
        once more on a new one. After a node restarts, a Cluster client's first
        command can find the old connection dead (redis-py retries nothing
        here: see ``from_url``), and a read must not fail for that."""
        await self._start()
        r = redis_py()
        for tries_left in (1, 0) if again else (0,):
            try:
                reply = await self._evalsha(script, keys, args)
                break
            except r.exceptions.ConnectionError as exc:
                if not tries_left:
                    raise self.failed(exc, where) from exc
            except Exception as exc:
                raise self.failed(exc, where) from exc
        self.ok = True
        return reply

    async def _evalsha(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.evalsha(lua.sha1(script), len(keys), *keys, *args)
        except redis_py().exceptions.NoScriptError:
            await self.client.script_load(script)
            return await self.client.evalsha(lua.sha1(script), len(keys), *keys, *args)

    def failed(self, exc: BaseException, where: str) -> BaseException:
        if not unreachable(exc):
            return exc
        error = broker_error(exc, where)
        if isinstance(error, BrokerUnavailable):
            self.ok = False
        return error

    # -- publishing --------------------------------------------------------------

    def _calls(self, batch: list[QueuedOp]) -> list[_Call]:
        """The script calls for ``batch``, in order. On one Redis, a run of
        publishes (to any channels) shares one call, up to ``_GROUP``
        messages; on a Cluster, whose keys span slots, consecutive publishes
        to one channel share one (:meth:`_publish_call`)."""
        calls: list[_Call] = []
        for op in batch:
            if op.event is not None:
                calls.append(([op], _EVENT, [self.pubsub_name(op.channel), op.event]))
                continue
            if op.state:
                keys = self.keys(op.channel)
                stamps = [a for d in op.drafts for a in (repr(d.ts), d.head)]
                args = [*keys[:3], secrets.token_hex(4), *self._expiries(op.channel), *stamps]
                calls.append(([op], lua.SET_STATE, args))
                continue
            last = calls[-1] if calls else None
            if (
                last is not None
                and last[1] is _RUN
                and len(last[0]) < _GROUP
                and (self._many or last[0][0].channel == op.channel)
            ):
                last[0].append(op)
            else:
                calls.append(([op], _RUN, []))
        return [
            self._publish_call(ops) if script is _RUN else (ops, script, args)
            for ops, script, args in calls
        ]

    def _publish_call(self, ops: list[QueuedOp]) -> _Call:
        """The one script call of a run of publishes: PUBLISH_KEYED when any
        has an idempotency key, else PUBLISH_MANY on one Redis and PUBLISH
        on a Cluster (where the run is of one channel)."""
        for op in ops:
            if op.key is not None:
                return ops, lua.PUBLISH_KEYED, self._many_args(ops, keyed=True)
        if self._many:
            return ops, lua.PUBLISH_MANY, self._many_args(ops)
        channel = ops[0].channel
        keys = self.keys(channel)
        size = str(self._policy_for(channel).size)
        ttl, keep, now = self._expiries(channel)
        head = [*keys, secrets.token_hex(4), ttl, self._horizon(channel), size]
        stamps = [a for op in ops for d in op.drafts for a in (repr(d.ts), d.head)]
        return ops, lua.PUBLISH, [*head, self._publish_cmd, keep, now, *stamps]

    def _many_args(self, ops: list[QueuedOp], *, keyed: bool = False) -> list[Any]:
        """KEYS and ARGV of one PUBLISH_MANY call, or with ``keyed`` of one
        PUBLISH_KEYED call (keys first, then ``numkeys`` is put before them
        by :meth:`store`)."""
        numbers: dict[str, int] = {}
        keys: list[str] = []
        per_channel: list[str] = []
        messages: list[bytes] = []
        for op in ops:
            channel = op.channel
            number = numbers.get(channel)
            if number is None:
                number = numbers[channel] = len(numbers) + 1
                keys += self.keys(channel)
                if keyed:
                    keys += self.key_records(channel)
                ttl, keep, now = self._expiries(channel)
                per_channel += (
                    secrets.token_hex(4),
                    ttl,
                    self._horizon(channel),
                    str(self._policy_for(channel).size),
                    keep,
                    now,
                )
            draft = op.drafts[0]
            if keyed:
                key = b"" if op.key is None else op.key.encode()
                messages.append(b"%d\n%r\n%b\n%b\n" % (number, draft.ts, key, draft.head))
            else:
                messages.append(b"%d\n%r\n%b\n" % (number, draft.ts, draft.head))
        head: list[Any] = [self._publish_cmd, len(numbers)]
        if keyed:
            head.append(self._window_ms)
        return [*keys, *head, *per_channel, b"".join(messages)]

    async def store(self, batch: list[QueuedOp]) -> list[Result]:
        """Every op of ``batch`` in one pipelined round trip (two when Redis
        lacked the scripts: a script cache flush between our calls could
        then reorder a channel's publishes, which needs SCRIPT FLUSH and a
        reload by someone else inside one pipeline). A batch with an event
        first loads the scripts unless they are known to be loaded, so no
        event overtakes a publish queued before it."""
        r = redis_py()
        results: dict[int, Result] = {}
        try:
            await self._start()
            pending = self._calls(batch)
        except BrokerError as exc:
            return [exc] * len(batch)
        if not self.scripts_loaded and any(op.event is not None for op in batch):
            try:
                for script in (lua.PUBLISH, lua.PUBLISH_MANY, lua.PUBLISH_KEYED, lua.SET_STATE):
                    await self.client.script_load(script)  # every primary of a Cluster
            except Exception as exc:
                return [self.failed(exc, "script load")] * len(batch)
            self.scripts_loaded = True
        for attempt in range(2):
            try:
                pipe = self.client.pipeline(transaction=False)
                for ops, script, args in pending:
                    if script is _EVENT:
                        pipe.execute_command(self._publish_cmd, *args)
                        continue
                    nkeys = _numkeys(ops, script)
                    # execute_command: redis-py refuses pipe.evalsha on a Cluster,
                    # though every key of one call shares a slot.
                    pipe.execute_command("EVALSHA", lua.sha1(script), nkeys, *args)
                replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                _settle_all(pending, self.failed(exc, "publish"), results)
                break
            self.ok = True
            missing = []
            for call, reply in zip(pending, replies, strict=True):
                ops = call[0]
                if isinstance(reply, r.exceptions.NoScriptError) and attempt == 0:
                    missing.append(call)
                elif isinstance(reply, Exception):
                    _settle_all([call], self.failed(reply, "publish"), results)
                elif call[1] is _EVENT:
                    results[id(ops[0])] = None
                elif call[1] is lua.PUBLISH_MANY:
                    # {epoch, first offset} per channel, in order of first use
                    tops = {}
                    for i, channel in enumerate(dict.fromkeys(op.channel for op in ops)):
                        tops[channel] = [reply[2 * i].decode(), int(reply[2 * i + 1])]
                    for op in ops:
                        top = tops[op.channel]
                        results[id(op)] = self._stored(op, top[0], top[1])
                        top[1] += 1
                elif call[1] is lua.PUBLISH_KEYED:
                    self._settle_keyed(ops, reply, results)
                else:
                    epoch, offset = reply[0].decode(), int(reply[1])
                    for i, op in enumerate(ops):
                        results[id(op)] = self._stored(op, epoch, offset + i)
            if not missing:
                break
            self.scripts_loaded = False
            try:
                for script in {script for _ops, script, _args in missing}:
                    await self.client.script_load(script)
            except Exception as exc:
                _settle_all(missing, self.failed(exc, "script load"), results)
                break
            pending = missing
        return [results[id(op)] for op in batch]

    def _settle_keyed(
        self, ops: list[QueuedOp], reply: list[Any], results: dict[int, Result]
    ) -> None:
        """The results of a PUBLISH_KEYED call: {epoch, first offset} per
        channel in order of first use, then (number, record) per duplicate."""
        channels = list(dict.fromkeys(op.channel for op in ops))
        tops = {c: [reply[2 * i].decode(), int(reply[2 * i + 1])] for i, c in enumerate(channels)}
        rest = reply[2 * len(channels) :]
        duplicates = {int(rest[i]): rest[i + 1] for i in range(0, len(rest), 2)}
        for number, op in enumerate(ops, 1):
            record = duplicates.get(number)
            if record is not None:
                results[id(op)] = _duplicate(op.channel, record)
                continue
            top = tops[op.channel]
            results[id(op)] = self._stored(op, top[0], top[1])
            top[1] += 1

    @staticmethod
    def _stored(op: QueuedOp, epoch: str, offset: int) -> Publication | Position:
        if op.state:
            return Position(epoch, offset)
        return op.drafts[0].finish(Position(epoch, offset))

    # -- reading ------------------------------------------------------------------

    async def _read_raw(self, channel: str, since: Position | None, after: int) -> list[Any]:
        keys = self.keys(channel)[:3]
        args: list[Any] = [
            self._horizon(channel),
            since.epoch if since is not None else "",
            since.offset if since is not None else 0,
            after,
        ]
        reply: list[Any] = await self._run(lua.READ, keys, args, "read", again=True)
        return reply

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        after = -1
        for _ in range(3):
            reply = await self._read_raw(channel, since, after)
            epoch, top, first, _kept, state_at, count, stamps, blob, got, entries = reply
            epoch = epoch.decode() or NO_EPOCH  # no meta: a channel nobody wrote
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
        return check_unbroken(since, ReadResult(plan.position, pubs, state, plan.reset), top)

    async def positions(self, channels: Sequence[str]) -> dict[str, Position]:
        await self._start()
        pipe = self.client.pipeline(transaction=False)
        for channel in channels:
            pipe.hmget(self.keys(channel)[0], ["e", "o"])
        try:
            replies = await pipe.execute()
        except Exception as exc:
            raise self.failed(exc, "positions") from exc
        self.ok = True
        return {
            c: Position(e.decode(), int(o))
            for c, (e, o) in zip(channels, replies, strict=True)
            if e is not None and o is not None
        }

    async def channels(self, prefix: str, after: str | None, limit: int) -> list[str]:
        """The channels written within their history TTL (:mod:`.redis_listing`)."""
        from .redis_listing import scan_channels

        def horizon(channel: str) -> float:
            return self._clock() - self._policy_for(channel).ttl

        return await scan_channels(self.client, self.prefix, prefix, after, limit, horizon)

    async def info(self, channel: str) -> ChannelInfo:
        reply = await self._read_raw(channel, None, _NONE)
        epoch, top, _first, kept, state_at = reply[:5]
        position = Position(epoch.decode() or NO_EPOCH, top)
        return ChannelInfo(channel, position, kept, state_at >= 0)

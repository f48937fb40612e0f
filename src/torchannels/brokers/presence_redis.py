"""Presence in Redis: the :class:`~.redis.RedisBroker`'s store, shared by
every process on one Redis (or Cluster).

A channel's presence is six keys under its hash tag ``{PREFIX:CHANNEL}``
(one Cluster slot), each call one Lua script (:mod:`.presence_lua`), one
round trip, atomic (a batch of adds and releases, :meth:`RedisPresence.apply`,
is one script call per channel, all pipelined): ``:pc`` client -> expiry, ``:pd`` client -> user,
``:pu`` the users (paged with ZRANGEBYLEX), ``:pn`` user -> clients,
``:pi`` user -> info, ``:pl`` the pending leaves. Counts are ZCARDs (O(1));
a page is O(log n + limit). A heartbeat is one script call per channel,
all in one pipelined round trip. Every write sets every key to expire a
margin after the latest client expiry, so presence nobody sweeps (all its
processes killed) leaves no key behind.

Expiries are unix times from the processes' clocks: processes sharing a
Redis need clocks in step (NTP) to well within the presence grace.

A presence event travels on the channel's pub/sub channel, beside its
publications, as ``P`` + compact JSON (:func:`encode_event`): a
publication's payload starts with its offset, a digit, so the two never
mix up.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..identity import Identity
from . import presence_lua as lua
from .presence import (
    Applied,
    Member,
    PresenceAdd,
    PresenceEvent,
    PresencePage,
    PresenceRelease,
    PresenceStore,
    by_channel,
    check_limit,
)
from .redis_errors import redis_py
from .redis_lua import sha1

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

#: Runs a script: (script, keys, args, where) -> its reply.
Run = Callable[[str, list[str], list[Any], str], Awaitable[Any]]

#: The first byte of a presence event on pub/sub.
EVENT_MARK = b"P"
#: Seconds every presence key outlives the latest expiry of its channel.
MARGIN = 60.0
#: Most clients one remove script call takes (as a sweep removes at most).
_CHUNK = 1000
_SUFFIXES = (":pc", ":pd", ":pu", ":pn", ":pi", ":pl")


def _ms(t: float) -> str:
    return str(round(t * 1000))


# Text goes to Redis as UTF-8, lone surrogates included (a user id may come
# from any string), so their byte order stays code point order.
def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _json(info: Mapping[str, Any]) -> bytes:
    return _bytes(json.dumps(info, separators=(",", ":"), ensure_ascii=False))


def encode_event(event: PresenceEvent) -> bytes:
    """A presence event's pub/sub payload (its channel is the pub/sub channel's).

    >>> encode_event(PresenceEvent("room", (Member("ann", {"n": 1}, 1),), ("bob",)))
    b'P{"j":[["ann",{"n":1}]],"l":["bob"]}'
    """
    joins = [[m.user, m.info] for m in event.joins]
    return EVENT_MARK + _json({"j": joins, "l": list(event.leaves)})


def decode_event(channel: str, data: bytes) -> PresenceEvent:
    """The event :func:`encode_event` made; ValueError for anything else."""
    try:
        body = json.loads(_text(data[len(EVENT_MARK) :]))
        joins = tuple(Member(_user(u), _info(i), 1) for u, i in body["j"])
        leaves = tuple(_user(u) for u in body["l"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed presence event: {exc}") from None
    return PresenceEvent(channel, joins, leaves)


def _user(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a user id is a non-empty string")
    return value


def _info(value: Any) -> Mapping[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise ValueError("info is an object or null")
    return value


class RedisPresence(PresenceStore):
    """Presence under the broker's prefix, through the broker's client.

    ``tag`` gives a channel's hash tag ``{PREFIX:CHANNEL}`` (raising for a
    name that would escape it), ``run`` runs a script and ``failed`` turns
    a redis-py error into the broker's; ``clock`` is the broker's, used
    only to set the keys' expiry.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        tag: Callable[[str], str],
        run: Run,
        failed: Callable[[BaseException, str], BaseException],
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self._tag = tag
        self._run = run
        self._failed = failed
        self._clock = clock

    def keys(self, channel: str) -> list[str]:
        """The channel's presence keys, in the scripts' KEYS order."""
        tag = self._tag(channel)
        return [tag + suffix for suffix in _SUFFIXES]

    def _tail(self) -> list[str]:
        """The last two ARGV of every script: the clock and the margin (ms)."""
        return [_ms(self._clock()), _ms(MARGIN)]

    async def add(self, channel: str, identity: Identity, expires: float) -> bool:
        args = [*self._add_args(identity, expires), *self._tail()]
        return bool(await self._run(lua.ADD, self.keys(channel), args, "presence add"))

    async def release(self, channel: str, client: str, expires: float) -> None:
        args = [_bytes(client), _ms(expires), *self._tail()]
        await self._run(lua.RELEASE, self.keys(channel), args, "presence release")

    def _add_args(self, identity: Identity, expires: float) -> list[bytes | str]:
        user = identity.user
        info = user.info if user is not None else None
        return [
            _bytes(identity.client),
            _ms(expires),
            _bytes(user.id) if user is not None else "",
            _json(info) if info is not None else "",
        ]

    async def apply(
        self, adds: Sequence[PresenceAdd], releases: Sequence[PresenceRelease]
    ) -> dict[str, Applied]:
        """One script call per channel (atomic), all in one pipelined round trip."""
        channels, calls = [], []
        for channel, (mine, gone) in by_channel(adds, releases).items():
            args: list[bytes | str] = [str(len(mine))]
            for add in mine:
                args += self._add_args(add.identity, add.expires)
            for release in gone:
                args += [_bytes(release.client), _ms(release.expires)]
            channels.append(channel)
            calls.append((self.keys(channel), [*args, *self._tail()]))
        replies = await self._pipelined(lua.APPLY, calls, "presence add")
        return {
            channel: self._error(reply, "presence add")
            if isinstance(reply, Exception)
            else [bool(joined) for joined in reply]
            for channel, reply in zip(channels, replies, strict=True)
        }

    def _error(self, exc: Exception, where: str) -> Exception:
        error = self._failed(exc, where)
        return error if isinstance(error, Exception) else exc

    async def heartbeat(self, entries: Mapping[str, Sequence[str]], expires: float) -> None:
        """One script call per channel, all in one pipelined round trip."""
        calls: list[tuple[list[str], list[bytes | str]]] = [
            (self.keys(channel), [_ms(expires), *map(_bytes, clients), *self._tail()])
            for channel, clients in entries.items()
            if clients
        ]
        for reply in await self._pipelined(lua.HEARTBEAT, calls, "presence heartbeat"):
            if isinstance(reply, Exception):
                raise self._failed(reply, "presence heartbeat")

    async def _pipelined(
        self, script: str, calls: list[tuple[list[str], list[bytes | str]]], where: str
    ) -> list[Any]:
        """``script`` once per call, in one pipeline: each call's reply, or
        its exception. A call that found the script missing did nothing: it
        alone is sent again once the script is loaded. Raises the broker's
        error when the pipeline as a whole failed."""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        missing = redis_py().exceptions.NoScriptError
        try:
            for attempt in range(2):
                if not todo:
                    break
                pipe = self.client.pipeline(transaction=False)
                for i in todo:
                    keys, args = calls[i]
                    pipe.execute_command("EVALSHA", sha1(script), len(keys), *keys, *args)
                got = await pipe.execute(raise_on_error=False)
                for i, reply in zip(todo, got, strict=True):
                    replies[i] = reply
                todo = [i for i in todo if isinstance(replies[i], missing)]
                if todo and attempt == 0:
                    await self.client.script_load(script)
        except Exception as exc:
            raise self._failed(exc, where) from exc
        return replies

    async def sweep(self, channel: str, now: float) -> list[str]:
        """A script call per 1,000 expired clients."""
        keys, left, more = self.keys(channel), [], 1
        while more:
            args = [_ms(now), *self._tail()]
            more, users = await self._run(lua.SWEEP, keys, args, "presence sweep")
            left += _users(users)
        return left

    async def remove(self, channel: str, clients: Sequence[str]) -> list[str]:
        """A script call per 1,000 clients."""
        keys, left = self.keys(channel), []
        for start in range(0, max(1, len(clients)), _CHUNK):
            args = [*map(_bytes, clients[start : start + _CHUNK]), *self._tail()]
            left += _users(await self._run(lua.REMOVE, keys, args, "presence remove"))
        return left

    async def _read(self, script: str, channel: str, args: list[Any], where: str) -> Any:
        """A read script's reply, once it found no more expired clients."""
        keys = self.keys(channel)
        while True:
            more, *reply = await self._run(script, keys, [*args, *self._tail()], where)
            if not more:
                return reply

    async def counts(self, channel: str, now: float) -> tuple[int, int]:
        clients, users = await self._read(lua.COUNTS, channel, [_ms(now)], "presence counts")
        return int(clients), int(users)

    async def page(self, channel: str, after: str | None, limit: int, now: float) -> PresencePage:
        check_limit(limit)
        start = b"-" if after is None else b"(" + _bytes(after)
        args: list[Any] = [_ms(now), start, str(limit)]
        reply = await self._read(lua.PAGE, channel, args, "presence page")
        clients, users, ids, counts, infos = reply
        members = [
            Member(_text(u), json.loads(_text(i)) if i is not None else None, int(n))
            for u, n, i in zip(ids[:limit], counts, infos, strict=False)
        ]
        more = len(ids) > limit
        return PresencePage(members, members[-1].user if more else None, int(clients), int(users))


def _users(reply: list[bytes]) -> list[str]:
    return [_text(user) for user in reply]

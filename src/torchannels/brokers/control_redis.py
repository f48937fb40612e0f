"""The Redis broker's control bus: commands stored in Redis, sent on pub/sub.

Under the hash tag ``{PREFIX}`` (one Cluster slot):

- ``{PREFIX}:ctl``, a sorted set of the commands in force (member: the
  command's JSON; score: its expiry), bounded to the
  :data:`~torchannels.control.MAX_COMMANDS` that expire last;
- ``{PREFIX}:ctl:bus``, the pub/sub channel every process subscribes on its
  existing pub/sub connection (sharded on a Cluster);
- ``{PREFIX}:ctl:r:ID``, a list of the counts processes replied for
  command ``ID`` (expires after 60 s).

Issuing is one script: drop expired commands, add this one, trim to the
bound, then PUBLISH it, whose answer is the number of processes that
received it. A process whose pub/sub connection was lost loads the set
again once it is back (``reload``), so what it missed is still applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..control import MAX_COMMANDS, Command
from .control import ControlBus

log = logging.getLogger("torchannels.broker")

#: KEYS: the set, the pub/sub channel. ARGV: now, expiry, command, bound,
#: PUBLISH or SPUBLISH. Returns the processes that received it.
ISSUE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if extra > 0 then redis.call('ZPOPMIN', KEYS[1], extra) end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(last[2])) + 1)
return redis.call(ARGV[5], KEYS[2], ARGV[3])
"""

#: Seconds a reply list is kept.
REPLY_TTL = 60
#: Seconds between two looks at the replies.
REPLY_POLL = 0.02

Run = Callable[..., Awaitable[Any]]


class RedisControl(ControlBus):
    """``client`` and ``run`` are the broker's (its Redis client and script
    runner); ``subscribe`` subscribes the pub/sub connection to a name with
    a callback for its messages."""

    def __init__(
        self,
        client: Any,
        *,
        tag: str,
        cluster: bool,
        run: Run,
        subscribe: Callable[[bytes, Callable[[bytes], None]], Awaitable[None]],
        limit: int = MAX_COMMANDS,
    ) -> None:
        super().__init__()
        self._client = client
        self._set = f"{tag}:ctl"
        self._bus = f"{tag}:ctl:bus"
        self._replies_prefix = f"{tag}:ctl:r:"
        self._publish = "SPUBLISH" if cluster else "PUBLISH"
        self._run = run
        self._subscribe = subscribe
        self._limit = limit
        self._started = False

    async def start(self) -> None:
        """Subscribe to the bus (kept across reconnects by the delivery)."""
        if not self._started:
            self._started = True
            await self._subscribe(self._bus.encode(), self._on_message)

    def recovered(self) -> None:
        """The pub/sub connection is back: commands may have been missed."""
        if self._started:
            self._reload()

    def _on_message(self, data: bytes) -> None:
        try:
            command = Command.decode(data)
        except ValueError:
            log.error("malformed control command: %r", data[:80])
            return
        self._deliver(command)

    async def issue(self, command: Command) -> int:
        await self.start()
        args = [repr(time.time()), repr(command.expires), command.encode(), self._limit]
        received = await self._run(
            ISSUE, [self._set, self._bus], [*args, self._publish], "control command"
        )
        return int(received)

    async def load(self) -> list[Command]:
        members = await self._client.zrangebyscore(self._set, repr(time.time()), "+inf")
        commands = []
        for member in members:
            try:
                commands.append(Command.decode(member))
            except ValueError:
                log.error("malformed control command in Redis: %r", member[:80])
        return commands

    async def reply(self, command_id: str, count: int) -> None:
        key = self._replies_prefix + command_id
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, count)
            pipe.expire(key, REPLY_TTL)
            await pipe.execute()

    async def replies(self, command_id: str, expected: int, timeout: float) -> list[int]:
        key = self._replies_prefix + command_id
        deadline = time.monotonic() + timeout
        while True:
            got = [int(n) for n in await self._client.lrange(key, 0, -1)]
            if len(got) >= expected or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(REPLY_POLL)

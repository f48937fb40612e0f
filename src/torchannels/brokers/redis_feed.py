"""One Redis pub/sub connection of the Redis broker, and the channels on it.

A feed is a raw redis-py connection: the broker's delivery
(:mod:`.redis_delivery`) sends (S)SUBSCRIBE and (S)UNSUBSCRIBE on it and
awaits their confirmations, and one reader task hands it every message.
The connection is never re-made behind the broker's back (redis-py's
``PubSub`` would do so silently): when it breaks, or stops answering PING,
the feed reports itself lost once and the delivery builds new feeds,
resubscribes and has the broker ask its listeners to re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..cancelling import cancel_and_wait
from ..errors import BrokerUnavailable

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

log = logging.getLogger("torchannels.broker")

_CONFIRMATIONS = (b"subscribe", b"ssubscribe", b"unsubscribe", b"sunsubscribe")


class Feed:
    """Subscriptions on one connection (one node of a Cluster)."""

    def __init__(
        self,
        conn: AbstractConnection,
        *,
        sharded: bool,
        on_message: Callable[[bytes, bytes], None],
        on_lost: Callable[[Feed, BaseException], None],
        ping_interval: float,
    ) -> None:
        self.conn = conn
        self.sharded = sharded
        self.lost = False
        self._on_message = on_message
        self._on_lost = on_lost
        self._ping_interval = ping_interval
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._heard = 0.0

    async def open(self) -> None:
        await self.conn.connect()  # type: ignore[no-untyped-call]
        self._heard = asyncio.get_running_loop().time()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ping())]

    async def subscribe(self, names: Sequence[bytes], timeout: float) -> None:
        """Subscribe ``names``; returns once Redis confirmed every one."""
        await self._command(b"SSUBSCRIBE" if self.sharded else b"SUBSCRIBE", names, timeout)

    async def unsubscribe(self, names: Sequence[bytes], timeout: float) -> None:
        await self._command(b"SUNSUBSCRIBE" if self.sharded else b"UNSUBSCRIBE", names, timeout)

    async def _command(self, verb: bytes, names: Sequence[bytes], timeout: float) -> None:
        if self.lost:
            raise BrokerUnavailable("the Redis pub/sub connection is down; reconnecting")
        loop = asyncio.get_running_loop()
        futures = []
        for name in names:  # Redis confirms each channel, in the order sent
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(name, deque()).append(future)
            futures.append(future)
        # Sharded channels of one command must share a slot: one command each.
        commands = [(verb, n) for n in names] if self.sharded else [(verb, *names)]
        try:
            await self.conn.send_packed_command(self.conn.pack_commands(commands))
            async with asyncio.timeout(timeout):
                await asyncio.gather(*futures)
        except Exception as exc:  # the connection is in an unknown state: re-make it
            self._fail(exc)
            raise BrokerUnavailable(f"Redis pub/sub failed: {exc!r}") from exc

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                reply: Any = await self.conn.read_response(timeout=math.inf)
                self._heard = loop.time()
                if not isinstance(reply, list) or len(reply) < 3:
                    continue  # PONG outside subscribe mode, or [pong, ""]
                kind, name = reply[0], reply[1]
                if kind in (b"message", b"smessage"):
                    self._on_message(name, reply[2])
                elif kind in _CONFIRMATIONS:
                    waiters = self._waiters.get(name)
                    if waiters:
                        future = waiters.popleft()
                        if not waiters:
                            del self._waiters[name]
                        if not future.done():
                            future.set_result(None)
                    elif kind == b"sunsubscribe":  # the slot moved to another node
                        raise ConnectionError(f"Redis dropped shard channel {name!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    async def _ping(self) -> None:
        """Notice a connection that died silently (no FIN): ask and wait."""
        loop = asyncio.get_running_loop()
        interval = self._ping_interval
        try:
            while True:
                await asyncio.sleep(interval)
                if loop.time() - self._heard < interval:
                    continue
                await self.conn.send_command("PING")
                await asyncio.sleep(interval)
                if loop.time() - self._heard >= 2 * interval:
                    raise TimeoutError(f"no answer to PING within {interval} s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.lost:
            return
        self.lost = True
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(BrokerUnavailable(f"Redis pub/sub lost: {exc!r}"))
                    future.exception()  # the awaiting command raises; do not warn otherwise
        self._waiters.clear()
        self._on_lost(self, exc)

    async def close(self) -> None:
        self.lost = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                await cancel_and_wait(task)
        with contextlib.suppress(Exception):
            await self.conn.disconnect()

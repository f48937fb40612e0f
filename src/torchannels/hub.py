"""The hub: this process's registry of subscribers, fanning publications out.

It subscribes the broker to a channel when the first local subscriber
arrives and unsubscribes when the last one leaves, so a broker only carries
channels somebody here listens to.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from .brokers.base import Broker, ChannelInfo, Listener
from .brokers.memory import MemoryBroker
from .channel import Channel
from .errors import RECONNECT_SHUTDOWN
from .frames import Publication
from .protocol import check_channel
from .settings import Settings
from .stats import Stats

log = logging.getLogger("torchannels.hub")


class Connection(Protocol):
    """A live subscriber connection the hub can ask to end (transports)."""

    @property
    def name(self) -> str:
        """The transport's name, for metrics."""

    def end(self, reason: str) -> None:
        """Send ``reconnect`` with ``reason`` and end the connection soon."""


class _Local:
    __slots__ = ("listeners", "ready")

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.listeners: set[Listener] = set()
        self.ready = ready


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
        #: Live connections (long-polls, streams, sockets) of this process.
        self.connections: set[Connection] = set()
        #: True once :meth:`shutdown` began: new subscribe requests get 503.
        self.closing = False
        self._local: dict[str, _Local] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None

    def connection_opened(self, connection: Connection) -> None:
        self.connections.add(connection)

    def connection_closed(self, connection: Connection) -> None:
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
        return sum(len(local.listeners) for local in self._local.values())

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
        return 0 if local is None else len(local.listeners)

    async def info(self, channel: str) -> ChannelInfo:
        info = await self.broker.info(check_channel(channel))
        info.extra["local_subscribers"] = self.local_subscribers(channel)
        return info

    async def attach(self, channel: str, listener: Listener) -> None:
        """Deliver ``channel``'s new publications to ``listener`` from now on."""
        local = self._local.get(channel)
        if local is not None:
            local.listeners.add(listener)
            if not local.ready.done():
                await asyncio.shield(local.ready)
            return
        local = self._local[channel] = _Local(asyncio.get_running_loop().create_future())
        local.listeners.add(listener)
        try:
            await self.broker.subscribe(channel, self._dispatch)
        except BaseException as exc:
            if self._local.get(channel) is local:
                del self._local[channel]
            local.ready.set_exception(exc)
            local.ready.exception()  # waiters re-raise it; do not warn when none wait
            raise
        local.ready.set_result(None)

    def detach(self, channel: str, listener: Listener) -> None:
        """Stop delivering to ``listener``; synchronous so close paths stay simple."""
        local = self._local.get(channel)
        if local is None:
            return
        local.listeners.discard(listener)
        if not local.listeners:
            self._spawn(self._release(channel, local))

    async def _release(self, channel: str, local: _Local) -> None:
        if self._local.get(channel) is not local or local.listeners:
            return  # somebody came back meanwhile
        if not local.ready.done():
            await asyncio.wait([local.ready])
        if self._local.get(channel) is not local or local.listeners:
            return
        del self._local[channel]
        if local.ready.exception() is None:
            await self.broker.unsubscribe(channel, self._dispatch)

    def _dispatch(self, pub: Publication) -> None:
        local = self._local.get(pub.channel)
        if local is None:
            return
        for listener in tuple(local.listeners):
            try:
                listener(pub)
            except Exception:
                log.exception("subscriber failed on %r", pub)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task failed", exc_info=task.exception())

    async def close(self) -> None:
        """Wait for pending unsubscribes, then close the broker."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        await self.broker.close()


_default: Hub | None = None


def default_hub() -> Hub:
    """The process-wide hub used when a handler names none (in-memory broker)."""
    global _default
    if _default is None:
        _default = Hub()
    return _default

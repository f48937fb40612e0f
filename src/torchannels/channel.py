"""The publishing handle of one channel: the seed's ``send`` and ``set_state``."""

from __future__ import annotations

from typing import Any, Protocol

from .brokers.base import Broker, ChannelInfo
from .brokers.presence import PresencePage
from .frames import Duplicate
from .protocol import Position, check_message, check_messages
from .stats import Stats


class Publisher(Protocol):
    """What a channel handle publishes through (a :class:`~torchannels.Hub`)."""

    @property
    def broker(self) -> Broker: ...

    @property
    def stats(self) -> Stats: ...

    async def info(self, channel: str) -> ChannelInfo: ...

    async def presence(
        self, channel: str, after: str | None = None, limit: int = 100
    ) -> PresencePage: ...

    async def presence_counts(self, channel: str) -> tuple[int, int]: ...


class Channel:
    """Publish to one channel.

    >>> from torchannels import Hub
    >>> news = Hub().channel("news")
    >>> msg = news.send({"headline": "torchannels 0.1"})
    >>> sorted(msg)
    ['channel', 'epoch', 'headline', 'offset', 'ts']

    Handles are values: two handles of the same hub and name are equal and
    hash alike, so they can key a dict.
    """

    __slots__ = ("hub", "name")

    def __init__(self, hub: Publisher, name: str) -> None:
        self.hub = hub
        self.name = name

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Channel):
            return NotImplemented
        return self.hub is other.hub and self.name == other.name

    def __hash__(self) -> int:
        return hash((id(self.hub), self.name))

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Publish ``message`` and return the stamped copy; never blocks.

        The copy carries ``channel`` and ``ts``; with the in-memory broker
        the message is stored at once and the copy carries ``epoch`` and
        ``offset`` too. A network broker (Redis) stores it soon after, in
        the order of this process's publishes, and assigns ``epoch`` and
        ``offset`` there: ``await channel.asend(...)`` returns them, and
        ``await hub.flush()`` raises if a queued publish failed.
        ``message`` itself is not changed, so it can be sent again elsewhere.
        Raises :class:`~torchannels.MessageError` (nothing queued) for a
        non-dict, a reserved key or a value JSON cannot carry.
        """
        data = self.hub.broker.publish_soon(self.name, check_message(message))
        self.hub.stats.published += 1
        return data

    async def asend(
        self, message: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """:meth:`send`, returning once the broker has stored the message,
        with its ``epoch`` and ``offset``.

        With an ``idempotency_key`` (1-128 printable ASCII characters) that
        was used in this channel within the broker's window, nothing is
        stored or delivered again: the answer is the message with the first
        publish's ``channel``, ``ts``, ``epoch`` and ``offset``, and
        ``"duplicate": True``. So a publish retried with its key after a
        failure that left its outcome unknown is stored once. (A stored
        copy carries no ``duplicate`` key unless ``message`` has one.)

        >>> import asyncio
        >>> from torchannels import Hub
        >>> news = Hub().channel("news")
        >>> first = asyncio.run(news.asend({"n": 1}, idempotency_key="n-1"))
        >>> again = asyncio.run(news.asend({"n": 1}, idempotency_key="n-1"))
        >>> again["offset"] == first["offset"], again["duplicate"]
        (True, True)
        """
        pub = await self.hub.broker.publish(
            self.name, check_message(message), idempotency_key=idempotency_key
        )
        if isinstance(pub, Duplicate):
            self.hub.stats.publish_duplicates += 1
            return {**message, "channel": pub.channel, "ts": pub.ts, "epoch": pub.epoch,
                    "offset": pub.offset, "duplicate": True}  # fmt: skip
        self.hub.stats.published += 1
        return pub.data

    def set_state(self, messages: list[dict[str, Any]]) -> Position | None:
        """Give late joiners ``messages`` instead of all history up to now.

        A subscriber that joins without a position receives these messages
        (in one ``subscribed`` frame) and then what is sent afterwards. Those
        that resume from a position still get exactly the messages they missed.
        Returns the position the state stands for with the in-memory broker;
        None with a network broker, which stores it soon, in order with
        :meth:`send` (use :meth:`aset_state` to wait for it).
        """
        return self.hub.broker.set_state_soon(self.name, check_messages(messages))

    async def aset_state(self, messages: list[dict[str, Any]]) -> Position:
        """:meth:`set_state`, returning once the broker has stored it."""
        return await self.hub.broker.set_state(self.name, check_messages(messages))

    def configure(
        self, *, history_size: int | None = None, history_ttl: float | None = None
    ) -> None:
        """Override the history policy for this channel only."""
        self.hub.broker.configure_channel(self.name, size=history_size, ttl=history_ttl)

    async def info(self) -> ChannelInfo:
        return await self.hub.info(self.name)

    async def presence(self, after: str | None = None, limit: int = 100) -> PresencePage:
        """One page of this channel's members (a channel with presence):
        see :meth:`Hub.presence <torchannels.Hub.presence>`."""
        return await self.hub.presence(self.name, after, limit)

    async def presence_counts(self) -> tuple[int, int]:
        """``(clients, users)`` present in this channel, across processes."""
        return await self.hub.presence_counts(self.name)

    def __repr__(self) -> str:
        return f"<Channel {self.name}>"

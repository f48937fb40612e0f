"""The Broker seam: per-channel history, state and cross-process delivery.

A broker stores each channel's recent history (bounded by count and age),
its compressed state, and its position (epoch + offset); it delivers new
publications to the listeners a process registers. The in-memory broker is
the embedded default; other brokers (Redis) implement the same methods and
pass the same contract tests (tests/test_broker_contract.py).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..frames import Publication
from ..protocol import Position

Listener = Callable[[Publication], None]


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much history a channel keeps: at most ``size`` messages, none older
    than ``ttl`` seconds. ``size=0`` keeps none, so every resume is a reset."""

    size: int = 1000
    ttl: float = 3600.0

    def __post_init__(self) -> None:
        if self.size < 0 or self.ttl <= 0:
            raise ValueError("history size must be >= 0 and ttl > 0")


@dataclass(slots=True)
class ReadResult:
    """What a subscriber at ``since`` must receive from one channel.

    ``reset`` is a reason when ``since`` could not be served (the caller then
    got the answer for a fresh join). ``position`` is where the receiver
    stands before ``publications``; ``state`` (may be empty) comes with it.
    """

    position: Position
    publications: list[Publication]
    state: Sequence[Publication] | None = None
    reset: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    channel: str
    position: Position
    history_length: int
    has_state: bool
    extra: dict[str, Any] = field(default_factory=dict)


class Broker(abc.ABC):
    """Abstract broker. All methods are coroutines so network brokers fit."""

    def __init__(self, history: HistoryPolicy | None = None) -> None:
        self.default_policy = history or HistoryPolicy()
        self._policies: dict[str, HistoryPolicy] = {}

    def configure_channel(
        self, name_or_prefix: str, *, size: int | None = None, ttl: float | None = None
    ) -> None:
        """Set the history policy of one channel, or of every channel starting
        with a prefix that ends in ``*`` (``"chat:*"``). The longest match wins."""
        base = self.policy_for(name_or_prefix.rstrip("*"))
        self._policies[name_or_prefix] = HistoryPolicy(
            base.size if size is None else size, base.ttl if ttl is None else ttl
        )

    def policy_for(self, channel: str) -> HistoryPolicy:
        exact = self._policies.get(channel)
        if exact is not None:
            return exact
        best: tuple[int, HistoryPolicy] | None = None
        for key, policy in self._policies.items():
            matches = key.endswith("*") and channel.startswith(key[:-1])
            if matches and (best is None or len(key) > best[0]):
                best = (len(key), policy)
        return self.default_policy if best is None else best[1]

    @abc.abstractmethod
    async def publish(self, channel: str, message: dict[str, Any]) -> Publication:
        """Stamp, store and deliver ``message`` (already checked by the caller)."""

    @abc.abstractmethod
    async def set_state(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        """Replace, for fresh joiners, all history up to now with ``messages``."""

    @abc.abstractmethod
    async def read(self, channel: str, since: Position | None) -> ReadResult:
        """What a subscriber at ``since`` (None: fresh join) must receive."""

    @abc.abstractmethod
    async def subscribe(self, channel: str, listener: Listener) -> None:
        """Start calling ``listener`` with every new publication of ``channel``."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``channel``."""

    @abc.abstractmethod
    async def info(self, channel: str) -> ChannelInfo:
        """Position and history size of ``channel``."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""

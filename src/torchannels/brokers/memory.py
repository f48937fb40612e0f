"""The embedded in-memory broker: the default, one process, no dependencies.

All channels of one broker share one epoch, made at start: the only time an
in-memory broker loses history is when its process ends, and a restarted
process makes a new epoch, so every client that resumes gets an honest reset.
Because an empty channel is indistinguishable from one never used, a
subscriber reading a channel creates nothing; only publishers create channels.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import RESET_EPOCH, RESET_INVALID, RESET_TRIMMED
from ..frames import Publication, stamp
from ..protocol import Position
from .base import Broker, ChannelInfo, HistoryPolicy, Listener, ReadResult

log = logging.getLogger("torchannels.broker")


def new_epoch() -> str:
    """A fresh random epoch (8 lowercase hex digits)."""
    return secrets.token_hex(4)


class _Channel:
    __slots__ = ("history", "stale_warned", "state", "state_at", "top")

    def __init__(self) -> None:
        self.top = 0
        self.history: deque[Publication] = deque()
        self.state: list[Publication] | None = None
        self.state_at = 0  # the offset the state stands for
        self.stale_warned = False


class MemoryBroker(Broker):
    """History and delivery inside one process.

    >>> broker = MemoryBroker(HistoryPolicy(size=100, ttl=600))
    >>> broker.publish_nowait("news", {"text": "hi"}).offset
    1
    """

    def __init__(
        self, history: HistoryPolicy | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(history)
        self.epoch = new_epoch()
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._listeners: dict[str, list[Listener]] = {}

    # -- synchronous core (the seed's ``send`` is synchronous) -----------------

    def publish_nowait(self, channel: str, message: dict[str, Any]) -> Publication:
        """Publish at once and return the publication (memory broker only)."""
        ch = self._channels.get(channel) or _Channel()
        now = self._clock()
        pub = stamp(message, channel, Position(self.epoch, ch.top + 1), now)
        self._channels[channel] = ch
        ch.top += 1
        ch.history.append(pub)
        self._trim(channel, ch, now)
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener(pub)
            except Exception:  # a broken listener must not stop the others
                log.exception("listener failed for %s", channel)
        return pub

    def set_state_nowait(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        ch = self._channels.get(channel) or _Channel()
        position = Position(self.epoch, ch.top)
        now = self._clock()
        state = [stamp(m, channel, position, now) for m in messages]
        self._channels[channel] = ch
        ch.state = state
        ch.state_at = ch.top
        ch.stale_warned = False
        return position

    def _trim(self, channel: str, ch: _Channel, now: float) -> None:
        policy = self.policy_for(channel)
        history = ch.history
        while len(history) > policy.size:
            history.popleft()
        horizon = now - policy.ttl
        while history and history[0].ts < horizon:
            history.popleft()

    def read_nowait(self, channel: str, since: Position | None) -> ReadResult:
        ch = self._channels.get(channel)
        if ch is None:
            ch = _Channel()  # not stored: reading creates nothing
        else:
            self._trim(channel, ch, self._clock())
        first = ch.history[0].offset if ch.history else ch.top + 1
        reason: str | None = None
        if since is not None:
            if since.epoch != self.epoch:
                reason = RESET_EPOCH
            elif since.offset > ch.top:
                reason = RESET_INVALID
            elif since.offset < first - 1:
                reason = RESET_TRIMMED
            else:
                pubs = [p for p in ch.history if p.offset > since.offset]
                return ReadResult(since, pubs)
        if ch.state is not None and first - 1 <= ch.state_at:
            state_at = ch.state_at
            return ReadResult(
                Position(self.epoch, state_at),
                [p for p in ch.history if p.offset > state_at],
                state=ch.state,
                reset=reason,
            )
        if ch.state is not None and not ch.stale_warned:
            ch.stale_warned = True
            # Messages between the state and the oldest retained one are gone:
            # the state can no longer be brought up to date, so it is not
            # served; the joiner gets the retained history instead.
            log.warning("state of %r is older than its history; set_state more often", channel)
        return ReadResult(Position(self.epoch, first - 1), list(ch.history), reset=reason)

    # -- the Broker interface ---------------------------------------------------

    async def publish(self, channel: str, message: dict[str, Any]) -> Publication:
        return self.publish_nowait(channel, message)

    async def set_state(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        return self.set_state_nowait(channel, messages)

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        return self.read_nowait(channel, since)

    async def subscribe(self, channel: str, listener: Listener) -> None:
        self._listeners.setdefault(channel, []).append(listener)

    async def unsubscribe(self, channel: str, listener: Listener) -> None:
        listeners = self._listeners.get(channel)
        if listeners and listener in listeners:
            listeners.remove(listener)
            if not listeners:
                del self._listeners[channel]

    async def info(self, channel: str) -> ChannelInfo:
        ch = self._channels.get(channel) or _Channel()
        if channel in self._channels:
            self._trim(channel, ch, self._clock())
        return ChannelInfo(
            channel, Position(self.epoch, ch.top), len(ch.history), ch.state is not None
        )

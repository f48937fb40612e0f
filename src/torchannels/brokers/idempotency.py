"""Idempotency keys: publish once, however often a publish is retried.

A publish may carry a key. The first publish with a key in a channel
records the key with the position it got, for the broker's window
(``idempotency_window`` seconds after that publish); a publish with the
same key in the same channel within the window stores and delivers nothing
and returns a :class:`~torchannels.frames.Duplicate` of the first one. A
key is scoped to its channel: the same key in another channel is another
key. A publish without a key costs what it always did.

This module holds what the brokers share (the window's check and a batch's
keys' check) and the in-memory broker's records. The Redis broker keeps its
records in Redis and checks them in the publish script itself
(:data:`~.redis_lua.PUBLISH_KEYED`), so the check and the publish are one
atomic step across processes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from ..frames import Duplicate, Publication
from ..protocol import check_idempotency_key

#: Seconds a key is remembered after the publish that made it (by default).
DEFAULT_WINDOW = 600.0
#: Keys the in-memory broker remembers at most, over all channels (by default).
DEFAULT_MAX = 100_000


def check_window(window: float) -> float:
    """``window`` if it can be an idempotency window (finite, > 0)."""
    if not (isinstance(window, int | float) and math.isfinite(window) and window > 0):
        raise ValueError(f"idempotency_window must be a number of seconds > 0, not {window!r}")
    return float(window)


def check_keys(
    messages: Sequence[object], keys: Sequence[str | None] | None
) -> Sequence[str | None] | None:
    """The keys of a ``publish_many`` of ``messages``, checked before any is
    stored: None (no keys), or one per message, each None or a valid key
    (:func:`~torchannels.protocol.check_idempotency_key` raises for the
    first bad one)."""
    if keys is None:
        return None
    if isinstance(keys, str) or len(keys) != len(messages):
        given = "a string" if isinstance(keys, str) else f"{len(keys)} keys"
        raise ValueError(
            f"publish_many got {given} for {len(messages)} messages: "
            "give one key per message (None: no key)"
        )
    for key in keys:
        if key is not None:
            check_idempotency_key(key)
    return keys


class KeyRecords:
    """The in-memory broker's keys: per channel, each key's first publish,
    until ``window`` seconds after it, at most ``limit`` in all (past it the
    oldest go first). The broker drops a channel's keys when it forgets the
    channel (:meth:`forget`)."""

    __slots__ = ("_by_channel", "_expiry", "limit", "window")

    def __init__(self, window: float = DEFAULT_WINDOW, limit: int = DEFAULT_MAX) -> None:
        if limit < 1:
            raise ValueError("idempotency_max must be positive")
        self.window = check_window(window)
        self.limit = limit
        #: (channel, key) -> when it expires, oldest first (made in time order).
        self._expiry: OrderedDict[tuple[str, str], float] = OrderedDict()
        #: channel -> key -> the first publish's answer.
        self._by_channel: dict[str, dict[str, Duplicate]] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def find(self, channel: str, key: str, now: float) -> Duplicate | None:
        """The first publish with ``key`` in ``channel``, if within the window."""
        keys = self._by_channel.get(channel)
        found = None if keys is None else keys.get(key)
        if found is None or self._expiry[channel, key] <= now:
            return None
        return found

    def record(self, pub: Publication, key: str, now: float) -> None:
        """``pub`` is the first publish with ``key`` in its channel."""
        name = pub.channel, key
        self._expiry.pop(name, None)  # an expired record made again goes last
        self._expiry[name] = now + self.window
        keys = self._by_channel.setdefault(pub.channel, {})
        keys[key] = Duplicate(pub.channel, pub.epoch, pub.offset, pub.ts)
        self.trim(now)

    def trim(self, now: float) -> None:
        """Drop the expired records, and the oldest past ``limit``."""
        expiry = self._expiry
        while expiry:
            name = next(iter(expiry))
            if expiry[name] > now and len(expiry) <= self.limit:
                break
            del expiry[name]
            channel, key = name
            keys = self._by_channel[channel]
            del keys[key]
            if not keys:
                del self._by_channel[channel]

    def forget(self, channels: Iterable[str]) -> None:
        """Drop every record of ``channels`` (channels the broker forgot)."""
        for channel in channels:
            for key in self._by_channel.pop(channel, ()):
                del self._expiry[channel, key]

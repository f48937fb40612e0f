"""Counters of one hub, cheap enough to bump on the fan-out path.

Gauges (connections by transport, subscriptions) are not stored: the hub
derives them from its registries when asked, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Stats:
    #: Messages published through this process's hub.
    published: int = 0
    #: Publishes whose idempotency key was used already: nothing was published.
    publish_duplicates: int = 0
    #: Message frames handed to subscribers (one per message per subscriber).
    delivered: int = 0
    #: ``reset`` frames sent.
    resets: int = 0
    #: Streaming clients cut off for falling more than ``max_pending_bytes`` behind.
    slow_dropped: int = 0

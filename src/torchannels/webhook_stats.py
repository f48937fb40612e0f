"""The webhook's counters in one process, read by /metrics and the admin page.

Plain numbers: the hub counts what it queued (and what the full queue
dropped), the :class:`~torchannels.webhook_sender.WebhookSender` the rest.

>>> stats = WebhookStats()
>>> stats.observe_latency(0.3)
>>> stats.latency_buckets[:5], stats.latency_count
([0, 0, 0, 1, 1], 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Why events are dropped: the queue was full when they came, they waited
#: longer than ``--webhook-retry-for``, or the receiver refused them for good.
DROP_REASONS = ("queue_full", "expired", "rejected")
#: Upper bounds of the delivery latency histogram's buckets, in seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, math.inf)


@dataclass(slots=True)
class WebhookStats:
    """What this process queued and sent, and the webhook's health as it saw it last."""

    #: Events this process queued.
    queued: int = 0
    #: Events delivered (answered 2xx) by this process.
    sent: int = 0
    #: Attempts that failed and were (or will be) tried again.
    retries: int = 0
    #: Events dropped, by reason (:data:`DROP_REASONS`).
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    #: Seconds from each delivered event's time to its 2xx, summed.
    latency_sum: float = 0.0
    #: Delivered events whose latency was observed.
    latency_count: int = 0
    #: Cumulative counts: ``latency_buckets[i]`` events took at most
    #: ``LATENCY_BUCKETS[i]`` seconds (Prometheus' ``le`` buckets).
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    #: Unix time of the last 2xx, None before the first.
    last_success: float | None = None
    #: Unix time and text of the last failure (a status, a timeout, a
    #: refused connection, the store failing), None before the first.
    last_error: tuple[float, str] | None = None
    #: Events in the queue (every process's), as last read.
    queue_length: int = 0
    #: Whether this process holds the sender's lease now (it is the one sending).
    sending: bool = False

    def observe_latency(self, seconds: float) -> None:
        """Count one delivered event that took ``seconds`` (clamped at 0)."""
        seconds = max(0.0, seconds)
        self.latency_sum += seconds
        self.latency_count += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1

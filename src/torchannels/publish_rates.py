"""Token buckets: how often each client may publish (``client_publish_rate``)."""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` a second, a burst of ``max(1, rate)``."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self, now: float) -> float:
        """Take one token: 0 if there was one, else seconds until there is."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class PublishRates:
    """Token buckets by key (a client id; a user or address for HTTP posts
    without one), at most ``limit`` kept: full buckets are forgotten first."""

    __slots__ = ("_buckets", "_limit", "rate")

    def __init__(self, rate: float, limit: int = 10_000) -> None:
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}
        self._limit = limit

    def take(self, key: str) -> float:
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._limit:
                self._forget_full(now)
            bucket = self._buckets[key] = TokenBucket(self.rate)
        return bucket.take(now)

    def _forget_full(self, now: float) -> None:
        refill = max(1.0, self.rate) / self.rate  # seconds to fill a bucket from empty
        idle = [k for k, b in self._buckets.items() if now - b.at >= refill]
        for key in idle or list(self._buckets)[: self._limit // 2]:
            del self._buckets[key]

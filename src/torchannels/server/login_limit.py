"""Failed admin logins per client address, answered with a growing wait.

An address gets :attr:`LoginLimit.free` wrong passwords at once; after
that each failure makes it wait twice as long as the one before (1 s, 2 s,
4 s, ... up to :attr:`~LoginLimit.cap`) before its next try is even
checked. A success forgets the address. IPv6 addresses count by their
/64 network, which one client usually holds whole. The table is bounded:
an address idle for :attr:`~LoginLimit.forget` seconds past its wait is
dropped, and past :attr:`~LoginLimit.max_addresses` the least recently
seen ones go first.

>>> now = [0.0]
>>> limit = LoginLimit(free=2, clock=lambda: now[0])
>>> [limit.failed("192.0.2.7") for _ in range(4)]
[0.0, 0.0, 1.0, 2.0]
>>> limit.wait("192.0.2.7"), limit.wait("192.0.2.8")
(2.0, 0.0)
>>> limit.wait("2001:db8::1") == limit.wait("2001:db8::2")  # one /64
True
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    failures: int
    until: float  # no try is checked before this (monotonic) time


class LoginLimit:
    """Wrong passwords per client address, with exponential backoff."""

    def __init__(
        self,
        *,
        free: int = 5,
        base: float = 1.0,
        cap: float = 300.0,
        forget: float = 900.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Failures allowed before any wait.
        self.free = free
        #: The first wait, in seconds; each later one doubles.
        self.base = base
        #: The longest wait.
        self.cap = cap
        #: Seconds after its wait ends that an idle address is forgotten.
        self.forget = forget
        #: The most addresses held.
        self.max_addresses = max_addresses
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def wait(self, address: str) -> float:
        """Seconds before a try from ``address`` is checked; 0: at once."""
        self._sweep()
        record = self._records.get(_key(address))
        return 0.0 if record is None else max(0.0, record.until - self._clock())

    def failed(self, address: str) -> float:
        """Count a wrong password from ``address``; return the wait it now has."""
        key = _key(address)
        now = self._clock()
        record = self._records.pop(key, None)
        if record is None or record.until + self.forget <= now:
            record = _Record(0, 0.0)
        record.failures += 1
        over = record.failures - self.free
        delay = 0.0 if over <= 0 else min(self.cap, self.base * 2.0 ** min(over - 1, 32))
        record.until = now + delay
        self._records[key] = record  # now the most recently seen
        while len(self._records) > self.max_addresses:
            self._records.popitem(last=False)
        return delay

    def succeeded(self, address: str) -> None:
        """Forget ``address``: the right password resets its count."""
        self._records.pop(_key(address), None)

    def _sweep(self) -> None:
        # Oldest first: stop at the first record still worth keeping.
        now = self._clock()
        while self._records:
            key, record = next(iter(self._records.items()))
            if record.until + self.forget > now:
                return
            del self._records[key]


def _key(address: str) -> str:
    """The unit counted: the address, or its /64 network for IPv6."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address

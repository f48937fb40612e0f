"""Open connections per client address (``--max-connections-per-ip``).

One address must not take every connection slot (a slowloris from one
host fills ``--max-connections`` in about a second). A connection counts
against its TCP peer from accept; a connection from a trusted proxy
counts against the forwarded client of the request it carries, once
that request's headers are read (``listener.admit_request``). The
reasoning behind the default is in docs/deployment.md.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..forwarded import TrustedProxies

log = logging.getLogger("torchannels.server")


class Counted(Protocol):
    """A connection's stream: the address it counts against, if any."""

    client: str | None


def peer_address(address: Any) -> str | None:
    """The IP address of an accepted socket's ``address`` (an IPv4 peer of
    a dual-stack socket as IPv4); None for a Unix socket."""
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return None
    try:
        ip = ipaddress.ip_address(address[0].partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class PerAddressLimit:
    """Open connections per client address, at most ``limit`` each (0: no
    limit), and a warning about refusals at most once per ``interval``.

    A connection counts against one address at a time: its TCP peer from
    accept, or, from a trusted proxy, the client of the request it
    carries now (:meth:`take` moves it).

    >>> limit = PerAddressLimit(2, TrustedProxies(()))
    >>> limit.allows("192.0.2.1"), limit.count("192.0.2.1")
    (True, 0)
    """

    def __init__(
        self,
        limit: int,
        proxies: TrustedProxies,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.proxies = proxies
        self.interval = interval
        self.clock = clock
        self._open: dict[str, int] = {}
        #: Connections and requests refused over the limit, ever.
        self.refusals = 0
        self._unreported = 0
        self._last_report = -float("inf")

    def count(self, address: str) -> int:
        return self._open.get(address, 0)

    def allows(self, address: str) -> bool:
        return not self.limit or self._open.get(address, 0) < self.limit

    def take(self, stream: Counted, address: str) -> None:
        self.release(stream)
        stream.client = address
        self._open[address] = self._open.get(address, 0) + 1

    def release(self, stream: Counted) -> None:
        address, stream.client = stream.client, None
        if address is not None:
            left = self._open[address] - 1
            if left:
                self._open[address] = left
            else:
                del self._open[address]

    def refused(self, address: str) -> None:
        """Count a refusal of ``address``; log it unless one was logged
        less than ``interval`` ago (then the next line counts it)."""
        self.refusals += 1
        self._unreported += 1
        now = self.clock()
        if now - self._last_report < self.interval:
            return
        log.warning(
            "refused %d connection(s) over --max-connections-per-ip %d in the last %.0fs, "
            "the latest from %s (behind a reverse proxy, list it in --trusted-proxies)",
            self._unreported,
            self.limit,
            min(now - self._last_report, self.interval),
            address,
        )
        self._unreported = 0
        self._last_report = now


def per_ip_cap(configured: int, cap: int) -> int:
    """The per-address cap: ``configured``, or with 0 a tenth of the
    connection cap ``cap`` (at least 1).

    >>> per_ip_cap(0, 921), per_ip_cap(0, 5), per_ip_cap(50, 921)
    (92, 1, 50)
    """
    return configured or max(1, cap // 10)

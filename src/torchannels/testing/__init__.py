"""Fault injection and delivery checking for torchannels deployments.

Tools to run against your own deployment and in your own tests (see
docs/testing.md): :class:`FaultProxy` cuts, delays and stalls TCP
connections; :class:`CheckingSubscriber` subscribes on any transport,
resumes as the protocol says, and records every gap, duplicate or
out-of-order message that is not covered by an explicit ``reset``.
Dependencies: Tornado only. The library core never imports this package.
"""

from __future__ import annotations

from .checker import DeliveryChecker, Position, Reset, Violation
from .proxy import FaultProxy, ProxyCounters
from .subscriber import TRANSPORTS, CheckingSubscriber, SubscriberStats

__all__ = [
    "TRANSPORTS",
    "CheckingSubscriber",
    "DeliveryChecker",
    "FaultProxy",
    "Position",
    "ProxyCounters",
    "Reset",
    "SubscriberStats",
    "Violation",
]

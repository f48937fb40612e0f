"""Brokers: where history lives and how publications travel.

:class:`RedisBroker` is importable from here without redis-py installed: it
imports redis-py when one is made (``pip install 'torchannels[redis]'``).
"""

from .base import Broker, ChannelInfo, HistoryPolicy, Listener, ReadResult
from .memory import MemoryBroker
from .presence import Member, PresenceEvent, PresencePage, PresenceStore
from .redis import RedisBroker

__all__ = [
    "Broker",
    "ChannelInfo",
    "HistoryPolicy",
    "Listener",
    "Member",
    "MemoryBroker",
    "PresenceEvent",
    "PresencePage",
    "PresenceStore",
    "ReadResult",
    "RedisBroker",
]

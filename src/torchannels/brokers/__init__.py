"""Brokers: where history lives and how publications travel."""

from .base import Broker, ChannelInfo, HistoryPolicy, Listener, ReadResult
from .memory import MemoryBroker

__all__ = ["Broker", "ChannelInfo", "HistoryPolicy", "Listener", "MemoryBroker", "ReadResult"]

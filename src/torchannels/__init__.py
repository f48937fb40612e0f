"""torchannels: real-time pub/sub channels for Tornado.

>>> from torchannels import Hub
>>> Hub().channel("news").send({"text": "hi"})["channel"]
'news'
"""

from __future__ import annotations

from .assets import static_path, static_route
from .brokers import Broker, ChannelInfo, HistoryPolicy, MemoryBroker, ReadResult
from .channel import Channel
from .channel_options import ChannelOptions
from .errors import BadRequest, ChannelNameError, MessageError, TorChannelsError
from .frames import Frame, Publication
from .handlers import ChannelMixin
from .hub import Hub, default_hub
from .identity import Identity, User
from .protocol import Position, format_cursor, parse_cursor
from .session import Subscription
from .settings import Settings
from .transports import TRANSPORT_CLASSES, Transport, deprecated_name

__version__ = "0.1.0"

__all__ = [
    "TRANSPORT_CLASSES",
    "BadRequest",
    "Broker",
    "Channel",
    "ChannelInfo",
    "ChannelMixin",
    "ChannelNameError",
    "ChannelOptions",
    "Frame",
    "HistoryPolicy",
    "Hub",
    "Identity",
    "MemoryBroker",
    "MessageError",
    "Position",
    "Publication",
    "ReadResult",
    "Settings",
    "Subscription",
    "TorChannelsError",
    "Transport",
    "User",
    "__version__",
    "default_hub",
    "format_cursor",
    "parse_cursor",
    "static_path",
    "static_route",
]


def __getattr__(name: str) -> object:
    # ``TRANSPORTS``, the old name of ``TRANSPORT_CLASSES``: still importable, with a warning.
    return deprecated_name(name, __name__)

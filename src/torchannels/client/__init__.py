"""The Python client of torchannels: subscribe (asyncio, or from a script)
and publish through a hub's API, or as a subscriber with its token
(``Client.publish``). Runtime dependency: Tornado only.

::

    from torchannels.client import ChannelError, Client, Message, Publisher

    Publisher("http://127.0.0.1:8090", api_key).publish("demo:chat", {"text": "hi"})

    async with Client("http://127.0.0.1:8090/channels") as client:
        async for event in client.subscribe("demo:chat"):  # a ChannelFeed
            if isinstance(event, Message):
                print(event.data)
            elif isinstance(event, ChannelError):
                print("refused:", event.code)

See docs/python-client.md.
"""

from __future__ import annotations

import warnings

from .calls import (
    ChannelInfo,
    ChannelPage,
    ControlResult,
    PresenceCounts,
    Published,
    StateSet,
    UserPage,
)
from .client import TRANSPORTS, ChannelFeed, Client
from .errors import (
    APIError,
    AuthError,
    ClientError,
    ConnectError,
    Disconnected,
    PayloadTooLarge,
    PublishError,
    RequestError,
    ServerError,
    SubscribeError,
    UnavailableError,
)
from .events import (
    ChannelError,
    Event,
    Member,
    Message,
    PresenceDiff,
    PresencePage,
    PresenceSnapshot,
    Reset,
    Status,
)
from .publisher import AsyncPublisher, Publisher
from .sync import SyncSubscription, subscribe_sync

__all__ = [
    "TRANSPORTS",
    "APIError",
    "AsyncPublisher",
    "AuthError",
    "ChannelError",
    "ChannelFeed",
    "ChannelInfo",
    "ChannelPage",
    "Client",
    "ClientError",
    "ConnectError",
    "ControlResult",
    "Disconnected",
    "Event",
    "Member",
    "Message",
    "PayloadTooLarge",
    "PresenceCounts",
    "PresenceDiff",
    "PresencePage",
    "PresenceSnapshot",
    "PublishError",
    "Published",
    "Publisher",
    "RequestError",
    "Reset",
    "ServerError",
    "StateSet",
    "Status",
    "SubscribeError",
    "SyncSubscription",
    "UnavailableError",
    "UserPage",
    "subscribe_sync",
]


def __getattr__(name: str) -> object:
    # ``Subscription`` was this package's name for ChannelFeed up to 0.1; it
    # read as torchannels.Subscription (what can_access is asked about).
    if name == "Subscription":
        warnings.warn(
            "torchannels.client.Subscription is now torchannels.client.ChannelFeed",
            DeprecationWarning,
            stacklevel=2,
        )
        return ChannelFeed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

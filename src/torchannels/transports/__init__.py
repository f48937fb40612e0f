"""Transports: each frames and writes bytes for one kind of client request."""

from __future__ import annotations

from .base import Transport
from .longpoll import LongPollTransport
from .poll import PollTransport
from .sse import SSETransport
from .stream import StreamTransport

#: The built-in transports by their ``transport=`` name.
TRANSPORTS: dict[str, type[Transport]] = {
    t.name: t for t in (PollTransport, LongPollTransport, StreamTransport, SSETransport)
}

__all__ = [
    "TRANSPORTS",
    "LongPollTransport",
    "PollTransport",
    "SSETransport",
    "StreamTransport",
    "Transport",
]

"""Transports: each frames and writes bytes for one kind of client request.

``TRANSPORT_CLASSES`` maps each built-in HTTP transport's ``transport=``
name to its class (the WebSocket is a handler of its own:
``ChannelMixin.websocket()``). Elsewhere ``TRANSPORTS`` is always a tuple of
transport names (:mod:`torchannels.client`, :mod:`torchannels.testing`);
the old name of this mapping, ``TRANSPORTS``, still imports from here and
from :mod:`torchannels`, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from typing import Any

from .base import Transport
from .longpoll import LongPollTransport
from .poll import PollTransport
from .sse import SSETransport
from .stream import StreamTransport

#: The built-in HTTP transports' classes by their ``transport=`` name.
TRANSPORT_CLASSES: dict[str, type[Transport]] = {
    t.name: t for t in (PollTransport, LongPollTransport, StreamTransport, SSETransport)
}


def __getattr__(name: str) -> Any:
    return deprecated_name(name, __name__)


def deprecated_name(name: str, module: str) -> Any:
    """The value of a name ``module`` no longer offers under that name."""
    if name == "TRANSPORTS":
        warnings.warn(
            f"{module}.TRANSPORTS is renamed TRANSPORT_CLASSES (TRANSPORTS names a "
            "tuple of transport names elsewhere)",
            DeprecationWarning,
            stacklevel=3,
        )
        return TRANSPORT_CLASSES
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


__all__ = [
    "TRANSPORT_CLASSES",
    "LongPollTransport",
    "PollTransport",
    "SSETransport",
    "StreamTransport",
    "Transport",
]

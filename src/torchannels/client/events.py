"""What iterating a subscription yields, and what the client reports aside.

A subscription yields its data in order, as typed events:

- :class:`Message`: a published message (``state=True`` for the messages of
  a channel's state, delivered on join before what follows it);
- :class:`Reset`: the position in ``channel`` could not be served; forget
  what you derived from the channel; its state or history comes next;
- :class:`ChannelError`: the server refused ``channel``; it is no longer
  asked for.

Resets are events rather than exceptions or callbacks because they sit at an
exact place in the channel's sequence: after the last message of the old
position, before the first one of the new. An exception would end the
``async for`` (and the other channels' delivery with it); a callback would
run out of that order.

Connection changes are not data: they go to the client's ``on_status``
callback as :class:`Status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    """One message of ``channel`` at ``epoch:offset``. ``data`` is the whole
    delivered object: what was published plus ``channel``, ``ts``, ``epoch``
    and ``offset``."""

    channel: str
    epoch: str
    offset: int
    data: dict[str, Any] = field(repr=False)
    state: bool = False  #: part of the channel's state, delivered on join

    @property
    def ts(self) -> float:
        """Server time of publication (of the ``set_state`` call for state)."""
        return float(self.data.get("ts", 0.0))


@dataclass(frozen=True)
class Reset:
    """``channel`` starts over: ``reason`` is ``epoch_changed``,
    ``history_trimmed`` or ``position_ahead`` (docs/protocol.md)."""

    channel: str
    reason: str


@dataclass(frozen=True)
class ChannelError:
    """The server refused ``channel``: ``code`` is ``forbidden``, a token code
    (``token_required``, ``token_expired`` without ``get_token``, ...) or, on
    WebSocket, ``invalid_channel``, ``too_many_channels``..."""

    channel: str
    code: str
    message: str


Event = Message | Reset | ChannelError


@dataclass(frozen=True)
class Status:
    """A change of the connection, for ``Client(on_status=...)``.

    ``state`` is ``"connected"`` (``transport`` delivers) or
    ``"reconnecting"`` (the connection ended or could not be made:
    ``reason`` says why, a network failure in plain words such as
    ``connection refused``, and the next attempt comes after ``delay``
    seconds, 0 for at once)."""

    state: str
    transport: str
    reason: str = ""
    delay: float = 0.0

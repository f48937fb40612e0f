"""What iterating a subscription yields, and what the client reports aside.

A subscription yields its data in order, as typed events:

- :class:`Message`: a published message (``state=True`` for the messages of
  a channel's state, delivered on join before what follows it);
- :class:`Reset`: the position in ``channel`` could not be served; forget
  what you derived from the channel; its state or history comes next;
- :class:`ChannelError`: the server refused ``channel``; it is no longer
  asked for;
- :class:`PresenceSnapshot`: who is in a presence channel, right after the
  channel's ``subscribed`` (and its state), before its history and live
  messages; it replaces whatever the consumer derived from earlier ones;
- :class:`PresenceDiff`: users who joined or left a ``join_leave`` channel
  since (the server's coalesced ``presence`` frame).

Resets are events rather than exceptions or callbacks because they sit at an
exact place in the channel's sequence: after the last message of the old
position, before the first one of the new. An exception would end the
``async for`` (and the other channels' delivery with it); a callback would
run out of that order.

Connection changes are not data: they go to the client's ``on_status``
callback as :class:`Status`.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """The server refused ``channel``, or stopped delivering it: ``code`` is
    ``forbidden``, a token code (``token_required``, ``token_expired`` or
    ``token_revoked`` without ``get_token``, ...), ``unsubscribed`` (the
    server's control API unsubscribed this connection) or, on WebSocket,
    ``invalid_channel``, ``too_many_channels``... The channel is no longer
    asked for, on this connection or the next."""

    channel: str
    code: str
    message: str


@dataclass(frozen=True)
class Member:
    """One user present in a channel: ``info`` is the object of the user's
    token (its ``info`` claim) or None; ``clients`` how many of the user's
    connections are present (1 for a join)."""

    user: str
    info: Mapping[str, Any] | None = None
    clients: int = 1


@dataclass(frozen=True)
class PresencePage:
    """One page of a channel's presence (:meth:`Client.presence`):
    ``members`` sorted by user id; ``next`` the ``after`` of the following
    page, None on the last; ``clients`` and ``users`` count the whole channel
    (anonymous connections are clients, never users)."""

    channel: str
    members: tuple[Member, ...]
    clients: int
    users: int
    next: str | None = None

    @property
    def complete(self) -> bool:
        """True when ``members`` is every user (no page follows)."""
        return self.next is None


@dataclass(frozen=True)
class PresenceSnapshot(PresencePage):
    """The presence of ``channel`` as the server subscribed this connection:
    its first page (at most 100 members) and the counts. Yielded after every
    ``subscribed`` of a presence channel, so after each reconnect too: it
    replaces what the consumer had. When ``next`` is set, more members follow:
    read them with ``await client.presence(channel, after=snapshot.next)``."""


@dataclass(frozen=True)
class PresenceDiff:
    """Users who joined (``joins``, each with ``clients`` 1) or left
    (``leaves``, user ids) ``channel`` since the last snapshot or diff; a user
    is never in both. Only channels with ``join_leave`` send them."""

    channel: str
    joins: tuple[Member, ...]
    leaves: tuple[str, ...]


Event = Message | Reset | ChannelError | PresenceSnapshot | PresenceDiff


@dataclass(frozen=True)
class Status:
    """A change of the connection, for ``Client(on_status=...)``.

    ``state`` is ``"connected"`` (``transport`` delivers),
    ``"reconnecting"`` (the connection ended or could not be made:
    ``reason`` says why, a network failure in plain words such as
    ``connection refused``, and the next attempt comes after ``delay``
    seconds, 0 for at once) or ``"disconnected"`` (the server ended the
    connection and said not to come back: ``reason`` is its code,
    ``disconnected_by_server`` or ``token_revoked``; no attempt follows, and
    the iteration raises :class:`Disconnected`)."""

    state: str
    transport: str
    reason: str = ""
    delay: float = 0.0

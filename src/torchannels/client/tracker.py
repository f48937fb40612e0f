"""A subscription's positions, moved by the frames exactly as
docs/protocol.md says, and what one connection has shown so far.

>>> t = Tracker(["chat"], {}, can_renew=False)
>>> t.apply({"type": "subscribed", "channel": "chat", "epoch": "e1", "offset": 4})
[]
>>> t.apply({"type": "message", "data": {"channel": "chat", "epoch": "e1", "offset": 5, "ts": 1}})
[Message(channel='chat', epoch='e1', offset=5, state=False)]
>>> t.positions
{'chat': Position(epoch='e1', offset=5)}

A state moves the position only as its last message is handed out, so a
cursor never covers state messages the consumer has not had:

>>> state = [{"channel": "chat", "epoch": "e2", "offset": 9, "k": k} for k in (1, 2)]
>>> first, last = t.apply({"type": "subscribed", "channel": "chat", "epoch": "e2",
...                        "offset": 9, "state": state})
>>> t.handed_out(first); t.positions
{}
>>> t.handed_out(last); t.positions
{'chat': Position(epoch='e2', offset=9)}
"""

from __future__ import annotations

from typing import Any

from ..protocol import Position
from .disconnect import TOKEN_REVOKED, Disconnect
from .errors import RENEWABLE, SubscribeError
from .events import ChannelError, Event, Message, Reset
from .presence import diff_of, snapshot_of


class MalformedFrame(ValueError):
    """A frame without the fields its type needs."""


class Tracker:
    """``channels`` still asked for and their ``positions`` (a channel whose
    state is being handed out has none until its last message is: see
    :meth:`handed_out`); per connection
    (reset by :meth:`start`): ``connected``, ``ping`` (the server's interval),
    ``pinged``, ``delivered`` (a channel frame arrived) and ``end`` (why it
    is over: a ``reconnect`` or ``disconnect`` reason, or ``token_expired``
    or ``token_revoked`` for a channel refused so when ``can_renew``;
    ``token_revoked`` once, until the channel is served again: refused
    again, it is a :class:`ChannelError`) and ``disconnect`` (the server's
    ``disconnect`` frame, if it came); and
    ``client``, the id the server gave this client last (opaque; kept across
    connections, as a poll sends it back, and dropped by a ``disconnect``
    that asks to reconnect: the server answers a poll carrying it with
    another ``disconnect``)."""

    def __init__(
        self, channels: list[str], positions: dict[str, Position], can_renew: bool
    ) -> None:
        self.channels = channels
        self.positions = positions
        self.can_renew = can_renew
        #: channel -> (the last message of its state, the position it stands for)
        self._held: dict[str, tuple[Event, Position]] = {}
        #: channels refused as ``token_revoked`` and renewed for, not served since
        self._renewed: set[str] = set()
        self.client: str | None = None
        self.start()

    def start(self) -> None:
        self.connected = self.pinged = self.delivered = False
        self.ping: float | None = None
        self.end: str | None = None
        self.disconnect: Disconnect | None = None

    def apply(self, frame: dict[str, Any]) -> list[Event]:
        """The events one frame gives, after moving the positions."""
        try:
            return self._apply(frame)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedFrame(f"malformed frame {frame!r:.200}: {exc!r}") from exc

    def _apply(self, frame: dict[str, Any]) -> list[Event]:
        kind = frame.get("type")
        if kind == "connected":
            self.connected = True
            ping = frame.get("ping")
            if isinstance(ping, int | float) and ping > 0:
                self.ping = float(ping)
            self.identified(frame.get("client"))
        elif kind == "ping":
            self.pinged = True
        elif kind == "reconnect":
            self.end = str(frame.get("reason") or "reconnect")
        elif kind == "disconnect":
            self.disconnect = Disconnect.of(frame)
            self.end = self.disconnect.reason
            if self.disconnect.reconnect:
                self.client = None  # start a new client, not one the server ended
        elif kind == "message":
            data = frame["data"]
            channel = data["channel"]
            if channel in self.channels:
                position = Position(str(data["epoch"]), int(data["offset"]))
                self.positions[channel] = position
                self.delivered = True
                return [Message(channel, position.epoch, position.offset, data)]
        elif kind == "subscribed":
            channel = frame["channel"]
            if channel in self.channels:
                position = Position(str(frame["epoch"]), int(frame["offset"]))
                self.delivered = True
                self._renewed.discard(channel)  # served: the token renewed for it is good
                state: list[Event] = [
                    Message(channel, str(m["epoch"]), int(m["offset"]), m, state=True)
                    for m in frame.get("state") or []
                ]
                presence = frame.get("presence")
                snapshot = [] if presence is None else [snapshot_of(channel, presence)]
                self._forget(channel)
                if state:  # the position comes with the state's last message
                    self._held[channel] = (state[-1], position)
                else:
                    self.positions[channel] = position
                return state + snapshot
        elif kind == "presence":
            if frame["channel"] in self.channels:
                self.delivered = True
                return [diff_of(frame)]
        elif kind == "reset":
            channel = frame["channel"]
            if channel in self.channels:
                self._forget(channel)
                self.delivered = True
                return [Reset(channel, str(frame.get("reason")))]
        elif kind == "error":
            return self._error(frame)
        return []  # ping, unsubscribed, and types this client does not know

    def identified(self, client: object) -> None:
        """The server's ``client`` id (of a ``connected`` frame or a poll
        answer), when it sent one."""
        if isinstance(client, str) and client:
            self.client = client

    def answered(self) -> None:
        """A poll was answered: it served the channels it did not refuse."""
        self.end = "answered"
        self._renewed.clear()

    def handed_out(self, event: Event) -> None:
        """``event`` goes to the consumer now: the last message of a state
        gives its channel the state's position. Before that the channel has
        none, so a cursor saved part-way through a state makes the next
        connection join the channel afresh and get its whole state again."""
        held = self._held.get(event.channel)
        if held is not None and held[0] is event:
            del self._held[event.channel]
            self.positions[event.channel] = held[1]

    def _forget(self, channel: str) -> None:
        self.positions.pop(channel, None)
        self._held.pop(channel, None)

    def _error(self, frame: dict[str, Any]) -> list[Event]:
        code, message = str(frame.get("code")), str(frame.get("message", ""))
        channel = frame.get("channel")
        if channel is None:  # the request itself (bad_parameter, bad_message)
            raise SubscribeError(code, message)
        if channel not in self.channels:
            return []
        again = code == TOKEN_REVOKED and channel in self._renewed  # once, as torchannel.js
        if code in RENEWABLE and self.can_renew and not again:
            # Renew the token, then ask again from the same position (as
            # torchannel.js does): the refusal was about the token only.
            self.end = code
            if code == TOKEN_REVOKED:
                self._renewed.add(channel)
            return []
        self._renewed.discard(channel)
        self._forget(channel)
        self.channels.remove(channel)
        return [ChannelError(channel, code, message)]

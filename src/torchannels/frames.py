"""Frames: the units every transport writes, each encoded once.

A :class:`Publication` is one stored message. Its JSON ``payload`` is encoded
once when it is published; its message :class:`Frame` is built when a
subscriber needs it, and every transport caches its own framing of it on
the frame (``Frame.cached``). So the fan-out path does no per-recipient
JSON encoding. Control frames (subscribed, reset, error, ...) concern one
subscriber and are built for it.

A publication holds its frame weakly: the frame and its framings live while
a fan-out, a read being served or a connection's queue holds them, and no
longer. So a history kept in memory holds messages, not up to eight
framings of each.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .protocol import Position, dumps, encode_message

#: Frame types, as they appear in ``"type"`` and as SSE event names.
MESSAGE = "message"
SUBSCRIBED = "subscribed"
RESET = "reset"
ERROR = "error"
CONNECTED = "connected"
PING = "ping"
RECONNECT = "reconnect"
DISCONNECT = "disconnect"
PUBLISHED = "published"  # the answer to a WebSocket publish command
PUBLISH_ERROR = "publish_error"  # its refusal
PRESENCE = "presence"
PRESENCE_PAGE = "presence_page"


class Frame:
    """One protocol frame.

    ``envelope`` is the frame as a JSON object (``{"type": ..., ...}``);
    ``sse_data`` is what SSE puts in its ``data:`` field (for messages the bare
    message, so ``EventSource.onmessage`` sees exactly what was sent).
    ``channel``/``position`` say how the frame moves the receiver's cursor:
    a frame with a channel and a position sets it; one with a channel and no
    position forgets it (reset, error).
    """

    __slots__ = ("__weakref__", "_cache", "channel", "envelope", "kind", "position", "sse_data")

    def __init__(
        self,
        kind: str,
        envelope: bytes,
        *,
        channel: str | None = None,
        position: Position | None = None,
        sse_data: bytes | None = None,
    ) -> None:
        self.kind = kind
        self.envelope = envelope
        self.channel = channel
        self.position = position
        self.sse_data = envelope if sse_data is None else sse_data
        self._cache: dict[str, bytes] = {}

    def cached(self, key: str, build: Callable[[Frame], bytes]) -> bytes:
        """Return ``build(self)``, computed once per ``key`` for all recipients."""
        data = self._cache.get(key)
        if data is None:
            data = self._cache[key] = build(self)
        return data

    def __repr__(self) -> str:
        return f"<Frame {self.kind} {self.channel} {self.position}>"


class Publication:
    """A message stored in a channel's history, stamped and encoded once.

    ``payload`` is the message's JSON, ``channel``/``ts``/``epoch``/``offset``
    included. ``data`` (the message as a dict) is decoded from the payload
    only when asked for: a publication that came from another process is
    framed and delivered from its bytes alone.
    """

    __slots__ = (
        "_data",
        "_frame",
        "channel",
        "epoch",
        "offset",
        "payload",
        "position",
        "ts",
    )

    def __init__(
        self,
        channel: str,
        epoch: str,
        offset: int,
        ts: float,
        payload: bytes,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.channel = channel
        self.epoch = epoch
        self.offset = offset
        self.ts = ts
        self.payload = payload
        self._data = data
        #: Built once: sessions compare and store it for every recipient.
        self.position = Position(epoch, offset)
        self._frame: weakref.ref[Frame] | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The stamped message as a dict (a new copy's worth of decoding once)."""
        if self._data is None:
            self._data = json.loads(self.payload)
        return self._data

    @property
    def frame(self) -> Frame:
        """The message frame of this publication, shared by everyone that
        holds it: built again only once nobody does (see the module's doc).
        Whoever hands it to many recipients (the hub's fan-out) holds it
        for the whole loop, so all of them get the same frame."""
        frame = self._frame() if self._frame is not None else None
        if frame is None:
            frame = Frame(
                MESSAGE,
                b'{"type":"message","data":' + self.payload + b"}",
                channel=self.channel,
                position=self.position,
                sse_data=self.payload,
            )
            self._frame = weakref.ref(frame)
        return frame

    def __repr__(self) -> str:
        return f"<Publication {self.channel} {self.epoch}:{self.offset}>"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """What a publish returns when its idempotency key was already used in
    its channel within the broker's window: nothing was stored or
    delivered, and these are the first publish's ``epoch``, ``offset`` and
    ``ts``."""

    channel: str
    epoch: str
    offset: int
    ts: float

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)


def _control(kind: str, channel: str | None, position: Position | None, **fields: Any) -> Frame:
    body: dict[str, Any] = {"type": kind}
    if channel is not None:
        body["channel"] = channel
    body.update(fields)
    return Frame(kind, dumps(body), channel=channel, position=position)


def subscribed(
    channel: str,
    position: Position,
    state: Sequence[Publication] | None = None,
    presence: Mapping[str, Any] | None = None,
) -> Frame:
    """The server gives the client a position in ``channel`` (join or after reset).

    ``state`` (the channel's compressed state) rides in the same frame, so a
    client can never hold the position without the state it stands for.
    """
    body = dumps(
        {"type": SUBSCRIBED, "channel": channel, "epoch": position.epoch, "offset": position.offset}
    )
    if state is not None:
        # The state's messages are already encoded: splice their payloads in.
        body = body[:-1] + b',"state":[' + b",".join(p.payload for p in state) + b"]}"
    if presence is not None:
        body = body[:-1] + b',"presence":' + dumps(presence) + b"}"
    return Frame(SUBSCRIBED, body, channel=channel, position=position)


def reset(channel: str, reason: str) -> Frame:
    """The client's position in ``channel`` cannot be served; state follows."""
    return _control(RESET, channel, None, reason=reason)


def error(channel: str, code: str, message: str) -> Frame:
    """``channel`` is not served to this client (for example ``forbidden``)."""
    return _control(ERROR, channel, None, code=code, message=message)


def connected(transport: str, ping_interval: float, client: str | None = None) -> Frame:
    """First frame of a streaming response, written at once; ``client`` is
    the connection's signed client id."""
    if client is None:
        return _control(CONNECTED, None, None, transport=transport, ping=ping_interval)
    return _control(CONNECTED, None, None, transport=transport, ping=ping_interval, client=client)


def reconnect(reason: str) -> Frame:
    """Last frame of a response the server ends on purpose."""
    return _control(RECONNECT, None, None, reason=reason)


def disconnect(reason: str, reconnect: bool) -> Frame:
    """Last frame of a connection the server ends on purpose (the control
    API): ``reconnect`` False tells the client not to come back."""
    return _control(DISCONNECT, None, None, reason=reason, reconnect=reconnect)


def presence(channel: str, joins: Sequence[Mapping[str, Any]], leaves: Sequence[str]) -> Frame:
    """Joins and leaves of ``channel`` (coalesced); not stored in history,
    so it moves no cursor. ``joins``: ``{"user", "info"}`` objects."""
    body = {"type": PRESENCE, "channel": channel, "joins": list(joins)}
    body["leaves"] = [{"user": user} for user in leaves]
    return Frame(PRESENCE, dumps(body))


PING_FRAME = Frame(PING, b'{"type":"ping"}')


class Draft:
    """A message stamped with ``channel`` and ``ts``, encoded, waiting for the
    broker to give it a position.

    ``head`` is its JSON without the closing brace; a broker completes it
    with ``,"epoch":...,"offset":...}`` (a network broker does so where it
    assigns the position, so the message is encoded once, here). Creating a
    draft raises :class:`~torchannels.errors.MessageError` for a message JSON
    cannot carry, before anything is queued or stored.
    """

    __slots__ = ("channel", "data", "head", "ts")

    def __init__(self, channel: str, message: dict[str, Any], ts: float) -> None:
        data = dict(message)
        data["channel"] = channel
        data["ts"] = ts
        self.channel = channel
        self.ts = ts
        self.data = data
        self.head = encode_message(data)[:-1]

    def finish(self, position: Position) -> Publication:
        """The publication this draft becomes at ``position``."""
        payload = self.head + tail(position)
        data = dict(self.data)
        data["epoch"] = position.epoch
        data["offset"] = position.offset
        return Publication(self.channel, position.epoch, position.offset, self.ts, payload, data)


def tail(position: Position) -> bytes:
    """What completes a draft's ``head`` at ``position``."""
    return b',"epoch":' + dumps(position.epoch) + b',"offset":%d}' % position.offset

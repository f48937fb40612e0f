"""The delivery rules of docs/protocol.md as a checker of received frames.

:class:`DeliveryChecker` is fed the frames one subscriber receives, in order,
whatever the transport. Per channel it keeps the subscriber's position and
records every breach of the protocol's promise, "every message after the
position, in order, exactly once, or a ``reset``", as a :class:`Violation`.
It is written from the protocol document alone (it imports nothing from
torchannels), so it checks the server rather than repeating it.

>>> checker = DeliveryChecker()
>>> checker.feed({"type": "subscribed", "channel": "c", "epoch": "e1", "offset": 0})
>>> for offset in (1, 2, 2, 4):
...     checker.feed({"type": "message", "data": {"channel": "c", "epoch": "e1", "offset": offset}})
>>> [(v.kind, v.offset) for v in checker.violations]
[('duplicate', 2), ('gap', 4)]
>>> checker.cursor()
'c=e1:4'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Violation kinds.
GAP = "gap"  #: a message skipped offsets after the position, with no reset
DUPLICATE = "duplicate"  #: a message at or before the position that was delivered already
OUT_OF_ORDER = "out_of_order"  #: a skipped message that came after a later one
#: The position ``0:0`` of a channel nobody published to (docs/protocol.md).
NO_EPOCH = "0"
EPOCH_CHANGED = "epoch_changed_silently"  #: a message of another epoch, with no reset
NO_POSITION = "no_position"  #: a message before the channel's ``subscribed``
MOVED = "subscribed_moved"  #: a ``subscribed`` that moved a held position, with no reset
CURSOR = "cursor_mismatch"  #: the server's cursor (poll answer, SSE id) differs from the frames
MALFORMED = "malformed_frame"  #: a frame that breaks the documented shape

Position = tuple[str, int]


@dataclass(frozen=True)
class Violation:
    """One breach of the delivery promise, with what was expected."""

    kind: str
    channel: str
    detail: str
    epoch: str | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = f" at {self.epoch}:{self.offset}" if self.epoch is not None else ""
        return f"{self.kind} in {self.channel!r}{where}: {self.detail}"


@dataclass
class Reset:
    """A ``reset`` the subscriber received: the position it gave up (if any)
    and the one the following ``subscribed`` gave (once it came)."""

    channel: str
    reason: str
    dropped: Position | None
    resumed: Position | None = None


@dataclass
class ChannelLog:
    """What one channel delivered to the subscriber."""

    position: Position | None = None
    #: (epoch, offset, message) of every message received, in arrival order.
    messages: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    resets: list[Reset] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: offsets skipped in the current epoch (a gap): one arriving later is out of order.
    skipped: set[int] = field(default_factory=set)
    #: a reset was received and its ``subscribed`` has not come yet
    awaiting_subscribed: bool = False
    #: epoch -> the first position a ``subscribed`` gave in it (where the subscriber joined)
    joined: dict[str, int] = field(default_factory=dict)


class DeliveryChecker:
    """Per-channel positions and violations of one subscriber."""

    def __init__(self) -> None:
        self.channels: dict[str, ChannelLog] = {}
        self.violations: list[Violation] = []

    def log(self, channel: str) -> ChannelLog:
        return self.channels.setdefault(channel, ChannelLog())

    def positions(self) -> dict[str, Position]:
        return {c: log.position for c, log in self.channels.items() if log.position is not None}

    def cursor(self) -> str:
        """The cursor these positions make (``chat=e:17,news=e:4``)."""
        return ",".join(f"{c}={e}:{o}" for c, (e, o) in sorted(self.positions().items()))

    def feed(self, frame: Mapping[str, Any]) -> None:
        """Apply one received frame."""
        kind = frame.get("type")
        try:
            if kind == "message":
                self._message(frame["data"])
            elif kind == "subscribed":
                self._subscribed(frame["channel"], str(frame["epoch"]), int(frame["offset"]))
            elif kind == "reset":
                log = self.log(frame["channel"])
                log.resets.append(Reset(frame["channel"], frame["reason"], log.position))
                log.position, log.skipped, log.awaiting_subscribed = None, set(), True
            elif kind == "error" and "channel" in frame:
                log = self.log(frame["channel"])
                log.errors.append(dict(frame))
                log.position, log.skipped = None, set()
        except (KeyError, TypeError, ValueError) as exc:
            self._violate(MALFORMED, str(frame.get("channel", "?")), f"{frame!r}: {exc!r}")

    def malformed(self, detail: str, channel: str = "?") -> None:
        """Record a frame that could not be read at all."""
        self._violate(MALFORMED, channel, detail)

    def check_cursor(self, cursor: str, channels: Iterable[str] | None = None) -> None:
        """Compare a cursor the server sent with the positions the frames gave
        (for ``channels``, default all)."""
        theirs: dict[str, Position] = {}
        for entry in filter(None, cursor.split(",")):
            name, _, position = entry.partition("=")
            epoch, _, offset = position.partition(":")
            theirs[name] = (epoch, int(offset))
        ours = self.positions()
        for channel in set(ours) | set(theirs) if channels is None else channels:
            if ours.get(channel) != theirs.get(channel):
                self._violate(
                    CURSOR, channel, f"server cursor {cursor!r}, frames give {ours.get(channel)}"
                )

    def _violate(self, kind: str, channel: str, detail: str, at: Position | None = None) -> None:
        epoch, offset = at if at is not None else (None, None)
        self.violations.append(Violation(kind, channel, detail, epoch, offset))

    def _subscribed(self, channel: str, epoch: str, offset: int) -> None:
        log = self.log(channel)
        if log.position is not None and log.position != (epoch, offset):
            self._violate(
                MOVED, channel, f"position {log.position} replaced without a reset",
                (epoch, offset),
            )  # fmt: skip
        if log.awaiting_subscribed and log.resets:
            log.resets[-1].resumed = (epoch, offset)
        log.joined.setdefault(epoch, offset)
        log.position, log.skipped, log.awaiting_subscribed = (epoch, offset), set(), False

    def _message(self, data: Mapping[str, Any]) -> None:
        channel, epoch, offset = data["channel"], str(data["epoch"]), int(data["offset"])
        log = self.log(channel)
        at = (epoch, offset)
        log.messages.append((epoch, offset, dict(data)))
        if log.position is None:
            why = "after a reset" if log.awaiting_subscribed else "for a fresh join"
            self._violate(NO_POSITION, channel, f"message before `subscribed` {why}", at)
            log.position = at
            return
        if log.position == (NO_EPOCH, 0):  # held nothing: any epoch follows it
            log.position = (epoch, 0)
            log.joined.setdefault(epoch, 0)
        held_epoch, held = log.position
        if epoch != held_epoch:
            self._violate(EPOCH_CHANGED, channel, f"position was {held_epoch}:{held}", at)
            log.position, log.skipped = at, set()
        elif offset == held + 1:
            log.position = at
        elif offset > held + 1:
            self._violate(
                GAP, channel, f"expected offset {held + 1}, {offset - held - 1} missing", at
            )
            # bounded, so that a wild offset cannot exhaust memory
            log.skipped.update(range(held + 1, min(offset, held + 1 + 100_000)))
            log.position = at
        elif offset in log.skipped:
            self._violate(OUT_OF_ORDER, channel, f"arrived after offset {held}", at)
            log.skipped.discard(offset)
        else:
            self._violate(DUPLICATE, channel, f"position was already {held_epoch}:{held}", at)

    def unaccounted(self, channel: str, published: Iterable[Position]) -> list[Position]:
        """The published positions of ``channel`` this subscriber neither
        received nor was told it lost: silent losses.

        A ``reset`` tells of the loss of everything after the position it
        dropped, up to the position its ``subscribed`` gave when that is in
        the same epoch (``history_trimmed``), or of the rest of the epoch
        (``epoch_changed``). Not counted: positions before the subscriber
        first joined their epoch, and positions after its current one (not
        delivered yet).

        >>> checker = DeliveryChecker()
        >>> checker.feed({"type": "subscribed", "channel": "c", "epoch": "a", "offset": 0})
        >>> checker.feed({"type": "message", "data": {"channel": "c", "epoch": "a", "offset": 1}})
        >>> checker.feed({"type": "reset", "channel": "c", "reason": "epoch_changed"})
        >>> checker.feed({"type": "subscribed", "channel": "c", "epoch": "b", "offset": 0})
        >>> checker.feed({"type": "message", "data": {"channel": "c", "epoch": "b", "offset": 2}})
        >>> checker.unaccounted("c", [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3)])
        [('b', 1)]
        """
        log = self.log(channel)
        received = {(e, o) for e, o, _ in log.messages}

        def told(e: str, o: int) -> bool:
            for reset in log.resets:
                if reset.dropped is None or reset.dropped[0] != e or o <= reset.dropped[1]:
                    continue
                if reset.resumed is None or reset.resumed[0] != e or o <= reset.resumed[1]:
                    return True
            return False

        lost = []
        for e, o in published:
            if (e, o) in received or e not in log.joined or o <= log.joined[e]:
                continue
            if log.position is not None and log.position[0] == e and o > log.position[1]:
                continue  # not delivered yet
            if not told(e, o):
                lost.append((e, o))
        return lost

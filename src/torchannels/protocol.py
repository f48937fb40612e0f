"""Positions, cursors, channel names and the JSON codec.

A *position* is where a client stands in one channel: the channel's ``epoch``
(which changes whenever its history is lost) and the ``offset`` of the last
message seen (0 before the first). A *cursor* carries positions for several
channels in one string::

    chat=k3j2x9:17,news=k3j2x9:4

Channel names never contain ``=`` or ``,``, epochs never contain ``:``, so the
format needs no escaping. See docs/protocol.md.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import (
    INVALID_IDEMPOTENCY_KEY,
    MALFORMED_CURSOR,
    BadRequest,
    ChannelNameError,
    MessageError,
)

MAX_CHANNEL_LENGTH = 128
CHANNEL_RE = re.compile(rf"[A-Za-z0-9_\-.:/@#$]{{1,{MAX_CHANNEL_LENGTH}}}")
EPOCH_RE = re.compile(r"[a-z0-9]{1,32}")
OFFSET_MAX_DIGITS = 18
#: Characters an idempotency key may have at most (each printable ASCII).
MAX_IDEMPOTENCY_KEY = 128

#: Keys that torchannels sets on delivered messages: every message gets
#: ``channel``, ``ts``, ``epoch`` and ``offset``; a message a client
#: published gets ``sender`` (its user and client), which no publisher can set.
RESERVED_KEYS = frozenset({"channel", "ts", "epoch", "offset", "sender"})


def check_channel(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise.

    >>> check_channel("chat:room-1")
    'chat:room-1'
    """
    if not isinstance(name, str) or CHANNEL_RE.fullmatch(name) is None:
        raise ChannelNameError(
            f"invalid channel name {name!r}: use 1-{MAX_CHANNEL_LENGTH} characters "
            "from A-Z a-z 0-9 _ - . : / @ # $"
        )
    return name


def check_idempotency_key(key: object) -> str:
    """Return ``key`` if it can be a publish's idempotency key: a string of
    1-128 printable ASCII characters (0x20-0x7E). Else raise
    :class:`BadRequest` ``invalid_idempotency_key``.

    >>> check_idempotency_key("order-17:v2")
    'order-17:v2'
    """
    if isinstance(key, str) and 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        if key.isascii() and key.isprintable():  # for ASCII: 0x20-0x7E
            return key
        bad = next(c for c in key if not (c.isascii() and c.isprintable()))
        why = f"{bad!r} at index {key.index(bad)} is not one"
    elif isinstance(key, str):
        why = f"this one has {len(key)}"
    else:
        why = f"this is {type(key).__name__}, not a string"
    raise BadRequest(
        INVALID_IDEMPOTENCY_KEY,
        f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters "
        f"(space to ~): {why}",
    )


@dataclass(frozen=True, slots=True)
class Position:
    """A place in one channel's stream: epoch plus offset of the last message."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse ``epoch:offset``; raise :class:`BadRequest` when malformed."""
        epoch, sep, digits = text.partition(":")
        if (
            not sep
            or EPOCH_RE.fullmatch(epoch) is None
            or not digits.isascii()
            or not digits.isdigit()
            or len(digits) > OFFSET_MAX_DIGITS
            or (len(digits) > 1 and digits[0] == "0")
        ):
            raise BadRequest(MALFORMED_CURSOR, f"malformed position {text!r}: want epoch:offset")
        return cls(epoch, int(digits))


def parse_cursor(text: str, max_entries: int) -> dict[str, Position]:
    """Parse a cursor string into ``{channel: Position}``.

    An empty string is an empty cursor. Duplicate channels, bad names, bad
    positions and more than ``max_entries`` entries raise :class:`BadRequest`.
    Channel names are interned (one string per channel, however many
    connections resume from it).
    """
    if text == "":
        return {}
    entries = text.split(",")
    if len(entries) > max_entries:
        raise BadRequest(
            MALFORMED_CURSOR, f"cursor has {len(entries)} entries, more than {max_entries}"
        )
    cursor: dict[str, Position] = {}
    for entry in entries:
        name, sep, pos = entry.partition("=")
        if not sep:
            raise BadRequest(
                MALFORMED_CURSOR, f"malformed cursor entry {entry!r}: want name=epoch:offset"
            )
        try:
            check_channel(name)
        except ChannelNameError as exc:
            raise BadRequest(MALFORMED_CURSOR, str(exc)) from None
        if name in cursor:
            raise BadRequest(MALFORMED_CURSOR, f"channel {name!r} appears twice in the cursor")
        cursor[sys.intern(name)] = Position.parse(pos)
    return cursor


def format_cursor(positions: Mapping[str, Position]) -> str:
    """The inverse of :func:`parse_cursor`."""
    return ",".join(f"{name}={pos}" for name, pos in positions.items())


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON; NaN and infinities are refused.

    The standard library is used on purpose: orjson would turn NaN into
    ``null`` silently. Encoding happens once per message, not per recipient.

    Never raises for a string that is not valid Unicode (a lone surrogate
    such as ``"\\ud800"``, which JSON text from a client may carry): such a
    value is written with ``\\u`` escapes, so a frame that echoes client
    input can always be sent.

    >>> dumps({"channel": "\\ud800", "n": "é"})
    b'{"channel":"\\\\ud800","n":"\\\\u00e9"}'
    """
    text = _json(value)
    try:
        return text.encode()
    except UnicodeEncodeError:  # rare: only a lone surrogate gets here
        return _json(value, ascii=True).encode()


def _json(value: Any, ascii: bool = False) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii, allow_nan=False)


def check_message(message: object) -> dict[str, Any]:
    """Validate a user message before it is stamped (a ``Draft`` copies it).

    Refuses non-dicts, reserved keys and anything JSON cannot carry, with a
    :class:`MessageError` naming the problem.
    """
    if not isinstance(message, dict):
        raise MessageError(f"a message must be a dict, not {type(message).__name__}")
    clash = RESERVED_KEYS.intersection(message)
    if clash:
        raise MessageError(
            f"message uses reserved key(s) {sorted(clash)}; torchannels sets "
            f"{sorted(RESERVED_KEYS)} itself (sender on what clients publish)"
        )
    return message


def encode_message(message: Mapping[str, Any]) -> bytes:
    """Encode a stamped message, turning codec errors into :class:`MessageError`.

    Unlike :func:`dumps`, a lone surrogate is refused: a publisher's message
    must be valid Unicode, as every client decodes it."""
    try:
        return _json(message).encode()
    except UnicodeEncodeError:
        raise MessageError(
            "message is not valid Unicode: it holds a lone surrogate (\\ud800-\\udfff)"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError(f"message is not JSON-serialisable: {exc}") from None


def check_messages(messages: Iterable[object]) -> list[dict[str, Any]]:
    """:func:`check_message` for each of ``messages`` (for ``set_state``)."""
    if isinstance(messages, dict | str | bytes):
        raise MessageError("set_state takes a list of message dicts")
    return [check_message(m) for m in messages]

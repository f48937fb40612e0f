"""What an outbox row must hold to be published, checked on both sides.

:func:`encode_data` and :func:`check_key` check what ``enqueue`` is given,
with the rules of publishing (``Channel.send``) and of idempotency keys,
so a row it inserts is publishable. The consumer checks every row it
claims again with :func:`message_of` (rows may come from other writers, a
hand-written ``INSERT``, or a later change of rules): a row that fails goes
to the dead-letter table with the error, and never blocks the rows behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest, MessageError
from ..protocol import check_channel, check_idempotency_key, check_message, encode_message
from ..strict_json import strict_loads


@dataclass(frozen=True, slots=True)
class Row:
    """A claimed row: its id, channel, data (the message's JSON text) and key."""

    id: int
    channel: str
    data: str
    idempotency_key: str | None


def encode_data(data: object) -> str:
    """``data`` (a message dict) as the JSON text a row holds; MessageError
    (a ValueError) for a non-dict, a reserved key or a value JSON cannot carry.

    >>> encode_data({"text": "hi", "n": 1})
    '{"text":"hi","n":1}'
    """
    return encode_message(check_message(data)).decode()


def check_key(key: object) -> str:
    """``key`` if it is a valid idempotency key, else MessageError (a ValueError).

    >>> check_key("order-17")
    'order-17'
    """
    try:
        return check_idempotency_key(key)
    except BadRequest as exc:
        raise MessageError(exc.message) from None


def default_key(table: str, row_id: int) -> str:
    """The idempotency key of a row that has none: unique per table and row.

    >>> default_key("torchannels_outbox", 42)
    'outbox:torchannels_outbox:42'
    """
    return f"outbox:{table}:{row_id}"


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}  # fmt: skip


def message_of(
    row: Row, table: str, check_broker_channel: Callable[[str], None]
) -> tuple[str, dict[str, Any], str]:
    """The ``(channel, message, key)`` that ``row`` publishes; ValueError
    (its text is the dead letter's ``error``) if it cannot be published.
    ``check_broker_channel`` is the broker's own check of names."""
    channel = check_channel(row.channel)
    check_broker_channel(channel)
    try:
        message = strict_loads(row.data)
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"data is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MessageError(f"data must be a JSON object, not {_JSON_KINDS[type(message)]}")
    encode_message(check_message(message))  # reserved keys, lone surrogates, 1e999
    key = default_key(table, row.id) if row.idempotency_key is None else row.idempotency_key
    return channel, message, check_key(key)

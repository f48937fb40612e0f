"""Writing to the outbox inside the caller's own transaction.

``enqueue(conn, "orders:17", {"status": "paid"})`` checks the channel
name, the message and the key with the rules of publishing, then runs one
``INSERT ... RETURNING id`` on ``conn`` (a psycopg 3 ``Connection`` or
``Cursor``): the row is there when the caller's transaction commits, and
never if it rolls back. ``aenqueue`` does the same on an
``AsyncConnection`` or ``AsyncCursor``. Neither commits: with autocommit
on, each insert is its own transaction.

Nothing here imports psycopg: any object with psycopg's ``execute``
(returning a cursor) and ``fetchone`` works, which is how a Django or
SQLAlchemy connection's underlying psycopg connection is used
(docs/outbox.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..protocol import check_channel
from .rows import check_key, encode_data
from .schema import DEFAULT_TABLE, check_table


def _insert(table: str) -> str:
    return (
        f"INSERT INTO {check_table(table)} (channel, data, idempotency_key) "
        "VALUES (%s, %s, %s) RETURNING id"
    )


def _params(channel: str, data: object, key: str | None) -> tuple[str, str, str | None]:
    return check_channel(channel), encode_data(data), None if key is None else check_key(key)


def _row_id(row: Any) -> int:
    """The id in the ``RETURNING id`` row, whatever the cursor's row factory."""
    if row is None:
        raise RuntimeError("the outbox INSERT returned no row")
    if isinstance(row, Mapping):
        value = row["id"]
    elif isinstance(row, tuple | list):
        value = row[0]
    else:  # class_row, namedtuple-like objects
        value = row.id
    return int(value)


def enqueue(
    conn_or_cursor: Any,
    channel: str,
    data: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    table: str = DEFAULT_TABLE,
) -> int:
    """Insert a message for ``channel`` into the outbox ``table`` in the
    current transaction of ``conn_or_cursor`` (psycopg 3, synchronous) and
    return the row's id. ``idempotency_key``: the key it is published
    with (1-128 printable ASCII characters; by default one made from the
    table and row id). ChannelNameError and MessageError (ValueErrors) are
    raised before anything is inserted, and TypeError for an async
    connection."""
    if _is_async(conn_or_cursor):
        raise TypeError("enqueue() takes a synchronous connection: use aenqueue() for async ones")
    cursor = conn_or_cursor.execute(_insert(table), _params(channel, data, idempotency_key))
    return _row_id(cursor.fetchone())


async def aenqueue(
    conn_or_cursor: Any,
    channel: str,
    data: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    table: str = DEFAULT_TABLE,
) -> int:
    """:func:`enqueue` for a psycopg 3 ``AsyncConnection`` or ``AsyncCursor``."""
    if not _is_async(conn_or_cursor):
        raise TypeError("aenqueue() takes an async connection: use enqueue() for synchronous ones")
    cursor = await conn_or_cursor.execute(_insert(table), _params(channel, data, idempotency_key))
    return _row_id(await cursor.fetchone())


def _is_async(conn_or_cursor: Any) -> bool:
    """Whether ``execute`` is a coroutine function (psycopg's async classes)."""
    return inspect.iscoroutinefunction(getattr(conn_or_cursor, "execute", None))

"""The outbox's tables in PostgreSQL: the DDL, and the names derived from the table's.

``ddl()`` is what ``torchannels outbox init`` runs and what docs/outbox.md
shows, for apps that keep their own migrations. Every statement is
idempotent, so running it again changes nothing (PostgreSQL 14 or later:
``CREATE OR REPLACE TRIGGER``).

The table name is a plain lowercase SQL identifier (no schema, no quotes):
it is written into SQL as it is, and it also names the dead-letter table
(``TABLE_dead``), the indexes, the trigger, its function and the
``LISTEN``/``NOTIFY`` channel (``TABLE``).

>>> print(ddl("orders_outbox", partitions=4).splitlines()[7])
    partition smallint NOT NULL GENERATED ALWAYS AS (abs(hashtext(channel) % 4)) STORED
"""

from __future__ import annotations

import re

#: The table's name unless another is given.
DEFAULT_TABLE = "torchannels_outbox"
#: Partitions unless told otherwise: a channel lives in one of them.
DEFAULT_PARTITIONS = 16
#: Most partitions a table may have (they are a ``smallint``).
MAX_PARTITIONS = 32767
#: Longest table name: ``TABLE_published`` must stay within PostgreSQL's 63 bytes.
MAX_TABLE_LENGTH = 48

_TABLE_RE = re.compile(rf"[a-z_][a-z0-9_]{{0,{MAX_TABLE_LENGTH - 1}}}")

_DDL = """\
CREATE TABLE IF NOT EXISTS {table} (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    data text NOT NULL,
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    partition smallint NOT NULL GENERATED ALWAYS AS (abs(hashtext(channel) % {partitions})) STORED
);
CREATE INDEX IF NOT EXISTS {table}_claim
    ON {table} (partition, id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS {table}_published
    ON {table} (published_at) WHERE published_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {table}_dead (
    id bigint NOT NULL,
    channel text NOT NULL,
    data text NOT NULL,
    idempotency_key text,
    created_at timestamptz NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    error text NOT NULL
);
CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{table}', '');
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER {table}_notify
    AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();
"""


def check_table(table: object) -> str:
    """Return ``table`` if it can name an outbox table, else raise ValueError.
    (Lowercase only: PostgreSQL folds unquoted names, but not ``NOTIFY``'s channel.)

    >>> check_table("torchannels_outbox")
    'torchannels_outbox'
    >>> check_table("Orders")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid outbox table name 'Orders': use 1-48 characters a-z 0-9 _, not ...
    """
    if not isinstance(table, str) or _TABLE_RE.fullmatch(table) is None:
        raise ValueError(
            f"invalid outbox table name {table!r}: use 1-{MAX_TABLE_LENGTH} characters "
            "a-z 0-9 _, not starting with a digit"
        )
    return table


def check_partitions(partitions: object) -> int:
    """Return ``partitions`` if it is an int from 1 to :data:`MAX_PARTITIONS`, else ValueError."""
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        raise ValueError(f"partitions must be an integer from 1 to {MAX_PARTITIONS}")
    return partitions


def ddl(table: str = DEFAULT_TABLE, partitions: int = DEFAULT_PARTITIONS) -> str:
    """The SQL that creates the outbox ``table`` with ``partitions`` partitions,
    its dead-letter table ``TABLE_dead``, its indexes and the trigger that
    notifies ``TABLE`` after each insert statement; idempotent.

    A row's partition is computed by PostgreSQL from its channel, so every
    row of a channel is in the same partition. (The ``%`` comes before
    ``abs``: ``abs(hashtext(channel)) % N`` would overflow for the one hash
    that is -2**31, and give the same partitions otherwise.)
    """
    return _DDL.format(table=check_table(table), partitions=check_partitions(partitions))


def dead_table(table: str) -> str:
    """The name of ``table``'s dead-letter table."""
    return f"{table}_dead"


#: The ``partition`` column's generation expression of table ``%s`` (no
#: row: no such table or column), which :func:`partitions_of` reads.
PARTITION_EXPRESSION_SQL = (
    "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a"
    " ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
    " WHERE a.attrelid = to_regclass(%s) AND a.attname = 'partition'"
)
#: ``partition``'s expression as PostgreSQL prints it back, with the count.
_PARTITION_EXPR = re.compile(r"abs\(+hashtext\(channel\) % (\d+)\)+")


def partitions_of(expression: str) -> int | None:
    """The partition count in the ``partition`` column's generation
    expression as ``pg_get_expr`` prints it; None if it is not ours.

    >>> partitions_of("abs((hashtext(channel) % 16))")
    16
    """
    found = _PARTITION_EXPR.fullmatch(expression.strip())
    return None if found is None else int(found.group(1))

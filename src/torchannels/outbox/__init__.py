"""The PostgreSQL transactional outbox (docs/outbox.md).

An app inserts the messages it means to publish into an outbox table in
the same transaction as the change they announce (:func:`enqueue`,
:func:`aenqueue`); a consumer (:class:`OutboxConsumer`, started by
``hub.consume_outbox(dsn)`` or ``torchannels serve --outbox DSN``)
publishes the committed rows through the hub's broker with idempotency
keys. A rolled-back transaction publishes nothing; a committed one is
published once, in order per channel. :func:`ddl` is the table's SQL
(``torchannels outbox init`` runs it).

Needs psycopg 3 for the consumer: ``pip install 'torchannels[postgres]'``
(importing this package does not).
"""

from __future__ import annotations

from .consumer import OutboxConsumer
from .enqueue import aenqueue, enqueue
from .schema import DEFAULT_PARTITIONS, DEFAULT_TABLE, ddl
from .stats import OutboxStats

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_TABLE",
    "OutboxConsumer",
    "OutboxStats",
    "aenqueue",
    "ddl",
    "enqueue",
]

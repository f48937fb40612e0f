"""What one outbox consumer did and saw, read by /metrics, /health and the admin page.

Plain numbers the consumer keeps up to date: counters of this process,
and the table's backlog as it read it last (every table's consumers read
the same backlog).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class OutboxStats:
    """One :class:`~torchannels.outbox.OutboxConsumer`'s counters and view."""

    #: Rows this process published and took off the outbox (deleted, or
    #: marked with a retention), duplicates included.
    published: int = 0
    #: Of those, rows the broker answered as duplicates: their key had been
    #: published already (by a consumer that stopped before taking them off).
    duplicates: int = 0
    #: Rows this process moved to the dead-letter table.
    dead: int = 0
    #: Rows waiting to be published (committed, not yet taken off), as last read.
    backlog_rows: int = 0
    #: Seconds since the oldest waiting row was inserted, as last read;
    #: None when none waits.
    oldest_age: float | None = None
    #: Whether the consumer is connected to PostgreSQL now.
    connected: bool = False
    #: Partitions this consumer holds now (their advisory locks).
    partitions: int = 0
    #: Unix time and text of the last failure (PostgreSQL or the broker),
    #: None before the first.
    last_error: tuple[float, str] | None = None

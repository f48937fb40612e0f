"""``torchannels outbox init``: create the outbox tables in PostgreSQL.

::

    torchannels outbox init --dsn postgresql://app@db/app
    torchannels outbox init --table orders_outbox --partitions 32   # DSN from TORCHANNELS_OUTBOX

Runs :func:`torchannels.outbox.ddl` in one transaction: the table, its
dead-letter table, indexes and notify trigger. Idempotent: what exists is
kept as it is (a table made with other partitions keeps them, and saying
``--partitions`` otherwise is an error). Exit status 0 when done, 1 when
PostgreSQL fails, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from ..outbox.schema import (
    DEFAULT_PARTITIONS,
    DEFAULT_TABLE,
    PARTITION_EXPRESSION_SQL,
    check_partitions,
    check_table,
    ddl,
    dead_table,
    partitions_of,
)
from .config import env_name

COMMANDS = ("outbox",)
DSN_ENV = env_name("outbox")


def add_command(commands: Any) -> None:
    """Add ``outbox init`` to the ``torchannels`` subparsers."""
    outbox = commands.add_parser(
        "outbox",
        help="manage the PostgreSQL outbox's tables",
        description="The PostgreSQL transactional outbox (docs/outbox.md).",
    )
    actions = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="create the outbox table, its dead-letter table, indexes and trigger",
        description="Create the outbox tables if they do not exist (the DDL of docs/outbox.md), "
        "in one transaction. Running it again changes nothing.",
    )
    init.add_argument("--dsn", help=f"the PostgreSQL DSN (URL or key=value pairs; env {DSN_ENV})")
    init.add_argument(
        "--table", default=DEFAULT_TABLE, help=f"the outbox table's name ({DEFAULT_TABLE})"
    )
    init.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help=f"partitions of a new table, 1-32767 ({DEFAULT_PARTITIONS}); every consumer "
        "follows the table's",
    )


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    dsn = args.dsn or env.get(DSN_ENV)
    if not dsn:
        print(f"torchannels: give the PostgreSQL DSN: --dsn or {DSN_ENV}", file=sys.stderr)
        return 2
    partitions = DEFAULT_PARTITIONS if args.partitions is None else args.partitions
    try:
        check_table(args.table)
        check_partitions(partitions)
    except ValueError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 2
    from ..outbox.driver import psycopg

    try:
        driver = psycopg()
    except ImportError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 2
    return _init(driver, dsn, args.table, partitions, explicit=args.partitions is not None)


def _init(driver: Any, dsn: str, table: str, partitions: int, *, explicit: bool) -> int:

    try:
        with driver.connect(dsn, connect_timeout=10) as conn:
            conn.execute(ddl(table, partitions))
            row = conn.execute(PARTITION_EXPRESSION_SQL, (table,)).fetchone()
    except driver.Error as exc:
        print(f"torchannels: PostgreSQL: {str(exc).strip()}", file=sys.stderr)
        return 1
    found = partitions_of(str(row[0])) if row is not None else None
    if explicit and found is not None and found != partitions:
        print(
            f"torchannels: table {table} already exists with {found} partitions, not "
            f"{partitions}: it was left as it is",
            file=sys.stderr,
        )
        return 1
    shown = partitions if found is None else found
    print(f"outbox ready: {table} ({shown} partitions), {dead_table(table)}, indexes and trigger")
    return 0

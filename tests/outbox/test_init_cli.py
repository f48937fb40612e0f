"""``torchannels outbox init``: creates the tables, indexes and trigger (the
DDL of docs/outbox.md), idempotently; says what is wrong otherwise."""

from __future__ import annotations

import psycopg
import pytest

from outbox.helpers import rows
from redis_servers import free_port
from torchannels.outbox import ddl
from torchannels.server.cli import main

TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
INDEXES = "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
TRIGGERS = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
EXPRESSION = (
    "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = to_regclass(%s)"
    " AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = to_regclass(%s)"
    " AND attname = 'partition')"
)


def test_init_creates_the_tables_and_is_idempotent(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["outbox", "init", "--dsn", database], {}) == 0
    assert capsys.readouterr().out == (
        "outbox ready: torchannels_outbox (16 partitions), torchannels_outbox_dead, "
        "indexes and trigger\n"
    )
    assert rows(database, TABLES) == [("torchannels_outbox",), ("torchannels_outbox_dead",)]
    assert rows(database, INDEXES) == [
        ("torchannels_outbox_claim",),
        ("torchannels_outbox_pkey",),
        ("torchannels_outbox_published",),
    ]
    assert rows(database, TRIGGERS) == [("torchannels_outbox_notify",)]
    with psycopg.connect(database) as conn:  # the tables work: a row gets its partition
        conn.execute("INSERT INTO torchannels_outbox (channel, data) VALUES ('a', '{}')")
    # Again, and the DDL itself too: nothing changes, the row stays.
    assert main(["outbox", "init", "--dsn", database], {}) == 0
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(ddl())
    assert rows(database, "SELECT channel, partition FROM torchannels_outbox") == [
        ("a", rows(database, "SELECT abs(hashtext('a') % 16)")[0][0])
    ]
    assert rows(database, TRIGGERS) == [("torchannels_outbox_notify",)]


def test_init_takes_a_table_partitions_and_the_dsn_from_the_environment(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"TORCHANNELS_OUTBOX": database}
    assert main(["outbox", "init", "--table", "orders_outbox", "--partitions", "4"], env) == 0
    assert "orders_outbox (4 partitions), orders_outbox_dead" in capsys.readouterr().out
    table = "orders_outbox"
    assert rows(database, EXPRESSION, (table, table)) == [("abs((hashtext(channel) % 4))",)]
    # Another count for the table that exists: said, and left as it is.
    assert main(["outbox", "init", "--table", table, "--partitions", "8"], env) == 1
    assert "already exists with 4 partitions, not 8" in capsys.readouterr().err
    assert main(["outbox", "init", "--table", table], env) == 0  # no count asked: fine
    assert "orders_outbox (4 partitions)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "status", "said"),
    [
        (["outbox", "init"], 2, "give the PostgreSQL DSN: --dsn or TORCHANNELS_OUTBOX"),
        (["outbox", "init", "--dsn", "x", "--table", "Bad"], 2, "invalid outbox table name"),
        (["outbox", "init", "--dsn", "x", "--partitions", "0"], 2, "partitions must be"),
    ],
)
def test_init_refuses_bad_arguments(
    argv: list[str], status: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, {}) == status
    assert said in capsys.readouterr().err


def test_init_says_when_postgresql_cannot_be_reached(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x"
    assert main(["outbox", "init", "--dsn", dsn], {}) == 1
    err = capsys.readouterr().err
    assert err.startswith("torchannels: PostgreSQL: ") and "s3cret" not in err

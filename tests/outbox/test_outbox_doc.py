"""docs/outbox.md and SECURITY.md's outbox section are exact: the DDL is
``ddl()``, the psycopg examples run, the options table is the config's, the
SQL shown works, and the grants given are enough for the app and the consumer."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from outbox.helpers import history, published, ready, rows, until
from postgres_servers import SHARED_DSN
from support import user_keys
from torchannels import Hub
from torchannels.outbox import ddl, enqueue
from torchannels.server.config import ServerConfig, env_name

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "outbox.md").read_text()
SECURITY = (ROOT / "SECURITY.md").read_text()
TABLE = "torchannels_outbox"


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def orders(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (17, 'new')")


def test_the_ddl_shown_is_ddl() -> None:
    [shown] = [b for b in blocks(DOC, "sql") if b.startswith("CREATE TABLE")]
    assert shown == ddl()


def test_the_options_table_is_the_configs() -> None:
    table = {
        re.findall(r"`--([a-z-]+)", line)[0]: [c.strip(" `") for c in line.strip("|").split("|")]
        for line in DOC.splitlines()
        if line.startswith("| `--outbox")
    }
    outbox = [f for f in dataclasses.fields(ServerConfig) if f.name.startswith("outbox")]
    assert sorted(table) == sorted(f.name.replace("_", "-") for f in outbox)
    for field in outbox:
        _, env, key, default, _ = table[field.name.replace("_", "-")]
        assert (env, key) == (env_name(field.name), field.name)
        if field.default is None:
            assert default == "unset"
        elif isinstance(field.default, str):
            assert default == field.default
        else:
            assert float(default) == field.default


async def test_the_psycopg_examples_run(dsn: str, outbox_hub: Hub) -> None:
    orders(dsn)
    first, asynchronous, *_ = blocks(DOC, "python")
    consumer = outbox_hub.consume_outbox(dsn)
    await ready(consumer)
    exec(first.replace('"postgresql://app@db/app"', repr(dsn)), {})
    got = await published(outbox_hub, "orders:17", {"status": "paid"})
    assert [user_keys(m) for m in got] == [{"status": "paid"}]
    scope: dict[str, Any] = {"DSN": dsn}
    exec(asynchronous, scope)
    await scope["pay"](17)

    async def twice() -> bool:
        return len(await history(outbox_hub, "orders:17")) == 2

    await until(twice)
    assert rows(dsn, "SELECT status FROM orders") == [("paid",)]


async def test_the_sql_shown_works(dsn: str, outbox_hub: Hub) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"INSERT INTO {TABLE} (channel, data) VALUES ('orders:17', 'oops')")
    consumer = outbox_hub.consume_outbox(dsn)
    await ready(consumer)
    await until(lambda: consumer.stats.dead == 1)
    sql = [b for b in blocks(DOC, "sql") if not b.startswith("CREATE TABLE")]
    inspect, requeue, holders = sql
    [(row_id, channel, data, error, _)] = rows(dsn, inspect)
    assert (channel, data) == ("orders:17", "oops") and "not JSON" in error
    with psycopg.connect(dsn) as conn:  # the data fixed, then put back as the doc says
        conn.execute(f'UPDATE {TABLE}_dead SET data = \'{{"status": "paid"}}\'')
        conn.execute(requeue.replace("id = 42", f"id = {row_id}"))
    await published(outbox_hub, "orders:17", {"status": "paid"})
    assert rows(dsn, f"SELECT count(*) FROM {TABLE}_dead") == [(0,)]
    held = rows(dsn, holders)
    assert [r[0] for r in held] == list(range(16))


@pytest.fixture
def roles(dsn: str) -> Iterator[tuple[str, str]]:
    """Two roles of their own (roles are the server's, not a database's),
    their grants in ``dsn``'s database dropped, then them, after the test."""
    names = ("app_" + secrets.token_hex(4), "torchannels_" + secrets.token_hex(4))
    with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE ROLE {name} LOGIN")
    yield names
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {', '.join(names)}")
    with psycopg.connect(SHARED_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP ROLE IF EXISTS {name}")


async def test_the_grants_are_enough(dsn: str, roles: tuple[str, str]) -> None:
    app, consumer_role = roles
    section = SECURITY.split("## The PostgreSQL outbox")[1].split("\n## ")[0]
    grants = "".join(blocks(section.replace("\n  ", "\n"), "sql"))
    grants = grants.replace("TO app;", f"TO {app};").replace(
        "TO torchannels;", f"TO {consumer_role};"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(grants)
    as_app = psycopg.conninfo.make_conninfo(dsn, user=app)
    as_consumer = psycopg.conninfo.make_conninfo(dsn, user=consumer_role)
    with psycopg.connect(as_app) as conn:
        enqueue(conn, "granted", {"n": 1})
        conn.execute(f"INSERT INTO {TABLE} (channel, data) VALUES ('granted', 'oops')")
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT data FROM {TABLE}")
    hub = Hub()
    try:
        consumer = hub.consume_outbox(as_consumer)
        await ready(consumer)
        await published(hub, "granted", {"n": 1})
        await until(lambda: consumer.stats.dead == 1 and consumer.stats.published == 1)
        assert consumer.stats.last_error is None
    finally:
        await hub.close()
    with psycopg.connect(as_consumer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(ddl())

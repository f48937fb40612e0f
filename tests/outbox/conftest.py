"""Fixtures of the outbox tests: a fresh database with the outbox tables, and
a hub (memory broker) that is closed, its consumer with it, at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from postgres_servers import fresh_database
from torchannels import Hub, MemoryBroker, Settings
from torchannels.outbox import ddl


@pytest.fixture
def database() -> Iterator[str]:
    """The DSN of a new, empty database, dropped after the test."""
    with fresh_database() as dsn:
        yield dsn


@pytest.fixture
def dsn(database: str) -> str:
    """The DSN of a new database holding the outbox tables (``ddl()``)."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(ddl())
    return database


@pytest.fixture
async def outbox_hub() -> AsyncIterator[Hub]:
    """A hub on the memory broker, closed (with its consumer) after the test."""
    hub = Hub(MemoryBroker(), Settings(ping_interval=0.5))
    yield hub
    await hub.close()

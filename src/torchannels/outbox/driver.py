"""psycopg 3, imported when the outbox consumer needs it (an optional dependency)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

#: Connection parameters the consumer sets unless the DSN gives them: a
#: bounded connect, and keepalives so that a vanished server is noticed
#: while the consumer waits for a notification.
CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "application_name": "torchannels-outbox",
}


def psycopg() -> ModuleType:
    """The ``psycopg`` module, or ImportError saying how to install it."""
    try:
        import psycopg as module
    except ImportError as exc:
        raise ImportError(
            "the PostgreSQL outbox needs psycopg 3: pip install 'torchannels[postgres]'"
        ) from exc
    return module


def connect_options(dsn: str) -> dict[str, Any]:
    """:data:`CONNECT_DEFAULTS` that ``dsn`` leaves unset; ValueError for a
    DSN psycopg cannot parse, which never quotes it (a DSN may hold a
    password, and psycopg's message quotes the part it could not read)."""
    driver = psycopg()
    try:
        given = driver.conninfo.conninfo_to_dict(dsn)
    except driver.Error:
        raise ValueError(
            "the outbox DSN is not a PostgreSQL connection string: give a URL "
            "(postgresql://USER@HOST:PORT/DB) or key=value pairs (host=H dbname=DB)"
        ) from None
    return {key: value for key, value in CONNECT_DEFAULTS.items() if key not in given}

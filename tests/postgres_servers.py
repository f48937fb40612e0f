"""Real PostgreSQL for the tests: the shared server, and clusters a test owns.

The shared server (``TORCHANNELS_TEST_POSTGRES``, default 127.0.0.1:5432,
user postgres, trust auth; ``make test`` starts it with
scripts/ensure-postgres.sh) is used through a database made for one test
and dropped after it (:func:`fresh_database`). A test that stops or
restarts PostgreSQL runs its own cluster (:class:`PostgresCluster`: Debian's
``initdb`` and ``pg_ctl`` on a free port in a temporary directory, as the
``postgres`` OS user when run as root). Without PostgreSQL, a test fails
under CI (``CI=true``) and skips elsewhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest

from redis_servers import free_port

SHARED_DSN = os.environ.get(
    "TORCHANNELS_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
BIN = Path("/usr/lib/postgresql/15/bin")


def missing(what: str) -> None:
    """Fail in CI, skip elsewhere: a test of the outbox never passes without PostgreSQL."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: PostgreSQL tests must run; scripts/ensure-postgres.sh)")
    pytest.skip(what)


def with_database(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name`` instead."""
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


@contextmanager
def fresh_database(server_dsn: str = SHARED_DSN) -> Iterator[str]:
    """A new, uniquely named database on ``server_dsn``'s server, dropped
    (its connections closed) on the way out; yields its DSN."""
    name = "torchannels_test_" + secrets.token_hex(6)
    try:
        admin = psycopg.connect(server_dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        missing(f"no PostgreSQL answers at {server_dsn!r}: {exc}")
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(server_dsn, name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _as_postgres(args: list[str]) -> list[str]:
    """``args`` run as the ``postgres`` OS user when we are root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PostgresCluster:
    """A PostgreSQL cluster this test owns: made, started, stopped, restarted."""

    def __init__(self) -> None:
        if not (BIN / "initdb").is_file() or not (BIN / "pg_ctl").is_file():
            missing(f"PostgreSQL 15 is not installed ({BIN}; scripts/ensure-postgres.sh)")
        # Not under pytest's tmp_path: its root is private to root, and the
        # server runs as the postgres user.
        self.dir = Path(tempfile.mkdtemp(prefix="torchannels-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self._run([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "--no-sync", "-E", "UTF8"])  # fmt: skip

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(
            _as_postgres(args), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed:\n{done.stdout}{done.stderr}\n{tail}")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                   "-o", options, "-w", "-t", "60", "start"])  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, the data is kept."""
        self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def own_cluster() -> Iterator[PostgresCluster]:
    """A started :class:`PostgresCluster`, removed on the way out."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        deadline = time.monotonic() + 30
        while True:  # pg_ctl -w waits for the socket; make sure TCP answers too
            try:
                psycopg.connect(cluster.dsn, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield cluster
    finally:
        cluster.remove()

"""The PostgreSQL outbox's tests (real PostgreSQL: tests/postgres_servers.py).

A package, so that its conftest.py is ``outbox.conftest`` and does not clash
with tests/conftest.py.
"""

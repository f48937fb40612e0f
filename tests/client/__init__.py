"""The Python client's tests.

A package, so that its conftest.py is ``client.conftest``: this folder is
collected before tests/conftest.py (alphabetical order), and a second
top-level ``conftest`` module would clash with that one.
"""

"""Strict JSON for what others send us (tokens, backend answers): no
duplicate keys (parsers disagree on which one wins) and no ``NaN`` or
``Infinity`` (not JSON)."""

from __future__ import annotations

import json
from typing import Any


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(text: str | bytes) -> Any:
    """``json.loads`` refusing duplicate keys and non-finite numbers
    (ValueError; RecursionError for absurd nesting, as ``json.loads``).

    >>> strict_loads('{"a": 1}')
    {'a': 1}
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)

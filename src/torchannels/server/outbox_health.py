"""The outbox consumer's health, for ``/health`` and, summed over processes, the admin page.

:func:`health_body` is what ``/health`` adds as ``"outbox"``; an unreachable
PostgreSQL never makes ``/health`` fail, it shows ``connected: false``.
:func:`stats` is one process's part of the admin stats (shared through
the fleet's counts, :mod:`.fleet`) and :func:`merge` folds one process's
into the total: counters and connected consumers add up, the backlog
(one table for all) is the largest any process read last, and the latest
error wins.

>>> total = {"outbox": None}
>>> merge(total, {"outbox": {"consumers": 1, "connected": 1, "backlog": 5, "oldest": 2.0,
...     "published": 10, "duplicates": 0, "dead": 1, "partitions": 8, "last_error": None}})
>>> merge(total, {"outbox": {"consumers": 1, "connected": 0, "backlog": 7, "oldest": 3.5,
...     "published": 4, "duplicates": 1, "dead": 0, "partitions": 0,
...     "last_error": {"time": 9.0, "error": "PostgreSQL: refused"}}})
>>> o = total["outbox"]
>>> o["consumers"], o["connected"], o["backlog"], o["oldest"], o["published"], o["dead"]
(2, 1, 7, 3.5, 14, 1)
>>> o["last_error"]["error"]
'PostgreSQL: refused'
"""

from __future__ import annotations

from typing import Any

from ..outbox import OutboxStats

_SUMS = ("consumers", "connected", "published", "duplicates", "dead", "partitions")


def health_body(stats: OutboxStats) -> dict[str, Any]:
    """``/health``'s ``"outbox"``: connected, rows waiting, the oldest's age in seconds."""
    return {"connected": stats.connected, "backlog": stats.backlog_rows, "oldest": stats.oldest_age}


def stats(outbox: OutboxStats) -> dict[str, Any]:
    """One process's outbox counters and view, as JSON."""
    error = outbox.last_error
    return {
        "consumers": 1,
        "connected": int(outbox.connected),
        "backlog": outbox.backlog_rows,
        "oldest": outbox.oldest_age,
        "published": outbox.published,
        "duplicates": outbox.duplicates,
        "dead": outbox.dead,
        "partitions": outbox.partitions,
        "last_error": None if error is None else {"time": error[0], "error": error[1]},
    }


def merge(total: dict[str, Any], more: dict[str, Any]) -> None:
    """Fold ``more["outbox"]`` (one process's :func:`stats`, or None) into
    ``total["outbox"]``; anything malformed is skipped."""
    theirs = more.get("outbox")
    if not isinstance(theirs, dict):
        return
    mine = total.get("outbox")
    if not isinstance(mine, dict):
        total["outbox"] = dict(theirs)
        return
    for key in _SUMS:
        mine[key] = _int(mine, key) + _int(theirs, key)
    mine["backlog"] = max(_int(mine, "backlog"), _int(theirs, "backlog"))
    ages = [_float(mine.get("oldest")), _float(theirs.get("oldest"))]
    mine["oldest"] = max((a for a in ages if a is not None), default=None)
    error, other = mine.get("last_error"), theirs.get("last_error")
    if isinstance(other, dict) and _time(other) > (_time(error) if isinstance(error, dict) else -1):
        mine["last_error"] = other


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(container: dict[str, Any], key: str) -> int:
    value = container.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(error: dict[str, Any]) -> float:
    value = _float(error.get("time"))
    return -1.0 if value is None else value

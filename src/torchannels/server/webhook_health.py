"""The webhook's health as the admin page shows it, summed over processes.

Each process reports its :class:`~torchannels.webhook_stats.WebhookStats`
as :func:`health` (shared through the fleet's counts, :mod:`.fleet`);
:func:`merge` folds one process's into the total: counters add up, the
latest success and error win, and the queue (one for all processes) is
the longest any process read last.

>>> total = {"webhooks": None}
>>> merge(total, {"webhooks": {"queue": 3, "sending": False, "last_success": 5.0,
...     "last_error": None, "queued": 2, "sent": 1, "retries": 0,
...     "dropped": {"queue_full": 0, "expired": 1, "rejected": 0}}})
>>> merge(total, {"webhooks": {"queue": 2, "sending": True, "last_success": 9.0,
...     "last_error": {"time": 7.0, "error": "HTTP 500"}, "queued": 1, "sent": 4,
...     "retries": 2, "dropped": {"queue_full": 0, "expired": 0, "rejected": 0}}})
>>> w = total["webhooks"]
>>> w["queue"], w["sending"], w["last_success"], w["last_error"], w["sent"], w["dropped"]["expired"]
(3, True, 9.0, {'time': 7.0, 'error': 'HTTP 500'}, 5, 1)
"""

from __future__ import annotations

from typing import Any

from ..webhook_stats import DROP_REASONS, WebhookStats

_SUMS = ("queued", "sent", "retries")


def health(stats: WebhookStats) -> dict[str, Any]:
    """One process's webhook counters and health, as JSON."""
    error = stats.last_error
    return {
        "queue": stats.queue_length,
        "sending": stats.sending,
        "last_success": stats.last_success,
        "last_error": None if error is None else {"time": error[0], "error": error[1]},
        "queued": stats.queued,
        "sent": stats.sent,
        "retries": stats.retries,
        "dropped": dict(stats.dropped),
    }


def merge(total: dict[str, Any], more: dict[str, Any]) -> None:
    """Fold ``more["webhooks"]`` (one process's :func:`health`, or None) into
    ``total["webhooks"]``; anything malformed is skipped."""
    theirs = more.get("webhooks")
    if not isinstance(theirs, dict):
        return
    mine = total.get("webhooks")
    if not isinstance(mine, dict):
        total["webhooks"] = {
            **theirs,
            "dropped": {r: _int(theirs.get("dropped"), r) for r in DROP_REASONS},
        }
        return
    for key in _SUMS:
        mine[key] = _int(mine, key) + _int(theirs, key)
    for reason in DROP_REASONS:
        mine["dropped"][reason] += _int(theirs.get("dropped"), reason)
    mine["queue"] = max(_int(mine, "queue"), _int(theirs, "queue"))
    mine["sending"] = bool(mine.get("sending")) or bool(theirs.get("sending"))
    mine["last_success"] = _latest(mine.get("last_success"), theirs.get("last_success"))
    error, other = mine.get("last_error"), theirs.get("last_error")
    if isinstance(other, dict) and _time(other) > (_time(error) if isinstance(error, dict) else -1):
        mine["last_error"] = other


def _int(container: object, key: str) -> int:
    value = container.get(key) if isinstance(container, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(error: dict[str, Any]) -> float:
    value = error.get("time")
    return float(value) if isinstance(value, int | float) else -1.0


def _latest(a: object, b: object) -> float | None:
    times = [float(t) for t in (a, b) if isinstance(t, int | float) and not isinstance(t, bool)]
    return max(times) if times else None

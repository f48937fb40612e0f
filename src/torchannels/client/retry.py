"""After a subscription's connection ended: the pause before the next one,
the transport it uses, and whether the token is renewed first
(docs/python-client.md, "Reconnecting" and "Tokens").

A ``disconnect`` frame that says ``reconnect: false`` never comes here: the
subscription ends (:class:`torchannels.client.Disconnected`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .errors import RENEWABLE

if TYPE_CHECKING:
    from .client import Client
    from .tracker import Tracker

#: ``reconnect`` reasons and close codes after which a productive connection
#: is replaced at once.
AT_ONCE = frozenset({"byte_limit", "shutdown", "slow_consumer", "1001", "4001"})
#: Ends after which ``get_token`` is asked for a fresh token (4002: a
#: WebSocket whose token lapsed).
RENEW = RENEWABLE | {"4002"}


class Next(NamedTuple):
    """What comes after a connection: ``delay`` seconds, then the transport
    at ``transport_index``; ``failures`` in a row so far; ``renew`` the token first."""

    delay: float
    transport_index: int
    failures: int
    renew: bool


def next_attempt(c: Client, t: Tracker, transport: str, index: int, worked: bool,
                 failures: int) -> Next:  # fmt: skip
    """``t`` holds what the connection on ``transport`` showed; ``worked``:
    some connection of this subscription was made."""
    alive = t.delivered or t.pinged  # the connection did carry something
    if alive:
        failures = 0
    if t.disconnect is not None:  # reconnect: true, to resume with a fresh token
        # At once; only a server that does it again and again, before the
        # connections carry anything, is answered after the backoff pause.
        failures = 0 if alive else failures + 1
        delay = 0.0 if failures <= 1 else c.backoff(failures)
        return Next(delay, index, failures, c.get_token is not None)
    renew = t.end in RENEW and c.get_token is not None
    if t.end == "answered" and not renew:
        return Next(c.poll_interval if transport == "poll" else 0.0, index, 0, False)
    if not worked and index + 1 < len(c.transports):
        return Next(0.0, index + 1, failures, renew)  # never connected: try the next one
    if alive and (renew or t.end in AT_ONCE):
        return Next(0.0, index, failures, renew)
    return Next(c.backoff(failures + 1), (index if worked else 0), failures + 1, renew)

"""Who a connection is: its client id, and its user (if any).

Every connection has a client id, made by the server and unique across
processes; it may also have a user (with an optional info object).
Anonymous connections (no user) count as clients, never as users.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    """A user: a non-empty id and an optional info object (a JSON object of
    at most 1 KiB, compact JSON in UTF-8)."""

    id: str
    info: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """One connection: its server-made ``client`` id, its ``user`` (None:
    anonymous), its transport and the unix time it began."""

    client: str
    user: User | None
    transport: str  # "poll" | "longpoll" | "stream" | "sse" | "websocket"
    since: float

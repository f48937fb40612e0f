"""The server ending a connection on purpose: the ``disconnect`` frame
(docs/protocol.md), and the WebSocket close codes that stand for it.

>>> Disconnect.of({"type": "disconnect", "reason": "token_revoked", "reconnect": False})
Disconnect(reason='token_revoked', reconnect=False)
>>> Disconnect.of({"type": "disconnect", "reconnect": True})
Disconnect(reason='disconnected_by_server', reconnect=True)

A WebSocket closed with 4003 or 4004 acts as if its frame came, whether it
came or not (the close reason is the frame's ``reason``):

>>> closed_frame(4003, "token_revoked")
{'type': 'disconnect', 'reason': 'token_revoked', 'reconnect': False}
>>> closed_frame(4004, None)
{'type': 'disconnect', 'reason': 'disconnected_by_server', 'reconnect': True}
>>> closed_frame(1001, "") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Reasons of a ``disconnect`` frame.
DISCONNECTED_BY_SERVER = "disconnected_by_server"  # POST /api/disconnect, hub.disconnect()
TOKEN_REVOKED = "token_revoked"  # POST /api/revoke revoked the connection's token
#: WebSocket close codes after a ``disconnect`` frame.
CLOSE_DISCONNECT = 4003  # reconnect: false: do not come back
CLOSE_DISCONNECT_RECONNECT = 4004  # reconnect: true: come back at once (a fresh token)


@dataclass(frozen=True)
class Disconnect:
    """A ``disconnect`` frame: why (``reason``), and whether to come back
    (``reconnect``; anything but ``true`` means no)."""

    reason: str
    reconnect: bool

    @classmethod
    def of(cls, frame: dict[str, Any]) -> Disconnect:
        reason = frame.get("reason")
        return cls(reason if isinstance(reason, str) and reason else DISCONNECTED_BY_SERVER,
                   frame.get("reconnect") is True)  # fmt: skip


def closed_frame(code: int | None, reason: str | None) -> dict[str, Any] | None:
    """The ``disconnect`` frame a WebSocket close ``code`` stands for, or None."""
    if code not in (CLOSE_DISCONNECT, CLOSE_DISCONNECT_RECONNECT):
        return None
    return {"type": "disconnect", "reason": reason or DISCONNECTED_BY_SERVER,
            "reconnect": code == CLOSE_DISCONNECT_RECONNECT}  # fmt: skip

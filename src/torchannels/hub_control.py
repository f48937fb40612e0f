"""The hub's side of control commands (``hub.control``).

:meth:`HubControl.issue` hands a command to the broker's control bus
(:mod:`.brokers.control`), which stores it and delivers it to every
process, this one included. Each process applies it to its live
connections as it arrives (a ``disconnect`` frame, or an ``unsubscribed``
error for one channel), keeps it in its :class:`~.control.ControlTable`
while it is in force, and replies with how many connections it reached;
the issuer sums the replies that arrive within :data:`REPLY_WAIT`.

New requests consult the table: a revoked token is refused on every
transport, and a polling client that began before a disconnect or an
unsubscribe (its signed client id carries when it began) gets the
``disconnect`` frame or the ``unsubscribed`` error on its next request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .control import DISCONNECT, REVOKE, UNSUBSCRIBE, Command, ControlTable
from .errors import DISCONNECTED_BY_SERVER, TOKEN_REVOKED, AccessDenied
from .identity import Identity

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("torchannels.hub")

#: Seconds the issuer waits for the processes' replies.
REPLY_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class Reach:
    """What a control command reached: ``connections`` summed over the
    ``answered`` processes of the ``processes`` it was delivered to (a
    lower bound when some did not answer within a second); ``expires``:
    when the command is forgotten (revocations)."""

    connections: int
    processes: int
    answered: int
    expires: float | None = None


class HubControl:
    """Control commands for one hub: issue, apply, remember."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        #: The commands in force that this process knows.
        self.table = ControlTable()
        self._started: asyncio.Future[None] | None = None

    def ensure_started(self) -> None:
        """Start listening in the background (an embedded hub starts on its
        first connection or request); the server awaits :meth:`start`."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())

    async def start(self) -> None:
        """Listen for commands from every process, and load those in force."""
        self.ensure_started()
        assert self._started is not None
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        bus = self._hub.broker.control
        bus.listen(self._on_command, self._on_reload)
        try:
            await bus.start()
            await self._load()
        except Exception as exc:  # loaded again once the broker is back
            log.warning("control commands not loaded yet: %s", exc)

    async def _load(self) -> None:
        commands = await self._hub.broker.control.load()
        for command in self.table.merge(commands):
            self._apply(command)

    def _on_reload(self) -> None:
        self._hub.spawn(self._reload())

    async def _reload(self) -> None:
        try:
            await self._load()
        except Exception as exc:
            log.warning("control commands not reloaded: %s", exc)

    def _on_command(self, command: Command) -> None:
        count = self._apply(command) if self.table.add(command) else 0
        self._hub.spawn(self._reply(command.id, count))

    async def _reply(self, command_id: str, count: int) -> None:
        try:
            await self._hub.broker.control.reply(command_id, count)
        except Exception as exc:
            log.warning("control reply not sent: %s", exc)

    def _apply(self, command: Command) -> int:
        """Apply ``command`` to this process's live connections; how many it reached."""
        reached = 0
        for connection in list(self._hub.connections):
            if not command.matches(connection.identity):
                continue
            if command.kind == UNSUBSCRIBE:
                assert command.channel is not None
                reached += connection.unsubscribe(command.channel)
            else:
                reason = DISCONNECTED_BY_SERVER if command.kind == DISCONNECT else TOKEN_REVOKED
                connection.disconnect(reason, command.reconnect)
                reached += 1
        return reached

    async def issue(self, command: Command) -> Reach:
        """Store and deliver ``command`` to every process; what it reached."""
        await self.start()
        bus = self._hub.broker.control
        processes = await bus.issue(command)
        replies = await bus.replies(command.id, processes, REPLY_WAIT)
        expires = command.expires if command.kind == REVOKE else None
        return Reach(sum(replies), processes, len(replies), expires)

    # -- what new requests ask ------------------------------------------------------

    def refusal(self, identity: Identity | None) -> AccessDenied | None:
        """Why ``identity``'s request may read nothing: its token was revoked."""
        self.ensure_started()
        if identity is None or not len(self.table):
            return None
        if self.table.first(REVOKE, identity) is not None:
            return AccessDenied(TOKEN_REVOKED, "the subscription token was revoked")
        return None

    def polling_disconnect(self, identity: Identity) -> tuple[str, bool] | None:
        """What a polling client that comes back (with its client id) is to
        be told first: ``(reason, reconnect)`` of a disconnect that came
        after it began, or of a revocation of its token; else None. (Live
        connections were told as the command came.)"""
        if not len(self.table):
            return None
        command = self.table.first(DISCONNECT, identity)
        if command is not None:
            return DISCONNECTED_BY_SERVER, command.reconnect
        if self.table.first(REVOKE, identity) is not None:
            return TOKEN_REVOKED, False
        return None

    def polling_unsubscribed(self, identity: Identity, held: list[str]) -> list[str]:
        """Of the channels a polling client that comes back holds a position
        in (``held``), those it was unsubscribed from since it began. Told
        once: the answer's signed client id then carries the time it was
        told, after the command, so a later subscribe is checked like any."""
        if not len(self.table):
            return []
        return [c for c in held if self.table.first(UNSUBSCRIBE, identity, c) is not None]

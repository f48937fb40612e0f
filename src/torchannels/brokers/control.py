"""The control seam: how control commands reach every process.

A broker's :class:`ControlBus` stores each :class:`~torchannels.control.Command`
until it expires and delivers it to every process's hub, its issuer's
included; each process answers how many of its connections the command
reached. Stored, not only broadcast: a process that starts later, or was
cut off from the broker while a command was issued, loads the commands in
force (``load``) and applies them, so a revocation is honoured everywhere.

:class:`MemoryControl` is the in-process bus of the memory broker (and of
any broker that has no bus of its own); the Redis broker's is
:class:`~.control_redis.RedisControl`.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable

from ..control import MAX_COMMANDS, Command, ControlTable

#: Called with every command as it arrives.
CommandListener = Callable[[Command], None]
#: Called when commands may have been missed (the bus was cut off and is
#: back): load them again.
ReloadListener = Callable[[], None]


class ControlBus(abc.ABC):
    """Stores control commands and delivers them to every process."""

    def __init__(self) -> None:
        self._listeners: list[tuple[CommandListener, ReloadListener]] = []

    def listen(self, on_command: CommandListener, on_reload: ReloadListener) -> None:
        """Call ``on_command`` with every command issued from now on (in any
        process), and ``on_reload`` when some may have been missed."""
        self._listeners.append((on_command, on_reload))

    def _deliver(self, command: Command) -> None:
        for on_command, _ in tuple(self._listeners):
            on_command(command)

    def _reload(self) -> None:
        for _, on_reload in tuple(self._listeners):
            on_reload()

    async def start(self) -> None:  # noqa: B027 - nothing to start in process
        """Begin receiving commands from other processes."""

    @abc.abstractmethod
    async def issue(self, command: Command) -> int:
        """Store ``command`` until it expires and deliver it to every
        process; returns how many processes it reached."""

    @abc.abstractmethod
    async def load(self) -> list[Command]:
        """Every command in force."""

    @abc.abstractmethod
    async def reply(self, command_id: str, count: int) -> None:
        """Tell the issuer of ``command_id`` how many connections this
        process reached."""

    @abc.abstractmethod
    async def replies(self, command_id: str, expected: int, timeout: float) -> list[int]:
        """The counts processes replied for ``command_id``: once
        ``expected`` have, or after ``timeout`` seconds with those that did."""


class MemoryControl(ControlBus):
    """Commands in this process only: the hubs sharing the broker object."""

    def __init__(self, limit: int = MAX_COMMANDS) -> None:
        super().__init__()
        self._table = ControlTable(limit)
        self._replies: dict[str, list[int]] = {}
        self._replied: asyncio.Condition | None = None  # made in the loop that waits

    def _condition(self) -> asyncio.Condition:
        if self._replied is None:
            self._replied = asyncio.Condition()
        return self._replied

    async def issue(self, command: Command) -> int:
        self._table.add(command)
        self._replies[command.id] = []
        loop = asyncio.get_running_loop()
        for on_command, _ in tuple(self._listeners):
            loop.call_soon(on_command, command)
        return len(self._listeners)

    async def load(self) -> list[Command]:
        self._table.prune()
        return self._table.commands()

    async def reply(self, command_id: str, count: int) -> None:
        got = self._replies.get(command_id)
        if got is None:
            return  # issued by nobody waiting any more
        got.append(count)
        condition = self._condition()
        async with condition:
            condition.notify_all()

    async def replies(self, command_id: str, expected: int, timeout: float) -> list[int]:
        got = self._replies.setdefault(command_id, [])
        condition = self._condition()
        deadline = time.monotonic() + timeout
        try:
            async with condition:
                while len(got) < expected:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        async with asyncio.timeout(left):
                            await condition.wait()
                    except TimeoutError:
                        break
            return list(got)
        finally:
            self._replies.pop(command_id, None)

"""What the client's tests share: a background reader of a subscription,
a publisher, and the check that no task is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from server.processes import KEY, SECRET, ServerProcess
from torchannels.client import AsyncPublisher, ChannelFeed, Event, Message, Status

WAIT = 10.0
#: Flags of every hub here: API key, token secret, a short ping so dead
#: connections show within a test's time, a short long-poll hold.
FLAGS = ["--no-demo", "--api-key", KEY, "--token-secret", SECRET, "--anonymous", "open:*",
         "--ping-interval", "1", "--longpoll-timeout", "2",
         "--max-publish-bytes", "2048"]  # fmt: skip


class Reader:
    """Iterates ``sub`` in a task of its own, keeping every event."""

    def __init__(self, sub: ChannelFeed) -> None:
        self.sub = sub
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self.sub:
                self.events.append(event)
        except Exception as exc:  # kept for the test to see
            self.error = exc

    def messages(self, channel: str | None = None, state: bool = False) -> list[Message]:
        return [e for e in self.events if isinstance(e, Message) and e.state == state
                and (channel is None or e.channel == channel)]  # fmt: skip

    def offsets(self, channel: str) -> list[int]:
        return [m.offset for m in self.messages(channel)]

    async def wait(self, check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.task.done():
                raise AssertionError(f"{what}: the reader ended ({self.error!r}): {self.events}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s; events: {self.events}")
            await asyncio.sleep(0.01)

    async def received(self, channel: str, count: int, what: str) -> None:
        """Wait for ``count`` messages (not state) of ``channel``."""
        await self.wait(lambda: len(self.offsets(channel)) >= count, f"{what}: {count} messages")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Statuses(list[Status]):
    """An ``on_status`` callback that keeps what it hears."""

    def __call__(self, status: Status) -> None:
        self.append(status)

    def states(self) -> list[str]:
        return [s.state for s in self]


def publisher(hub: ServerProcess) -> AsyncPublisher:
    return AsyncPublisher(hub.base, KEY)


def channels_url(hub: ServerProcess | int) -> str:
    port = hub if isinstance(hub, int) else hub.port
    return f"http://127.0.0.1:{port}/channels"


async def tasks_left(timeout: float = 5.0) -> set[asyncio.Task[object]]:
    """The tasks other than the caller's still there after at most
    ``timeout`` (Tornado takes a few loop turns to finish a closed connection)."""
    me = asyncio.current_task()
    deadline = time.monotonic() + timeout
    while True:
        left = {t for t in asyncio.all_tasks() if t is not me}
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.01)

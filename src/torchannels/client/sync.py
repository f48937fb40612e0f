"""Subscribing from a script without asyncio.

::

    from torchannels.client import subscribe_sync
    with subscribe_sync("http://127.0.0.1:8090/channels", "news", timeout=30) as sub:
        for event in sub:
            print(event)
        saved = sub.cursor

Each step of the ``for`` runs an event loop of its own (``asyncio.Runner``)
until the next event, so nothing happens between two steps: a script that
takes long over one event may find its connection dropped by the server's
keep-alive, and resumes it without loss. Not for use inside a running
event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from .client import ChannelFeed, Client
from .events import Event


class SyncSubscription:
    """An iterator of events; it stops after ``timeout`` seconds without one
    (None: never), when every channel was refused, or on :meth:`close`."""

    def __init__(self, url: str, *channels: str, cursor: str | None = None,
                 timeout: float | None = None, **options: Any) -> None:  # fmt: skip
        self.timeout = timeout
        self._runner = asyncio.Runner()
        self._client = Client(url, **options)
        self._sub: ChannelFeed = self._client.subscribe(*channels, cursor=cursor)
        self._closed = False

    @property
    def cursor(self) -> str:
        return self._sub.cursor

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._closed:
            raise StopIteration
        try:
            return self._runner.run(self._next())
        except (StopAsyncIteration, TimeoutError):
            self.close()
            raise StopIteration from None

    async def _next(self) -> Event:
        async with asyncio.timeout(self.timeout):
            return await anext(self._sub)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subscribe_sync(url: str, *channels: str, cursor: str | None = None,
                   timeout: float | None = None, **options: Any) -> SyncSubscription:  # fmt: skip
    """``Client(url, **options).subscribe(*channels, cursor=cursor)``, for scripts."""
    return SyncSubscription(url, *channels, cursor=cursor, timeout=timeout, **options)

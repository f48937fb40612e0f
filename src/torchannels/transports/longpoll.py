"""Long-polling: hold the request until something is new, or a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from .. import frames as F
from ..errors import RECONNECT_EXPIRED, UNSUBSCRIBED
from ..frames import Frame
from ..identity import Identity
from .poll import PollTransport


class LongPollTransport(PollTransport):
    name = "longpoll"
    live = True

    def prepare(self) -> None:
        super().prepare()
        self._wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        super().send(frames, backlog=backlog)
        if not self._wake.done():
            self._wake.set_result(None)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if not self._wake.done():
            self._wake.set_result(None)

    def end(self, reason: str) -> None:
        self.send([F.reconnect(reason)])

    @property
    def identity(self) -> Identity:
        return self.session.identity

    def disconnect(self, reason: str, reconnect: bool) -> None:
        self.send([F.disconnect(reason, reconnect)])

    def unsubscribe(self, channel: str) -> bool:
        if not self.session.unsubscribe(channel):
            return False
        self.told_at = time.time()  # told now: the answer's client id says so
        self.send([F.error(channel, UNSUBSCRIBED, "unsubscribed by the server")])
        return True

    async def wait(self) -> None:
        if self.frames or self.closed:
            return
        timeout = self.request.timeout or self.hub.settings.longpoll_timeout
        if self.expires is not None:
            timeout = max(0.0, min(timeout, self.expires - time.time()))
        self.hub.connection_opened(self)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._wake), timeout)
        finally:
            self.hub.connection_closed(self)
        if not self.frames and self.expires is not None and time.time() >= self.expires:
            self.frames.append(F.reconnect(RECONNECT_EXPIRED))

"""Polling: answer at once with what is new since the client's cursor."""

from __future__ import annotations

from collections.abc import Sequence

from .. import frames as F
from ..control import DISCONNECT
from ..errors import DISCONNECTED_BY_SERVER, TOKEN_REVOKED
from ..frames import Frame
from .base import BROKER_UNAVAILABLE, Transport, apply, document, log_broker_failure, refuse


class PollTransport(Transport):
    name = "poll"
    live = False

    def prepare(self) -> None:
        self.frames: list[Frame] = []
        self.cursor = dict(self.request.cursor)

    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        self.frames.extend(frames)

    async def run(self) -> None:
        told = self.hub.control.polling_disconnect(self.session.identity)
        if told is not None:  # disconnected since this client began
            reason = DISCONNECTED_BY_SERVER if told.kind == DISCONNECT else TOKEN_REVOKED
            self.frames.append(F.disconnect(reason, told.reconnect))
            self.answer()
            return
        try:
            await self.session.subscribe(self.request.channels, self.request.cursor, live=self.live)
            await self.wait()
        except Exception as exc:  # the broker failed: nothing was answered yet
            log_broker_failure(exc)
            if not self.closed:
                message = "channel history could not be read; retry shortly"
                refuse(self.handler, 503, BROKER_UNAVAILABLE, message)
            return
        finally:
            self.session.close()
        self.answer()

    async def wait(self) -> None:
        """Polling answers at once; long-polling waits here."""

    def answer(self) -> None:
        if self.closed:
            return
        cursor = {c: p for c, p in self.cursor.items() if c in self.request.channels}
        for frame in self.frames:
            apply(cursor, frame)
        handler = self.handler
        handler.set_header("Content-Type", "application/json")
        handler.set_header("Cache-Control", "no-store")
        client = self.hub.client_ids.sign(self.session.identity.client, self.session.identity.since)
        handler.finish(document(cursor, self.frames, client))

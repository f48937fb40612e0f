"""Polling: answer at once with what is new since the client's cursor."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .. import frames as F
from ..errors import UNSUBSCRIBED
from ..frames import Frame
from .base import BROKER_UNAVAILABLE, Transport, apply, document, refuse
from .connection import log_broker_failure


class PollTransport(Transport):
    name = "poll"
    live = False

    def prepare(self) -> None:
        self.frames: list[Frame] = []
        self.cursor = dict(self.request.cursor)
        #: The time the answer's signed client id carries (None: when the
        #: client began); moved to now once it was told of an unsubscribe,
        #: so the commands it was told of no longer match it.
        self.told_at: float | None = None

    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        self.frames.extend(frames)

    async def run(self) -> None:
        control = self.hub.control
        identity = self.session.identity
        channels = list(self.request.channels)
        if self._continuing():  # told now of what happened since its last request
            told = control.polling_disconnect(identity)
            if told is not None:
                self.frames.append(F.disconnect(*told))
                self.answer()
                return
            held = [c for c in channels if c in self.request.cursor]
            gone = control.polling_unsubscribed(identity, held)
            message = "unsubscribed by the server"
            self.frames.extend(F.error(c, UNSUBSCRIBED, message) for c in gone)
            channels = [c for c in channels if c not in gone]
            if gone:
                self.told_at = time.time()
        try:
            await self.session.subscribe(channels, self.request.cursor, live=self.live)
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

    def _continuing(self) -> bool:
        """Whether the request carries a valid client id: the same client as
        an earlier request (a new one has nothing to be told)."""
        client = self.request.client
        return client is not None and self.hub.client_ids.verify(client) is not None

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
        identity = self.session.identity
        since = identity.since if self.told_at is None else self.told_at
        client = self.hub.client_ids.sign(identity.client, since)
        handler.finish(document(cursor, self.frames, client))

"""A real webhook receiver for the tests: a Tornado app on a loopback port.

It records every call (body, headers, when, what it answered) and answers
as told: the statuses in :attr:`Receiver.answers` first, then
:attr:`Receiver.status`; after :attr:`Receiver.delay` seconds (past the
sender's timeout: the sender gives up). :meth:`Receiver.stop` closes the
port (connections are refused) and :meth:`Receiver.start` opens it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders
from tornado.iostream import StreamClosedError

from redis_servers import free_port
from torchannels.webhooks import verify

PATH = "/hook"


@dataclass(frozen=True)
class Call:
    """One request the receiver got."""

    body: bytes
    headers: HTTPHeaders
    #: Unix time it arrived.
    at: float
    #: The status it was answered (or was to be, when the sender had gone).
    status: int
    #: Answered after :attr:`Receiver.delay`: the tests make that longer than
    #: the sender's timeout, so the sender never saw the answer.
    late: bool


class _Hook(tornado.web.RequestHandler):
    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def post(self) -> None:
        receiver = self.receiver
        status = receiver.answers.popleft() if receiver.answers else receiver.status
        late = receiver.delay > 0
        receiver.calls.append(
            Call(self.request.body, self.request.headers, time.time(), status, late)
        )
        if receiver.delay:
            with contextlib.suppress(TimeoutError):  # woken early by stop()
                await asyncio.wait_for(receiver.stopping.wait(), receiver.delay)
        self.set_status(status)
        try:
            await self.finish(b"ok")
        except StreamClosedError:  # the sender gave up waiting
            pass
        finally:
            receiver.answered += 1


class Receiver:
    """The receiver at :attr:`url`, verifying with ``secret`` in :meth:`events`."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        self.calls: list[Call] = []
        #: Statuses for the next calls, in order; then :attr:`status`.
        self.answers: deque[int] = deque()
        self.status = 200
        #: Seconds to wait before answering.
        self.delay = 0.0
        #: Calls answered (or given up on by the sender) so far.
        self.answered = 0
        self.stopping = asyncio.Event()
        self._server: HTTPServer | None = None

    def start(self) -> None:
        self.stopping.clear()
        app = tornado.web.Application([(PATH, _Hook, {"receiver": self})])
        self._server = HTTPServer(app)
        self._server.listen(self.port, "127.0.0.1")

    async def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    def delivered(self) -> list[Call]:
        """The calls answered 2xx in time."""
        return [call for call in self.calls if 200 <= call.status < 300 and not call.late]

    def events(self) -> list[dict[str, Any]]:
        """The events of every call answered 2xx in time, in arrival order."""
        return [event for call in self.delivered() for event in self.events_of(call)]

    def events_of(self, call: Call) -> list[dict[str, Any]]:
        """One call's events, checked with ``torchannels.webhooks.verify`` at its arrival."""
        return verify(call.body, call.headers, self.secret, now=call.at)

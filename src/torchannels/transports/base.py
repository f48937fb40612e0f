"""What every transport shares: the request it serves and the session it drives.

A transport only frames and writes bytes. The session decides what to send.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

from tornado.web import RequestHandler

from ..errors import RECONNECT_BROKER
from ..frames import Frame
from ..hub import Hub
from ..identity import Identity, anonymous
from ..protocol import Position, dumps, format_cursor
from ..request import SubscribeRequest
from ..session import Authorize, Session
from .connection import log_broker_failure

#: The 503 code of a subscribe request whose history could not be read.
BROKER_UNAVAILABLE = RECONNECT_BROKER


class Transport(abc.ABC):
    """Serves one subscribe request on one handler."""

    #: The value of the ``transport`` query parameter that selects it.
    name: ClassVar[str]

    def __init__(
        self,
        handler: RequestHandler,
        hub: Hub,
        request: SubscribeRequest,
        authorize: Authorize,
        expires: float | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.handler = handler
        self.hub = hub
        self.request = request
        #: Unix time at which the authorization behind this request lapses.
        self.expires = expires
        if identity is None:
            identity = anonymous(self.name)
        self.session = Session(hub, self, authorize, identity)
        self.closed = False  # the client went away
        self.prepare()

    def prepare(self) -> None:  # noqa: B027 - an optional hook
        """Set up per-request state (called at the end of ``__init__``)."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Serve the request until it is answered or the client leaves."""

    @abc.abstractmethod
    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        """Take frames from the session, in order."""

    def end(self, reason: str) -> None:  # noqa: B027 - poll answers at once
        """Ask the client to reconnect (``reason``) and end soon; for live
        transports, called by :meth:`Hub.shutdown` and at ``expires``."""

    def broker_failed(self, exc: BaseException) -> None:
        """The broker could not serve this connection's catch-up: log it and
        ask the client to come back (``reconnect`` broker_unavailable)."""
        log_broker_failure(exc)
        self.end(RECONNECT_BROKER)

    def on_connection_close(self) -> None:
        """The client went away: stop at once (called once by the handler)."""
        self.closed = True
        self.session.close()


def apply(cursor: dict[str, Position], frame: Frame) -> bool:
    """Move ``cursor`` by ``frame``; True when the frame concerns a channel."""
    if frame.channel is None:
        return False
    if frame.position is None:
        cursor.pop(frame.channel, None)
    else:
        cursor[frame.channel] = frame.position
    return True


def document(cursor: dict[str, Position], frames: list[Frame], client: str) -> bytes:
    """The JSON answer of poll and long-poll:
    ``{"cursor": ..., "client": ..., "frames": [...]}``."""
    return (
        b'{"cursor":'
        + dumps(format_cursor(cursor))
        + b',"client":'
        + dumps(client)
        + b',"frames":['
        + b",".join(f.envelope for f in frames)
        + b"]}"
    )


def refuse(handler: RequestHandler, status: int, code: str, message: str) -> None:
    """Answer a subscribe request with an error status and a JSON body."""
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-store")
    handler.finish(dumps({"error": code, "message": message}))

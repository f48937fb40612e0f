"""One connection model for every long-lived transport (stream, SSE, WebSocket).

A :class:`LiveConnection` holds what they share, written once:

- the :class:`Outbox`: one write in flight, the rest queued and joined, and
  the slow-consumer limit;
- one keep-alive tick every ``ping_interval``, which writes the transport's
  ping and, where the peer can answer (WebSocket), drops a peer heard
  nothing from for two intervals;
- the write watchdog and the expiry of the authorization behind the
  connection;
- its deadlines (those three, and the cut after ``end``) kept on the
  hub's one :class:`~torchannels.timer_wheel.TimerWheel`, not on a loop
  timer each;
- registration with the hub, so shutdown can end it;
- :meth:`LiveConnection.end`: a ``reconnect`` frame, then a clean close once
  it is written, or a cut if the client cannot take it within one interval.

A transport only says how to frame (``encode``) and write (``write``) its
own kind of connection, and gives the :class:`Link` that closes it cleanly
or cuts it; HTTP streams add a byte cap (``byte_limit``). An HTTP stream
swaps its write and link once Tornado lets go of its socket
(:meth:`LiveConnection.hand_over`). Nothing here knows Tornado or
HTTP: :class:`~.http_live.StreamingTransport` (the base of the HTTP
streams) and the WebSocket handler each own a ``LiveConnection``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from .. import frames as F
from ..errors import (
    CLOSE_DISCONNECTED,
    CLOSE_DISCONNECTED_RECONNECT,
    RECONNECT_BROKER,
    RECONNECT_BYTE_LIMIT,
    RECONNECT_EXPIRED,
    RECONNECT_SLOW,
    UNSUBSCRIBED,
    BrokerError,
)
from ..frames import Frame
from ..hub import Hub
from ..identity import Identity
from ..session import Session
from .outbox import Outbox, Write

log = logging.getLogger("torchannels.transport")

_NEVER = float("inf")


class Link(Protocol):
    """How a transport ends its own kind of connection."""

    def close_cleanly(self, reason: str) -> None:
        """Everything is written, ``reconnect`` (``reason``) last: end the
        connection the transport's clean way."""

    def cut(self) -> None:
        """Close the connection at once, with nothing more written."""


def log_broker_failure(exc: BaseException) -> None:
    """One warning line for a broker that failed; a traceback for anything else."""
    if isinstance(exc, BrokerError):
        log.warning("broker failed, the client will resume: %s", exc)
    else:
        log.error("reading history failed, the client will resume", exc_info=exc)


class LiveConnection:
    """The shared machinery of one long-lived subscriber connection.

    It is what the hub registers (``name`` and ``end``) and the sink its
    session writes to (:meth:`send`).
    """

    # Slots, not an instance dict: one per idle connection.
    __slots__ = (
        "_byte_limit",
        "_cut_at",
        "_drained",
        "_encode",
        "_expire_at",
        "_expires",
        "_finished",
        "_heard",
        "_hears_peer",
        "_missed",
        "_ping",
        "_reason",
        "_tick_at",
        "_waiting",
        "_waiting_live",
        "_watch_at",
        "close_code",
        "ending",
        "hub",
        "link",
        "listening",
        "name",
        "outbox",
        "ping_interval",
        "sent_bytes",
        "session",
        "stopped",
        "timer_slot",
    )

    def __init__(
        self,
        name: str,
        hub: Hub,
        session: Session,
        *,
        encode: Callable[[Frame], bytes],
        write: Write,
        link: Link,
        ping: bytes,
        expires: float | None = None,
        byte_limit: int | None = None,
        hears_peer: bool = False,
        ping_interval: float | None = None,
    ) -> None:
        self.name = name
        self.hub = hub
        self.session = session
        # Live frames and broker failures come from the session straight here.
        session.owner = self
        self._encode = encode
        #: What closes the connection cleanly or cuts it.
        self.link = link
        self._ping = ping
        self._expires = expires
        self._byte_limit = byte_limit
        #: This connection's keep-alive period: what its client asked for
        #: (``ping``, clamped), else the hub's ``ping_interval``.
        self.ping_interval = ping_interval or hub.settings.ping_interval
        #: Bytes handed to the outbox so far.
        self.sent_bytes = 0
        #: An ``end`` began: only the ``reconnect`` frame is still written.
        self.ending = False
        #: :meth:`stop` ran; nothing more happens.
        self.stopped = False
        #: The WebSocket close code a ``disconnect`` asks for (None: by reason).
        self.close_code: int | None = None
        self._reason = ""
        self._finished = False
        self._hears_peer = hears_peer
        self._heard = True  # since the last tick
        self._missed = 0  # ticks in a row with nothing heard since the one before
        #: False while the transport reads nothing from the peer (a command
        #: is being handled): silence then says nothing about the peer.
        self.listening = True
        # Deadlines, in the loop's time (None: none); the earliest is on
        # the hub's timer wheel (``timer_slot`` is the wheel's).
        self._tick_at = _NEVER  # until start()
        self._watch_at: float | None = None
        self._expire_at: float | None = None
        self._cut_at: float | None = None
        self.timer_slot: int | None = None
        self.outbox = Outbox(write, hub.settings.max_pending_bytes, self)
        #: Frames (and replies queued behind them) not yet framed for the
        #: outbox, each with the size it counts as live (0 for catch-up);
        #: made when needed, dropped once empty (most connections idle).
        self._waiting: deque[tuple[Frame | bytes, int]] | None = None
        self._waiting_live = 0
        self._drained: asyncio.Future[None] | None = None

    @property
    def queued_bytes(self) -> int:
        """Bytes framed for this client and not yet written to its socket.

        At most ``max_pending_bytes`` plus one frame, plus the replies to
        one command: catch-up waits unframed until there is room for it.
        """
        return self.outbox.queued_bytes

    def hand_over(self, link: Link, write: Write) -> None:
        """The transport's socket changed hands: write with ``write`` and
        end through ``link`` from now on (no write may be in flight)."""
        assert not self.outbox.busy
        self.link = link
        self.outbox.use(write)

    def start(self) -> None:
        """Register with the hub, start the keep-alive, the write watchdog
        and the expiry timer."""
        now = asyncio.get_running_loop().time()
        self._tick_at = now + self.ping_interval
        self._watch_at = now + self.hub.settings.write_timeout
        if self._expires is not None:
            self._expire_at = now + max(0.0, self._expires - time.time())
        self._schedule()
        self.hub.connection_opened(self)

    def stop(self) -> None:
        """The connection is over: unregister, stop timers, leave the hub; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.hub.connection_closed(self)
        self.hub.timers.cancel(self)
        self._discard_waiting()
        self.session.close()

    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        """The session's sink: frame and queue ``frames``.

        Catch-up (``backlog``) waits unframed and goes to the outbox a slice
        at a time as the client takes what is there; live frames go straight
        to the outbox unless catch-up is still waiting ahead of them.
        """
        if self.ending or self.stopped:
            return
        if backlog:
            self._wait().extend((frame, 0) for frame in frames)
        elif not self._waiting:
            if len(frames) == 1:  # the live fan-out case: no join per recipient
                data = self._encode(frames[0])
            else:
                data = b"".join(map(self._encode, frames))
            # In the hub's fan-out, straight to the socket when nothing waits.
            self.outbox.put(data, live=True, batch=self.hub.fan_out)
            self.sent_bytes += len(data)  # _count, inline on the fan-out path
            if self._byte_limit is not None and self.sent_bytes >= self._byte_limit:
                self.end(RECONNECT_BYTE_LIMIT)
            return
        else:
            waiting = self._wait()
            for frame in frames:
                size = len(frame.envelope)
                waiting.append((frame, size))
                self._waiting_live += size
            if self.outbox.queued_bytes + self._waiting_live > self.outbox.limit:
                self._slow()
                return
        self._refill()
        self.outbox.schedule()

    def put(self, data: bytes) -> None:
        """Queue bytes already framed for this transport (a reply to a
        command), behind any catch-up still waiting."""
        if self.ending or self.stopped:
            return
        if self._waiting:
            self._waiting.append((data, 0))
        else:
            self._put(data)

    def _wait(self) -> deque[tuple[Frame | bytes, int]]:
        if self._waiting is None:
            self._waiting = deque()
        return self._waiting

    def _put(self, data: bytes, *, live: bool = False) -> None:
        self.outbox.put(data, live=live)
        self._count(data)

    def _count(self, data: bytes) -> None:
        """Count ``data`` against ``byte_limit``; past it, end the response."""
        self.sent_bytes += len(data)
        if self._byte_limit is not None and self.sent_bytes >= self._byte_limit:
            self.end(RECONNECT_BYTE_LIMIT)

    def _refill(self) -> None:
        """Frame waiting frames into the outbox while it holds less than half
        of ``max_pending_bytes``: the other half is room for live frames."""
        waiting = self._waiting
        if waiting is None and self._drained is None:
            return  # the common case: a live write completed
        outbox = self.outbox
        if waiting is not None:
            room = outbox.limit // 2
            while waiting and outbox.queued_bytes < room and not self.ending:
                item, live = waiting.popleft()
                self._waiting_live -= live
                data = item if isinstance(item, bytes) else self._encode(item)
                outbox.queue(data)
                self._count(data)
            if not waiting and self._waiting is waiting:
                self._waiting = None
                waiting = None
        drained = self._drained
        if drained is not None and not waiting and outbox.queued_bytes < outbox.limit:
            self._drained = None
            if not drained.done():
                drained.set_result(None)

    async def drained(self) -> None:
        """Wait until no catch-up waits and the outbox holds less than
        ``max_pending_bytes`` (or the connection ends): how a transport
        throttles the commands of a client that is not reading."""
        outbox = self.outbox
        while not (self.ending or self.stopped or outbox.closed):
            if not self._waiting and outbox.queued_bytes < outbox.limit:
                return
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def _discard_waiting(self) -> None:
        self._waiting = None
        self._waiting_live = 0
        drained = self._drained
        self._drained = None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def heard(self) -> None:
        """The peer sent something (a pong, a command): it is alive."""
        self._heard = True

    @contextlib.contextmanager
    def not_reading(self) -> Iterator[None]:
        """While the transport reads nothing from the peer (Tornado reads a
        WebSocket's next message, PONGs included, only once a command is
        handled), silence says nothing about it; the peer counts as heard
        when reading resumes."""
        self.listening = False
        try:
            yield
        finally:
            self.listening = True
            self._heard = True

    @property
    def identity(self) -> Identity:
        return self.session.identity

    def disconnect(self, reason: str, reconnect: bool) -> None:
        """:meth:`end` with a ``disconnect`` frame (the control API): a
        WebSocket closes with 4003, or 4004 when the client may come back."""
        if self.ending or self.stopped:
            return
        self.close_code = CLOSE_DISCONNECTED_RECONNECT if reconnect else CLOSE_DISCONNECTED
        self.end(reason, F.disconnect(reason, reconnect))

    def unsubscribe(self, channel: str) -> bool:
        """Stop delivering ``channel``, with an ``unsubscribed`` error frame."""
        if self.ending or self.stopped or not self.session.unsubscribe(channel):
            return False
        self.send((F.error(channel, UNSUBSCRIBED, "unsubscribed by the server"),))
        return True

    def end(self, reason: str, last: Frame | None = None) -> None:
        """Send ``reconnect`` (``reason``), or the frame ``last``, then close
        once it is written; cut the connection if that has not happened
        within ``ping_interval``."""
        if self.ending or self.stopped:
            return
        self.ending = True
        self._reason = reason
        self.outbox.notify_idle = True  # finish once the reconnect is written
        # What waits unframed is dropped: the client resumes from the
        # positions of the frames it got.
        self._discard_waiting()
        self._watch_at = None  # what is left to write has one interval
        self._cut_at = asyncio.get_running_loop().time() + self.ping_interval
        self._schedule()
        self.outbox.put(self._encode(last or F.reconnect(reason)))

    # -- deadlines ----------------------------------------------------------------

    def _schedule(self) -> None:
        """Put the earliest deadline on the hub's timer wheel."""
        when = self._tick_at
        for deadline in (self._watch_at, self._expire_at, self._cut_at):
            if deadline is not None and deadline < when:
                when = deadline
        if when == _NEVER:
            self.hub.timers.cancel(self)
        else:
            self.hub.timers.schedule(self, when)

    def on_timer(self, now: float) -> None:
        """The timer wheel: a deadline is due. In order: the cut after
        ``end``, the expiry, the write watchdog, the keep-alive tick."""
        if self.stopped:
            return
        if self._cut_at is not None and now >= self._cut_at:
            self._cut_at = None
            self.cut()
        if self._expire_at is not None and now >= self._expire_at:
            self._expire_at = None
            self.end(RECONNECT_EXPIRED)
        if self._watch_at is not None and now >= self._watch_at:
            self._watch(now)
        if now >= self._tick_at and not self.stopped:
            self._tick_at = now + self.ping_interval
            self._tick()
        if not self.stopped:
            self._schedule()

    def _tick(self) -> None:
        if self._hears_peer and self.listening:
            self._missed = 0 if self._heard else self._missed + 1
            self._heard = False
            if self._missed >= 2:
                self.cut()  # no answer to two pings in a row: the peer is gone
                return
        if not self.ending:
            # Ahead of waiting catch-up: a ping carries no position, and a
            # client taking a long catch-up must still be asked for a PONG.
            self._put(self._ping)

    def _watch(self, now: float) -> None:
        """End a client whose write in flight made no progress for
        ``write_timeout``: it stopped reading."""
        self._watch_at = None
        timeout = self.hub.settings.write_timeout
        outbox = self.outbox
        if outbox.busy:
            stalled = now - outbox.write_started
            if stalled >= timeout:
                self._slow()
                return
            self._watch_at = now + timeout - stalled
        else:
            self._watch_at = now + timeout

    # -- what the outbox tells its owner ------------------------------------------

    def outbox_slow(self) -> None:
        self._slow()

    def outbox_closed(self) -> None:
        self.cut()

    def outbox_written(self) -> None:
        self._refill()

    def outbox_idle(self) -> None:
        if self.ending and not self.stopped and not self._finished:
            self._finished = True
            self.link.close_cleanly(self._reason)

    def _slow(self) -> None:
        """The client fell too far behind or stopped reading: drop what it has
        not taken; it resumes from its positions after ``reconnect``
        (slow_consumer)."""
        self.hub.stats.slow_dropped += 1
        self.outbox.discard()
        self.session.close()
        self.end(RECONNECT_SLOW)

    def cut(self) -> None:
        """Close the connection at once, with no ``reconnect`` frame (a dead
        or stuck peer; tests cutting connections the way a network would)."""
        self.link.cut()

    def broker_failed(self, exc: BaseException) -> None:
        """The broker could not serve this connection's catch-up: log it and
        ask the client to come back (``reconnect`` broker_unavailable)."""
        log_broker_failure(exc)
        self.end(RECONNECT_BROKER)

"""A subscriber session: positions per channel, catch-up, live delivery.

The session is transport-agnostic: it turns "channels X at positions P" into
an ordered stream of frames handed to a sink. For each channel it registers
for live delivery *before* reading history, buffers what arrives meanwhile,
and then only lets a publication through when it directly follows the
position the client already has; anything out of line triggers a fresh read
from that position. So a client never sees a duplicate and never misses a
message silently.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from . import frames as F
from .errors import FORBIDDEN, AccessDenied
from .frames import Frame, Publication
from .hub import Hub
from .protocol import Position

if TYPE_CHECKING:
    from tornado.web import RequestHandler

log = logging.getLogger("torchannels.session")


class Subscription:
    """What ``can_access`` is asked about: one channel, for one request.

    ``str(sub)`` is the channel name, as the seed's code expected; the
    handler gives the current user, cookies and arguments.
    """

    __slots__ = ("channel", "handler")

    def __init__(self, channel: str, handler: RequestHandler) -> None:
        self.channel = channel
        self.handler = handler

    @property
    def name(self) -> str:
        return self.channel

    def __str__(self) -> str:
        return self.channel

    def __repr__(self) -> str:
        return f"<Subscription {self.channel}>"


class Sink(Protocol):
    """Where a session puts frames. ``backlog`` marks catch-up (history the
    client asked for), which slow-consumer limits do not count."""

    def __call__(self, frames: list[Frame], *, backlog: bool = False) -> None: ...


#: Decides whether a channel may be read: True, False, or an awaitable of
#: either; it may raise :class:`~torchannels.errors.AccessDenied` to refuse
#: with a code of its own. Any other exception is logged and denies.
Authorize = Callable[[str], "bool | Awaitable[bool]"]


async def _refusal(authorize: Authorize, channel: str) -> Frame | None:
    """None if ``channel`` may be read, else the ``error`` frame to send."""
    try:
        verdict = authorize(channel)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except AccessDenied as exc:
        return F.error(channel, exc.code, exc.message)
    except Exception:
        log.exception("can_access failed for %r; access denied", channel)
        verdict = False
    if verdict:
        return None
    return F.error(channel, FORBIDDEN, f"access to {channel!r} is denied")


class Session:
    """Delivers channels to one sink, from the positions a client holds."""

    def __init__(self, hub: Hub, sink: Sink, authorize: Authorize) -> None:
        self.hub = hub
        self.sink = sink
        self.authorize = authorize
        #: Where the client stands now, per channel it is served.
        self.positions: dict[str, Position] = {}
        #: Channels attached to the hub; a list while catching up, else None.
        self._buffers: dict[str, list[Publication] | None] = {}
        self._closed = False

    async def subscribe(
        self, channels: Iterable[str], cursor: Mapping[str, Position], *, live: bool
    ) -> None:
        """Serve ``channels`` from ``cursor``: authorize, catch up, then (if
        ``live``) stay attached for new publications."""
        for channel in channels:
            if self._closed:
                return
            refusal = await _refusal(self.authorize, channel)
            if self._closed:
                return  # the client left while can_access decided
            if refusal is not None:
                self.sink([refusal], backlog=True)
                continue
            if live:
                if channel in self._buffers:
                    continue  # already served on this session
                self._buffers[channel] = []
                await self.hub.attach(channel, self._on_publication)
                if self._closed:  # close() ran while attaching: undo it
                    self.hub.detach(channel, self._on_publication)
                    return
            await self._catch_up(channel, cursor.get(channel), live=live)

    def unsubscribe(self, channel: str) -> bool:
        """Stop serving ``channel``; False if it was not served."""
        if channel not in self._buffers:
            return False
        del self._buffers[channel]
        self.positions.pop(channel, None)
        self.hub.detach(channel, self._on_publication)
        return True

    @property
    def channels(self) -> list[str]:
        """The channels attached for live delivery."""
        return list(self._buffers)

    async def _catch_up(self, channel: str, since: Position | None, *, live: bool) -> None:
        result = await self.hub.broker.read(channel, since)
        if self._closed or (live and channel not in self._buffers):
            return  # closed, or unsubscribed while reading
        out: list[Frame] = []
        if result.reset is not None:
            self.hub.stats.resets += 1
            out.append(F.reset(channel, result.reset))
        if since is None or result.reset is not None:
            out.append(F.subscribed(channel, result.position, result.state))
        position = result.position
        for pub in result.publications:
            out.append(pub.frame)
            position = pub.position
        buffered = self._buffers.get(channel)
        if buffered:
            self._buffers[channel] = []
            resync = False
            for pub in buffered:
                verdict = _follows(position, pub)
                if verdict is None:
                    continue
                if not verdict:
                    resync = True
                    break
                out.append(pub.frame)
                position = pub.position
        else:
            resync = False
        self.positions[channel] = position
        if channel in self._buffers and not resync:
            self._buffers[channel] = None  # live from here on
        if out:
            self.hub.stats.delivered += sum(f.kind == F.MESSAGE for f in out)
            self.sink(out, backlog=True)
        if resync:
            await self._catch_up(channel, position, live=live)

    def _on_publication(self, pub: Publication) -> None:
        channel = pub.channel
        if channel not in self._buffers or self._closed:
            return
        buffered = self._buffers[channel]
        if buffered is not None:
            buffered.append(pub)
            return
        verdict = _follows(self.positions[channel], pub)
        if verdict:
            self.positions[channel] = pub.position
            self.hub.stats.delivered += 1
            self.sink([pub.frame])
        elif verdict is False:
            # A gap in live delivery (a lost broker message): read it back.
            self._buffers[channel] = [pub]
            task = asyncio.ensure_future(
                self._catch_up(channel, self.positions[channel], live=True)
            )
            task.add_done_callback(_log_failure)

    def close(self) -> None:
        """Detach from the hub; idempotent."""
        if self._closed:
            return
        self._closed = True
        for channel in self._buffers:
            self.hub.detach(channel, self._on_publication)
        self._buffers.clear()


def _follows(position: Position, pub: Publication) -> bool | None:
    """True: ``pub`` is the next message. None: already seen. False: a gap."""
    if pub.epoch == position.epoch:
        if pub.offset == position.offset + 1:
            return True
        if pub.offset <= position.offset:
            return None
    return False


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("catch-up failed", exc_info=task.exception())

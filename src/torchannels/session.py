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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import frames as F
from .brokers.base import ReadResult, all_or_first_failure, check_unbroken
from .errors import FORBIDDEN, AccessDenied
from .frames import Frame, Publication
from .hub import Hub
from .identity import POLLING, Identity, anonymous
from .protocol import Position

if TYPE_CHECKING:
    from tornado.web import RequestHandler

log = logging.getLogger("torchannels.session")

T = TypeVar("T")

#: ``Session._sole_at`` while there is no sole channel.
_NOWHERE = Position("", 0)


class Subscription:
    """What ``can_access`` is asked about: one channel, for one request.

    ``str(sub)`` is the channel name, as the seed's code expected; the
    handler gives the current user, cookies and arguments. ``sub.user``
    (``str | None``), ``sub.info`` and ``sub.client`` say who is asking
    (from ``ChannelMixin.identify``).
    """

    __slots__ = ("channel", "handler", "identity")

    def __init__(
        self, channel: str, handler: RequestHandler, identity: Identity | None = None
    ) -> None:
        self.channel = channel
        self.handler = handler
        self.identity = identity

    @property
    def user(self) -> str | None:
        """The user's id; None for an anonymous connection."""
        user = self.identity.user if self.identity is not None else None
        return None if user is None else user.id

    @property
    def info(self) -> Mapping[str, Any] | None:
        """The user's info object, if any."""
        user = self.identity.user if self.identity is not None else None
        return None if user is None else user.info

    @property
    def client(self) -> str | None:
        """The connection's client id (server-made)."""
        return None if self.identity is None else self.identity.client

    @property
    def name(self) -> str:
        return self.channel

    def __str__(self) -> str:
        return self.channel

    def __repr__(self) -> str:
        return f"<Subscription {self.channel}>"


class Owner(Protocol):
    """Who a session works for (its transport or live connection): where
    its frames go and who hears of a broker that failed it. One reference,
    not two bound methods per connection."""

    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        """Take frames, in order. ``backlog`` marks catch-up (history the
        client asked for): a live connection frames it a slice at a time
        as the client takes it, rather than holding it all as bytes."""

    def broker_failed(self, exc: BaseException) -> None:
        """A catch-up running in the background (after a gap, a resync or a
        position check) could not read the broker: end the connection with
        ``reconnect`` so that the client resumes from its positions."""


class Unowned:
    """The owner of a session until its connection takes it over: drops
    frames and logs failures."""

    def send(self, frames: Sequence[Frame], *, backlog: bool = False) -> None:
        pass

    def broker_failed(self, exc: BaseException) -> None:
        log.error("a catch-up failed", exc_info=exc)


#: Decides whether a channel may be read: True, False, or an awaitable of
#: either; it may raise :class:`~torchannels.errors.AccessDenied` to refuse
#: with a code of its own. Any other exception is logged and denies.
Authorize = Callable[[str], "bool | Awaitable[bool]"]


async def access_refusal(authorize: Authorize, channel: str) -> AccessDenied | None:
    """None if ``channel`` may be read, else why not (code and message)."""
    try:
        verdict = authorize(channel)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except AccessDenied as exc:
        return exc
    except Exception:
        log.exception("can_access failed for %r; access denied", channel)
        verdict = False
    if verdict:
        return None
    return AccessDenied(FORBIDDEN, f"access to {channel!r} is denied")


async def _refusal(authorize: Authorize, channel: str) -> Frame | None:
    """None if ``channel`` may be read, else the ``error`` frame to send."""
    denied = await access_refusal(authorize, channel)
    return None if denied is None else F.error(channel, denied.code, denied.message)


class Session:
    """Delivers channels to its :class:`Owner`, from the positions a client holds.

    The owner's ``broker_failed`` is called (once per failure) when a
    catch-up that runs in the background cannot read the broker. Failures
    while subscribing raise to the caller instead.
    """

    # Slots, not an instance dict: one per idle connection.
    __slots__ = (
        "_buffers",
        "_closed",
        "_held",
        "_positions",
        "_present",
        "_sole",
        "_sole_at",
        "_tasks",
        "authorize",
        "hub",
        "identity",
        "owner",
    )

    def __init__(
        self,
        hub: Hub,
        owner: Owner,
        authorize: Authorize,
        identity: Identity | None = None,
    ) -> None:
        self.hub = hub
        #: Who the connection is (client id, user); anonymous if not given.
        self.identity = identity if identity is not None else anonymous("embedded")
        #: Where frames go (a live connection takes the session over).
        self.owner = owner
        self.authorize = authorize
        # Where the client stands now, per channel it is served (read it
        # through ``positions``: the fast path's slots may be ahead of it).
        self._positions: dict[str, Position] = {}
        #: The one channel of a session that serves exactly one, live (not
        #: catching up), and its position: the fan-out's fast path, with no
        #: dict to touch per recipient (:meth:`_settle` keeps them true).
        self._sole: str | None = None
        self._sole_at = _NOWHERE
        #: Channels attached to the hub; a list while catching up (of
        #: publications and ``presence`` frames, in arrival order), else None.
        self._buffers: dict[str, list[Publication | Frame] | None] = {}
        #: Channels whose presence this session's client is live in; None
        #: until there is one (most channels have no presence).
        self._present: set[str] | None = None
        #: Lifecycle keys this session holds live, by channel (None: its
        #: user's); None until it holds one (webhooks on: lifecycle_hub.py).
        self._held: dict[str | None, list[str]] | None = None
        #: Background catch-ups by channel, cancelled on close; None while
        #: there is none (nearly always, on an idle connection).
        self._tasks: dict[str, asyncio.Task[None]] | None = None
        self._closed = False

    async def subscribe(
        self, channels: Iterable[str], cursor: Mapping[str, Position], *, live: bool
    ) -> None:
        """Serve ``channels`` from ``cursor``: authorize, catch up, then (if
        ``live``) stay attached for new publications.

        Authorizations, attachments and history reads of all channels run
        concurrently; each channel's frames still go out in order, and the
        channels' catch-ups in the order named.
        """
        wanted = [c for c in dict.fromkeys(channels) if not (live and c in self._buffers)]
        refusals = await _all(_refusal(self.authorize, c) for c in wanted)
        if self._closed:
            return  # the client left while can_access decided
        allowed = [
            c
            for c, refusal in zip(wanted, refusals, strict=True)
            if refusal is None and not (live and c in self._buffers)  # not taken meanwhile
        ]
        if live:
            self._unsettle()
            for channel in allowed:
                self._buffers[channel] = []
            try:
                await _all(self.hub.attach(c, self) for c in allowed)
            finally:
                self._drop_stale_attachments(allowed)
        if self._closed:
            return
        tracker = self.hub.presence_tracker
        present = [c for c in allowed if tracker.enabled(c)]
        if present:
            if live:
                held = self._present if self._present is not None else ()
                present = [c for c in present if c in self._buffers and c not in held]
                if present:
                    self._present = {*held, *present}
            await _all(tracker.add(c, self.identity, live=live) for c in present)
            if self._closed:
                return
        if self.hub.lifecycle is not None and allowed:
            self._hold(allowed, live=live)
        reads = await _all(self.hub.read(c, cursor.get(c)) for c in allowed)
        results = dict(zip(allowed, reads, strict=True))
        snapshots: dict[str, dict[str, Any]] = {}
        if present:
            # Polling clients re-subscribe on every request: their snapshot
            # comes with a fresh join or a reset only.
            streaming = self.identity.transport not in POLLING
            wanted_snapshots = [
                c
                for c in present
                if streaming or cursor.get(c) is None or results[c].reset is not None
            ]
            got = await _all(tracker.snapshot(c) for c in wanted_snapshots)
            snapshots = dict(zip(wanted_snapshots, got, strict=True))
        for channel, refusal in zip(wanted, refusals, strict=True):
            if self._closed:
                return
            if refusal is not None:
                self.owner.send([refusal], backlog=True)
                continue
            if channel not in results or (live and channel not in self._buffers):
                continue  # taken by another subscribe, or unsubscribed while reading
            presence = snapshots.get(channel)
            if self._apply(
                channel, cursor.get(channel), results[channel], live=live, presence=presence
            ):
                self._start_catch_up(channel)

    def _hold(self, allowed: Sequence[str], *, live: bool) -> None:
        """Make the lifecycle hold what this subscribe serves: the channels,
        the user and, in presence channels, the user as a member."""
        lifecycle = self.hub.lifecycle
        assert lifecycle is not None
        held = self._held
        if live:
            held = self._held = {} if held is None else held
            channels = [c for c in allowed if c in self._buffers and c not in held]
        else:
            channels = list(allowed)
        enabled = self.hub.presence_tracker.enabled
        present = [c for c in channels if enabled(c)]
        user = not (live and held is not None and None in held)
        groups = lifecycle.holds(self.identity, channels, present, user=user)
        lifecycle.enter([hold for holds in groups.values() for hold in holds], live=live)
        if live and held is not None:
            for channel, holds in groups.items():
                held.setdefault(channel, []).extend(hold.key for hold in holds)

    def _drop_stale_attachments(self, channels: Sequence[str]) -> None:
        """Detach what close() or unsubscribe() could not: they ran while the
        attachments were under way, before these registered with the hub.
        The subscribe that attaches is the owner that releases on every way
        out (the hub detaches a failed or cancelled attach itself)."""
        for channel in channels:
            if self._closed or channel not in self._buffers:
                self.hub.detach(channel, self)

    def unsubscribe(self, channel: str) -> bool:
        """Stop serving ``channel``; False if it was not served."""
        if channel not in self._buffers:
            return False
        self._unsettle()
        del self._buffers[channel]
        self._positions.pop(channel, None)
        self._settle()
        task = self._tasks.pop(channel, None) if self._tasks is not None else None
        if task is not None:
            task.cancel()
        self.hub.detach(channel, self)
        if self._present is not None and channel in self._present:
            self._present.discard(channel)
            self.hub.presence_tracker.release(channel, self.identity.client)
        if self._held is not None and channel in self._held:
            self._leave(self._held.pop(channel))
        return True

    def _leave(self, keys: list[str]) -> None:
        lifecycle = self.hub.lifecycle
        if lifecycle is not None:
            lifecycle.leave(keys)

    @property
    def channels(self) -> list[str]:
        """The channels attached for live delivery."""
        return list(self._buffers)

    def _apply(
        self,
        channel: str,
        since: Position | None,
        result: ReadResult,
        *,
        live: bool,
        presence: dict[str, Any] | None = None,
    ) -> bool:
        """Send what ``result`` holds for a reader at ``since``, then what was
        buffered meanwhile; True if the buffer shows a gap (read again).
        ``presence``: the snapshot the ``subscribed`` frame carries (a
        presence channel's subscribe then always begins with one)."""
        result = check_unbroken(since, result, None)  # a broker's hole is a reset here too
        self._unsettle()
        out: list[Frame] = []
        if result.reset is not None:
            self.hub.stats.resets += 1
            out.append(F.reset(channel, result.reset))
        if since is None or result.reset is not None or presence is not None:
            out.append(F.subscribed(channel, result.position, result.state, presence))
        position = result.position
        for pub in result.publications:
            out.append(pub.frame)
            position = pub.position
        gap = False
        buffered = self._buffers.get(channel)
        if buffered:
            self._buffers[channel] = []
            for n, item in enumerate(buffered):
                if isinstance(item, Frame):  # a presence frame: in arrival order
                    out.append(item)
                    continue
                pub = item
                verdict = _follows(position, pub)
                if verdict is None:
                    continue
                if not verdict:
                    gap = True
                    # Presence frames after the gap are not in history: keep them.
                    self._buffers[channel] = [f for f in buffered[n:] if isinstance(f, Frame)]
                    break
                out.append(pub.frame)
                position = pub.position
        self._positions[channel] = position
        if live and not gap:
            self._buffers[channel] = None  # live from here on
        self._settle()
        if out:
            self.hub.stats.delivered += sum(f.kind == F.MESSAGE for f in out)
            self.owner.send(out, backlog=True)
        return gap

    def _start_catch_up(self, channel: str) -> None:
        """Re-read ``channel`` from the client's position in the background
        (new publications are buffered meanwhile)."""
        if self._closed or (self._tasks is not None and channel in self._tasks):
            return
        if self._buffers.get(channel) is None:
            self._unsettle()
            self._buffers[channel] = []
        if self._tasks is None:
            self._tasks = {}
        self._tasks[channel] = asyncio.ensure_future(self._catch_up(channel))

    async def _catch_up(self, channel: str) -> None:
        try:
            while True:
                since = self.positions[channel]
                result = await self.hub.read(channel, since)
                if self._closed or channel not in self._buffers:
                    return  # closed, or unsubscribed while reading
                if not self._apply(channel, since, result, live=True):
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._closed:
                self.owner.broker_failed(exc)  # logged; the connection ends
        finally:
            tasks = self._tasks
            if tasks is not None and tasks.get(channel) is asyncio.current_task():
                del tasks[channel]
                if not tasks:
                    self._tasks = None

    def on_publication(self, pub: Publication, frames: tuple[Frame]) -> bool:
        """A new publication of a channel this session is attached to, and
        its ``(frame,)`` (the hub's, shared by every recipient); True if it
        was handed to the sink (the hub counts deliveries)."""
        channel = pub.channel
        if channel == self._sole:  # one live channel: no dict touched
            position = self._sole_at
            if pub.offset == position.offset + 1 and pub.epoch == position.epoch:
                self._sole_at = pub.position
                self.owner.send(frames)
                return True
            self._unsettle()  # out of line: the general path below
        try:
            buffered = self._buffers[channel]
        except KeyError:
            return False  # not served (a closed session serves nothing)
        if buffered is not None:
            buffered.append(pub)
            return False
        positions = self._positions  # (no sole channel here: they are current)
        position = positions[channel]
        if pub.offset == position.offset + 1 and pub.epoch == position.epoch:
            positions[channel] = pub.position
            self.owner.send(frames)
            return True
        if _follows(position, pub) is False:
            # A gap in live delivery (a lost broker message): read it back.
            self._buffers[channel] = [pub]
            self._start_catch_up(channel)
        else:
            self._settle()
        return False

    @property
    def positions(self) -> dict[str, Position]:
        """Where the client stands now, per channel it is served."""
        sole = self._sole
        if sole is not None:
            self._positions[sole] = self._sole_at
        return self._positions

    def _unsettle(self) -> None:
        """Before ``_buffers`` or the positions change: the fast path's
        position written back, and no fast path until :meth:`_settle`."""
        sole = self._sole
        if sole is not None:
            self._positions[sole] = self._sole_at
            self._sole = None
            self._sole_at = _NOWHERE

    def _settle(self) -> None:
        """After ``_buffers`` or the positions changed: the fast path again
        if this session serves exactly one channel, live."""
        self._unsettle()
        if len(self._buffers) == 1:
            for channel, buffered in self._buffers.items():
                position = self._positions.get(channel)
                if buffered is None and position is not None:
                    self._sole, self._sole_at = channel, position

    def on_presence(self, channel: str, frame: Frame) -> None:
        """A ``presence`` frame of ``channel``: sent now, or after the
        catch-up under way, in order with the channel's messages."""
        try:
            buffered = self._buffers[channel]
        except KeyError:
            return
        if buffered is None:
            self.owner.send((frame,))
        else:
            buffered.append(frame)

    def resync(self, channel: str, top: Position | None) -> None:
        """Live delivery of ``channel`` may have missed publications: re-read
        it, unless ``top`` (a position the broker had) says the client has
        everything up to there."""
        if self._closed or channel not in self._buffers or self._buffers[channel] is not None:
            return  # not served, or a catch-up is already under way
        here = self.positions.get(channel)
        if top is None or here is None or not _at_or_past(here, top):
            self._start_catch_up(channel)

    def close(self) -> None:
        """Detach from the hub and stop catch-ups; idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks, self._tasks = self._tasks, None
        for task in (tasks or {}).values():
            task.cancel()
        self._unsettle()
        for channel in self._buffers:
            self.hub.detach(channel, self)
        self._buffers.clear()
        present, self._present = self._present, None
        for channel in present or ():
            self.hub.presence_tracker.release(channel, self.identity.client)
        if self._held is not None:
            self._leave([key for keys in self._held.values() for key in keys])
            self._held = None


def _at_or_past(here: Position, top: Position) -> bool:
    return here.epoch == top.epoch and here.offset >= top.offset


def _follows(position: Position, pub: Publication) -> bool | None:
    """True: ``pub`` is the next message. None: already seen. False: a gap."""
    if pub.epoch == position.epoch:
        if pub.offset == position.offset + 1:
            return True
        if pub.offset <= position.offset:
            return None
    return False


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` that raises only once all have ended (none is left
    running to attach after its caller cleaned up); one awaitable is simply
    awaited: the common one-channel subscribe then needs no task and, on a
    channel already attached here and the in-memory broker, completes
    without yielding to the loop."""
    pending = list(awaitables)
    if len(pending) == 1:
        return [await pending[0]]
    # Every one ends before this returns or raises: none is left running to
    # attach (or fail) after its caller has cleaned up.
    return all_or_first_failure(await asyncio.gather(*pending, return_exceptions=True))

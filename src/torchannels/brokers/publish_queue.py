"""The publish queue of a network broker: a process's publications stored
in order, in batches.

:meth:`PublishQueue.publish_soon` (the seed's synchronous ``send``) stamps
and encodes at once and queues the message; a pump task stores the queue
in order, a batch at a time (one round trip for a network broker), and
:meth:`PublishQueue.flush` raises what failed. ``publish``,
``publish_many`` and ``set_state`` go through the same queue, so a
process's publications keep the order in which it made them, whatever mix
of calls it used; so do its presence events (:meth:`PublishQueue.event_soon`),
which are delivered, not stored. A publish may carry an idempotency key
(:mod:`.idempotency`), checked here and stored with it by the batch.

Every queued operation ends settled: stored, failed, or, when the pump is
cancelled (the event loop shutting down, say), failed with
:class:`~torchannels.errors.BrokerError`, so no awaited publish waits forever.

The in-memory broker stores synchronously and needs no queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import BrokerError, TorChannelsError
from ..frames import Draft, Duplicate, Publication
from ..protocol import Position, check_idempotency_key
from .base import all_or_first_failure
from .idempotency import check_keys

log = logging.getLogger("torchannels.broker")

#: What a batch stores to: one result per op, in order (the publication, or
#: the duplicate a keyed publish turned out to be, the state's position,
#: None for an event, or the exception that op failed with).
Result = Publication | Duplicate | Position | BaseException | None
StoreBatch = Callable[["list[QueuedOp]"], Awaitable[list[Result]]]


class QueuedOp:
    """One queued publish (``state`` False) or set_state (``state`` True), or
    an ``event``: a payload the broker delivers to the channel's listeners
    without storing it (a presence event). A publish may have an
    idempotency ``key``."""

    __slots__ = ("channel", "drafts", "event", "future", "key", "state")

    def __init__(
        self, channel: str, drafts: list[Draft], state: bool, event: bytes | None = None
    ) -> None:
        self.channel = channel
        self.drafts = drafts
        self.state = state
        self.event = event
        self.future: asyncio.Future[Any] | None = None
        self.key: str | None = None


class PublishQueue:
    """One ordered queue per broker, stored by ``store`` a batch at a time.

    ``check_channel`` raises for a name the broker cannot store and
    ``clock`` stamps ``ts``; both are the broker's. ``owner`` names the
    broker in errors.
    """

    def __init__(
        self,
        store: StoreBatch,
        *,
        check_channel: Callable[[str], None],
        clock: Callable[[], float],
        owner: str,
    ) -> None:
        self._store = store
        self._check_channel = check_channel
        self._clock = clock
        self._owner = owner
        self._queue: list[QueuedOp] = []
        self._pump: asyncio.Task[None] | None = None
        self._failures: list[BaseException] = []
        #: Queued publishes and set_states that failed (logged, raised by flush).
        self.failed_publishes = 0

    def publish_soon(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """Queue ``message``; return its stamped copy (``channel`` and ``ts``)."""
        op = self._op(channel, [message], state=False)
        self._enqueue(op)
        return dict(op.drafts[0].data)

    def set_state_soon(self, channel: str, messages: list[dict[str, Any]]) -> None:
        self._enqueue(self._op(channel, messages, state=True))

    def event_soon(self, channel: str, payload: bytes) -> None:
        """Queue an event's ``payload``: delivered in order with the
        publications, never stored; a failure is logged."""
        self._check_channel(channel)
        self._enqueue(QueuedOp(channel, [], False, payload))

    async def publish(
        self, channel: str, message: dict[str, Any], key: str | None = None
    ) -> Publication | Duplicate:
        op = self._op(channel, [message], state=False)
        if key is not None:
            op.key = check_idempotency_key(key)
        result: Publication | Duplicate = await self._wait(op)
        return result

    async def publish_many(
        self,
        messages: Sequence[tuple[str, dict[str, Any]]],
        keys: Sequence[str | None] | None = None,
    ) -> list[Publication | Duplicate]:
        """Every message (and key) is checked and stamped before any is
        queued, so a bad one stores none; they are stored in one batch."""
        ops = [self._op(channel, [message], state=False) for channel, message in messages]
        keys = check_keys(ops, keys)
        if keys is not None:
            for op, key in zip(ops, keys, strict=True):
                op.key = key
        loop = asyncio.get_running_loop()
        for op in ops:
            op.future = loop.create_future()
            self._enqueue(op)
        outcomes: list[Publication | Duplicate | BaseException] = []
        for op in ops:
            assert op.future is not None
            try:
                outcomes.append(await op.future)
            except Exception as exc:
                outcomes.append(exc)
        return all_or_first_failure(outcomes)

    async def set_state(self, channel: str, messages: list[dict[str, Any]]) -> Position:
        result: Position = await self._wait(self._op(channel, messages, state=True))
        return result

    async def flush(self) -> None:
        """Wait until everything queued so far is stored; raise the first
        failure since the last flush (the others are logged and counted)."""
        await self.drain()
        if self._failures:
            first = self._failures[0]
            self._failures.clear()
            raise first

    async def drain(self) -> None:
        """Wait until the queue is empty. Cancelling the wait leaves the pump
        be, and a cancelled pump does not cancel the wait."""
        while self._pump is not None:
            await asyncio.wait([self._pump])

    def _op(self, channel: str, messages: list[dict[str, Any]], *, state: bool) -> QueuedOp:
        """Check ``channel`` and stamp ``messages`` now, before anything is queued."""
        self._check_channel(channel)
        now = self._clock()
        return QueuedOp(channel, [Draft(channel, m, now) for m in messages], state=state)

    async def _wait(self, op: QueuedOp) -> Any:
        op.future = asyncio.get_running_loop().create_future()
        self._enqueue(op)
        return await op.future

    def _enqueue(self, op: QueuedOp) -> None:
        if self._pump is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise TorChannelsError(
                    f"{self._owner} publishes from the event loop: call send() "
                    "and set_state() on the IOLoop's thread"
                ) from None
            self._pump = loop.create_task(self._run())
        self._queue.append(op)

    async def _run(self) -> None:
        batch: list[QueuedOp] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await self._store(batch)
                except Exception as exc:
                    results = [exc] * len(batch)
                for op, result in zip(batch, results, strict=True):
                    self._settle(op, result)
                batch = []
        except BaseException:
            # Cancelled (or worse) mid-batch: nothing will store this batch
            # or the ops queued behind it, so each fails now rather than
            # leaving its publisher waiting forever.
            left, self._queue = batch + self._queue, []
            error = BrokerError(f"{self._owner}'s publish queue stopped before storing this")
            for op in left:
                self._settle(op, error)
            raise
        finally:
            self._pump = None

    def _settle(self, op: QueuedOp, result: Result) -> None:
        if op.event is not None:  # fire and forget: nobody waits, flush does not raise it
            if isinstance(result, BaseException):
                log.warning("presence event of %r not delivered: %s", op.channel, result)
            return
        if op.future is not None:  # an awaited publish: its caller gets the outcome
            if not op.future.done():
                if isinstance(result, BaseException):
                    op.future.set_exception(result)
                else:
                    op.future.set_result(result)
        elif isinstance(result, BaseException):
            self.failed_publishes += 1
            self._failures.append(result)
            what = "set_state" if op.state else "publish"
            log.error("queued %s to %r failed: %s", what, op.channel, result)

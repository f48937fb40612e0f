"""The writes of one event-loop iteration, made together at its end.

An outbox that gets bytes during a loop iteration joins the iteration's
:class:`WriteBatch`, which pumps every such outbox once the callbacks
queued so far have run: what reaches one connection in one iteration
goes out as one write.

The hub's fan-out looks the batch up once per publication
(:func:`current_batch`) and hands it to every recipient, so that a
recipient with nothing queued and nothing in flight writes at once, the
first time in the iteration, and joins the batch only with what comes
after (the other messages of a batch publish). A module of its own so
that the hub, which knows no transport, can hold the batch.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol


class Pumped(Protocol):
    """What a batch pumps: an outbox."""

    #: Set while the outbox waits in a batch.
    scheduled: bool

    def pump(self) -> None:
        """Write what is queued."""


class WriteBatch:
    """The outboxes that got bytes during one loop iteration, pumped
    together at its end."""

    __slots__ = ("loop", "outboxes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.outboxes: list[Pumped] = []

    def add(self, outbox: Pumped) -> None:
        """Pump ``outbox`` at the end of this iteration (it is not yet waiting)."""
        outbox.scheduled = True
        self.outboxes.append(outbox)

    def run(self) -> None:
        if getattr(_current, "batch", None) is self:
            _current.batch = None
        outboxes, self.outboxes = self.outboxes, []
        for outbox in outboxes:
            outbox.scheduled = False
            outbox.pump()


#: The batch of this thread's running loop (one loop runs per thread at a time).
_current = threading.local()


def current_batch() -> WriteBatch:
    """The running loop's batch for this iteration, made (and its run
    queued on the loop) on first use. Raises ``RuntimeError`` outside a
    running loop."""
    batch: WriteBatch | None = getattr(_current, "batch", None)
    loop = asyncio.get_running_loop()
    if batch is None or batch.loop is not loop:
        batch = _current.batch = WriteBatch(loop)
        loop.call_soon(batch.run)
    return batch

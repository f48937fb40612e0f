"""The hub's timer wheel: deadlines of many items on one loop timer, never
early, late by at most the resolution (plus the loop's own lateness)."""

from __future__ import annotations

import asyncio

import pytest

from torchannels.timer_wheel import TimerWheel


class Item:
    """Records when it was told, and schedules the deadlines it is given."""

    def __init__(self, wheel: TimerWheel, *then: float) -> None:
        self.timer_slot: int | None = None
        self.wheel = wheel
        self.then = list(then)
        self.told: list[float] = []
        self.done = asyncio.Event()

    def on_timer(self, now: float) -> None:
        self.told.append(now)
        if self.then:
            self.wheel.schedule(self, now + self.then.pop(0))
        else:
            self.done.set()


async def test_a_deadline_is_met_never_early_and_within_the_resolution() -> None:
    wheel = TimerWheel(resolution=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    items = [Item(wheel) for _ in range(5)]
    delays = [0.01, 0.12, 0.05, 0.3, 0.2]
    for item, delay in zip(items, delays, strict=True):
        wheel.schedule(item, start + delay)
    assert len(wheel) == 5
    await asyncio.wait_for(asyncio.gather(*(i.done.wait() for i in items)), 5)
    for item, delay in zip(items, delays, strict=True):
        (told,) = item.told
        assert start + delay <= told < start + delay + 0.05 + 0.1, (delay, told - start)
    assert len(wheel) == 0


async def test_an_item_reschedules_itself_from_its_deadline() -> None:
    wheel = TimerWheel(resolution=0.02)
    loop = asyncio.get_running_loop()
    item = Item(wheel, 0.05, 0.05, 0.05)
    wheel.schedule(item, loop.time() + 0.05)
    await asyncio.wait_for(item.done.wait(), 5)
    assert len(item.told) == 4
    gaps = [b - a for a, b in zip(item.told, item.told[1:], strict=False)]
    assert all(0.05 <= gap < 0.05 + 0.02 + 0.1 for gap in gaps), gaps


async def test_schedule_replaces_and_cancel_forgets() -> None:
    wheel = TimerWheel(resolution=0.02)
    loop = asyncio.get_running_loop()
    moved, cancelled, witness = Item(wheel), Item(wheel), Item(wheel)
    wheel.schedule(moved, loop.time() + 0.02)
    wheel.schedule(moved, loop.time() + 0.2)  # later: the first is replaced
    wheel.schedule(cancelled, loop.time() + 0.02)
    wheel.cancel(cancelled)
    wheel.cancel(cancelled)  # idempotent
    wheel.schedule(witness, loop.time() + 0.1)
    await asyncio.wait_for(witness.done.wait(), 5)
    assert moved.told == [] and cancelled.told == []
    await asyncio.wait_for(moved.done.wait(), 5)
    assert len(moved.told) == 1 and cancelled.told == []
    assert len(wheel) == 0


async def test_items_moved_by_another_in_the_same_bucket_are_not_told_early() -> None:
    wheel = TimerWheel(resolution=0.05)
    loop = asyncio.get_running_loop()
    order: list[object] = []

    class Logged(Item):
        def on_timer(self, now: float) -> None:
            order.append(self)
            super().on_timer(now)

    # Several, so that the bucket's order puts some before the mover, some after.
    laters = [Logged(wheel) for _ in range(8)]

    class Mover(Logged):
        def on_timer(self, now: float) -> None:
            super().on_timer(now)
            for later in laters:
                wheel.schedule(later, now + 0.2)

    mover = Mover(wheel)
    when = loop.time() + 0.05
    for item in [mover, *laters]:
        wheel.schedule(item, when)
    await asyncio.wait_for(mover.done.wait(), 5)
    await asyncio.sleep(0.3)
    moved_at = mover.told[0]
    before = order[: order.index(mover)]
    for later in laters:
        # Told in the mover's round only if before it; after the move, 0.2 s on.
        told = later.told[1:] if later in before else later.told
        assert len(told) == 1 and told[0] >= moved_at + 0.2


async def test_a_failing_item_does_not_stop_the_others() -> None:
    wheel = TimerWheel(resolution=0.02)
    loop = asyncio.get_running_loop()
    errors: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))

    class Failing(Item):
        def on_timer(self, now: float) -> None:
            raise RuntimeError("boom")

    failing, fine = Failing(wheel), Item(wheel)
    when = loop.time() + 0.02
    wheel.schedule(failing, when)
    wheel.schedule(fine, when)
    await asyncio.wait_for(fine.done.wait(), 5)
    assert [str(e) for e in errors] == ["boom"]


def test_the_resolution_is_positive() -> None:
    with pytest.raises(ValueError):
        TimerWheel(resolution=0)


def test_a_wheel_used_from_a_new_loop_starts_afresh() -> None:
    wheel = TimerWheel(resolution=0.02)
    stale = Item(wheel)

    async def leave_one() -> None:
        wheel.schedule(stale, asyncio.get_running_loop().time() + 60)

    asyncio.run(leave_one())
    assert len(wheel) == 1

    async def meet_one() -> Item:
        item = Item(wheel)
        wheel.schedule(item, asyncio.get_running_loop().time() + 0.02)
        await asyncio.wait_for(item.done.wait(), 5)
        return item

    assert len(asyncio.run(meet_one()).told) == 1
    assert stale.timer_slot is None and len(wheel) == 0

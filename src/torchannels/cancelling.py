"""Ending a task for sure.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that lands in
the same loop turn as the result it awaits (fixed in 3.12), so a loop built
on it can go on after ``task.cancel()``, and a shutdown that awaits it waits
for ever. :func:`cancel_and_wait` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: How long one cancellation gets before the next is sent.
RETRY = 0.1


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and return once it has ended (its outcome is dropped).

    >>> async def stubborn() -> None:
    ...     try:
    ...         await asyncio.sleep(3600)
    ...     except asyncio.CancelledError:
    ...         await asyncio.sleep(3600)  # swallowed the first cancellation
    >>> async def main() -> bool:
    ...     task = asyncio.ensure_future(stubborn())
    ...     await asyncio.sleep(0)
    ...     await cancel_and_wait(task)
    ...     return task.cancelled()
    >>> asyncio.run(main())
    True
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RETRY)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" log

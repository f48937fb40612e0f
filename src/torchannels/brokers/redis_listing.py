"""Listing the Redis broker's channels: a SCAN over their meta keys.

A channel's meta hash ``{PREFIX:CHANNEL}:m`` exists from its first write
until its meta TTL; it is listed while its last write (field ``t``) is
within its history TTL, as the memory broker lists it. So listing scans for
those keys, with the name prefix in the ``MATCH`` pattern, sorts what it
found, and reads ``t`` of the first names in order until a page is full.
Nothing is maintained on the publish path and nothing can drift from the
channels' expiry; the price is a walk over the whole keyspace per page
(``SCAN`` visits every key; only matching ones travel), which is fine for
an admin page or a CLI and is why the listing is not on any subscriber's
path. On a Cluster every primary is scanned. (Why not an index of names
maintained on publish: see ARCHITECTURE.md, "Listing channels".)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .redis_errors import broker_error, unreachable

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

#: Keys asked of Redis per SCAN step.
SCAN_COUNT = 5000


async def scan_channels(
    client: Redis | RedisCluster,
    key_prefix: str,
    prefix: str,
    after: str | None,
    limit: int,
    horizon: Callable[[str], float],
) -> list[str]:
    """The sorted channel names under ``key_prefix`` starting with ``prefix``
    and sorting after ``after``, at most ``limit``, whose last write was at
    or after ``horizon(name)`` (a meta without ``t``, written by an older
    version, expires with the history and counts as written).

    Channel names and key prefixes hold no glob characters (both are
    checked where they are made), so they go into the pattern as they are.
    """
    head = f"{{{key_prefix}:"
    pattern = f"{head}{prefix}*}}:m"
    names: set[str] = set()  # SCAN may return a key twice
    page: list[str] = []
    if limit <= 0:
        return page
    try:
        async for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            name = key.decode()[len(head) : -3]
            if after is None or name > after:
                names.add(name)
        ordered = sorted(names)
        step = min(max(2 * limit, 100), 1000)
        for start in range(0, len(ordered), step):
            chunk = ordered[start : start + step]
            pipe = client.pipeline(transaction=False)
            for name in chunk:
                pipe.hmget(f"{head}{name}}}:m", ["e", "t"])
            for name, (epoch, t) in zip(chunk, await pipe.execute(), strict=True):
                if epoch is not None and (t is None or float(t) >= horizon(name)):
                    page.append(name)
                    if len(page) >= limit:
                        return page
    except Exception as exc:
        if not unreachable(exc):
            raise
        raise broker_error(exc, "list channels") from exc
    return page

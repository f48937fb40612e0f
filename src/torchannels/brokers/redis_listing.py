"""Listing the Redis broker's channels: a SCAN over their meta keys.

A channel exists in Redis exactly while its meta hash
``{PREFIX:CHANNEL}:m`` does (it expires with the channel's history TTL), so
listing scans for those keys, with the name prefix in the ``MATCH``
pattern, and sorts what it found. Nothing is maintained on the publish
path and nothing can drift from the channels' expiry; the price is a walk
over the whole keyspace per page (``SCAN`` visits every key; only matching
ones travel), which is fine for an admin page or a CLI and is why the
listing is not on any subscriber's path. On a Cluster every primary is
scanned. (Why not an index of names maintained on publish: see
ARCHITECTURE.md, "Listing channels".)
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from .redis_errors import broker_error, unreachable

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

#: Keys asked of Redis per SCAN step.
SCAN_COUNT = 5000


async def scan_channels(
    client: Redis | RedisCluster, key_prefix: str, prefix: str, after: str | None, limit: int
) -> list[str]:
    """The sorted channel names under ``key_prefix`` starting with ``prefix``
    and sorting after ``after``, at most ``limit``.

    Channel names and key prefixes hold no glob characters (both are
    checked where they are made), so they go into the pattern as they are.
    """
    head = f"{{{key_prefix}:"
    pattern = f"{head}{prefix}*}}:m"
    names: set[str] = set()  # SCAN may return a key twice
    try:
        async for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            name = key.decode()[len(head) : -3]
            if after is None or name > after:
                names.add(name)
    except Exception as exc:
        if not unreachable(exc):
            raise
        raise broker_error(exc, "list channels") from exc
    return heapq.nsmallest(max(0, limit), names)

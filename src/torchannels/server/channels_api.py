"""``GET /api/channels``: the channels that exist, a page at a time; and
``GET /api/channels/NAME``, one of them.

The list is the broker's channels (:meth:`~torchannels.Broker.channels`)
together with those that have subscribers in this process, sorted by name;
each row carries the channel's position, history and subscriber counts
(``subscribers`` over every process: :mod:`.fleet`). The admin page reads
the same rows through its own session-authenticated route.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from tornado.web import RequestHandler

from ..cors import CorsPolicy
from ..errors import TorChannelsError
from ..hub import Hub
from ..protocol import CHANNEL_RE, MAX_CHANNEL_LENGTH
from .api import INVALID_CHANNEL, ApiError, ApiHandler, channel_name, info_body
from .fleet import LocalCounts

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
INVALID_LIMIT = "invalid_limit"  # 400: limit is not an integer from 1 to MAX_LIMIT


def page_arguments(handler: RequestHandler) -> tuple[str, str | None, int]:
    """``prefix``, ``after`` and ``limit`` of a list request, checked."""
    prefix = handler.get_query_argument("prefix", "")
    if prefix and CHANNEL_RE.fullmatch(prefix) is None:
        raise ApiError(
            400,
            INVALID_CHANNEL,
            f"invalid prefix {prefix!r}: use up to {MAX_CHANNEL_LENGTH} characters "
            "allowed in channel names",
        )
    after = handler.get_query_argument("after", "") or None
    if after is not None and CHANNEL_RE.fullmatch(after) is None:
        raise ApiError(400, INVALID_CHANNEL, f"invalid channel name {after!r} in 'after'")
    text = handler.get_query_argument("limit", str(DEFAULT_LIMIT)).strip()
    limit = int(text) if text.isascii() and text.isdigit() and len(text) < 10 else -1
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            400, INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}, not {text!r}"
        )
    return prefix, after, limit


async def list_channels(
    hub: Hub, counts: LocalCounts, prefix: str, after: str | None, limit: int
) -> dict[str, Any]:
    """One page: ``{"channels": [row, ...], "next": NAME or None}``."""
    held = await hub.broker.channels(prefix, after=after, limit=limit + 1)
    local = [
        c for c in hub.local_channels() if c.startswith(prefix) and (after is None or c > after)
    ]
    # The first limit+1 of the union are among the broker's first limit+1
    # and the local ones, so the merge is exact.
    names = heapq.nsmallest(limit + 1, set(held).union(local))
    page = names[:limit]
    infos = await asyncio.gather(*(hub.info(name) for name in page))
    subscribers = await counts.subscribers(page)
    rows = [info_body(info, subscribers) for info in infos]
    return {"channels": rows, "next": page[-1] if len(names) > limit else None}


class CountingHandler(ApiHandler):
    """An API handler that answers subscriber counts over every process."""

    def initialize(  # type: ignore[override]
        self,
        hub: Hub,
        api_key: str | None,
        max_body: int,
        counts: LocalCounts,
        cors: CorsPolicy | None = None,
    ) -> None:
        super().initialize(hub, api_key, max_body, cors)
        self.counts = counts


class ChannelListHandler(CountingHandler):
    """``GET /api/channels?prefix=P&limit=N&after=NAME``."""

    async def get(self) -> None:
        if self.refused():
            return
        try:
            prefix, after, limit = page_arguments(self)
            self.reply(await list_channels(self.hub, self.counts, prefix, after, limit))
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)


class ChannelInfoHandler(CountingHandler):
    """``GET /api/channels/NAME``: position, history length, and subscribers
    here and over every process (as each row of ``GET /api/channels``)."""

    async def get(self, name: str) -> None:
        if self.refused():
            return
        try:
            channel = channel_name(name)
            info, subscribers = await asyncio.gather(
                self.hub.info(channel), self.counts.subscribers([channel])
            )
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)
            return
        self.reply(info_body(info, subscribers))

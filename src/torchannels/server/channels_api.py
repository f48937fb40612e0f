"""``GET /api/channels``: the channels that exist, a page at a time;
``GET /api/channels/NAME``, one of them; and ``GET
/api/channels/NAME/presence``, the users present in one, a page at a time.

The list is the broker's channels (:meth:`~torchannels.Broker.channels`)
together with those that have subscribers in this process, sorted by name;
each row carries the channel's position, history and subscriber counts
(``subscribers`` over every process: :mod:`.fleet`), and for a channel with
presence its ``presence`` counts (``clients``, ``users``: the presence
store's, over every process). The admin page reads the same rows and member
pages through its own session-authenticated routes.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from tornado.web import RequestHandler

from ..brokers.base import ChannelInfo
from ..cors import CorsPolicy
from ..errors import INVALID_CURSOR, INVALID_LIMIT, PRESENCE_DISABLED, TorChannelsError
from ..hub import Hub
from ..protocol import CHANNEL_RE, MAX_CHANNEL_LENGTH
from .api import INVALID_CHANNEL, ApiError, ApiHandler, channel_name, info_body
from .fleet import LocalCounts

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Codes of 400 answers: INVALID_LIMIT (limit is not an integer from 1 to
# MAX_LIMIT), PRESENCE_DISABLED (the channel has no presence), INVALID_CURSOR
# (a page cursor that does not verify); the same as subscribers' presence reads.


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
    return prefix, after, limit_argument(handler)


def limit_argument(handler: RequestHandler) -> int:
    """The ``limit`` of a paged request: 1 to :data:`MAX_LIMIT`, else ``invalid_limit``."""
    text = handler.get_query_argument("limit", str(DEFAULT_LIMIT)).strip()
    limit = int(text) if text.isascii() and text.isdigit() and len(text) < 10 else -1
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            400, INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}, not {text!r}"
        )
    return limit


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
    infos, subscribers, presence = await asyncio.gather(
        asyncio.gather(*(hub.info(name) for name in page)),
        counts.subscribers(page),
        presence_counts(hub, page),
    )
    rows = [channel_row(info, subscribers, presence) for info in infos]
    return {"channels": rows, "next": page[-1] if len(names) > limit else None}


async def presence_counts(hub: Hub, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{"clients": N, "users": M}`` of each of ``names`` that has presence."""
    with_presence = [name for name in names if hub.channel_options.get(name).presence]
    counted = await asyncio.gather(*(hub.presence_counts(name) for name in with_presence))
    return {
        name: {"clients": clients, "users": users}
        for name, (clients, users) in zip(with_presence, counted, strict=True)
    }


def channel_row(
    info: ChannelInfo, subscribers: Mapping[str, int], presence: Mapping[str, dict[str, int]]
) -> dict[str, Any]:
    """:func:`.api.info_body`, with ``presence`` for a channel that has it."""
    row = info_body(info, subscribers)
    if info.channel in presence:
        row["presence"] = presence[info.channel]
    return row


def presence_arguments(handler: RequestHandler, name: str) -> tuple[str, str | None, int]:
    """The channel ``name``, ``after`` and ``limit`` of a presence request, checked."""
    channel = channel_name(name)
    return channel, handler.get_query_argument("after", "") or None, limit_argument(handler)


async def presence_page(hub: Hub, channel: str, after: str | None, limit: int) -> dict[str, Any]:
    """``{"channel": C, "users": [{"user", "info", "clients"}, ...], "next": CURSOR}``:
    the users present in ``channel`` after the page cursor ``after`` (signed
    by the hub's :class:`~torchannels.identity.PageCursors`)."""
    if not hub.channel_options.get(channel).presence:
        raise ApiError(
            400,
            PRESENCE_DISABLED,
            f"channel {channel!r} has no presence: enable it for the channel's pattern "
            '(presence = true in a [channels."PATTERN"] table of the configuration)',
        )
    user = None if after is None else hub.page_cursors.verify(after)
    if after is not None and user is None:
        raise ApiError(
            400, INVALID_CURSOR, "'after' is not a page cursor of this server: pass a page's 'next'"
        )
    page = await hub.presence(channel, after=user, limit=limit)
    users = [{"user": m.user, "info": m.info, "clients": m.clients} for m in page.members]
    cursor = None if page.next is None else hub.page_cursors.sign(page.next)
    return {"channel": channel, "users": users, "next": cursor}


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
    """``GET /api/channels/NAME``: position, history length, subscribers
    here and over every process, and presence counts (as each row of ``GET
    /api/channels``)."""

    async def get(self, name: str) -> None:
        if self.refused():
            return
        try:
            channel = channel_name(name)
            info, subscribers, presence = await asyncio.gather(
                self.hub.info(channel),
                self.counts.subscribers([channel]),
                presence_counts(self.hub, [channel]),
            )
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)
            return
        self.reply(channel_row(info, subscribers, presence))


class ChannelPresenceHandler(ApiHandler):
    """``GET /api/channels/NAME/presence?limit=N&after=CURSOR``: a page of
    the users present, sorted by user id."""

    async def get(self, name: str) -> None:
        if self.refused():
            return
        try:
            self.reply(await presence_page(self.hub, *presence_arguments(self, name)))
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)

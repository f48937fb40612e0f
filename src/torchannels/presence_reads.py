"""Presence reads by subscribers: the WebSocket ``presence`` command and
the HTTP ``?presence=CHANNEL`` request share :func:`read_page`."""

from __future__ import annotations

from typing import Any

from .errors import (
    INVALID_CHANNEL,
    INVALID_CURSOR,
    INVALID_LIMIT,
    PRESENCE_DISABLED,
    BadRequest,
    ChannelNameError,
)
from .hub import Hub
from .presence_hub import MAX_LIMIT, SNAPSHOT_LIMIT, check_page_limit, page_body
from .protocol import check_channel
from .session import Authorize, access_refusal


async def read_page(
    hub: Hub,
    authorize: Authorize,
    channel: object,
    after: object,
    limit: object,
    *,
    query: bool = False,
) -> dict[str, Any]:
    """A subscriber's presence read (WebSocket ``presence`` command, HTTP
    ``?presence=``): ``{"channel", "members", "next", "clients", "users"}``.

    Raises :class:`~torchannels.errors.AccessDenied` when ``can_access``
    refuses the channel, :class:`~torchannels.errors.BadRequest` with
    ``invalid_channel``, ``presence_disabled``, ``invalid_cursor`` or
    ``invalid_limit``, checked in that order. With ``query``, ``limit`` is
    the text of a query parameter (or None).
    """
    try:
        name = check_channel(channel)
    except ChannelNameError as exc:
        raise BadRequest(INVALID_CHANNEL, str(exc)) from None
    denied = await access_refusal(authorize, name)
    if denied is not None:
        raise denied
    if not hub.channel_options.get(name).presence:
        raise BadRequest(PRESENCE_DISABLED, f"channel {name!r} has no presence")
    user = None
    if after is not None:
        user = hub.page_cursors.verify(after) if isinstance(after, str) else None
        if user is None:
            raise BadRequest(INVALID_CURSOR, "the page cursor does not verify (use a page's next)")
    if query:
        limit = parse_limit(limit if isinstance(limit, str) else None)
    size = check_page_limit(SNAPSHOT_LIMIT if limit is None else limit)
    page = await hub.presence_tracker.page(name, user, size)
    return {"channel": name, **page_body(page, hub.page_cursors.sign)}


def parse_limit(text: str | None) -> int | None:
    """The ``limit`` query parameter: None when absent; ``invalid_limit``
    unless it is an integer 1-1000."""
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 4:
        raise BadRequest(INVALID_LIMIT, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return check_page_limit(int(text))

"""Client publish: a subscriber publishing to a channel (docs/protocol.md#publishing).

One path for every transport (the WebSocket ``publish`` command and the
HTTP ``POST`` to the subscribe URL): the checks in a fixed order, cheapest
and least revealing first, then the store:

1. the channel name (``invalid_channel``), ``data`` an object
   (``invalid_message``), its size (``publish_too_large``), reserved keys
   (``invalid_message``);
2. the client's rate (``rate_limited``), before anything costs the app
   (a flood never reaches a backend hook);
3. a revoked token (``token_revoked``), then the handler's
   ``authorize_publish`` (the channel's ``publish`` policy, ``can_publish``,
   a backend hook), which may replace the data;
4. the store, through the hub's ordered publish queue: a publish is
   queued like any other and never runs on the fan-out path.

What is stored carries ``sender``: ``{"user", "client"}`` of the
publisher, which no publisher can set (a reserved key).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import (
    PUBLISH_TOO_LARGE,
    RATE_LIMITED,
    AccessDenied,
    BrokerError,
    ChannelLimitError,
    ChannelNameError,
    MessageError,
    TorChannelsError,
)
from .frames import Publication
from .identity import Identity
from .protocol import check_channel, check_message

if TYPE_CHECKING:
    from .hub import Hub

SENDER = "sender"
INVALID_CHANNEL = "invalid_channel"
INVALID_MESSAGE = "invalid_message"
BROKER_UNAVAILABLE = "broker_unavailable"
CHANNEL_LIMIT = "channel_limit"

#: Codes a client may retry after a pause (``retry: true``).
RETRYABLE = frozenset({RATE_LIMITED, "proxy_unavailable", BROKER_UNAVAILABLE})
#: HTTP status by code; a code not listed (a token code, a backend's own) is 403.
STATUS = {
    INVALID_CHANNEL: 400, INVALID_MESSAGE: 400, "bad_json": 400, PUBLISH_TOO_LARGE: 413,
    RATE_LIMITED: 429, "proxy_unavailable": 503, "proxy_error": 503, BROKER_UNAVAILABLE: 503,
    CHANNEL_LIMIT: 503,
}  # fmt: skip

#: Decides whether ``channel`` may get ``data`` from this client: the data
#: to publish (``data``, or a backend's replacement), or AccessDenied.
AuthorizePublish = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class PublishRefused(TorChannelsError):
    """A client publish was refused: ``code``, ``message``, the HTTP
    ``status``, whether a retry may work, and after how many seconds."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = STATUS.get(code, 403)
        self.retry = code in RETRYABLE
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The HTTP answer's JSON (``retry_after`` when there is one)."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


def check_publish(hub: Hub, channel: object, data: object) -> tuple[str, dict[str, Any]]:
    """Step 1: the channel and the data, or PublishRefused."""
    try:
        name = check_channel(channel)
        hub.broker.check_channel(name)
    except ChannelNameError as exc:
        raise PublishRefused(INVALID_CHANNEL, str(exc)) from None
    if not isinstance(data, dict):
        raise PublishRefused(INVALID_MESSAGE, '"data" must be a JSON object')
    try:
        size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise PublishRefused(INVALID_MESSAGE, f"data is not JSON: {exc}") from None
    limit = hub.settings.max_client_publish_bytes
    if size > limit:
        raise PublishRefused(PUBLISH_TOO_LARGE, f"data is {size} bytes of JSON; at most {limit}")
    try:
        check_message(data)
    except MessageError as exc:
        raise PublishRefused(INVALID_MESSAGE, str(exc)) from None
    return name, data


@dataclass(frozen=True, slots=True)
class Published:
    channel: str
    epoch: str
    offset: int


async def publish_from_client(
    hub: Hub,
    identity: Identity,
    channel: object,
    data: object,
    authorize: AuthorizePublish,
    rate_key: str | None = None,
) -> Published:
    """Check, authorize and store one client publish (the module's steps);
    PublishRefused says why not."""
    name, checked = check_publish(hub, channel, data)
    wait = hub.publish_rates.take(rate_key or "c:" + identity.client)
    if wait > 0:
        after = math.ceil(wait * 10) / 10
        message = f"more than {hub.settings.client_publish_rate:g} publishes a second"
        raise PublishRefused(RATE_LIMITED, f"{message}; retry after {after} s", after)
    refused = hub.control.refusal(identity)
    if refused is not None:
        raise PublishRefused(refused.code, refused.message)
    try:
        allowed = await authorize(name, checked)
    except AccessDenied as exc:
        raise PublishRefused(exc.code, exc.message) from None
    if allowed is not checked:  # a backend's replacement: checked like the original
        name, allowed = check_publish(hub, name, allowed)
    user = identity.user.id if identity.user is not None else None
    stamped = {**allowed, SENDER: {"user": user, "client": identity.client}}
    try:
        pub: Publication = await hub.broker.publish(name, stamped)
    except BrokerError as exc:
        raise PublishRefused(BROKER_UNAVAILABLE, f"the message was not stored: {exc}") from None
    except ChannelLimitError as exc:
        raise PublishRefused(CHANNEL_LIMIT, str(exc)) from None
    hub.stats.published += 1
    return Published(name, pub.epoch, pub.offset)

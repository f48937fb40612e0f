"""A client publish over HTTP: ``POST`` to the subscribe URL (docs/protocol.md#publishing).

The body is ``{"channel": NAME, "data": OBJECT}`` as ``application/json``;
the answer is ``{"channel", "epoch", "offset"}`` or ``{"error", "message"}``
with the status of :class:`~torchannels.client_publish.PublishRefused`.

A publish changes state, and the subscribe URL's authentication may be a
cookie, so a request from a page of another origin is refused unless that
origin is allowed (``Settings.allowed_origins``), and the body must be
JSON (a plain HTML form cannot send it without a CORS preflight).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from .client_publish import PublishRefused, publish_from_client
from .protocol import dumps
from .tornado_compat import answered

if TYPE_CHECKING:
    from .handlers import ChannelMixin

#: Bytes of a publish body beyond the data's own limit (its envelope).
ENVELOPE_BYTES = 1024


def _reply(handler: ChannelMixin, status: int, body: dict[str, Any]) -> None:
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json")
    handler.set_header("Cache-Control", "no-store")
    handler.finish(dumps(body))


def _refuse(handler: ChannelMixin, refused: PublishRefused) -> None:
    if refused.retry_after is not None:
        handler.set_header("Retry-After", str(max(1, round(refused.retry_after))))
    _reply(handler, refused.status, refused.body())


def foreign_origin(handler: ChannelMixin) -> str | None:
    """The request's ``Origin`` if it is neither the page's own host nor an
    allowed origin (None: same origin, allowed, or no ``Origin`` at all)."""
    origin = handler.request.headers.get("Origin")
    if not origin or handler.cors_policy().allowed(origin) is not None:
        return None
    host = urllib.parse.urlsplit(origin).netloc.lower()
    return None if host == handler.request.host.lower() else origin


def _body(handler: ChannelMixin) -> tuple[object, object]:
    kind = handler.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise PublishRefused("bad_json", "send the publish as Content-Type: application/json")
    limit = handler.hub.settings.max_client_publish_bytes + ENVELOPE_BYTES
    if len(handler.request.body) > limit:
        raise PublishRefused("publish_too_large", f"the body is over {limit} bytes")
    try:
        body = json.loads(handler.request.body)
    except (ValueError, RecursionError):
        raise PublishRefused("bad_json", "the body is not JSON") from None
    if not isinstance(body, dict) or "channel" not in body or "data" not in body:
        raise PublishRefused("bad_json", 'the body must be {"channel": NAME, "data": {...}}')
    return body["channel"], body["data"]


async def publish_over_http(handler: ChannelMixin) -> None:
    """Answer one publish ``POST`` on ``handler``."""
    if handler._refused_while_closing():
        return
    origin = foreign_origin(handler)
    if origin is not None:
        message = f"origin {origin!r} may not publish here (not in the allowed origins)"
        _reply(handler, 403, {"error": "forbidden", "message": message})
        return
    try:
        channel, data = _body(handler)
    except PublishRefused as exc:
        _refuse(handler, exc)
        return
    client = handler.get_query_argument("client", None)
    identity = await handler.channel_identity("http", client)
    if answered(handler):
        return  # identify() answered the request itself
    known = client is not None and handler.hub.client_ids.verify(client) is not None
    user = identity.user.id if identity.user is not None else None
    key = ("c:" + identity.client) if known else ("u:" + user) if user else None
    key = key or "a:" + str(handler.request.remote_ip)
    try:
        done = await publish_from_client(
            handler.hub, identity, channel, data, handler.authorize_publish, key
        )
    except PublishRefused as exc:
        _refuse(handler, exc)
        return
    _reply(handler, 200, {"channel": done.channel, "epoch": done.epoch, "offset": done.offset})

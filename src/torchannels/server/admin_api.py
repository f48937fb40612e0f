"""The admin page's JSON routes, authorized by its session cookie, and
:func:`admin_routes`, every route of the page.

``GET /admin/api/stats`` (totals over every process), ``GET
/admin/api/channels`` (the rows of ``GET /api/channels``), ``GET
/admin/api/channels/NAME/presence`` (as ``GET /api/channels/NAME/presence``)
``POST /admin/api/publish`` (one message) and ``POST
/admin/api/disconnect`` (as ``POST /api/disconnect``); a POST needs the
``X-XSRFToken`` header. Without a session each answers 401 ``unauthorized``.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import TorChannelsError
from ..hub import Hub
from ..protocol import dumps
from ..tornado_compat import status_reason
from .admin import (
    AdminAuth,
    AdminChannelHandler,
    AdminHandler,
    AdminLoginHandler,
    AdminLogoutHandler,
    AdminPageHandler,
)
from .api import (
    PAYLOAD_TOO_LARGE,
    UNAUTHORIZED,
    ApiError,
    api_error,
    channel_name,
    json_body,
    publish_one,
)
from .channels_api import (
    list_channels,
    page_arguments,
    presence_arguments,
    read_presence,
    users_body,
)
from .control_api import (
    DISCONNECT_FIELDS,
    MAX_CONTROL_BODY,
    check_fields,
    disconnect,
    reached,
)
from .fleet import LocalCounts

#: The largest message the publish box sends.
MAX_BODY = 65536
BODY_TOO_LARGE = (
    f"the admin page publishes at most {MAX_BODY} bytes (a fixed limit, not "
    "--max-publish-bytes): publish larger messages through the API"
)


class AdminDataHandler(AdminHandler):
    """JSON in and out; 401 without a session, errors as ``{"error", "message"}``."""

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(kwargs.pop("auth"))
        self.hub: Hub = kwargs["hub"]
        self.counts: LocalCounts = kwargs["counts"]

    def prepare(self) -> None:
        if self.session_expires() is None:
            self.fail(ApiError(401, UNAUTHORIZED, "log in at /admin first"))
            return
        super().prepare()

    def reply(self, body: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(dumps(body))

    def fail(self, exc: ApiError | TorChannelsError) -> None:
        error = api_error(exc)
        self.set_status(error.status)
        self.reply({"error": error.code, "message": error.message})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        code = "xsrf" if status_code == 403 else "internal" if status_code >= 500 else "http_error"
        self.reply({"error": code, "message": status_reason(self)})


class AdminStatsHandler(AdminDataHandler):
    """``GET /admin/api/stats``: connections by transport, subscriptions and
    the counters, summed over every process, and the server time."""

    async def get(self) -> None:
        try:
            totals = await self.counts.totals()
        except TorChannelsError as exc:
            self.fail(exc)
            return
        self.reply({**totals, "time": time.time()})


class AdminChannelsHandler(AdminDataHandler):
    """``GET /admin/api/channels``: as ``GET /api/channels``."""

    async def get(self) -> None:
        try:
            prefix, after, limit = page_arguments(self)
            self.reply(await list_channels(self.hub, self.counts, prefix, after, limit))
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)


class AdminPresenceHandler(AdminDataHandler):
    """``GET /admin/api/channels/NAME/presence``: as ``GET
    /api/channels/NAME/presence``, with the channel's counts as
    ``presence``: ``{"clients": N, "users": M}``."""

    async def get(self, name: str) -> None:
        try:
            channel, after, limit = presence_arguments(self, name)
            page = await read_presence(self.hub, channel, after, limit)
            counts = {"clients": page.clients, "users": page.users}
            self.reply({**users_body(self.hub, channel, page), "presence": counts})
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)


class AdminPublishHandler(AdminDataHandler):
    """``POST /admin/api/publish`` ``{"channel": NAME, "data": {...}}``."""

    async def post(self) -> None:
        try:
            if len(self.request.body) > MAX_BODY:
                raise ApiError(413, "payload_too_large", BODY_TOO_LARGE)
            body = json_body(self.request.body)
            answer = await publish_one(
                self.hub, channel_name(body.get("channel")), body.get("data")
            )
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)
            return
        self.reply(answer)


class AdminDisconnectHandler(AdminDataHandler):
    """``POST /admin/api/disconnect`` ``{"user"|"client": ID[, "reconnect":
    bool]}``: ends those connections on every process, as ``POST
    /api/disconnect``, and answers ``{"connections", "processes", "answered"}``."""

    async def post(self) -> None:
        try:
            if len(self.request.body) > MAX_CONTROL_BODY:
                message = f"a disconnect's body is at most {MAX_CONTROL_BODY} bytes"
                raise ApiError(413, PAYLOAD_TOO_LARGE, message)
            body = json_body(self.request.body)
            check_fields(body, DISCONNECT_FIELDS)
            answer = await reached(disconnect(self.hub, body))
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)
            return
        self.reply(answer)


def admin_routes(hub: Hub, auth: AdminAuth, counts: LocalCounts) -> list[Any]:
    """The admin page's routes (added only when a password is set)."""
    mine = {"auth": auth}
    data = {"auth": auth, "hub": hub, "counts": counts}
    channels = {"auth": auth, "hub": hub}
    return [
        (r"/admin", AdminPageHandler, mine),
        (r"/admin/login", AdminLoginHandler, mine),
        (r"/admin/logout", AdminLogoutHandler, mine),
        (r"/admin/api/stats", AdminStatsHandler, data),
        (r"/admin/api/channels", AdminChannelsHandler, data),
        (r"/admin/api/channels/([^/]+)/presence", AdminPresenceHandler, data),
        (r"/admin/api/publish", AdminPublishHandler, data),
        (r"/admin/api/disconnect", AdminDisconnectHandler, data),
        (r"/admin/channels", AdminChannelHandler, channels),
        (r"/admin/channels/ws", AdminChannelHandler.websocket(), channels),
    ]

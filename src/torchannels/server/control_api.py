"""The control API: who stays connected (docs/api.md#control).

``POST /api/disconnect``, ``/api/unsubscribe`` and ``/api/revoke``, with
the API key, call the hub's ``disconnect``, ``unsubscribe`` and
``revoke``, which reach every process sharing the broker, and answer what
they reached::

    {"connections": 3, "processes": 3, "answered": 3}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from ..cors import CorsPolicy
from ..errors import TorChannelsError
from ..hub import Hub
from ..hub_control import Reach
from .api import PAYLOAD_TOO_LARGE, ApiError, ApiHandler, channel_name

#: Codes of the control calls' 400 answers (besides the API's ``bad_json``
#: and ``invalid_channel``).
UNKNOWN_FIELD = "unknown_field"  # a field the call does not take
INVALID_FIELD = "invalid_field"  # a known field of the wrong type or value

#: Most bytes a control request's body may have.
MAX_CONTROL_BODY = 4096


class ControlHandler(ApiHandler):
    """One control call: its known fields, checked, then the hub's method."""

    #: The fields the call takes.
    fields: ClassVar[frozenset[str]]

    def initialize(
        self, hub: Hub, api_key: str | None, max_body: int, cors: CorsPolicy | None = None
    ) -> None:
        super().initialize(hub, api_key, MAX_CONTROL_BODY, cors)

    def _too_large(self) -> None:
        message = f"a control request's body is at most {MAX_CONTROL_BODY} bytes"
        raise ApiError(413, PAYLOAD_TOO_LARGE, message)

    async def post(self) -> None:
        if self.refused():
            return
        try:
            body = self.body()
            unknown = sorted(set(body) - self.fields)
            if unknown:
                known = ", ".join(sorted(self.fields))
                raise ApiError(400, UNKNOWN_FIELD, f"unknown field {unknown[0]!r}: use {known}")
            try:
                reach = await self.call(body)
            except ValueError as exc:
                raise ApiError(400, INVALID_FIELD, str(exc)) from None
            answer: dict[str, Any] = {
                "connections": reach.connections,
                "processes": reach.processes,
                "answered": reach.answered,
            }
            if reach.expires is not None:
                answer["expires"] = reach.expires
            self.reply(answer)
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)

    def call(self, body: dict[str, Any]) -> Awaitable[Reach]:
        raise NotImplementedError


class DisconnectHandler(ControlHandler):
    """``POST /api/disconnect``: ``{"user"|"client": ID, "reconnect": bool}``."""

    fields = frozenset({"user", "client", "reconnect"})

    def call(self, body: dict[str, Any]) -> Awaitable[Reach]:
        disconnect: Callable[..., Awaitable[Reach]] = self.hub.disconnect
        return disconnect(body.get("user"), body.get("client"), body.get("reconnect", False))


class UnsubscribeHandler(ControlHandler):
    """``POST /api/unsubscribe``: ``{"user"|"client": ID, "channel": NAME}``."""

    fields = frozenset({"user", "client", "channel"})

    def call(self, body: dict[str, Any]) -> Awaitable[Reach]:
        channel = channel_name(body.get("channel"))
        unsubscribe: Callable[..., Awaitable[Reach]] = self.hub.unsubscribe
        return unsubscribe(channel, body.get("user"), body.get("client"))


class RevokeHandler(ControlHandler):
    """``POST /api/revoke``: ``{"user", "before"[, "expires"]}`` or ``{"jti", "expires"}``."""

    fields = frozenset({"user", "before", "jti", "expires"})

    def call(self, body: dict[str, Any]) -> Awaitable[Reach]:
        revoke: Callable[..., Awaitable[Reach]] = self.hub.revoke
        return revoke(body.get("user"), body.get("before"), body.get("jti"), body.get("expires"))

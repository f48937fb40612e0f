"""The standalone server's subscribe URL (``/channels``, ``/channels/ws``):
who may read and publish, by token, anonymous pattern or backend hook.

A request's :class:`~.grants.Grant` comes from its token (the ``token``
query parameter, or ``Authorization: Bearer``), or, without a token, from
the connect hook (``--proxy-connect``) when one is configured. A channel is
readable when an anonymous pattern covers it, the grant's channels do, or
the subscribe hook (``--proxy-subscribe``) allows it; personal channels
(``user_limited``) only by their named users. Client publishes follow the
channel's ``publish`` option; ``"proxy"`` asks the publish hook
(``--proxy-publish``), which may replace the data.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Mapping
from typing import Any

from ..errors import FORBIDDEN, PUBLISH_FORBIDDEN, AccessDenied
from ..handlers import ChannelMixin, refuse_unless_named
from ..identity import Identity, User
from ..patterns import ChannelPatterns
from ..session import Subscription
from ..tokens import Claims, TokenError, TokenVerifier
from .grants import Grant
from .proxy import ProxyClient
from .proxy_errors import ProxyFailure
from .proxy_hooks import (
    connect_body,
    parse_connect,
    parse_publish,
    parse_subscribe,
    pick_headers,
    publish_body,
    subscribe_body,
)

TOKEN_REQUIRED = "token_required"
NO_TOKEN_SECRET = (
    "this server accepts no tokens: start it with --token-secret "
    "(or TORCHANNELS_TOKEN_SECRET) set to the secret your backend signs tokens with, "
    "--token-public-key or --token-jwks-url"
)


class ServerChannelHandler(ChannelMixin):
    """Subscriptions and client publishes authorized by tokens, anonymous
    patterns and backend hooks (the module docstring)."""

    def initialize(self, **kwargs: Any) -> None:
        self.tokens: TokenVerifier | None = kwargs.pop("tokens")
        self.anonymous: ChannelPatterns = kwargs.pop("anonymous")
        self.hooks: Mapping[str, ProxyClient] = kwargs.pop("hooks", {})
        self.hook_headers: tuple[str, ...] = kwargs.pop("hook_headers", ())
        super().initialize(**kwargs)

    #: The connect hook's answer for this request (None: not asked).
    _connected: Grant | AccessDenied | None = None

    def _token(self) -> str | None:
        token = self.get_query_argument("token", None)
        if token:
            return token
        auth = self.request.headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    def claims(self) -> Claims | TokenError | None:
        """The verified claims of this request's token (cached), the error
        that refused it, or None when there is no token."""
        if not hasattr(self, "_claims"):
            token = self._token()
            result: Claims | TokenError | None = None
            if token is not None:
                if self.tokens is None:
                    result = TokenError("token_unsupported", NO_TOKEN_SECRET)
                else:
                    try:
                        result = self.tokens.verify(token, now=time.time())
                    except TokenError as exc:
                        result = exc
            self._claims = result
        return self._claims

    def grant(self) -> Grant | AccessDenied | None:
        """What authorizes this request: its token's claims, else the
        connect hook's answer; AccessDenied when that refused it; None
        when there is neither."""
        claims = self.claims()
        if isinstance(claims, TokenError):
            return AccessDenied(claims.code, str(claims))
        if isinstance(claims, Claims):
            return Grant.of_claims(claims)
        return self._connected

    def _valid_grant(self, channel: str) -> Grant:
        """This request's unexpired grant; AccessDenied with the code otherwise."""
        grant = self.grant()
        if grant is None:
            raise AccessDenied(TOKEN_REQUIRED, self._token_required(channel))
        if isinstance(grant, AccessDenied):
            raise grant
        if grant.expires is not None and grant.expires <= time.time():
            raise AccessDenied("token_expired", "the subscription token has expired")
        return grant

    def _token_required(self, channel: str) -> str:
        if self.tokens is None:
            return (
                f"{channel!r} is not anonymous, and this server checks no tokens: start it with "
                "--token-secret (or TORCHANNELS_TOKEN_SECRET), --token-public-key or "
                "--token-jwks-url and subscribe with a token, or make the channel anonymous "
                "with --anonymous"
            )
        return f"{channel!r} needs a subscription token (the token query parameter)"

    #: user_limited is checked in can_access, after the token, so that a
    #: missing or expired token is named as such rather than ``forbidden``.
    user_limited_applies = False

    def can_access(self, sub: Subscription) -> bool | Awaitable[bool]:
        personal = self.hub.channel_options.users_of(sub.channel) is not None
        if self.anonymous.matches(sub.channel) and not personal:
            return True
        if "subscribe" in self.hooks and not personal and self.grant() is None:
            return self._ask_subscribe(sub)  # no token, no connect answer: the backend says
        grant = self._valid_grant(sub.channel)
        if personal:  # its named users need no channels claim; no one else reads it
            refuse_unless_named(self.hub, sub.channel, sub.identity)
            return True
        if grant.channels.matches(sub.channel):
            return True
        if "subscribe" in self.hooks:
            return self._ask_subscribe(sub)
        raise AccessDenied(FORBIDDEN, f"the token does not allow {sub.channel!r}")

    async def _ask_subscribe(self, sub: Subscription) -> bool:
        body = subscribe_body(sub.client or "", sub.user, sub.channel, sub.info)
        try:
            await self.hooks["subscribe"].call(body, parse_subscribe)
        except ProxyFailure as exc:
            raise AccessDenied(exc.code, exc.message) from None
        return True

    def can_publish(self, sub: Subscription, data: dict[str, Any]) -> bool | Awaitable[bool]:
        """The channel's ``publish`` option: ``"token"`` asks the grant's
        ``publish`` patterns; ``"subscribers"`` (and none) as in the library;
        ``"proxy"`` is :meth:`authorize_publish`'s."""
        if self.hub.channel_options.get(sub.channel).publish == "token":
            if not self._valid_grant(sub.channel).publish.matches(sub.channel):
                raise AccessDenied(
                    PUBLISH_FORBIDDEN, f"the token does not allow publishing to {sub.channel!r}"
                )
            return True
        return super().can_publish(sub, data)

    async def authorize_publish(self, channel: str, data: dict[str, Any]) -> dict[str, Any]:
        if self.hub.channel_options.get(channel).publish != "proxy":
            return await super().authorize_publish(channel, data)
        hook = self.hooks.get("publish")
        if hook is None:
            message = (
                f"{channel!r} asks the publish hook, and this server has none (--proxy-publish)"
            )
            raise AccessDenied(PUBLISH_FORBIDDEN, message)
        identity = self._channel_identity
        user = identity.user.id if identity is not None and identity.user is not None else None
        client = identity.client if identity is not None else ""
        try:
            replacement = await hook.call(publish_body(client, user, channel, data), parse_publish)
        except ProxyFailure as exc:
            raise AccessDenied(exc.code, exc.message) from None
        return data if replacement is None else replacement

    async def identify(self) -> User | None:
        """The token's ``sub`` (and ``info``); no token or no ``sub``: anonymous
        (the connect hook, asked in :meth:`channel_identity`, may say more).
        Asked first, so a token naming a new JWKS ``kid`` fetches the keys here."""
        token = self._token()
        if token is not None and self.tokens is not None and not hasattr(self, "_claims"):
            await self.tokens.prepare(token)
        claims = self.claims()
        if isinstance(claims, Claims) and claims.subject:
            return User(claims.subject, claims.info)
        return None

    async def channel_identity(self, transport: str, client: str | None) -> Identity:
        """As the library's; a request without a token asks the connect hook
        (when configured) who it is, with its cookies and allowed headers."""
        identity = await super().channel_identity(transport, client)
        if "connect" not in self.hooks or self._token() is not None:
            return identity
        cookies = {name: morsel.value for name, morsel in self.request.cookies.items()}
        headers = pick_headers(self.request.headers, self.hook_headers)
        body = connect_body(identity.client, transport, cookies, headers)
        try:
            result = await self.hooks["connect"].call(body, parse_connect)
        except AccessDenied as exc:  # the backend's own refusal
            self._connected = exc
            return identity
        except ProxyFailure as exc:
            self._connected = AccessDenied(exc.code, exc.message)
            return identity
        grant = self._connected = Grant.of_connect(result, time.time())
        user = User(grant.user, grant.info) if grant.user else None
        identity = dataclasses.replace(identity, user=user, issued=grant.issued)
        self._channel_identity = identity
        return identity

    def credential(self) -> tuple[float | None, str | None]:
        claims = self.claims()
        return (claims.issued, claims.token_id) if isinstance(claims, Claims) else (None, None)

    def subscription_expires(self) -> float | None:
        grant = self.grant()
        return grant.expires if isinstance(grant, Grant) else None

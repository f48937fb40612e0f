"""``ChannelMixin``: the seed's Tornado handler API.

>>> import tornado.web
>>> from torchannels import ChannelMixin
>>> class ChannelHandler(ChannelMixin, tornado.web.RequestHandler):
...     def can_access(self, sub):
...         return sub.channel.startswith("public:")
>>> app = tornado.web.Application([(r"/channels", ChannelHandler)])
"""

from __future__ import annotations

import inspect
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar

from tornado.web import HTTPError, RequestHandler
from tornado.websocket import WebSocketHandler

from .channel import Channel
from .cors import CorsPolicy
from .errors import (
    BAD_PARAMETER,
    FORBIDDEN,
    PUBLISH_FORBIDDEN,
    SHUTTING_DOWN,
    AccessDenied,
    BadRequest,
)
from .forwarded import apply_forwarded, forwarded_of, log_refused_origin
from .http_publish import publish_over_http
from .hub import Hub, default_hub
from .identity import POLLING, Identity, User, check_info, new_client_id
from .presence_reads import read_page
from .protocol import dumps
from .request import parse_request
from .session import Subscription, access_refusal
from .tornado_compat import answered
from .transports import TRANSPORT_CLASSES, Transport
from .transports.base import BROKER_UNAVAILABLE, refuse
from .transports.connection import log_broker_failure
from .transports.websocket import ChannelSocketMixin

__all__ = ["ChannelMixin", "Subscription"]

log = logging.getLogger("torchannels.handlers")


class _ProcessHub:
    """``ChannelMixin.hub`` until a class or route names one: the process hub."""

    def __get__(self, handler: object, owner: type | None = None) -> Hub:
        return default_hub()


class ChannelMixin(RequestHandler):
    """Serves channels on one URL; mix it in before your own base handler.

    Subclass hooks:

    - :meth:`can_access` decides who may read a channel (default: anyone).
    - :meth:`cors_policy` decides which other origins may read the HTTP
      transports (default: ``Settings.allowed_origins``). A subclass that
      overrides ``initialize`` or ``set_default_headers`` calls ``super()``,
      or its answers lose their CORS headers.

    Class attributes:

    - ``hub``: the :class:`~torchannels.Hub` to serve and publish to; the
      process hub (in-memory broker) unless a subclass sets one. A route may
      pass ``hub=`` to serve another one on that route.
    - ``transports``: the transports this handler offers, by name.
    """

    # Reads as the process hub until a subclass, or a route's ``hub=``, sets it.
    hub: Hub = _ProcessHub()  # type: ignore[assignment]
    transports: ClassVar[Mapping[str, type[Transport]]] = TRANSPORT_CLASSES

    _channel_transport: Transport | None = None
    _channel_identity: Identity | None = None
    # Class defaults, not ``vars(self)`` lookups: asking an instance for its
    # ``__dict__`` makes Python build one, a dict more per connection.
    _cors_ready = False
    #: False: ``user_limited`` channel options do not restrict this handler
    #: (the admin tail); ``can_access`` alone decides.
    user_limited_applies: ClassVar[bool] = True
    _websocket_class: ClassVar[type[RequestHandler] | None] = None

    def initialize(self, **kwargs: Any) -> None:
        """Accepts ``hub=``; other keyword arguments go to the next class.

        With ``Settings.trusted_proxies``, a request from one of them gets
        the client's address, scheme and host its forwarding headers give
        (``request.remote_ip``, ``.protocol``, ``.host``)."""
        hub = kwargs.pop("hub", None)
        if hub is not None:
            self.hub = hub
        apply_forwarded(self.request, self.hub.settings.proxies)
        super().initialize(**kwargs)
        self._cors_ready = True
        self.set_cors_headers()

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # Also after an error clears the headers; not before initialize()
        # has named the hub (whose settings hold the origins).
        if self._cors_ready:
            self.set_cors_headers()

    def cors_policy(self) -> CorsPolicy:
        """Override to change who may read this URL from another origin.

        The default lets ``Settings.allowed_origins`` read the HTTP
        transports and publish with ``POST`` (``Authorization``,
        ``Last-Event-ID`` and ``Content-Type`` allowed in requests), with
        credentials when ``Settings.cors_credentials``.
        """
        settings = self.hub.settings
        return CorsPolicy(
            settings.allowed_origins,
            credentials=settings.cors_credentials,
            methods=("GET", "POST"),
            headers=("Authorization", "Last-Event-ID", "Content-Type"),
        )

    def set_cors_headers(self) -> None:
        """The CORS headers of this request's answer (torchannels.cors)."""
        self.cors_policy().apply(self)

    def options(self, *args: Any, **kwargs: Any) -> None:
        """A CORS preflight: the browser asks before a request with headers."""
        self.cors_policy().preflight(self)

    @classmethod
    def get_channel(cls, name: str) -> Channel:
        """The seed API: ``ChannelHandler.get_channel(name).send({...})``.

        Publishes to the class's ``hub``. A hub given only as a route's
        ``hub=`` argument is not seen here: publish to it with
        ``hub.channel(name)`` instead, or set the class attribute.
        """
        return cls.hub.channel(name)

    @classmethod
    def websocket(cls) -> type[RequestHandler]:
        """The WebSocket handler class for this handler: one extra route line.

        >>> import tornado.web
        >>> from torchannels import ChannelMixin
        >>> class ChannelHandler(ChannelMixin, tornado.web.RequestHandler):
        ...     pass
        >>> app = tornado.web.Application([
        ...     (r"/channels", ChannelHandler),
        ...     (r"/channels/ws", ChannelHandler.websocket()),
        ... ])

        The class is a subclass of both the WebSocket transport and ``cls``,
        so ``can_access``, ``check_origin``, ``get_current_user`` and
        ``prepare`` are this handler's own, and ``super()`` calls in them
        keep working.
        """
        made = cls.__dict__.get("_websocket_class")
        if made is None:
            # Tornado's WebSocketHandler precedes ``cls`` in the new class's
            # MRO; name the app's check_origin so that it is the one used.
            body = {"check_origin": cls.check_origin}
            made = type(f"{cls.__name__}WebSocket", (ChannelSocketMixin, cls), body)
            cls._websocket_class = made
        return made

    def check_origin(self, origin: str) -> bool:
        """Override to decide which page origins may open a WebSocket.

        The default allows the page's own origin and
        ``Settings.allowed_origins``. Only asked on the WebSocket route, when
        Tornado found that ``Origin`` does not match the ``Host`` header.
        The page's own origin is the host the client asked for: behind a
        trusted proxy (``Settings.trusted_proxies``) the forwarded host.
        """
        if origin.rstrip("/") in self.hub.settings.allowed_origins:
            return True
        # Tornado compared Origin with the Host header, which behind a proxy
        # may name the upstream (nginx's default) instead of the page's host.
        forwarded = forwarded_of(self.request)
        host = forwarded.host if forwarded is not None else None
        if host is not None and urllib.parse.urlsplit(origin).netloc.lower() == host.lower():
            return True
        if WebSocketHandler.check_origin(self, origin):  # type: ignore[arg-type]
            return True
        log_refused_origin(origin, self.request)
        return False

    def can_access(self, sub: Subscription) -> bool | Awaitable[bool]:
        """Override to restrict who may read ``sub.channel``.

        Asked for every channel on every subscribe and resume, on every
        transport. May be a coroutine. Returning False (or raising
        ``tornado.web.HTTPError``) denies that channel only: the client gets
        an ``error`` frame for it and the other channels are still served.
        """
        return True

    def can_publish(self, sub: Subscription, data: dict[str, Any]) -> bool | Awaitable[bool]:
        """Override to decide whether this client may publish ``data`` to
        ``sub.channel`` (a client publish: the WebSocket ``publish`` command
        or a ``POST`` to this URL). May be a coroutine, and may raise
        ``AccessDenied`` to refuse with a code of its own.

        The default follows the channel's ``publish`` option: with
        ``"subscribers"`` a client may publish where it may read (the
        checks of a subscribe, ``can_access`` included); otherwise nobody
        may. What is stored gets ``sender`` (``{"user", "client"}``)."""
        if self.hub.channel_options.get(sub.channel).publish == "subscribers":
            return self._authorize_channel(sub.channel)
        return False

    async def authorize_publish(self, channel: str, data: dict[str, Any]) -> dict[str, Any]:
        """The data to publish to ``channel`` (``data``, or what replaces it)
        if this client may, else ``AccessDenied`` (``publish_forbidden``, or
        the code ``can_publish`` raised). Any other exception is logged and
        denies."""
        denied = await access_refusal(
            lambda c: self.can_publish(Subscription(c, self, self._channel_identity), data),
            channel,
        )
        if denied is None:
            return data
        if denied.code == FORBIDDEN:  # a plain False, not a code of the app's own
            raise AccessDenied(PUBLISH_FORBIDDEN, f"publishing to {channel!r} is not allowed")
        raise denied

    async def post(self, *args: Any, **kwargs: Any) -> None:
        """A client publish over HTTP (docs/protocol.md#publishing)."""
        await publish_over_http(self)

    def identify(self) -> User | Awaitable[User | None] | None:
        """Override to say who the connection's user is: a
        :class:`~torchannels.User` (an id and an optional info object of at
        most 1 KiB of JSON), or None for an anonymous connection. May be a
        coroutine. Asked once per request (per WebSocket), before
        ``can_access``, which sees the answer as ``sub.user``/``sub.info``.

        The default: None when ``self.current_user`` is None, else
        ``User(str(self.current_user))``. Anonymous connections count as
        clients in presence, never as users.
        """
        user = self.current_user
        return None if user is None else User(str(user))

    async def channel_identity(self, transport: str, client: str | None) -> Identity:
        """This request's :class:`~torchannels.identity.Identity`: the user
        :meth:`identify` gives, and the client id ``client`` (a signed id
        from an earlier poll answer) names when it verifies, else a new one."""
        try:
            user = self.identify()
            if inspect.isawaitable(user):
                user = await user
            if user is not None and not isinstance(user, User):
                raise TypeError(f"identify() must return a User or None, not {user!r}")
            if user is not None:
                check_info(user.info)
                if not isinstance(user.id, str) or not user.id:
                    raise ValueError("a User's id must be a non-empty string")
        except Exception:
            log.exception("identify() failed; the connection is anonymous")
            user = None
        known = self.hub.client_ids.verify(client) if client else None
        issued, token_id = self.credential()
        if known is None:
            identity = Identity(new_client_id(), user, transport, time.time(), issued, token_id)
        else:
            identity = Identity(known[0], user, transport, known[1], issued, token_id)
        self._channel_identity = identity
        return identity

    def credential(self) -> tuple[float | None, str | None]:
        """Override to say when the credential behind this request was
        issued and its id (a token's ``iat`` and ``jti``), which
        ``hub.revoke`` matches: ``(None, None)`` by default, and a user
        revocation then refuses every connection of its user until it
        expires. The standalone server answers from the token."""
        return None, None

    def subscription_expires(self) -> float | None:
        """Override to end live connections at a Unix time (for example when
        the token that authorized them expires); default: never. The client
        gets ``reconnect`` with reason ``token_expired``."""
        return None

    def check_xsrf_cookie(self) -> None:
        """Subscriptions only read; XSRF checks do not apply."""

    def _authorize_channel(self, channel: str) -> bool | Awaitable[bool]:
        """:meth:`can_access` for ``channel``, with ``HTTPError`` as a denial.
        A ``user_limited`` channel is refused (``forbidden``) to every
        connection but its named users' before ``can_access`` is asked."""
        identity = self._channel_identity
        refused = self.hub.control.refusal(identity)
        if refused is not None:
            raise refused
        if self.user_limited_applies:
            refuse_unless_named(self.hub, channel, identity)
        try:
            verdict = self.can_access(Subscription(channel, self, self._channel_identity))
        except HTTPError:
            return False
        return _denying_http_errors(verdict) if inspect.isawaitable(verdict) else verdict

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self._refused_while_closing():
            return
        if "presence" in self.request.query_arguments:
            await self._read_presence()
            return
        hub = self.hub
        try:
            request = parse_request(
                self.request.query_arguments,
                len(self.request.query),
                self.request.headers.get("Last-Event-ID"),
                hub.settings,
                self.transports,
            )
        except BadRequest as exc:
            refuse(self, 400, exc.code, exc.message)
            return
        polling = request.transport in POLLING
        identity = await self.channel_identity(
            request.transport, request.client if polling else None
        )
        if answered(self):
            return  # identify() answered the request itself
        transport = self.transports[request.transport](
            self,
            hub,
            request,
            self._authorize_channel,
            self.subscription_expires(),
            identity,
        )
        self._channel_transport = transport
        await transport.run()

    async def _read_presence(self) -> None:
        """``GET URL?presence=C[&after=CURSOR][&limit=N]``: one page of a
        channel's members, for a client that may read the channel."""
        args = self.request.query_arguments
        try:
            for name in ("presence", "after", "limit"):
                if len(args.get(name, [])) > 1:
                    raise BadRequest(BAD_PARAMETER, f"parameter {name!r} given more than once")
            channel = self.get_query_argument("presence")
            after = self.get_query_argument("after", None)
            limit = self.get_query_argument("limit", None)
            await self.channel_identity("poll", None)
            body = await read_page(
                self.hub, self._authorize_channel, channel, after, limit, query=True
            )
        except BadRequest as exc:
            refuse(self, 400, exc.code, exc.message)
            return
        except AccessDenied as exc:
            refuse(self, 403, exc.code, exc.message)
            return
        except HTTPError:
            refuse(self, 400, BAD_PARAMETER, "query parameters must be UTF-8")
            return
        except Exception as exc:
            log_broker_failure(exc)
            refuse(self, 503, BROKER_UNAVAILABLE, "presence could not be read; retry shortly")
            return
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(dumps(body))

    def _refused_while_closing(self) -> bool:
        """Answer 503 ``shutting_down`` if the hub is shutting down; True if so."""
        if not self.hub.closing:
            return False
        refuse(self, 503, SHUTTING_DOWN, "the server is shutting down; retry shortly")
        return True

    def on_connection_close(self) -> None:
        transport = self._channel_transport
        if transport is not None and not transport.closed:
            transport.on_connection_close()
        super().on_connection_close()


def refuse_unless_named(hub: Hub, channel: str, identity: Identity | None) -> None:
    """Raise ``AccessDenied`` (``forbidden``) if ``channel`` is ``user_limited``
    and ``identity`` is anonymous or not one of the users its name lists."""
    users = hub.channel_options.users_of(channel)
    if users is None:
        return
    user = identity.user if identity is not None else None
    if user is None:
        raise AccessDenied(FORBIDDEN, f"{channel!r} is a personal channel: identify as its user")
    if user.id not in users:
        raise AccessDenied(FORBIDDEN, f"{channel!r} is a personal channel of other users")


async def _denying_http_errors(verdict: Awaitable[bool]) -> bool:
    try:
        return await verdict
    except HTTPError:
        return False

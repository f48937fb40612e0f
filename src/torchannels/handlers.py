"""``ChannelMixin``: the seed's Tornado handler API.

>>> import tornado.web
>>> from torchannels import ChannelMixin
>>> class ChannelHandler(ChannelMixin, tornado.web.RequestHandler):
...     def can_access(self, sub):
...         return sub.channel.startswith("public:")
>>> app = tornado.web.Application([(r"/channels", ChannelHandler)])
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar

from tornado.web import RequestHandler

from .channel import Channel
from .errors import BadRequest
from .hub import Hub, default_hub
from .protocol import dumps
from .request import parse_request
from .transports import TRANSPORTS, Transport

log = logging.getLogger("torchannels.handler")


class Subscription:
    """What ``can_access`` is asked about: one channel, for one request.

    ``str(sub)`` is the channel name, as the seed's code expected; the
    handler gives the current user, cookies and arguments.
    """

    __slots__ = ("channel", "handler")

    def __init__(self, channel: str, handler: RequestHandler) -> None:
        self.channel = channel
        self.handler = handler

    @property
    def name(self) -> str:
        return self.channel

    def __str__(self) -> str:
        return self.channel

    def __repr__(self) -> str:
        return f"<Subscription {self.channel}>"


class ChannelMixin(RequestHandler):
    """Serves channels on one URL; mix it in before your own base handler.

    Subclass hooks:

    - :meth:`can_access` decides who may read a channel (default: anyone).

    Class attributes:

    - ``hub``: the :class:`~torchannels.Hub` to serve (default: the process
      hub with the in-memory broker). A route may pass ``hub=`` instead.
    - ``transports``: the transports this handler offers, by name.
    """

    hub: ClassVar[Hub | None] = None
    transports: ClassVar[Mapping[str, type[Transport]]] = TRANSPORTS

    _channel_transport: Transport | None = None
    _websocket_class: ClassVar[type[RequestHandler] | None] = None

    def initialize(self, **kwargs: Any) -> None:
        """Accepts ``hub=``; other keyword arguments go to the next class."""
        hub = kwargs.pop("hub", None)
        if hub is not None:
            self._hub = hub
        super().initialize(**kwargs)

    @classmethod
    def channels_hub(cls) -> Hub:
        """The hub this handler class publishes to and serves."""
        return cls.hub if cls.hub is not None else default_hub()

    @classmethod
    def get_channel(cls, name: str) -> Channel:
        """The seed API: ``ChannelHandler.get_channel(name).send({...})``.

        Publishes to the class's ``hub`` (or the process hub). A hub given
        only as a route's ``hub=`` argument is not seen here: publish to it
        with ``hub.channel(name)`` instead, or set the class attribute.
        """
        return cls.channels_hub().channel(name)

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
        so ``can_access``, ``get_current_user`` and ``prepare`` are this
        handler's own, and ``super()`` calls in them keep working.
        """
        made = cls.__dict__.get("_websocket_class")
        if made is None:
            from .transports.websocket import ChannelSocketMixin

            made = type(f"{cls.__name__}WebSocket", (ChannelSocketMixin, cls), {})
            cls._websocket_class = made
        return made

    @property
    def channel_hub(self) -> Hub:
        hub: Hub | None = getattr(self, "_hub", None)
        return hub if hub is not None else self.channels_hub()

    def can_access(self, sub: Subscription) -> bool | Awaitable[bool]:
        """Override to restrict who may read ``sub.channel``.

        Asked for every channel on every subscribe and resume, on every
        transport. May be a coroutine. Returning False (or raising
        ``tornado.web.HTTPError``) denies that channel only: the client gets
        an ``error`` frame for it and the other channels are still served.
        """
        return True

    def subscription_expires(self) -> float | None:
        """Override to end live connections at a Unix time (for example when
        the token that authorized them expires); default: never. The client
        gets ``reconnect`` with reason ``token_expired``."""
        return None

    def check_xsrf_cookie(self) -> None:
        """Subscriptions only read; XSRF checks do not apply."""

    async def get(self, *args: Any, **kwargs: Any) -> None:
        hub = self.channel_hub
        if hub.closing:
            self._refuse(503, "shutting_down", "the server is shutting down; retry shortly")
            return
        try:
            request = parse_request(
                self.request.query_arguments,
                len(self.request.query),
                self.request.headers.get("Last-Event-ID"),
                hub.settings,
                self.transports,
            )
        except BadRequest as exc:
            self._refuse(400, exc.code, exc.message)
            return
        transport = self.transports[request.transport](
            self,
            hub,
            request,
            lambda channel: self.can_access(Subscription(channel, self)),
            self.subscription_expires(),
        )
        self._channel_transport = transport
        await transport.run()

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(dumps({"error": code, "message": message}))

    def on_connection_close(self) -> None:
        transport = self._channel_transport
        if transport is not None and not transport.closed:
            transport.on_connection_close()
        super().on_connection_close()

"""The standalone server's Tornado application: subscriptions, API, demo, health.

``make_app(config)`` builds everything ``torchannels serve`` serves:

====================  ==========================================================
``/channels``         subscriptions on poll, long-poll, stream and SSE
``/channels/ws``      subscriptions on WebSocket
``/torchannels/*``    the browser client (torchannel.js, .mjs, .d.ts)
``/api/...``          the publish API (docs/api.md, ``/api/openapi.json``)
``/health``           200 ``{"status": "ok"}``; 503 while shutting down or
                      while the broker does not answer a PING (health.py)
``/metrics``          Prometheus metrics, with ``--metrics``
``/admin``            the admin page, with an admin password or API key
``/``                 the demo page, unless ``--no-demo``
====================  ==========================================================

With ``--internal-port``, ``/api/...``, ``/health``, ``/metrics`` and
``/admin`` are served by a second application on that port only (404 on
the public one), outside the public port's connection limits.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import tornado.web
from tornado.httputil import HTTPServerRequest
from tornado.log import access_log

from ..assets import static_route
from ..brokers import Broker, MemoryBroker
from ..cors import CorsPolicy
from ..forwarded import TrustedProxies, apply_forwarded
from ..hub import Hub
from ..patterns import ChannelPatterns
from ..redaction import redact
from .admin import AdminAuth
from .admin_api import admin_routes
from .api import PublishHandler, StateHandler
from .channels_api import ChannelInfoHandler, ChannelListHandler, ChannelPresenceHandler
from .config import ServerConfig
from .control_api import DisconnectHandler, RevokeHandler, UnsubscribeHandler
from .demo import FaviconHandler, demo_routes
from .fleet import LocalCounts, make_counts
from .health import BrokerCheck, HealthHandler
from .listener import BUSY_PER_IP, admit_request
from .proxy import proxy_clients
from .subscribe import ServerChannelHandler


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log line, with ``token=`` values redacted (however
    the name is URL-encoded): a token in a URL is a live credential and must
    not end up in log files. ``serve`` also filters every other log line."""
    if isinstance(handler, TooManyFromAddressHandler):
        return  # one line per 10 s says how many (address_limit.py), not one each
    status = handler.get_status()
    if status < 400:
        log = access_log.info
    elif status < 500:
        log = access_log.warning
    else:
        log = access_log.error
    request = handler.request
    uri = redact(request.uri or "")
    log("%d %s %s (%s) %.2fms", status, request.method, uri, request.remote_ip,
        1000.0 * request.request_time())  # fmt: skip


class OpenApiHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        with open(os.path.join(os.path.dirname(__file__), "openapi.json"), "rb") as f:
            self.finish(f.read())


class HubApplication(tornado.web.Application):
    """The server's application: every request from a trusted proxy gets the
    client's address, scheme and host before any handler sees it, so the
    access log, the API and the origin checks all see the client; then it
    counts against that client's connections (``--max-connections-per-ip``)."""

    def __init__(self, *args: Any, proxies: TrustedProxies, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proxies = proxies

    def find_handler(
        self, request: HTTPServerRequest, **kwargs: Any
    ) -> tornado.web._HandlerDelegate:
        apply_forwarded(request, self.proxies)
        if not admit_request(request):
            return self.get_handler_delegate(request, TooManyFromAddressHandler)
        return super().find_handler(request, **kwargs)


class TooManyFromAddressHandler(tornado.web.RequestHandler):
    """The answer to a request a trusted proxy forwarded for a client that
    already has ``--max-connections-per-ip`` open: the bytes a connection
    over the limit gets at accept, on a connection that stays open."""

    def prepare(self) -> None:
        self.set_status(503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Retry-After", "1")
        self.finish(BUSY_PER_IP.partition(b"\r\n\r\n")[2])


def make_broker(config: ServerConfig) -> Broker:
    """The broker ``config.broker`` names: in memory, or Redis (lazily imported)."""
    window = config.idempotency_window
    if config.broker == "memory":
        return MemoryBroker(
            config.history(), channel_limit=config.channel_limit, idempotency_window=window
        )
    from ..brokers.redis import RedisBroker

    return RedisBroker.from_url(
        config.broker,
        prefix=config.redis_prefix,
        history=config.history(),
        idempotency_window=window,
    )


def make_hub(config: ServerConfig) -> Hub:
    """A hub on ``config``'s broker, with its ``[channels."PATTERN"]`` options,
    its webhooks and its outbox consumer (started at once in a running loop)."""
    hub = Hub(make_broker(config), config.settings())
    for pattern, options in config.channels:
        hub.configure_channels(pattern, **dataclasses.asdict(options))
    if config.webhook_url is not None:
        hub.enable_webhooks(
            config.webhook_url,
            config.webhook_secret or "",
            config.webhook_events,
            retry_for=config.webhook_retry_for,
            timeout=config.webhook_timeout,
            queue_max=config.webhook_queue_max,
        )
    if config.outbox is not None:
        hub.consume_outbox(
            config.outbox,
            table=config.outbox_table,
            batch=config.outbox_batch,
            retention=config.outbox_retention,
        )
    return hub


def make_app(
    config: ServerConfig, hub: Hub | None = None, *, worker: int = 0
) -> tornado.web.Application:
    """The public application for ``config`` (with a new hub unless given):
    everything, unless ``--internal-port`` moves the operators' routes to
    the internal one (:func:`make_apps`)."""
    return make_apps(config, hub, worker=worker)[0]


def make_apps(
    config: ServerConfig, hub: Hub | None = None, *, worker: int = 0
) -> tuple[tornado.web.Application, tornado.web.Application | None]:
    """The public application and, with ``--internal-port``, the internal
    one, which alone then serves ``/health``, ``/metrics``, ``/admin`` and
    the publish API (``/api/...``); ``worker`` is this process's number
    among ``--workers``. Both share the hub."""
    hub = hub or make_hub(config)
    counts = make_counts(hub)  # started by serve(): run.py
    clients = _client_routes(config, hub)
    operators = _operator_routes(config, hub, counts, worker)
    if config.internal_port is None:
        return _application(config, hub, counts, clients + operators), None
    shared = [static_route(), (r"/favicon.ico", FaviconHandler)]  # the admin page's too
    public = _application(config, hub, counts, clients + shared)
    return public, _application(config, hub, counts, operators + shared)


def _client_routes(config: ServerConfig, hub: Hub) -> list[Any]:
    """What browsers and apps subscribe through, and the demo page."""
    hooks = config.hook_urls()
    subscribe = {
        "hub": hub,
        "tokens": config.token_verifier(),
        "anonymous": ChannelPatterns(config.anonymous),
        "hooks": proxy_clients(
            hooks,
            config.proxy_secret or "",
            timeout=config.proxy_timeout,
            max_in_flight=config.proxy_max_in_flight,
        ),
        "hook_headers": config.proxy_headers,
    }
    routes: list[Any] = [
        (r"/channels", ServerChannelHandler, subscribe),
        (r"/channels/ws", ServerChannelHandler.websocket(), subscribe),
    ]
    if config.internal_port is None:
        routes += [static_route(), (r"/favicon.ico", FaviconHandler)]
    if config.demo:
        routes += demo_routes(config, hub)
    return routes


def _operator_routes(config: ServerConfig, hub: Hub, counts: LocalCounts, worker: int) -> list[Any]:
    """The publish API, health, metrics and the admin page."""
    cors = CorsPolicy(
        config.allowed_origins,
        credentials=config.cors_credentials,
        methods=("GET", "POST"),
        headers=("Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"),
    )
    api = {"hub": hub, "api_key": config.api_key, "max_body": config.max_publish_bytes,
           "cors": cors}  # fmt: skip
    routes: list[Any] = [
        (r"/api/publish", PublishHandler, api),
        (r"/api/state", StateHandler, api),
        (r"/api/disconnect", DisconnectHandler, api),
        (r"/api/unsubscribe", UnsubscribeHandler, api),
        (r"/api/revoke", RevokeHandler, api),
        (r"/api/channels", ChannelListHandler, {**api, "counts": counts}),
        (r"/api/channels/([^/]+)", ChannelInfoHandler, {**api, "counts": counts}),
        (r"/api/channels/([^/]+)/presence", ChannelPresenceHandler, api),
        (r"/api/openapi.json", OpenApiHandler),
        (
            r"/health",
            HealthHandler,
            {"hub": hub, "check": BrokerCheck(hub.broker), "worker": worker},
        ),
    ]
    if config.metrics:
        from .metrics import MetricsHandler

        routes.append((r"/metrics", MetricsHandler, {"hub": hub}))
    admin = config.admin_secret()
    if admin is not None:
        routes += admin_routes(hub, AdminAuth(admin), counts)
    return routes


def _application(
    config: ServerConfig, hub: Hub, counts: LocalCounts, routes: list[Any]
) -> HubApplication:
    app = HubApplication(
        routes,
        proxies=hub.settings.proxies,
        # No static_path: static_route() serves the client, and Tornado's
        # static_path would claim /favicon.ico for a file of the client's folder.
        template_path=os.path.join(os.path.dirname(__file__), "templates"),
        log_function=log_request,
    )
    app.settings["torchannels_counts"] = counts
    return app

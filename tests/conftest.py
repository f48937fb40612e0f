"""Fixtures shared by the Python tests (helpers live in support.py)."""

from __future__ import annotations

import signal
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import tornado.web

from support import Framings, Server
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings
from torchannels.frames import Frame

# scripts/test-py.sh runs pytest as background jobs of a non-interactive
# shell, which start with SIGINT ignored; every process a test starts would
# inherit that, and the tests that press Ctrl-C on one (the docs' examples,
# `torchannels subscribe`, the seed app) would wait for nothing. A handled
# signal is reset to the default in a child at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def hub() -> Hub:
    return Hub(MemoryBroker(), Settings(ping_interval=0.5))


@pytest.fixture
async def make_server(hub: Hub) -> AsyncIterator[Callable[..., Server]]:
    """``make_server(handler_cls=None, hub=None)`` -> a running :class:`Server`.

    Without a handler class, serves a plain ``ChannelMixin`` handler bound to
    the fixture's hub at ``/channels``.
    """
    servers: list[Server] = []

    def make(
        handler: type[tornado.web.RequestHandler] | None = None,
        *,
        hub_: Hub | None = None,
        routes: list[Any] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Server:
        the_hub = hub_ or hub
        if handler is None:
            handler = type("ChannelHandler", (ChannelMixin,), {"hub": the_hub})
        app = tornado.web.Application([(r"/channels", handler), *(routes or [])])
        server = Server(app, the_hub, tls)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def framings(monkeypatch: pytest.MonkeyPatch) -> Framings:
    """Record :meth:`Frame.cached` calls (see :class:`support.Framings`)."""
    log = Framings()
    original = Frame.cached

    def cached(frame: Frame, key: str, build: Callable[[Frame], bytes]) -> bytes:
        def counted(f: Frame) -> bytes:
            log.builds.append((f, key))
            return build(f)

        data = original(frame, key, counted)
        log.answers.append((frame, data))
        return data

    monkeypatch.setattr(Frame, "cached", cached)
    return log

"""Shared fixtures: real Tornado servers on loopback sockets, real HTTP clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing
import tornado.web

from torchannels import ChannelMixin, Hub, MemoryBroker, Settings


class Server:
    """A running Tornado app on 127.0.0.1 with helpers to talk to it."""

    def __init__(self, app: tornado.web.Application, hub: Hub) -> None:
        self.app = app
        self.hub = hub
        sock, self.port = tornado.testing.bind_unused_port()
        self.http = tornado.httpserver.HTTPServer(app)
        self.http.add_sockets([sock])
        self.client = tornado.httpclient.AsyncHTTPClient(force_instance=True)

    def url(self, path: str = "/channels", **query: Any) -> str:
        from urllib.parse import urlencode

        qs = urlencode(query, doseq=True)
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{qs}" if qs else "")

    async def fetch(self, url: str, **kwargs: Any) -> tornado.httpclient.HTTPResponse:
        kwargs.setdefault("raise_error", False)
        kwargs.setdefault("request_timeout", 30)
        return await self.client.fetch(url, **kwargs)

    async def poll(self, transport: str = "poll", **query: Any) -> dict[str, Any]:
        """One poll/long-poll request; returns the decoded JSON document."""
        resp = await self.fetch(self.url(transport=transport, **query))
        assert resp.code == 200, resp.body
        doc: dict[str, Any] = json.loads(resp.body)
        return doc

    def stream(self, transport: str, headers: dict[str, str] | None = None, **query: Any) -> Stream:
        return Stream(self, self.url(transport=transport, **query), headers or {})

    async def close(self) -> None:
        self.client.close()
        self.http.stop()
        await self.http.close_all_connections()


class Stream:
    """A streaming GET whose chunks are collected as they arrive."""

    def __init__(self, server: Server, url: str, headers: dict[str, str]) -> None:
        self.buffer = b""
        self.headers: dict[str, str] = {}
        self._arrived = asyncio.Event()
        self._client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        self.response = asyncio.ensure_future(
            self._client.fetch(
                url,
                headers=headers,
                streaming_callback=self._on_chunk,
                header_callback=self._on_header,
                request_timeout=60,
                raise_error=False,
            )
        )

    def _on_header(self, line: str) -> None:
        if ":" in line:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def _on_chunk(self, chunk: bytes) -> None:
        self.buffer += chunk
        self._arrived.set()

    async def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 10) -> bytes:
        """Wait until ``predicate(buffer)`` holds; return the buffer."""
        async def loop() -> bytes:
            while not predicate(self.buffer):
                self._arrived.clear()
                if self.response.done():
                    if predicate(self.buffer):
                        break
                    raise AssertionError(f"stream ended first: {self.buffer!r}")
                done = asyncio.ensure_future(self._arrived.wait())
                await asyncio.wait([done, self.response], return_when=asyncio.FIRST_COMPLETED)
                done.cancel()
            return self.buffer

        return await asyncio.wait_for(loop(), timeout)

    def lines(self) -> list[dict[str, Any]]:
        """Complete NDJSON lines received so far, decoded."""
        *complete, _ = self.buffer.split(b"\n")
        return [json.loads(line) for line in complete if line]

    def close(self) -> None:
        """Drop the connection from the client side."""
        self._client.close()
        self.response.cancel()


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

    def make(handler: type[tornado.web.RequestHandler] | None = None, *, hub_: Hub | None = None,
             routes: list[Any] | None = None) -> Server:
        the_hub = hub_ or hub
        if handler is None:
            handler = type("ChannelHandler", (ChannelMixin,), {"hub": the_hub})
        app = tornado.web.Application([(r"/channels", handler), *(routes or [])])
        server = Server(app, the_hub)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def server(make_server: Callable[..., Server]) -> Server:
    return make_server()

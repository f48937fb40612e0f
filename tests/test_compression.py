"""Event streams are never gzipped, even in an app with ``compress_response=True``.

Tornado would compress every streaming response on its own (one compressor per
connection); the stream transports opt out, while poll answers may still be
compressed.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import pytest
import tornado.web

from support import STREAMING, Server, messages
from torchannels import ChannelMixin, Hub

BIG = "x" * 4096  # well over Tornado's minimum length for gzip


@pytest.fixture
async def gzip_server(hub: Hub) -> AsyncIterator[Server]:
    handler = type("ChannelHandler", (ChannelMixin,), {"hub": hub})
    app = tornado.web.Application([(r"/channels", handler)], compress_response=True)
    server = Server(app, hub)
    yield server
    await server.close()


async def test_the_app_does_gzip_a_poll_answer(gzip_server: Server) -> None:
    # The premise of the stream test: this app compresses what it may.
    gzip_server.hub.channel("A").send({"big": BIG})
    response = await gzip_server.fetch(
        gzip_server.url(transport="poll", channel="A", cursor="A=0:0"),
        headers={"Accept-Encoding": "gzip"},
        decompress_response=False,
    )
    assert response.code == 200, response.body
    assert response.headers.get("Content-Encoding") == "gzip"
    doc = json.loads(gzip.decompress(response.body))
    assert [m["big"] for m in messages(doc["frames"])] == [BIG]


@pytest.mark.parametrize("transport", STREAMING)
async def test_streams_are_never_gzipped(gzip_server: Server, transport: str) -> None:
    stream = gzip_server.stream(transport, {"Accept-Encoding": "gzip"}, channel="A")
    await stream.wait_for(lambda body: body != b"")
    assert stream.status == 200
    assert "content-encoding" not in stream.headers, stream.headers
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    for n in range(3):
        gzip_server.hub.channel("A").send({"n": n, "big": BIG})
    frames = await stream.wait_frames(lambda fs: len(messages(fs)) == 3)
    assert [(m["n"], m["big"]) for m in messages(frames)] == [(n, BIG) for n in range(3)]

"""The hub application in-process: details a process test cannot see."""

from __future__ import annotations

import logging

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing

from torchannels.server.app import make_app
from torchannels.server.config import HubConfig
from torchannels.tokens import encode_token


async def test_tokens_are_redacted_from_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    config = HubConfig(token_secret="s3cret", demo=False)
    app = make_app(config)
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    token = encode_token({"exp": 4_000_000_000, "channels": ["*"]}, "s3cret")
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        with caplog.at_level(logging.INFO, logger="tornado.access"):
            resp = await client.fetch(
                f"http://127.0.0.1:{port}/channels?transport=poll&channel=x&token={token}&a=1"
            )
        assert resp.code == 200
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert len(lines) == 1
    assert token not in lines[0] and token.split(".")[2] not in lines[0]
    assert "token=REDACTED&a=1" in lines[0] and lines[0].startswith("200 GET /channels?")

"""The hub application (server/app.py): /health of a running hub, and what
only an in-process app shows (the access log)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing

from server.processes import ServerProcess, as_json, fetch
from torchannels.server.app import make_app
from torchannels.server.config import ServerConfig
from torchannels.tokens import encode_token


async def test_tokens_are_redacted_from_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    config = ServerConfig(token_secret="s3cret", demo=False)
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


async def test_health(main_server: ServerProcess, http: Any, lives: Any) -> None:
    response = await fetch(http, main_server.base + "/health")
    body = as_json(response)
    assert response.code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert body["status"] == "ok" and isinstance(body["connections"], int)
    live = lives(main_server.url(transport="stream", channel="demo:health"))
    await live.wait(lambda fs: bool(fs))
    with_one = as_json(await fetch(http, main_server.base + "/health"))
    assert with_one["connections"] >= 1

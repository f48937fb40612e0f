"""torchannels.redaction: no credential survives into a log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing
import tornado.web

from torchannels.redaction import REDACTED, RedactingFilter, install_redaction, redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2lnbmF0dXJl"

REDACT = [
    ("/channels?token=abc", "/channels?token=REDACTED"),
    ("/channels?channel=a&token=abc&b=1", "/channels?channel=a&token=REDACTED&b=1"),
    ("/c?%74oken=abc", "/c?%74oken=REDACTED"),
    ("/c?t%6Fk%65n=abc&x=1", "/c?t%6Fk%65n=REDACTED&x=1"),
    ("/c?%2574oken=abc", "/c?%2574oken=REDACTED"),
    ("/c?TOKEN=abc", "/c?TOKEN=REDACTED"),
    ("/c?a=1&token=", "/c?a=1&token=REDACTED"),
    ("uri='/c?token=abc', version", "uri='/c?token=REDACTED', version"),
    ("/c?tokens=abc&notoken=x", "/c?tokens=abc&notoken=x"),
    (f"/c?t={JWT}", f"/c?t={REDACTED}"),
    (f"bad token {JWT}: expired", f"bad token {REDACTED}: expired"),
    ("Authorization: Bearer k3y", "Authorization: Bearer REDACTED"),
    ("nothing to hide", "nothing to hide"),
]


@pytest.mark.parametrize(("text", "expected"), REDACT)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    install_redaction(root)
    install_redaction(root)  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    try:
        yield out
    finally:
        root.removeHandler(handler)


class Boom(tornado.web.RequestHandler):
    def get(self) -> None:
        raise ValueError(f"failed on {self.request.uri}")


async def test_uncaught_exception_logs_are_redacted(captured: io.StringIO) -> None:
    app = tornado.web.Application([(r"/boom", Boom)])
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        for query in (f"token={JWT}", "%74oken=plain-secret", "a=1&token=plain-secret"):
            response = await client.fetch(
                f"http://127.0.0.1:{port}/boom?{query}", raise_error=False
            )
            assert response.code == 500
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()
    text = captured.getvalue()
    assert "Uncaught exception" in text and "ValueError: failed on /boom?" in text
    assert "plain-secret" not in text and JWT not in text and "c2lnbmF0dXJl" not in text

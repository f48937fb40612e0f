"""Hostile input against a running hub (issue 9): never a 500, never a traceback.

Each test reads the part of the hub's log written while it ran, so a
traceback logged for its requests fails it even when the answer looked fine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from server.processes import (
    KEY,
    LIMIT,
    SECRET,
    WAIT,
    ServerProcess,
    api,
    assert_error,
    fetch,
    jwt,
    outline,
    poll,
    token_for,
)

#: A token whose header segment is ``[`` x 4000: json.loads recurses too deep.
NESTED_TOKEN = base64.urlsafe_b64encode(b"[" * 4000).rstrip(b"=").decode() + ".e30.sig"


@contextmanager
def no_traceback(hub: ServerProcess) -> Iterator[None]:
    start = len(hub.log())
    yield
    written = hub.log()[start:]
    assert "Traceback" not in written and "Uncaught exception" not in written, written


async def test_deeply_nested_token_is_malformed_and_anonymous_channels_still_served(
    main_server: ServerProcess, http: Any
) -> None:
    with no_traceback(main_server):
        doc = await poll(http, main_server, ["demo:nest", "private:nest"], token=NESTED_TOKEN)
        assert outline(doc["frames"]) == [
            ("subscribed", "demo:nest"),
            ("error", "private:nest", "token_malformed"),
        ]
        header = {"Authorization": f"Bearer {NESTED_TOKEN}"}
        doc = await poll(http, main_server, ["demo:nest"], headers=header)
        assert outline(doc["frames"]) == [("subscribed", "demo:nest")]


async def test_deeply_nested_publish_body_is_bad_json(
    main_server: ServerProcess, http: Any
) -> None:
    with no_traceback(main_server):
        response = await api(http, main_server, "/api/publish", raw=b"[" * 2000)
        assert_error(response, 400, "bad_json")
        response = await api(http, main_server, "/api/state", raw=b"[" * 2000)
        assert_error(response, 400, "bad_json")


async def test_nul_byte_in_a_static_path_is_404(main_server: ServerProcess, http: Any) -> None:
    with no_traceback(main_server):
        for path in ("/torchannels/torchannel.js%00.txt", "/torchannels/%00", "/favicon.ico%00"):
            response = await fetch(http, main_server.base + path)
            assert response.code == 404, (path, response.code)
        response = await fetch(http, main_server.base + "/torchannels/torchannel.js")
        assert response.code == 200


class KeepAlive:
    """One HTTP/1.1 connection, reused request after request (as pooled clients do)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, hub: ServerProcess) -> KeepAlive:
        return cls(*await asyncio.open_connection("127.0.0.1", hub.port))

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: hub\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(head.encode() + b"\r\n" + body)

        async def read() -> tuple[int, dict[str, str], bytes]:
            lines = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
            fields = dict(line.split(": ", 1) for line in lines[1:] if line)
            fields = {k.lower(): v for k, v in fields.items()}
            data = await self.reader.readexactly(int(fields.get("content-length", 0)))
            return int(lines[0].split()[1]), fields, data

        return await asyncio.wait_for(read(), WAIT)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def test_api_refusals_keep_the_connection_or_announce_its_close(
    main_server: ServerProcess,
) -> None:
    publish = json.dumps({"channel": "demo:keep", "data": {"n": 1}}).encode()
    good = {"Authorization": f"Bearer {KEY}"}
    conn = await KeepAlive.connect(main_server)
    try:
        for refused in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
            status, fields, _ = await conn.request("POST", "/api/publish", publish, refused)
            assert status in (401, 403) and fields.get("connection") != "close", fields
            status, _, data = await conn.request("POST", "/api/publish", publish, good)
            assert status == 200, data
        status, fields, _ = await conn.request("GET", "/api/channels/demo:keep")
        assert status == 401 and fields.get("connection") != "close", fields
        status, _, data = await conn.request("GET", "/api/channels/demo:keep", headers=good)
        assert status == 200, data
        # Too large to read: refused at once, and the close is announced.
        status, fields, _ = await conn.request("POST", "/api/publish", b"x" * (LIMIT + 1), good)
        assert (status, fields.get("connection")) == (413, "close"), fields
    finally:
        await conn.aclose()


async def test_no_token_reaches_any_log_line(spawn: Any, http: Any, sockets: Any) -> None:
    hub = spawn("--token-secret", SECRET, "--api-key", KEY, "--log-level", "debug", "--no-demo")
    good = token_for("private:*")
    cases = [
        good,
        token_for("private:*", ttl=-10),  # expired
        jwt({"exp": 4e9, "channels": ["*"]}, secret="not-the-secret"),  # bad signature
        NESTED_TOKEN,  # malformed; once an uncaught exception logging the URL
    ]
    for token in cases:
        for name in ("token", "%74oken", "t%6Fken"):
            for path in ("/channels", "/nowhere", "/api/publish", "/torchannels/x%00"):
                target = f"{path}?transport=poll&channel=private:a&{name}={quote(token)}"
                await fetch(http, hub.base + target)
        await fetch(
            http, hub.url(channel="private:a"), headers={"Authorization": f"Bearer {token}"}
        )
        sock = await sockets(hub.ws_url(channel=["private:a", "demo:a"], token=token))
        await sock.wait(lambda fs: any(f["type"] in ("subscribed", "error") for f in fs))
        await sock.aclose()
    await fetch(
        http, hub.base + "/api/publish", "POST", b"{}", {"Authorization": "Bearer " + KEY + "x"}
    )
    text = hub.log()
    assert "GET /channels?" in text  # the access log was written at all
    for token in cases:
        for part in (token, *token.split(".")):
            assert len(part) < 8 or part not in text, (part, text[-3000:])
    assert KEY not in text

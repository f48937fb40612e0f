"""The hub behind a real nginx (Debian's), configured as docs/deployment.md says.

nginx runs with the guide's own file (examples/nginx/torchannels.conf, see
nginx_proxy.py), changed only where a test says so, in front of real
``torchannels serve`` processes. What each test shows is one defect of
issue 13 and its fix:

- a WebSocket through a proxy that does not pass the browser's Host is
  refused (403) unless the hub trusts the proxy's X-Forwarded-Host;
- the hub logs the client's address, not the proxy's, from trusted proxies;
- a long-poll held longer than the proxy's read timeout becomes a 504, one
  that asks for a shorter ``timeout`` is answered 200;
- a quiet stream is cut at the proxy's read timeout, one that asks for a
  shorter ``ping`` is kept alive;
- stream and SSE frames flow through nginx with its buffering off, and with
  it on thanks to the hub's ``X-Accel-Buffering: no``, gzip included.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import tornado.httpclient
import tornado.websocket

from nginx_proxy import BUFFERING_OFF, GUIDE_CONFIG, HOST_LINE, READ_TIMEOUT, ROOT, Nginx
from server.processes import KEY, WAIT, Live, ServerProcess, Socket, auth, fetch, until
from support import TEXT, read_ws_frame, upgrade

#: The hubs' longest long-poll hold: longer than the short proxy timeouts below.
LONG_HOLD = 8.0
#: gzip for the streaming types: nginx then holds output until its buffer
#: fills, unless each chunk comes flushed (proxy buffering off).
GZIP = "gzip on; gzip_types text/event-stream application/x-ndjson;"
NO_HOST_LINE = (HOST_LINE, "# no Host line: nginx sends the upstream's name")


def hub_flags(*extra: str) -> list[str]:
    return ["--port", "0", "--no-demo", "--api-key", KEY,
            "--longpoll-timeout", str(LONG_HOLD), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def trusting(log_dir: Path) -> Iterator[ServerProcess]:
    """A hub that believes the forwarding headers of 127.0.0.1 (nginx)."""
    hub = ServerProcess(log_dir, hub_flags("--trusted-proxies", "127.0.0.1"), None)
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def plain(log_dir: Path) -> Iterator[ServerProcess]:
    """A hub that trusts no proxy (the default)."""
    hub = ServerProcess(log_dir, hub_flags(), None)
    yield hub
    hub.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    """``proxy(hub, *changes)``: nginx with the guide's config in front of ``hub``."""
    started: list[Nginx] = []

    def start(hub: ServerProcess, *changes: tuple[str, str]) -> Nginx:
        nginx = Nginx(tmp_path / f"nginx-{len(started)}", hub.port, *changes)
        started.append(nginx)
        return nginx

    yield start
    for nginx in started:
        nginx.close()


class GzipLive(Live):
    """A streaming GET that accepts gzip and inflates the body as it comes."""

    def __init__(self, url: str) -> None:
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        super().__init__(url, {"Accept-Encoding": "gzip"})

    def _on_chunk(self, chunk: bytes) -> None:
        if self.headers.get("content-encoding") == "gzip":
            chunk = self._inflate.decompress(chunk)
        super()._on_chunk(chunk)


@pytest.fixture
async def gzip_lives() -> AsyncIterator[Callable[[str], GzipLive]]:
    opened: list[GzipLive] = []

    def open_live(url: str) -> GzipLive:
        live = GzipLive(url)
        opened.append(live)
        return live

    yield open_live
    for live in opened:
        await live.aclose()


def channel() -> str:
    return f"demo:proxy-{uuid.uuid4().hex[:10]}"


def subscribe_url(nginx: Nginx, transport: str, name: str, **query: Any) -> str:
    return f"{nginx.base}/channels?" + urlencode({"transport": transport, "channel": name, **query})


async def publish(http: Any, nginx: Nginx, name: str, data: dict[str, Any]) -> None:
    """Publish through the proxy, as a backend behind it would."""
    body = json.dumps({"channel": name, "data": data})
    response = await fetch(http, nginx.base + "/api/publish", "POST", body, auth())
    assert response.code == 200, response.body


def subscribed(frames: list[dict[str, Any]]) -> bool:
    return any(f["type"] == "subscribed" for f in frames)


def has_message(n: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda frames: any(f["type"] == "message" and f["data"]["n"] == n for f in frames)


def test_deployment_guide_shows_the_tested_config() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text()
    assert f"```nginx\n{GUIDE_CONFIG.read_text()}```\n" in guide


# -- WebSocket: Host, Origin and trusted proxies ------------------------------------------


async def test_handshake_naming_the_hub_in_host_is_refused(plain: ServerProcess) -> None:
    """The issue's reproduction, straight to the hub: a Host naming the hub
    and an Origin naming the proxy are "cross-origin" to it."""
    proxy_origin = "http://127.0.0.1:8080"
    status, _, writer = await upgrade(
        plain.port, "/channels/ws?channel=demo:x",
        {"Host": f"127.0.0.1:{plain.port}", "Origin": proxy_origin},
    )  # fmt: skip
    writer.close()
    assert status == 403
    status, _, writer = await upgrade(
        plain.port, "/channels/ws?channel=demo:x",
        {"Host": "127.0.0.1:8080", "Origin": proxy_origin},
    )  # fmt: skip
    writer.close()
    assert status == 101


@pytest.mark.parametrize(("hub_name", "status"), [("plain", 403), ("trusting", 101)])
async def test_forwarded_host_from_a_trusted_proxy_passes_the_origin_check(
    request: pytest.FixtureRequest, proxy: Callable[..., Nginx], hub_name: str, status: int
) -> None:
    """nginx without a Host line (as nginx.org's WebSocket example) sends
    the upstream's name as Host; X-Forwarded-Host carries the browser's."""
    hub: ServerProcess = request.getfixturevalue(hub_name)
    nginx = proxy(hub, NO_HOST_LINE)
    here = f"127.0.0.1:{nginx.port}"
    got, reader, writer = await upgrade(
        nginx.port, "/channels/ws?channel=demo:x", {"Host": here, "Origin": f"http://{here}"}
    )
    try:
        assert got == status
        if status == 101:
            opcode, payload = await asyncio.wait_for(read_ws_frame(reader), WAIT)
            assert opcode == TEXT and json.loads(payload)["type"] == "connected"
    finally:
        writer.close()


@pytest.mark.parametrize("hub_name", ["plain", "trusting"])
async def test_guide_config_carries_websockets(
    request: pytest.FixtureRequest, proxy: Callable[..., Nginx], http: Any, hub_name: str
) -> None:
    """The guide's config passes the browser's Host: no trust needed for the
    origin check, and messages are delivered over the socket."""
    hub: ServerProcess = request.getfixturevalue(hub_name)
    nginx = proxy(hub)
    name = channel()
    url = (
        subscribe_url(nginx, "", name)
        .replace("http://", "ws://")
        .replace("/channels?transport=&", "/channels/ws?")
    )
    conn = await asyncio.wait_for(
        tornado.websocket.websocket_connect(
            tornado.httpclient.HTTPRequest(url, headers={"Origin": nginx.base})
        ),
        WAIT,
    )
    sock = Socket(conn)
    try:
        await sock.wait(subscribed)
        await publish(http, nginx, name, {"n": 1})
        await sock.wait(has_message(1))
    finally:
        await sock.aclose()


@pytest.mark.parametrize(
    ("hub_name", "logged"), [("plain", "127.0.0.1"), ("trusting", "203.0.113.7")]
)
async def test_access_log_names_the_client(
    request: pytest.FixtureRequest, proxy: Callable[..., Nginx], http: Any, hub_name: str,
    logged: str,
) -> None:  # fmt: skip
    """nginx appends its peer to X-Forwarded-For; a hub that trusts nginx
    logs the address nginx was told about, one that does not logs nginx."""
    hub: ServerProcess = request.getfixturevalue(hub_name)
    nginx = proxy(hub)
    probe = uuid.uuid4().hex
    headers = {"X-Forwarded-For": "203.0.113.7"}
    response = await fetch(http, f"{nginx.base}/health?probe={probe}", headers=headers)
    assert response.code == 200
    line = f"GET /health?probe={probe} ({logged})"

    async def logged_line() -> bool:
        return line in hub.log()

    await until(logged_line, f"the log line {line!r}")


# -- long-poll behind a short proxy_read_timeout -------------------------------------------


async def test_longpoll_shorter_than_the_proxy_timeout_is_answered(
    trusting: ServerProcess, proxy: Callable[..., Nginx], http: Any
) -> None:
    nginx = proxy(trusting, (READ_TIMEOUT, "proxy_read_timeout 3s;"))
    name = channel()

    def url(cursor: str, **query: Any) -> str:
        return subscribe_url(nginx, "longpoll", name, cursor=cursor, **query)

    first = await fetch(http, url(""))
    assert first.code == 200 and subscribed(json.loads(first.body)["frames"])
    cursor = json.loads(first.body)["cursor"]
    # The server's own hold (8 s) outlives nginx's 3 s: the defect, a 504.
    too_long = asyncio.ensure_future(fetch(http, url(cursor), timeout=3 * LONG_HOLD))
    # Holds of 1.5 s through a quiet period longer than nginx's timeout.
    quiet_since, answers = time.monotonic(), 0
    while time.monotonic() - quiet_since < 4.5:
        response = await fetch(http, url(cursor, timeout=1.5))
        assert response.code == 200, (response.code, response.body)
        doc = json.loads(response.body)
        assert isinstance(doc.pop("client"), str)
        assert doc == {"cursor": cursor, "frames": []}
        answers += 1
    assert answers >= 2
    assert (await too_long).code == 504
    # After the quiet period, a message published during a hold comes in
    # that hold's answer (or, if it just ended, the next one), no error between.
    held = asyncio.ensure_future(fetch(http, url(cursor, timeout=2.5)))
    await publish(http, nginx, name, {"n": 1})
    response = await held
    assert response.code == 200
    frames = json.loads(response.body)["frames"]
    if not frames:
        response = await fetch(http, url(cursor, timeout=2.5))
        assert response.code == 200
        frames = json.loads(response.body)["frames"]
    assert [f["data"]["n"] for f in frames if f["type"] == "message"] == [1]


# -- streams behind a short proxy_read_timeout ----------------------------------------------


async def test_shorter_ping_keeps_quiet_streams_open_through_the_proxy(
    trusting: ServerProcess, proxy: Callable[..., Nginx], http: Any,
    lives: Callable[..., Live],
) -> None:  # fmt: skip
    """nginx cuts a response quiet for 7 s. The hub pings every 15 s by
    default, so a quiet stream is cut; one that asks ping=5 is not."""
    nginx = proxy(trusting, (READ_TIMEOUT, "proxy_read_timeout 7s;"))
    name = channel()
    default = lives(subscribe_url(nginx, "sse", name))
    short_sse = lives(subscribe_url(nginx, "sse", name, ping=5))
    short_stream = lives(subscribe_url(nginx, "stream", name, ping=5))
    ws_url = subscribe_url(nginx, "", name, ping=5).replace("http://", "ws://")
    ws_url = ws_url.replace("/channels?transport=&", "/channels/ws?")
    sock = Socket(await asyncio.wait_for(tornado.websocket.websocket_connect(ws_url), WAIT))
    try:
        for live in (default, short_sse, short_stream):
            await live.wait(subscribed)
        await sock.wait(subscribed)
        await default.ended(timeout=15)  # the defect: cut by nginx, quiet for 7 s
        assert not any(f["type"] == "ping" for f in default.frames())
        for live in (short_sse, short_stream):
            assert not live.response.done(), live.buffer
            assert any(f["type"] == "ping" for f in live.frames())
            assert live.frames()[0]["ping"] == 5.0
        # Pings already sent to the socket, read now (bounded).
        await sock.wait(lambda _: any(f["type"] == "ping" for f in sock.frames), timeout=2)
        first = dict(sock.frames[0])
        assert isinstance(first.pop("client"), str)  # the signed client id
        assert first == {"type": "connected", "transport": "websocket", "ping": 5.0}
        await publish(http, nginx, name, {"n": 1})
        for live in (short_sse, short_stream):
            await live.wait(has_message(1))
        await sock.wait(has_message(1))
    finally:
        await sock.aclose()


# -- buffering --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "gzipped", "flows"),
    [
        ((), False, True),  # the guide's config as it is
        (((BUFFERING_OFF, "proxy_buffering off; " + GZIP),), True, True),
        (((BUFFERING_OFF, "proxy_buffering on; " + GZIP),), True, True),
        # Measured, and said so in docs/deployment.md: without gzip, nginx
        # 1.22 passes frames even with buffering on and the header ignored.
        (((BUFFERING_OFF, "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;"),),
         False, True),
        # The control: nginx told to ignore the hub's header holds the frames.
        (((BUFFERING_OFF, "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; " + GZIP),),
         True, False),
    ],
    ids=["guide", "off-gzip", "on-gzip", "header-ignored", "header-ignored-gzip"],
)  # fmt: skip
async def test_stream_frames_flow_through_nginx(
    trusting: ServerProcess, proxy: Callable[..., Nginx], http: Any,
    gzip_lives: Callable[[str], GzipLive],
    changes: tuple[tuple[str, str], ...], gzipped: bool, flows: bool,
) -> None:  # fmt: skip
    nginx = proxy(trusting, *changes)
    name = channel()
    lives = [gzip_lives(subscribe_url(nginx, t, name)) for t in ("sse", "stream")]
    if not flows:
        # Frames the hub wrote at once are still held by nginx after a
        # bounded wait; the same wait suffices for them when they flow.
        with pytest.raises(TimeoutError):
            await asyncio.gather(*(live.wait(subscribed, timeout=2) for live in lives))
        for live in lives:
            # Not a byte of the body (nginx held even the headers here).
            assert live.buffer == b"" and not live.response.done()
        return
    for live in lives:
        await live.wait(subscribed, timeout=5)
    await publish(http, nginx, name, {"n": 1})
    for live in lives:
        await live.wait(has_message(1), timeout=5)
        assert (live.headers.get("content-encoding") == "gzip") == gzipped
        assert not live.response.done()

"""The standalone hub through real processes and sockets (issue 4).

Every test here talks to ``python -m torchannels`` started with
``subprocess``: the CLI, configuration precedence, the publish API and its
OpenAPI document, subscription tokens (also expiring mid-subscription),
metrics, the demo page, health and graceful shutdown. Clients are real
sockets: Tornado's HTTP and WebSocket clients, plus bare-socket HTTP and
WebSocket clients where a test needs to control every byte (a chunked body
that must end cleanly, a WebSocket peer that never reads or never answers a
close). Tokens are signed here with ``hmac`` so the hub is checked against an
independent JWT encoder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
import tornado.httpclient
import tornado.web
import tornado.websocket

from torchannels import __version__
from torchannels.server import api as api_module
from torchannels.server.app import make_app
from torchannels.server.config import CONFIG_ENV, HubConfig, env_name

KEY = "test-api-key"
SECRET = "test-token-secret"
#: ``--max-publish-bytes`` of the main hub.
LIMIT = 2048
#: Upper bounds of every wait, in seconds.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
WAIT = 10.0
LISTENING = re.compile(rb"torchannels hub listening on http://127\.0\.0\.1:(\d+)/\n")
OPENAPI_FILE = Path(__file__).parents[1] / "src" / "torchannels" / "server" / "openapi.json"
HOUSEKEEPING = frozenset({"connected", "ping"})


# -- processes -----------------------------------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test runner's environment without any TORCHANNELS_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHANNELS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m torchannels ARGS`` to completion (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "torchannels", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        input=stdin,
        timeout=30,
        check=False,
    )


class HubProcess:
    """A ``torchannels serve`` process; ``port`` is parsed from its banner."""

    def __init__(self, log_dir: Path, args: list[str], env: Mapping[str, str] | None) -> None:
        self.log_path = log_dir / f"hub-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "torchannels", "serve", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=clean_env(env),
            )
        self.stdout = b""
        try:
            banner = self._read_line(START_TIMEOUT)
        except BaseException:
            self.close()
            raise
        match = LISTENING.fullmatch(banner)
        if match is None:
            self.close()
            raise AssertionError(f"no banner: {banner!r}; log: {self.log()}")
        self.port = int(match.group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def _read_line(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.stdout:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"hub did not start in {timeout}s; log: {self.log()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break  # exited before printing its banner
                self.stdout += chunk
        line, _, self.stdout = self.stdout.partition(b"\n")
        return line + b"\n"

    def url(self, path: str = "/channels", **query: Any) -> str:
        qs = urlencode(query, doseq=True)
        return self.base + path + (f"?{qs}" if qs else "")

    def ws_url(self, **query: Any) -> str:
        return self.url("/channels/ws", **query).replace("http://", "ws://", 1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    async def exited(self, timeout: float) -> int:
        """Wait (without blocking the event loop) for the process to exit."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"hub still running after {timeout}s; log: {self.log()}")
            await asyncio.sleep(0.02)
        return self._collect()

    def _collect(self) -> int:
        out, _ = self.proc.communicate(timeout=STOP_TIMEOUT)
        self.stdout += out or b""
        return self.proc.returncode

    def close(self) -> None:
        """Teardown: SIGTERM, a bounded wait, then SIGKILL; never raises."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            self._collect()


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hub-logs")


@pytest.fixture
def spawn(log_dir: Path) -> Iterator[Callable[..., HubProcess]]:
    """``spawn(*flags, env=None, port0=True)``: a hub stopped at teardown."""
    started: list[HubProcess] = []

    def start(*flags: str, env: Mapping[str, str] | None = None, port0: bool = True) -> HubProcess:
        hub = HubProcess(log_dir, [*(["--port", "0"] if port0 else []), *flags], env)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.close()


@pytest.fixture(scope="module")
def main_hub(log_dir: Path) -> Iterator[HubProcess]:
    """Demo on, API key, token secret, default anonymous ``demo:*``."""
    hub = HubProcess(
        log_dir,
        ["--port", "0", "--api-key", KEY, "--token-secret", SECRET,
         "--max-publish-bytes", str(LIMIT)],
        None,
    )  # fmt: skip
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def bare_hub(log_dir: Path) -> Iterator[HubProcess]:
    """No API key, no token secret, no demo, no metrics."""
    hub = HubProcess(log_dir, ["--port", "0", "--no-demo"], None)
    yield hub
    hub.close()


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def refused(port: int) -> bool:
    """True if nothing accepts TCP connections on ``port`` any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


# -- HTTP ----------------------------------------------------------------------------


@pytest.fixture
async def http() -> Any:
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=50)
    yield client
    client.close()


Response = tornado.httpclient.HTTPResponse


async def fetch(
    client: Any, url: str, method: str = "GET", body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None, timeout: float = WAIT,
) -> Response:  # fmt: skip
    response: Response = await client.fetch(
        url, method=method, body=body, headers=dict(headers or {}), raise_error=False,
        request_timeout=timeout, allow_nonstandard_methods=True,
    )  # fmt: skip
    return response


def auth(key: str | None = KEY) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


async def api(
    client: Any, hub: HubProcess, path: str, body: object = None, *,
    key: str | None = KEY, raw: bytes | None = None, method: str | None = None,
) -> Response:  # fmt: skip
    """A publish-API request: ``body`` as JSON (or ``raw`` bytes), POST unless GET."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    verb = method or ("GET" if data is None else "POST")
    return await fetch(client, hub.base + path, verb, data, auth(key))


def as_json(response: Response) -> Any:
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        response.code, response.headers.get("Content-Type"), response.body,
    )  # fmt: skip
    return json.loads(response.body)


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    body = as_json(response)
    assert (response.code, body.get("error")) == (status, code), body
    assert set(body) == {"error", "message"} and body["message"], body
    assert isinstance(body["message"], str)
    return dict(body)


async def poll(
    client: Any, hub: HubProcess, channels: list[str], *, transport: str = "poll",
    headers: Mapping[str, str] | None = None, timeout: float = WAIT, **query: Any,
) -> dict[str, Any]:  # fmt: skip
    response = await fetch(
        client, hub.url(transport=transport, channel=channels, **query), headers=headers,
        timeout=timeout,
    )  # fmt: skip
    doc = as_json(response)
    assert response.code == 200, doc
    assert set(doc) == {"cursor", "frames"}
    return dict(doc)


# -- streaming and WebSocket clients ---------------------------------------------------


SSE_EVENT_TYPES = {"channel_error": "error"}


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Frames of the complete events of an event stream (WHATWG field rules)."""
    frames: list[dict[str, Any]] = []
    *blocks, _ = re.split(r"\r\n\r\n|\n\n|\r\r", raw.decode())
    for block in blocks:
        event, data, comments = None, [], []
        for line in re.split(r"\r\n|\n|\r", block):
            name, colon, value = line.partition(":")
            value = value.removeprefix(" ") if colon else ""
            if name == "":
                comments.append(value)
            elif name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if not data:
            if "ping" in comments:
                frames.append({"type": "ping"})
            continue
        body = json.loads("\n".join(data))
        if event in (None, "message"):
            frames.append({"type": "message", "data": body})
        else:
            # EventSource fires its own "error" event, so error frames are
            # "channel_error" events (docs/protocol.md).
            assert body.get("type") == SSE_EVENT_TYPES.get(event, event), (event, body)
            frames.append(body)
    return frames


class Live:
    """A streaming GET (``stream`` or ``sse``) on its own socket.

    It speaks HTTP/1.1 itself so it can tell a body that ended cleanly (the
    last chunk arrived: ``complete``) from one cut off half-way.
    """

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        self.buffer = b""
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.complete = False
        self._arrived = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self.task = asyncio.ensure_future(self._run(url, dict(headers or {})))

    async def _run(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        self._writer = writer
        head = [f"GET {parts.path}?{parts.query} HTTP/1.1", f"Host: {parts.netloc}",
                "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            self.status = int((await reader.readline()).split()[1])
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while size := int((await reader.readline()).split(b";")[0], 16):
                    self._add(await reader.readexactly(size))
                    await reader.readexactly(2)
                await reader.readexactly(2)
                self.complete = True
            else:
                self._add(await reader.read())
                self.complete = "content-length" in self.headers
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass  # cut off: ``complete`` stays False
        finally:
            self._arrived.set()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _add(self, chunk: bytes) -> None:
        self.buffer += chunk
        self._arrived.set()

    def frames(self) -> list[dict[str, Any]]:
        """Every complete frame so far, NDJSON envelopes whatever the transport."""
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            return parse_sse(self.buffer)
        *lines, _ = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line]

    def content(self) -> list[dict[str, Any]]:
        return [f for f in self.frames() if f["type"] not in HOUSEKEEPING]

    async def wait(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = WAIT
    ) -> list[dict[str, Any]]:
        """Wait until ``predicate(content frames)`` holds; return them."""

        async def loop() -> None:
            while not predicate(self.content()):
                if self.task.done():
                    raise AssertionError(f"response ended first: {self.buffer!r}")
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(loop(), timeout)
        return self.content()

    async def ended(self, timeout: float = WAIT) -> None:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def lives() -> Any:
    """``lives(url, headers)`` opens a :class:`Live`; all are closed at teardown."""
    opened: list[Live] = []

    def open_live(url: str, headers: Mapping[str, str] | None = None) -> Live:
        live = Live(url, headers)
        opened.append(live)
        return live

    yield open_live
    for live in opened:
        await live.aclose()


class Socket:
    """A Tornado WebSocket client collecting frames; closed at teardown."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self.closed = False

    def content(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] not in HOUSEKEEPING]

    async def wait(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = WAIT
    ) -> list[dict[str, Any]]:
        async def loop() -> None:
            while not predicate(self.content()):
                if self.closed:
                    raise AssertionError(f"socket closed first: {self.frames}")
                message = await self.conn.read_message()
                if message is None:
                    self.closed = True
                else:
                    self.frames.append(json.loads(message))

        await asyncio.wait_for(loop(), timeout)
        return self.content()

    async def aclose(self) -> None:
        """Close and wait for the socket to be gone, so none is left to the GC."""
        self.conn.close()
        with contextlib.suppress(AssertionError, TimeoutError):
            await self.until_closed(timeout=2)
        stream = getattr(self.conn, "stream", None)
        if stream is not None and not stream.closed():
            stream.close()

    async def until_closed(self, timeout: float = WAIT) -> None:
        with contextlib.suppress(AssertionError):
            await self.wait(lambda _: False, timeout)
        assert self.closed


@pytest.fixture
async def sockets() -> Any:
    opened: list[Socket] = []

    async def connect(url: str) -> Socket:
        conn = await asyncio.wait_for(tornado.websocket.websocket_connect(url), WAIT)
        sock = Socket(conn)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        await sock.aclose()


class RawWebSocket:
    """A WebSocket client on a bare socket that never writes after the
    handshake: no pongs, no close reply, and it reads only when asked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, target: str, rcvbuf: int | None = None) -> RawWebSocket:
        sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the window starts small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self, timeout: float = WAIT) -> tuple[int, bytes]:
        """The next frame: (opcode, payload)."""

        async def read() -> tuple[int, bytes]:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return first & 0x0F, await self.reader.readexactly(size)

        return await asyncio.wait_for(read(), timeout)

    async def until_close(self, timeout: float = WAIT) -> tuple[list[dict[str, Any]], int]:
        """Text frames up to the close frame, and the close code."""
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = await self.frame(max(0.1, deadline - time.monotonic()))
            if opcode == 0x8:
                return frames, struct.unpack("!H", payload[:2])[0]
            if opcode == 0x1:
                frames.append(json.loads(payload))

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# -- tokens --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: Mapping[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    """An HS256 JWT made without torchannels (RFC 7519 by hand)."""
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(dict(claims)).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


def b64json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return value


def jwt_claims(token: str) -> dict[str, Any]:
    return b64json(token.split(".")[1])


def token_for(*channels: str, ttl: float = 300, **extra: Any) -> str:
    return jwt({"exp": time.time() + ttl, "channels": list(channels), **extra})


TRANSPORTS = ("poll", "longpoll", "stream", "sse", "websocket")


async def first_answer(
    http: Any, lives: Any, sockets: Any, hub: HubProcess, transport: str,
    channels: list[str], headers: Mapping[str, str] | None = None, **query: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """The content frames a fresh subscription gets, until every channel is
    settled (``subscribed`` or ``error``)."""

    def settled(frames: list[dict[str, Any]]) -> bool:
        done = {f.get("channel") for f in frames if f["type"] in ("subscribed", "error")}
        return done >= set(channels)

    if transport in ("poll", "longpoll"):
        doc = await poll(http, hub, channels, transport=transport, headers=headers, **query)
        frames: list[dict[str, Any]] = doc["frames"]
        assert settled(frames), frames
        return frames
    if transport == "websocket":
        sock = await sockets(hub.ws_url(channel=channels, **query))
        frames = await sock.wait(settled)
        assert sock.frames[0]["type"] == "connected"
        return frames
    live = lives(hub.url(transport=transport, channel=channels, **query), headers)
    frames = await live.wait(settled)
    assert live.status == 200
    await live.aclose()
    return frames


def outline(frames: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for f in frames:
        if f["type"] == "error":
            out.append(("error", f["channel"], f["code"]))
        elif f["type"] == "subscribed":
            out.append(("subscribed", f["channel"]))
        elif f["type"] == "reconnect":
            out.append(("reconnect", f["reason"]))
        elif f["type"] == "message":
            out.append(("message", f["data"]["channel"]))
        else:
            out.append((f["type"],))
    return out


# == the CLI ===========================================================================


def test_serve_help_documents_every_option() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # undo argparse's wrapping
    assert "--config PATH" in text and f"[env {CONFIG_ENV}]" in text
    for f in dataclasses.fields(HubConfig):
        flag = "--" + f.name.replace("_", "-")
        assert re.search(rf"{flag}\b", text), flag
        assert f"[env {env_name(f.name)};" in text, f.name
        if f.metadata["kind"] == "bool":
            assert f"--no-{flag[2:]}" in text, flag
    # The defaults the issue asks for are shown and sensible.
    for shown in ("default: 127.0.0.1]", "default: 8090]", "default: 1000]", "default: demo:*]"):
        assert shown in text, shown


def test_top_level_help_and_subcommand_help() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for command in ("serve", "publish", "token"):
        assert command in top.stdout
    publish = cli("publish", "--help")
    assert publish.returncode == 0
    for word in ("--url", "--api-key", "TORCHANNELS_URL", "TORCHANNELS_API_KEY", "stdin"):
        assert word in publish.stdout, word
    token = cli("token", "--help")
    assert token.returncode == 0
    for word in ("--channel", "--ttl", "--sub", "--secret", "TORCHANNELS_TOKEN_SECRET"):
        assert word in token.stdout, word


def test_version_from_module_and_console_script() -> None:
    result = cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"torchannels {__version__}")
    script = Path(sys.executable).with_name("torchannels")
    assert script.exists(), "the torchannels console script is not installed"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=30, check=False,
        env=clean_env(),
    )  # fmt: skip
    assert (result.returncode, result.stdout.strip()) == (0, f"torchannels {__version__}")


def test_no_command_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert "usage: torchannels" in result.stderr


BAD_CONFIGS = [
    pytest.param(["--port", "99999"], {}, None, "--port: '99999' must be between 0 and 65535",
                 id="port-range"),
    pytest.param(["--port", "http"], {}, None, "--port: 'http' is not an integer", id="port-nan"),
    pytest.param([], {"TORCHANNELS_PORT": "abc"}, None, "TORCHANNELS_PORT: 'abc' is not an integer",
                 id="env-port"),
    pytest.param(["--log-level", "loud"], {}, None, "--log-level: 'loud' must be one of",
                 id="log-level"),
    pytest.param(["--history-ttl", "0"], {}, None, "--history-ttl: '0' must be > 0", id="ttl"),
    pytest.param(["--anonymous", "a*b"], {}, None, "--anonymous: invalid channel pattern 'a*b'",
                 id="pattern"),
    pytest.param([], {"TORCHANNELS_DEMO": "maybe"}, None,
                 "TORCHANNELS_DEMO: 'maybe' must be a boolean", id="env-bool"),
    pytest.param([], {}, 'port = "8090', "is not TOML", id="toml-syntax"),
    pytest.param([], {}, "prot = 8090\n", "unknown key 'prot'; did you mean 'port'?",
                 id="toml-key"),
    pytest.param([], {}, 'port = "8090"\n', "key 'port': '8090' must be an integer",
                 id="toml-type"),
    pytest.param(["--config", "/nonexistent/hub.toml"], {}, None, "No such file or directory",
                 id="no-file"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "env", "toml", "message"), BAD_CONFIGS)
def test_bad_configuration_exits_2_with_a_clear_message(
    tmp_path: Path, flags: list[str], env: dict[str, str], toml: str | None, message: str
) -> None:
    if toml is not None:
        path = tmp_path / "hub.toml"
        path.write_text(toml)
        flags = [*flags, "--config", str(path)]
    result = cli("serve", *flags, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("torchannels: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


def test_port_in_use_exits_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port), "--no-demo")
    assert result.returncode == 1
    assert result.stderr.startswith(f"torchannels: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


async def test_cli_publish_succeeds_and_prints_the_position(
    main_hub: HubProcess, http: Any
) -> None:
    result = cli("publish", "demo:cli", '{"text": "from the shell"}', "--url", main_hub.base,
                 "--api-key", KEY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    position = json.loads(result.stdout)
    assert set(position) == {"channel", "epoch", "offset", "ts"}
    assert position["channel"] == "demo:cli"
    doc = await poll(http, main_hub, ["demo:cli"])
    sent = [f["data"] for f in doc["frames"] if f["type"] == "message"]
    assert sent[-1] == {"text": "from the shell", **position}

    # From stdin, with the URL and key from the environment (trailing slash ok).
    env = {"TORCHANNELS_URL": main_hub.base + "/", "TORCHANNELS_API_KEY": KEY}
    again = cli("publish", "demo:cli", "-", stdin='{"n": 2}', env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["offset"] == position["offset"] + 1


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        pytest.param(["demo:cli", "{}", "--api-key", "nope"], {}, 1, "403", id="wrong-key"),
        pytest.param(["demo:cli", "{oops", "--api-key", KEY], {}, 2, "the message is not JSON",
                     id="bad-json"),
        pytest.param(["demo:cli", "[1, 2]", "--api-key", KEY], {}, 1, "invalid_message",
                     id="not-an-object"),
        pytest.param(["bad channel", "{}", "--api-key", KEY], {}, 1, "invalid_channel",
                     id="bad-channel"),
        pytest.param(["demo:cli", "{}"], {}, 2, "give the API key", id="no-key"),
    ],
)  # fmt: skip
def test_cli_publish_fails_cleanly(
    main_hub: HubProcess, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    result = cli("publish", *args, "--url", main_hub.base, env=env)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    argparse_error = "error: argument --ttl" in result.stderr
    assert result.stderr.startswith("torchannels: ") or argparse_error
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_publish_to_an_unreachable_hub_fails_cleanly() -> None:
    (port,) = free_ports(1)
    result = cli("publish", "news", "{}", "--url", f"http://127.0.0.1:{port}", "--api-key", KEY)
    assert result.returncode == 1
    assert result.stderr.startswith(f"torchannels: cannot reach http://127.0.0.1:{port}/api/publish")
    assert "Traceback" not in result.stderr


async def test_cli_token_is_accepted_by_the_hub(main_hub: HubProcess, http: Any) -> None:
    before = time.time()
    result = cli("token", "--channel", "chat:*", "--channel", "news", "--sub", "alice",
                 "--ttl", "120", "--secret", SECRET)  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert b64json(token.split(".")[0]) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt_claims(token)
    assert claims["channels"] == ["chat:*", "news"] and claims["sub"] == "alice"
    assert before + 118 <= claims["exp"] <= time.time() + 121
    doc = await poll(http, main_hub, ["chat:lobby", "news", "admin"], token=token)
    assert outline(doc["frames"]) == [
        ("subscribed", "chat:lobby"), ("subscribed", "news"), ("error", "admin", "forbidden"),
    ]  # fmt: skip

    from_env = cli("token", "--channel", "news", env={"TORCHANNELS_TOKEN_SECRET": SECRET})
    assert from_env.returncode == 0
    doc = await poll(http, main_hub, ["news"], token=from_env.stdout.strip())
    assert outline(doc["frames"]) == [("subscribed", "news")]


@pytest.mark.parametrize(
    ("args", "message"),
    [pytest.param(["--channel", "news"], "give the secret", id="no-secret"),
     pytest.param(["--channel", "a*b", "--secret", SECRET], "invalid channel pattern 'a*b'",
                  id="bad-pattern"),
     # --ttl is checked by argparse: a usage line and "error: argument --ttl".
     pytest.param(["--channel", "news", "--secret", SECRET, "--ttl", "nan"], "ttl", id="ttl-nan"),
     pytest.param(["--channel", "news", "--secret", SECRET, "--ttl", "inf"], "ttl", id="ttl-inf")],
)  # fmt: skip
def test_cli_token_fails_cleanly(args: list[str], message: str) -> None:
    result = cli("token", *args)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    argparse_error = "error: argument --ttl" in result.stderr
    assert result.stderr.startswith("torchannels: ") or argparse_error
    assert message in result.stderr and "Traceback" not in result.stderr


def test_metrics_without_prometheus_client_fail_with_an_install_hint(tmp_path: Path) -> None:
    """``--metrics`` needs the ``metrics`` extra; without it the hub must say
    so in one line, like any other configuration problem."""
    fake = tmp_path / "prometheus_client"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    result = cli("serve", "--port", "0", "--metrics", "--no-demo",
                 env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert result.returncode in (1, 2)
    assert "listening" not in result.stdout
    assert result.stderr.startswith("torchannels: "), result.stderr
    assert "pip install 'torchannels[metrics]'" in result.stderr
    assert "Traceback" not in result.stderr


# == configuration precedence ==============================================================


async def test_config_precedence_file_then_env_then_flags(
    spawn: Callable[..., HubProcess], http: Any, tmp_path: Path
) -> None:
    file_port, env_port, flag_port = free_ports(3)
    toml = tmp_path / "hub.toml"
    toml.write_text(
        f'port = {file_port}\napi-key = "file-key"\nanonymous = ["file:*"]\ndemo = false\n'
    )
    env = {"TORCHANNELS_PORT": str(env_port), "TORCHANNELS_API_KEY": "env-key",
           "TORCHANNELS_ANONYMOUS": "env:*, other"}  # fmt: skip
    flags = ["--port", str(flag_port), "--api-key", "flag-key", "--anonymous", "flag:*"]
    layers = [
        ("file", file_port, [], {CONFIG_ENV: str(toml)}),  # file named by the env var
        ("env", env_port, ["--config", str(toml)], env),
        ("flag", flag_port, ["--config", str(toml), *flags], env),
    ]
    for winner, port, args, environ in layers:
        hub = spawn(*args, env=environ, port0=False)
        assert hub.port == port, winner
        for layer in ("file", "env", "flag"):
            response = await api(http, hub, "/api/channels/x", key=f"{layer}-key")
            assert response.code == (200 if layer == winner else 403), (winner, layer)
        doc = await poll(http, hub, ["file:a", "env:a", "flag:a", "demo:a"])
        readable = [f["channel"] for f in doc["frames"] if f["type"] == "subscribed"]
        assert readable == [f"{winner}:a"], (winner, doc)
        page = await fetch(http, hub.base + "/")
        assert page.code == 404  # demo = false from the file in every layer
        hub.close()


async def test_empty_value_switches_off_a_lower_layer(
    spawn: Callable[..., HubProcess], http: Any, tmp_path: Path
) -> None:
    toml = tmp_path / "hub.toml"
    toml.write_text('api_key = "file-key"\ntoken_secret = "s"\n')
    hub = spawn("--config", str(toml), "--anonymous=", "--no-demo",
                env={"TORCHANNELS_API_KEY": ""})  # fmt: skip
    response = await api(http, hub, "/api/publish", {"channel": "a", "data": {}}, key="file-key")
    assert_error(response, 403, "api_disabled")
    doc = await poll(http, hub, ["demo:chat"])  # no anonymous channels at all now
    assert outline(doc["frames"]) == [("error", "demo:chat", "token_required")]


# == the publish API ======================================================================


async def test_publish_one_channel(main_hub: HubProcess, http: Any) -> None:
    before = await api(http, main_hub, "/api/channels/demo:one")
    offset = as_json(before)["offset"]
    response = await api(http, main_hub, "/api/publish",
                         {"channel": "demo:one", "data": {"text": "hi", "n": [1, 2]}})  # fmt: skip
    body = as_json(response)
    assert response.code == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    assert set(body) == {"channel", "epoch", "offset", "ts"}
    assert body["channel"] == "demo:one" and body["offset"] == offset + 1
    assert abs(body["ts"] - time.time()) < 30
    doc = await poll(http, main_hub, ["demo:one"],
                     cursor=f"demo:one={body['epoch']}:{offset}")  # fmt: skip
    assert [f["data"] for f in doc["frames"]] == [{"text": "hi", "n": [1, 2], **body}]


async def test_publish_many_channels(main_hub: HubProcess, http: Any) -> None:
    response = await api(http, main_hub, "/api/publish",
                         {"channels": ["demo:m1", "demo:m2", "demo:m1"], "data": {"x": 1}})
    body = as_json(response)
    assert response.code == 200, body
    results = body["results"]
    assert [r["channel"] for r in results] == ["demo:m1", "demo:m2"]  # repeats count once
    for result in results:
        assert set(result) == {"channel", "epoch", "offset", "ts"}
        doc = await poll(http, main_hub, [result["channel"]])
        assert [f["data"] for f in doc["frames"] if f["type"] == "message"][-1] == {
            "x": 1, **result,
        }  # fmt: skip


async def test_api_key_in_x_api_key_or_any_case_bearer(main_hub: HubProcess, http: Any) -> None:
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"bearer {KEY}"},
                    {"Authorization": f"BEARER   {KEY}  "}):  # fmt: skip
        response = await fetch(http, main_hub.base + "/api/channels/x", headers=headers)
        assert response.code == 200, (headers, response.body)


async def test_set_state_and_channel_info(
    main_hub: HubProcess, http: Any, lives: Any
) -> None:
    response = await api(http, main_hub, "/api/state",
                         {"channel": "demo:state", "messages": [{"v": 1}, {"v": 2}]})  # fmt: skip
    position = as_json(response)
    assert response.code == 200, position
    assert set(position) == {"channel", "epoch", "offset"}
    assert position["channel"] == "demo:state"

    live = lives(main_hub.url(transport="sse", channel="demo:state"))
    frames = await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    subscribed = frames[0]
    assert subscribed["offset"] == position["offset"]
    assert [{"v": m["v"]} for m in subscribed["state"]] == [{"v": 1}, {"v": 2}]

    info = as_json(await api(http, main_hub, "/api/channels/demo:state"))
    assert info == {
        "channel": "demo:state", "epoch": position["epoch"], "offset": position["offset"],
        "history_length": 0, "has_state": True, "local_subscribers": 1,
    }  # fmt: skip
    await live.aclose()
    for _ in range(100):  # the hub notices the client left
        info = as_json(await api(http, main_hub, "/api/channels/demo:state"))
        if info["local_subscribers"] == 0:
            break
        await asyncio.sleep(0.05)
    assert info["local_subscribers"] == 0


async def test_channel_info_of_names_needing_escapes(main_hub: HubProcess, http: Any) -> None:
    for name in ("room/1", "tag#x", "a@b$c"):
        published = as_json(await api(http, main_hub, "/api/publish",
                                      {"channel": name, "data": {}}))  # fmt: skip
        response = await api(http, main_hub, "/api/channels/" + quote(name, safe=""))
        info = as_json(response)
        assert response.code == 200, info
        assert (info["channel"], info["offset"]) == (name, published["offset"])


async def test_missing_key_is_401_with_www_authenticate(main_hub: HubProcess, http: Any) -> None:
    for path, body in (("/api/publish", {"channel": "a", "data": {}}),
                       ("/api/state", {"channel": "a", "messages": []}),
                       ("/api/channels/a", None)):  # fmt: skip
        for key in (None, ""):
            response = await api(http, main_hub, path, body, key=key)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="torchannels"'


async def test_wrong_key_is_403(main_hub: HubProcess, http: Any) -> None:
    for key in ("wrong", KEY + "x", KEY[:-1], KEY.upper()):
        response = await api(http, main_hub, "/api/publish", {"channel": "a", "data": {}}, key=key)
        assert_error(response, 403, "forbidden")
        assert "WWW-Authenticate" not in response.headers


async def test_no_key_configured_is_403_api_disabled(bare_hub: HubProcess, http: Any) -> None:
    for path, body in (("/api/publish", {"channel": "a", "data": {}}),
                       ("/api/state", {"channel": "a", "messages": []}),
                       ("/api/channels/a", None)):  # fmt: skip
        for key in (None, KEY):
            assert_error(await api(http, bare_hub, path, body, key=key), 403, "api_disabled")


BAD_BODIES = [
    pytest.param("/api/publish", b"{not json", "bad_json", id="syntax"),
    pytest.param("/api/publish", b"\xff\xfe", "bad_json", id="not-utf8"),
    pytest.param("/api/publish", b"", "bad_json", id="empty"),
    pytest.param("/api/publish", b"[1, 2]", "bad_json", id="array"),
    pytest.param("/api/publish", b'{"channels": [], "data": {}}', "bad_json", id="no-channels"),
    pytest.param("/api/publish", b'{"channels": "a", "data": {}}', "bad_json", id="channels-str"),
    pytest.param("/api/state", b'{"channel": "a", "messages": {}}', "bad_json", id="state-dict"),
    pytest.param("/api/state", b'{"channel": "a"}', "bad_json", id="state-missing"),
    pytest.param("/api/publish", b'{"data": {}}', "invalid_channel", id="no-channel"),
    pytest.param("/api/publish", b'{"channel": "", "data": {}}', "invalid_channel",
                 id="empty-name"),
    pytest.param("/api/publish", b'{"channel": "a b", "data": {}}', "invalid_channel", id="space"),
    pytest.param("/api/publish", b'{"channel": 7, "data": {}}', "invalid_channel", id="number"),
    pytest.param("/api/publish", json.dumps({"channel": "x" * 129, "data": {}}).encode(),
                 "invalid_channel", id="too-long"),
    pytest.param("/api/publish", b'{"channels": ["ok", "no way"], "data": {}}', "invalid_channel",
                 id="one-of-many"),
    pytest.param("/api/state", b'{"channel": "a,b", "messages": []}', "invalid_channel",
                 id="state-channel"),
    pytest.param("/api/publish", b'{"channel": "a"}', "invalid_message", id="no-data"),
    pytest.param("/api/publish", b'{"channel": "a", "data": [1]}', "invalid_message", id="list"),
    pytest.param("/api/publish", b'{"channel": "a", "data": "hi"}', "invalid_message", id="str"),
    pytest.param("/api/publish", b'{"channel": "a", "data": {"offset": 1}}', "invalid_message",
                 id="reserved-offset"),
    pytest.param("/api/publish", b'{"channel": "a", "data": {"channel": "b"}}', "invalid_message",
                 id="reserved-channel"),
    pytest.param("/api/publish", b'{"channels": ["a", "b"], "data": {"ts": 1}}', "invalid_message",
                 id="reserved-many"),
    pytest.param("/api/publish", b'{"channel": "a", "data": {"x": NaN}}', "invalid_message",
                 id="nan"),
    pytest.param("/api/state", b'{"channel": "a", "messages": [{"epoch": "e"}]}',
                 "invalid_message", id="state-reserved"),
    pytest.param("/api/state", b'{"channel": "a", "messages": [1]}', "invalid_message",
                 id="state-not-object"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "raw", "code"), BAD_BODIES)
async def test_bad_bodies_are_400_and_publish_nothing(
    main_hub: HubProcess, http: Any, path: str, raw: bytes, code: str
) -> None:
    async def offsets() -> list[int]:
        infos = [as_json(await api(http, main_hub, f"/api/channels/{c}")) for c in ("a", "b", "ok")]
        return [i["offset"] for i in infos]

    before = await offsets()
    assert_error(await api(http, main_hub, path, raw=raw), 400, code)
    assert await offsets() == before


async def test_body_size_limit_is_exact(main_hub: HubProcess, http: Any) -> None:
    def body(size: int) -> bytes:
        raw = json.dumps({"channel": "big", "data": {"pad": ""}}).encode()
        out = raw.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(raw)) + b'"')
        assert len(out) == size
        return out

    ok = await api(http, main_hub, "/api/publish", raw=body(LIMIT))
    assert ok.code == 200, ok.body
    too_big = await api(http, main_hub, "/api/publish", raw=body(LIMIT + 1))
    error = assert_error(too_big, 413, "payload_too_large")
    assert str(LIMIT) in error["message"]
    # The key is checked first: an unauthenticated big body is a 401.
    assert_error(await api(http, main_hub, "/api/publish", raw=body(LIMIT + 1), key=None),
                 401, "unauthorized")  # fmt: skip


@pytest.mark.parametrize("factor", [10, 100])
async def test_any_oversized_body_gets_the_documented_413(
    main_hub: HubProcess, http: Any, factor: int
) -> None:
    """openapi.json and docs/api.md promise 413 ``payload_too_large`` for a
    body over ``max_publish_bytes``, whatever its size (the API streams the
    body and never holds more than the limit)."""
    raw = json.dumps({"channel": "big", "data": {"pad": "x" * (LIMIT * factor)}}).encode()
    assert_error(await api(http, main_hub, "/api/publish", raw=raw), 413, "payload_too_large")


async def test_other_methods_are_405_json(main_hub: HubProcess, http: Any) -> None:
    for method, path in (("GET", "/api/publish"), ("PUT", "/api/state"),
                         ("POST", "/api/channels/a"), ("DELETE", "/api/channels/a")):  # fmt: skip
        response = await fetch(http, main_hub.base + path, method,
                               b"{}" if method in ("PUT", "POST") else None, auth())  # fmt: skip
        assert_error(response, 405, "http_error")


# == the OpenAPI document matches the app ======================================================


def openapi() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(OPENAPI_FILE.read_text())
    return doc


def validate(value: Any, schema: Mapping[str, Any], doc: Mapping[str, Any], at: str = "$") -> None:
    """A small JSON Schema check: $ref, oneOf, type, required, properties,
    items, minimum, minItems, pattern (what openapi.json uses)."""
    if "$ref" in schema:
        target: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        validate(value, target, doc, at)
        return
    if "oneOf" in schema:
        fits = 0
        for option in schema["oneOf"]:
            try:
                validate(value, option, doc, at)
                fits += 1
            except AssertionError:
                pass
        assert fits == 1, f"{at}: {value!r} fits {fits} of oneOf"
        return
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool,
             "integer": int, "number": (int, float)}  # fmt: skip
    if "type" in schema:
        kind = schema["type"]
        assert isinstance(value, kinds[kind]), f"{at}: {value!r} is not {kind}"
        assert kind == "boolean" or not isinstance(value, bool), f"{at}: {value!r} is a bool"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{at}: {value!r} < minimum"
    if "minItems" in schema:
        assert len(value) >= schema["minItems"], f"{at}: too few items"
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{at}: {value!r} !~ {schema['pattern']}"
    for name in schema.get("required", ()):
        assert name in value, f"{at}: {name!r} missing from {value!r}"
    for name, sub in schema.get("properties", {}).items():
        if name in value:
            validate(value[name], sub, doc, f"{at}.{name}")
    if "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], doc, f"{at}[{i}]")


def sample_path(template: str) -> str:
    return template.replace("{channel}", "chat:lobby")


def api_rules() -> list[tuple[re.Pattern[str], type[tornado.web.RequestHandler]]]:
    app = make_app(HubConfig(api_key="k", token_secret="s", metrics=True))
    rules = []
    for rule in app.wildcard_router.rules:
        regex = rule.matcher.regex  # type: ignore[attr-defined]
        if regex.pattern.startswith("/api/"):
            rules.append((regex, rule.target))
    return rules


METHODS = ("get", "post", "put", "patch", "delete")


def implemented(handler: type[tornado.web.RequestHandler]) -> set[str]:
    return {m for m in METHODS if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)}


def test_every_documented_operation_is_routed_and_every_api_route_documented() -> None:
    doc = openapi()
    rules = api_rules()
    for template, operations in doc["paths"].items():
        path = sample_path(template)
        handlers = [h for regex, h in rules if regex.fullmatch(path)]
        assert len(handlers) == 1, (template, handlers)
        assert implemented(handlers[0]) == set(operations), template
    for regex, handler in rules:
        if regex.pattern.startswith("/api/openapi"):
            continue  # the document itself, served as a file
        documented = [t for t in doc["paths"] if regex.fullmatch(sample_path(t))]
        assert documented, f"route {regex.pattern} ({handler.__name__}) is not in openapi.json"


async def test_served_openapi_is_the_packaged_document(main_hub: HubProcess, http: Any) -> None:
    response = await fetch(http, main_hub.base + "/api/openapi.json")  # no key needed
    assert response.code == 200
    doc = as_json(response)
    assert doc == openapi()
    assert doc["servers"] == [{"url": f"http://{HubConfig().host}:{HubConfig().port}"}]


@dataclasses.dataclass
class Call:
    """A request expected to give ``status`` (and error ``code``) for one
    documented operation."""

    template: str
    method: str
    status: int
    code: str | None
    hub: str = "main"  # or "bare": no API key configured
    path: str | None = None
    body: Any = None
    raw: bytes | None = None
    key: str | None = KEY


def calls() -> list[Call]:
    pub, state, info = "/api/publish", "/api/state", "/api/channels/{channel}"
    big = json.dumps({"channel": "a", "data": {"p": "x" * LIMIT}}).encode()
    big_state = json.dumps({"channel": "a", "messages": [{"p": "x" * LIMIT}]}).encode()
    one = {"channel": "oa:one", "data": {"n": 1}}
    return [
        Call(pub, "post", 200, None, body=one),
        Call(pub, "post", 200, None, body={"channels": ["oa:1", "oa:2"], "data": {"n": 1}}),
        Call(pub, "post", 400, "bad_json", raw=b"{"),
        Call(pub, "post", 400, "invalid_channel", body={"channel": "a b", "data": {}}),
        Call(pub, "post", 400, "invalid_message", body={"channel": "oa", "data": {"ts": 1}}),
        Call(pub, "post", 401, "unauthorized", body=one, key=None),
        Call(pub, "post", 403, "forbidden", body=one, key="wrong"),
        Call(pub, "post", 403, "api_disabled", body=one, hub="bare"),
        Call(pub, "post", 413, "payload_too_large", raw=big),
        Call(state, "post", 200, None, body={"channel": "oa:s", "messages": [{"n": 1}]}),
        Call(state, "post", 400, "bad_json", body={"channel": "oa:s"}),
        Call(state, "post", 400, "invalid_channel", body={"channel": "", "messages": []}),
        Call(state, "post", 400, "invalid_message", body={"channel": "oa", "messages": [[]]}),
        Call(state, "post", 401, "unauthorized", body={"channel": "a", "messages": []}, key=None),
        Call(state, "post", 403, "forbidden", body={"channel": "a", "messages": []}, key="x"),
        Call(state, "post", 403, "api_disabled", body={"channel": "a", "messages": []},
             hub="bare"),
        Call(state, "post", 413, "payload_too_large", raw=big_state),
        Call(info, "get", 200, None, path="/api/channels/oa:one"),
        Call(info, "get", 400, "invalid_channel", path="/api/channels/a%20b"),
        Call(info, "get", 401, "unauthorized", path="/api/channels/oa", key=None),
        Call(info, "get", 403, "forbidden", path="/api/channels/oa", key="x"),
        Call(info, "get", 403, "api_disabled", path="/api/channels/oa", hub="bare"),
    ]  # fmt: skip


async def test_every_documented_status_and_code_is_produced(
    main_hub: HubProcess, bare_hub: HubProcess, http: Any
) -> None:
    doc = openapi()
    codes = {v for k, v in vars(api_module).items() if k.isupper() and isinstance(v, str)}
    produced: dict[tuple[str, str, str], set[str]] = {}
    for call in calls():
        operation = doc["paths"][call.template][call.method]
        hub = main_hub if call.hub == "main" else bare_hub
        if call.status == 200 and call.body is not None:  # we send what the doc describes
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            validate(call.body, schema, doc)
        response = await api(http, hub, call.path or call.template, call.body, key=call.key,
                             raw=call.raw, method=call.method.upper())  # fmt: skip
        body = as_json(response)
        assert response.code == call.status, (call, body)
        documented = operation["responses"][str(call.status)]
        validate(body, documented["content"]["application/json"]["schema"], doc)
        if call.code is not None:
            assert body["error"] == call.code, (call, body)
            assert f"`{call.code}`" in documented["description"], call
        produced.setdefault((call.template, call.method, str(call.status)), set()).update(
            [call.code] if call.code else []
        )
    expected = {}
    for template, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                named = set(re.findall(r"`([a-z_]+)`", response["description"])) & codes
                expected[(template, method, status)] = named
    assert produced == expected


# == subscription tokens ======================================================================


TOKEN_CASES = [
    pytest.param(lambda: token_for("chat:*"), "subscribed", id="valid"),
    pytest.param(lambda: token_for("chat:*", ttl=-5), "token_expired", id="expired"),
    pytest.param(lambda: token_for("news", "chat:lobby2"), "forbidden", id="other-channel"),
    pytest.param(lambda: jwt({"exp": time.time() + 300, "channels": ["chat:*"]}, "not-the-secret"),
                 "token_bad_signature", id="bad-signature"),
    pytest.param(lambda: None, "token_required", id="no-token"),
]  # fmt: skip


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("make_token", "outcome"), TOKEN_CASES)
async def test_tokens_on_every_transport(
    main_hub: HubProcess, http: Any, lives: Any, sockets: Any, transport: str,
    make_token: Callable[[], str | None], outcome: str,
) -> None:  # fmt: skip
    token = make_token()
    query = {} if token is None else {"token": token}
    frames = await first_answer(http, lives, sockets, main_hub, transport, ["chat:lobby"], **query)
    if outcome == "subscribed":
        assert outline(frames) == [("subscribed", "chat:lobby")]
    else:
        assert outline(frames) == [("error", "chat:lobby", outcome)], frames
        assert frames[0]["message"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_anonymous_demo_channels_need_no_token(
    main_hub: HubProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    frames = await first_answer(http, lives, sockets, main_hub, transport,
                                ["demo:anything", "private"])  # fmt: skip
    assert outline(frames) == [("subscribed", "demo:anything"),
                               ("error", "private", "token_required")]  # fmt: skip


async def test_token_errors_and_patterns(main_hub: HubProcess, http: Any) -> None:
    now = time.time()
    cases: list[tuple[str | None, dict[str, str], list[str], list[tuple[str, ...]]]] = [
        (None, {"Authorization": f"Bearer {token_for('chat:*')}"}, ["chat:x"],
         [("subscribed", "chat:x")]),
        ("not.a.jwt", {}, ["chat:x"], [("error", "chat:x", "token_malformed")]),
        ("abc", {}, ["chat:x"], [("error", "chat:x", "token_malformed")]),
        (jwt({"channels": ["chat:*"]}), {}, ["chat:x"], [("error", "chat:x", "token_malformed")]),
        (jwt({"exp": now + 60, "channels": ["chat:*"]}, alg="none"), {}, ["chat:x"],
         [("error", "chat:x", "token_bad_algorithm")]),
        (jwt({"exp": now + 60, "nbf": now + 30, "channels": ["chat:*"]}), {}, ["chat:x"],
         [("error", "chat:x", "token_not_yet_valid")]),
        (token_for("chat:*"), {}, ["chat:", "chat:a:b", "chatty", "chat"],
         [("subscribed", "chat:"), ("subscribed", "chat:a:b"), ("error", "chatty", "forbidden"),
          ("error", "chat", "forbidden")]),
        (token_for("news"), {}, ["news", "news2"],
         [("subscribed", "news"), ("error", "news2", "forbidden")]),
        (token_for("*"), {}, ["anything", "at/all"],
         [("subscribed", "anything"), ("subscribed", "at/all")]),
        (token_for(), {}, ["news"], [("error", "news", "forbidden")]),
        # A bad token does not stop anonymous channels.
        ("garbage", {}, ["demo:x", "chat:x"],
         [("subscribed", "demo:x"), ("error", "chat:x", "token_malformed")]),
    ]  # fmt: skip
    for token, headers, channels, expected in cases:
        query = {} if token is None else {"token": token}
        doc = await poll(http, main_hub, channels, headers=headers, **query)
        assert outline(doc["frames"]) == expected, (token, channels, doc)


async def test_a_hub_without_secret_refuses_tokens(bare_hub: HubProcess, http: Any) -> None:
    doc = await poll(http, bare_hub, ["chat:x", "demo:x"], token=token_for("chat:*"))
    assert outline(doc["frames"]) == [("error", "chat:x", "token_unsupported"),
                                      ("subscribed", "demo:x")]  # fmt: skip


async def test_token_expiring_during_subscriptions_ends_them(
    main_hub: HubProcess, http: Any, lives: Any, sockets: Any
) -> None:
    expires = time.time() + 2.0
    token = jwt({"exp": expires, "channels": ["chat:*"], "sub": "bob"})
    first = await poll(http, main_hub, ["chat:expiry"], token=token)
    cursor = first["cursor"]
    sse = lives(main_hub.url(transport="sse", channel="chat:expiry", token=token))
    stream = lives(main_hub.url(transport="stream", channel="chat:expiry"),
                   {"Authorization": f"Bearer {token}"})  # fmt: skip
    ws = await sockets(main_hub.ws_url(channel="chat:expiry", token=token))
    held = asyncio.ensure_future(poll(http, main_hub, ["chat:expiry"], transport="longpoll",
                                      cursor=cursor, token=token, timeout=20))  # fmt: skip
    for live in (sse, stream):
        await live.wait(lambda fs: bool(fs))
        assert outline(live.content()) == [("subscribed", "chat:expiry")]
    await ws.wait(lambda fs: bool(fs))
    assert time.time() < expires, "setup too slow for a 2 s token"

    # Still live before expiry: a message goes through.
    await api(http, main_hub, "/api/publish", {"channel": "chat:expiry", "data": {"n": 1}})
    answer = await asyncio.wait_for(held, WAIT)
    assert outline(answer["frames"]) == [("message", "chat:expiry")]
    held = asyncio.ensure_future(poll(http, main_hub, ["chat:expiry"], transport="longpoll",
                                      cursor=answer["cursor"], token=token, timeout=20))

    for live in (sse, stream):
        frames = await live.wait(lambda fs: fs[-1]["type"] == "reconnect", timeout=WAIT)
        assert time.time() >= expires - 0.05
        assert outline(frames) == [("subscribed", "chat:expiry"), ("message", "chat:expiry"),
                                   ("reconnect", "token_expired")]  # fmt: skip
        await live.ended()
        assert live.complete, "the response must end cleanly after reconnect"
    await ws.until_closed()
    assert outline(ws.content()) == [("subscribed", "chat:expiry"), ("message", "chat:expiry"),
                                     ("reconnect", "token_expired")]  # fmt: skip
    assert (ws.conn.close_code, ws.conn.close_reason) == (4002, "token_expired")
    # The held long-poll is answered at expiry, not after its 20 s.
    answer = await asyncio.wait_for(held, 3)
    assert outline(answer["frames"]) == [("reconnect", "token_expired")]
    assert time.time() < expires + 3
    # Coming back with the same token is refused; a fresh token works again.
    again = await poll(http, main_hub, ["chat:expiry"], cursor=answer["cursor"], token=token)
    assert outline(again["frames"]) == [("error", "chat:expiry", "token_expired")]
    fresh = await poll(http, main_hub, ["chat:expiry"], cursor=answer["cursor"],
                       token=token_for("chat:*"))  # fmt: skip
    assert fresh["frames"] == [] and fresh["cursor"] == answer["cursor"]


async def test_websocket_in_band_subscribe_uses_the_connect_token(
    main_hub: HubProcess, sockets: Any
) -> None:
    ws = await sockets(main_hub.ws_url(token=token_for("chat:*")))
    await ws.conn.write_message(json.dumps({"type": "subscribe",
                                            "channels": ["chat:a", "admin", "demo:x"]}))
    frames = await ws.wait(lambda fs: len(fs) >= 3)
    assert outline(frames) == [("subscribed", "chat:a"), ("error", "admin", "forbidden"),
                               ("subscribed", "demo:x")]  # fmt: skip


# == metrics ==================================================================================


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of every sample."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_metrics_follow_publishing_and_subscribing(
    spawn: Callable[..., HubProcess], http: Any, lives: Any, sockets: Any
) -> None:
    hub = spawn("--metrics", "--no-demo", "--api-key", KEY, "--anonymous", "*",
                "--max-publish-bytes", "600000")  # fmt: skip

    async def scrape() -> dict[str, float]:
        response = await fetch(http, hub.base + "/metrics")
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.body.decode()
        for family, kind in (("torchannels_connections", "gauge"),
                             ("torchannels_subscriptions", "gauge"),
                             ("torchannels_published", "counter"),
                             ("torchannels_delivered", "counter"),
                             ("torchannels_resets", "counter"),
                             ("torchannels_slow_clients_dropped", "counter")):  # fmt: skip
            # prometheus_client names counter families with or without _total.
            assert re.search(rf"^# TYPE {family}(_total)? {kind}$", text, re.M), family
        return parse_metrics(text)

    async def until(expected: Mapping[str, float]) -> dict[str, float]:
        deadline = time.monotonic() + WAIT
        while True:
            got = await scrape()
            now = {name: got.get(name, 0.0) for name in expected}
            if now == dict(expected):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics {now} never became {dict(expected)}")
            await asyncio.sleep(0.05)

    def conns(transport: str) -> str:
        return f'torchannels_connections{{transport="{transport}"}}'

    base = await scrape()
    assert {k: v for k, v in base.items() if v} == {}, base

    for n in (1, 2):
        await api(http, hub, "/api/publish", {"channel": "m", "data": {"n": n}})
    await until({"torchannels_published_total": 2, "torchannels_delivered_total": 0})

    sse = lives(hub.url(transport="sse", channel="m"))
    await sse.wait(lambda fs: len(fs) == 3)  # subscribed + 2 messages
    await until({conns("sse"): 1, "torchannels_subscriptions": 1,
                 "torchannels_delivered_total": 2})  # fmt: skip
    stream = lives(hub.url(transport="stream", channel="m"))
    await stream.wait(lambda fs: len(fs) == 3)
    ws = await sockets(hub.ws_url(channel="m"))
    await ws.wait(lambda fs: len(fs) == 3)
    info = as_json(await api(http, hub, "/api/channels/m"))
    held = asyncio.ensure_future(poll(http, hub, ["m"], transport="longpoll", timeout=20,
                                      cursor=f"m={info['epoch']}:{info['offset']}"))
    await until({conns("sse"): 1, conns("stream"): 1, conns("websocket"): 1,
                 conns("longpoll"): 1, "torchannels_subscriptions": 4,
                 "torchannels_delivered_total": 6})  # fmt: skip

    await api(http, hub, "/api/publish", {"channel": "m", "data": {"n": 3}})
    assert outline((await asyncio.wait_for(held, WAIT))["frames"]) == [("message", "m")]
    await until({"torchannels_published_total": 3, "torchannels_delivered_total": 10,
                 conns("longpoll"): 0, "torchannels_subscriptions": 3})  # fmt: skip

    # A stale epoch: reset, then the whole history again (3 more deliveries).
    doc = await poll(http, hub, ["m"], cursor="m=zzzzzz:1")
    assert outline(doc["frames"])[0] == ("reset",)
    await until({"torchannels_resets_total": 1, "torchannels_delivered_total": 13})

    for live in (sse, stream):
        await live.aclose()
    await ws.aclose()
    await until({conns("sse"): 0, conns("stream"): 0, conns("websocket"): 0,
                 "torchannels_subscriptions": 0})  # fmt: skip

    # A WebSocket client that stops reading is cut off once it is more than
    # max_pending_bytes (1 MiB) behind: close code 4001, counted.
    slow = await RawWebSocket.connect(hub.port, "/channels/ws?channel=slow", rcvbuf=4096)
    try:
        await until({conns("websocket"): 1, "torchannels_subscriptions": 1})
        chunk = {"pad": "x" * 500_000}
        for _ in range(60):
            response = await api(http, hub, "/api/publish", {"channel": "slow", "data": chunk})
            assert response.code == 200
            if (await scrape()).get("torchannels_slow_clients_dropped_total"):
                break
        await until({"torchannels_slow_clients_dropped_total": 1})
        frames, code = await slow.until_close(timeout=WAIT)
        assert code == 4001
        assert outline(frames[:2]) == [("connected",), ("subscribed", "slow")]
    finally:
        await slow.aclose()


async def test_metrics_are_off_by_default(bare_hub: HubProcess, http: Any) -> None:
    assert (await fetch(http, bare_hub.base + "/metrics")).code == 404


# == demo, health, client ===================================================================


async def test_demo_page_and_demo_publisher(main_hub: HubProcess, http: Any) -> None:
    page = await fetch(http, main_hub.base + "/")
    assert page.code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert b'<script src="/torchannels/torchannel.js"></script>' in page.body
    script = await fetch(http, main_hub.base + "/torchannels/torchannel.js")
    assert script.code == 200 and b"TorChannels" in script.body
    for other in ("torchannel.mjs", "torchannel.d.ts"):
        assert (await fetch(http, main_hub.base + "/torchannels/" + other)).code == 200, other

    before = await poll(http, main_hub, ["demo:chat"])
    said = await fetch(http, main_hub.base + "/demo/publish", "POST",
                       urlencode({"name": "ann", "text": "hello hub"}))  # fmt: skip
    assert said.code == 200, said.body
    offset = as_json(said)["offset"]
    after = await poll(http, main_hub, ["demo:chat"], cursor=before["cursor"])
    [message] = [f["data"] for f in after["frames"]]
    assert (message["name"], message["text"], message["offset"]) == ("ann", "hello hub", offset)

    for form in ({"text": ""}, {"text": "x" * 281}, {"name": "n" * 33, "text": "hi"}):
        bad = await fetch(http, main_hub.base + "/demo/publish", "POST", urlencode(form))
        assert (bad.code, as_json(bad)["error"]) == (400, "bad_message"), form


async def test_demo_ticker_feeds_its_channel(main_hub: HubProcess, lives: Any) -> None:
    live = lives(main_hub.url(transport="sse", channel="demo:ticker"))
    frames = await live.wait(lambda fs: any(f["type"] == "message" for f in fs), timeout=5)
    [tick, *_] = [f["data"] for f in frames if f["type"] == "message"]
    assert isinstance(tick["price"], float) and tick["price"] > 0


async def test_no_demo_removes_the_demo(bare_hub: HubProcess, http: Any) -> None:
    assert (await fetch(http, bare_hub.base + "/")).code == 404
    response = await fetch(http, bare_hub.base + "/demo/publish", "POST", "text=hi")
    assert response.code == 404
    # The client library is still served.
    assert (await fetch(http, bare_hub.base + "/torchannels/torchannel.js")).code == 200


async def test_health(main_hub: HubProcess, http: Any, lives: Any) -> None:
    response = await fetch(http, main_hub.base + "/health")
    body = as_json(response)
    assert response.code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert body["status"] == "ok" and isinstance(body["connections"], int)
    live = lives(main_hub.url(transport="stream", channel="demo:health"))
    await live.wait(lambda fs: bool(fs))
    with_one = as_json(await fetch(http, main_hub.base + "/health"))
    assert with_one["connections"] >= 1


# == graceful shutdown =====================================================================


async def test_sigterm_tells_every_client_to_reconnect_and_exits_0(
    spawn: Callable[..., HubProcess], http: Any, lives: Any, sockets: Any
) -> None:
    hub = spawn("--no-demo", "--shutdown-timeout", "8")
    sse = lives(hub.url(transport="sse", channel="demo:a"))
    stream = lives(hub.url(transport="stream", channel="demo:a"))
    ws = await sockets(hub.ws_url(channel="demo:a"))
    for client in (sse, stream, ws):
        await client.wait(lambda fs: bool(fs))
    first = await poll(http, hub, ["demo:a"])
    held = asyncio.ensure_future(poll(http, hub, ["demo:a"], transport="longpoll", timeout=20,
                                      cursor=first["cursor"]))  # fmt: skip
    deadline = time.monotonic() + WAIT
    while as_json(await fetch(http, hub.base + "/health"))["connections"] < 4:
        assert time.monotonic() < deadline, "the four clients never connected"
        await asyncio.sleep(0.02)

    started = time.monotonic()
    hub.signal(signal.SIGTERM)
    answer = await asyncio.wait_for(held, WAIT)
    assert answer["frames"] == [{"type": "reconnect", "reason": "shutdown"}]
    assert answer["cursor"] == first["cursor"]
    assert refused(hub.port), "the hub still accepts connections while shutting down"
    for live in (sse, stream):
        await live.ended()
        assert live.complete, "a streaming response was cut off"
        assert outline(live.content()) == [("subscribed", "demo:a"), ("reconnect", "shutdown")]
    assert sse.buffer.endswith(b"\n\n") and stream.buffer.endswith(b"\n")
    await ws.until_closed()
    assert outline(ws.content()) == [("subscribed", "demo:a"), ("reconnect", "shutdown")]
    assert ws.conn.close_code == 1001

    assert await hub.exited(timeout=8 + 2) == 0
    assert time.monotonic() - started < 4, "a clean shutdown should not wait out the timeout"
    assert hub.stdout.endswith(b"torchannels hub stopped\n")
    assert "(clean)" in hub.log()
    assert refused(hub.port)


async def test_shutdown_is_bounded_when_a_client_will_not_leave(
    spawn: Callable[..., HubProcess],
) -> None:
    """A WebSocket peer that never answers the close keeps the hub waiting
    only ``--shutdown-timeout``; meanwhile /health and new subscriptions on
    an open keep-alive connection get 503, and new connections are refused."""
    hub = spawn("--no-demo", "--shutdown-timeout", "2")
    stubborn = await RawWebSocket.connect(hub.port, "/channels/ws?channel=demo:a")
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)

    async def keep_alive_get(path: str) -> tuple[int, dict[str, Any]]:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        size = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        body = await asyncio.wait_for(reader.readexactly(size), WAIT)
        return int(head.split()[1]), json.loads(body)

    try:
        _, payload = await stubborn.frame()
        assert json.loads(payload)["type"] == "connected"
        assert await keep_alive_get("/health") == (200, {"status": "ok", "connections": 1})
        started = time.monotonic()
        hub.signal(signal.SIGTERM)
        frames, code = await stubborn.until_close()
        assert outline([f for f in frames if f["type"] not in HOUSEKEEPING]) == [
            ("subscribed", "demo:a"), ("reconnect", "shutdown"),
        ]  # fmt: skip
        assert code == 1001
        assert refused(hub.port)
        status, body = await keep_alive_get("/health")
        assert (status, body) == (503, {"status": "shutting_down"})
        status, body = await keep_alive_get("/channels?transport=poll&channel=demo:a")
        assert (status, body["error"]) == (503, "shutting_down")
        assert await hub.exited(timeout=2 + 3) == 0
        assert 1.8 <= time.monotonic() - started < 4.5
        assert "(forced)" in hub.log()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        await stubborn.aclose()


async def test_sigint_also_stops_the_hub(spawn: Callable[..., HubProcess]) -> None:
    hub = spawn("--no-demo")
    hub.signal(signal.SIGINT)
    assert await hub.exited(timeout=5) == 0
    assert hub.stdout == b"torchannels hub stopped\n"
    assert "Traceback" not in hub.log()


# == docs/api.md agrees with the code =========================================================


API_DOC = Path(__file__).parents[1] / "docs" / "api.md"


def test_api_doc_options_table_matches_the_config() -> None:
    rows: dict[str, list[str]] = {}
    for line in API_DOC.read_text().splitlines():
        if line.startswith("| `--"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[re.findall(r"`--([a-z-]+)", cells[0])[0]] = cells
    assert rows.pop("config")[1] == f"`{CONFIG_ENV}`"
    for f in dataclasses.fields(HubConfig):
        flag = f.name.replace("_", "-")
        assert flag in rows, f"--{flag} missing from the options table"
        _, env, key, default, _ = rows.pop(flag)
        assert (env, key) == (f"`{env_name(f.name)}`", f"`{f.name}`"), flag
        shown = {None: "unset", True: "on", False: "off", (): "none"}.get(f.default, f.default)
        if isinstance(shown, tuple):
            shown = ",".join(shown)
        doc_default = default.strip("`")
        if isinstance(shown, int | float):
            assert float(doc_default) == shown, flag
        else:
            assert doc_default == shown, flag
    assert rows == {}, f"the table documents options that do not exist: {list(rows)}"


def test_api_doc_names_every_code_and_metric() -> None:
    from torchannels import tokens

    text = API_DOC.read_text()
    codes = {v for k, v in vars(api_module).items() if k.isupper() and isinstance(v, str)}
    codes |= {v for k, v in vars(tokens).items() if k.startswith("TOKEN_") and isinstance(v, str)}
    codes |= {"token_required", "token_unsupported", "http_error", "internal", "shutting_down",
              "slow_consumer", "channel_error", "bad_message"}  # fmt: skip
    for code in codes:
        assert f"`{code}`" in text, code
    for name in ("torchannels_connections", "torchannels_subscriptions",
                 "torchannels_published_total", "torchannels_delivered_total",
                 "torchannels_resets_total", "torchannels_slow_clients_dropped_total"):  # fmt: skip
        assert f"`{name}" in text, name
    for template in openapi()["paths"]:
        assert template.replace("{channel}", "NAME") in text, template
    assert "**4002**" in text and "1001" in text


async def test_api_doc_example_toml_starts_a_hub(
    spawn: Callable[..., HubProcess], http: Any, tmp_path: Path
) -> None:
    [example] = re.findall(r"```toml\n(.*?)```", API_DOC.read_text(), re.S)
    path = tmp_path / "hub.toml"
    path.write_text(example)
    hub = spawn("--config", str(path))  # --port 0 wins over the file's port
    assert (await fetch(http, hub.base + "/")).code == 404  # demo = false
    assert (await fetch(http, hub.base + "/metrics")).code == 200  # metrics = true
    response = await api(http, hub, "/api/channels/news", key="change-me")
    assert response.code == 200
    doc = await poll(http, hub, ["public:x", "news", "private"])
    assert outline(doc["frames"]) == [("subscribed", "public:x"), ("subscribed", "news"),
                                      ("error", "private", "token_required")]  # fmt: skip
    # allowed_origins: that origin may open sockets, another may not.
    url = hub.ws_url(channel="news")
    allowed = tornado.httpclient.HTTPRequest(url, headers={"Origin": "https://app.example.com"})
    conn = await asyncio.wait_for(tornado.websocket.websocket_connect(allowed), WAIT)
    assert json.loads(await asyncio.wait_for(conn.read_message(), WAIT))["type"] == "connected"
    await Socket(conn).aclose()
    other = tornado.httpclient.HTTPRequest(url, headers={"Origin": "https://evil.example"})
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused_origin:
        await asyncio.wait_for(tornado.websocket.websocket_connect(other), WAIT)
    assert refused_origin.value.code == 403

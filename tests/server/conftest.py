"""Fixtures of the server tests: hub processes and clients, all stopped at teardown.

The two long-lived hubs (``main_server``, ``bare_server``) are started once for the
whole session and shared by every file here; tests keep out of each other's
way by using channels of their own. ``spawn`` starts a hub for one test.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.web
import tornado.websocket

from server.processes import (
    KEY,
    LIMIT,
    SECRET,
    WAIT,
    Live,
    ServerProcess,
    Socket,
)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hub-logs")


@pytest.fixture
def spawn(log_dir: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``spawn(*flags, env=None, port0=True, open_files=None)``: a hub stopped
    at teardown (``open_files``: its starting (soft, hard) open-file limit)."""
    started: list[ServerProcess] = []

    def start(
        *flags: str,
        env: Mapping[str, str] | None = None,
        port0: bool = True,
        open_files: tuple[int, int] | None = None,
    ) -> ServerProcess:
        flags = (*(["--port", "0"] if port0 else []), *flags)
        hub = ServerProcess(log_dir, list(flags), env, open_files)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.close()


def presence_config(log_dir: Path) -> str:
    """A configuration file giving ``pres:*`` channels presence."""
    path = log_dir / "presence.toml"
    path.write_text('[channels."pres:*"]\npresence = true\n')
    return str(path)


@pytest.fixture(scope="session")
def main_server(log_dir: Path) -> Iterator[ServerProcess]:
    """Demo on, API key, token secret, default anonymous ``demo:*``, presence
    on ``pres:*`` channels."""
    hub = ServerProcess(
        log_dir,
        ["--port", "0", "--api-key", KEY, "--token-secret", SECRET,
         "--max-publish-bytes", str(LIMIT), "--config", presence_config(log_dir)],
        None,
    )  # fmt: skip
    yield hub
    hub.close()


@pytest.fixture(scope="session")
def bare_server(log_dir: Path) -> Iterator[ServerProcess]:
    """No API key, no token secret, no demo, no metrics."""
    hub = ServerProcess(log_dir, ["--port", "0", "--no-demo"], None)
    yield hub
    hub.close()


@pytest.fixture(scope="session")
def limited_server(log_dir: Path) -> Iterator[ServerProcess]:
    """The in-memory broker holding at most one channel."""
    hub = ServerProcess(log_dir, ["--port", "0", "--no-demo", "--api-key", KEY,
                                  "--channel-limit", "1"], None)  # fmt: skip
    yield hub
    hub.close()


@pytest.fixture(scope="session")
def down_server(log_dir: Path) -> Iterator[ServerProcess]:
    """A Redis broker that is never there: a port nothing listens on (and
    presence on ``pres:*`` channels)."""
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    hub = ServerProcess(log_dir, ["--port", "0", "--no-demo", "--api-key", KEY,
                                  "--broker", f"redis://127.0.0.1:{dead}/0",
                                  "--config", presence_config(log_dir)], None)  # fmt: skip
    yield hub
    hub.close()


@pytest.fixture
async def http() -> AsyncIterator[tornado.httpclient.AsyncHTTPClient]:
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=50)
    yield client
    client.close()


@pytest.fixture
async def lives() -> AsyncIterator[Callable[..., Live]]:
    """``lives(url, headers)`` opens a :class:`Live`; all are closed at teardown."""
    opened: list[Live] = []

    def open_live(url: str, headers: Mapping[str, str] | None = None) -> Live:
        live = Live(url, headers)
        opened.append(live)
        return live

    yield open_live
    for live in opened:
        await live.aclose()


@pytest.fixture
async def sockets() -> AsyncIterator[Callable[[str], Awaitable[Socket]]]:
    """``await sockets(url)`` connects a :class:`Socket`; all are closed at teardown."""
    opened: list[Socket] = []

    async def connect(url: str) -> Socket:
        conn = await asyncio.wait_for(tornado.websocket.websocket_connect(url), WAIT)
        sock = Socket(conn)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        await sock.aclose()

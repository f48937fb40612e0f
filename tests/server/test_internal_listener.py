"""The internal listener and connections per client address (issue 17,
section 5): a slowloris from one address must not take every slot, and
/health, /metrics, /admin and the publish API must answer while the public
port is full."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from redis_servers import shared_redis
from server.processes import KEY, WAIT, ServerProcess, cli, until
from torchannels.forwarded import TrustedProxies
from torchannels.server.address_limit import PerAddressLimit

INTERNAL = re.compile(r"internal listener \(health, metrics, admin, publish API\) on "
                      r"http://127\.0\.0\.1:(\d+)/\n")  # fmt: skip
PER_IP = b'{"error": "too_many_connections_per_ip"}'


async def request(
    port: int, path: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One ``GET path`` from ``source`` (any 127.0.0.0/8 address: Linux
    routes them all to lo) on a connection of its own; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        lines = [f"GET {path} HTTP/1.1", "Host: hub", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer[:200]
    return int(head.split()[1]), body


class Held:
    """A connection held open: a slowloris (headers never finished) or a
    live stream; ``answer`` is what the server sent before closing."""

    def __init__(self, port: int, source: str, data: bytes) -> None:
        self.port, self.source, self.data = port, source, data
        self.answer = b""
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(self.source, 0)
            )
        except OSError:
            self.closed.set()
            return
        self.connected.set()
        try:
            writer.write(self.data)
            while chunk := await reader.read(65536):
                self.answer += chunk
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.closed.set()

    @property
    def refused(self) -> bool:
        return self.closed.is_set() and self.answer.startswith(b"HTTP/1.1 503 ")

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


SLOW = b"GET /channels HTTP/1.1\r\nHost: hub\r\nX-Slow: "


@pytest.fixture
async def held() -> AsyncIterator[Callable[..., Held]]:
    """``held(port, source, data=SLOW)``; all closed at teardown."""
    opened: list[Held] = []

    def open_one(port: int, source: str = "127.0.0.1", data: bytes = SLOW) -> Held:
        opened.append(Held(port, source, data))
        return opened[-1]

    yield open_one
    for one in opened:
        await one.close()


async def settled(conns: list[Held], refused: int) -> None:
    """Wait until exactly ``refused`` of ``conns`` were answered 503 and
    closed, and the others are still open."""

    async def done() -> bool:
        return sum(c.refused for c in conns) >= refused

    await until(done, f"{refused} connections refused")
    assert sum(c.closed.is_set() for c in conns) == refused
    assert all(PER_IP in c.answer for c in conns if c.closed.is_set())


async def test_one_address_cannot_take_every_connection(
    spawn: Callable[..., ServerProcess], held: Callable[..., Held]
) -> None:
    # The default per-address cap: a tenth of --max-connections (4 of 40).
    hub = spawn("--no-demo", "--max-connections", "40", "--header-timeout", "60")
    flood = [held(hub.port) for _ in range(60)]
    await settled(flood, 56)
    # Other addresses still get in, up to their own share each.
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        code, body = await request(hub.port, "/health", source=source)
        assert code == 200, body
    code, body = await request(hub.port, "/health")
    assert (code, body.strip()) == (503, PER_IP)
    # Refusals are logged, but not one line each.
    lines = [line for line in hub.log().splitlines() if "--max-connections-per-ip 4" in line]
    assert 1 <= len(lines) <= 2, lines
    assert "refused 1 connection(s)" in lines[0] and "the latest from 127.0.0.1" in lines[0]
    assert "Traceback" not in hub.log()


def internal_port(hub: ServerProcess) -> int:
    match = INTERNAL.fullmatch(hub.next_line())
    assert match is not None, hub.log()
    return int(match.group(1))


async def test_the_internal_port_answers_while_the_public_one_is_full(
    spawn: Callable[..., ServerProcess], held: Callable[..., Held]
) -> None:
    hub = spawn("--no-demo", "--api-key", KEY, "--metrics", "--max-connections", "20",
                "--max-connections-per-ip", "30", "--header-timeout", "60",
                "--internal-port", "0")  # fmt: skip
    internal = internal_port(hub)
    auth = {"Authorization": f"Bearer {KEY}"}
    # The operators' routes are on the internal port only.
    routes = {"/health": 200, "/metrics": 200, "/admin": 200, "/admin/api/stats": 401,
              "/api/channels": 200, "/api/openapi.json": 200, "/api/channels/x": 200}  # fmt: skip
    for path, code in routes.items():
        assert (await request(hub.port, path, headers=auth))[0] == 404, path
        assert (await request(internal, path, headers=auth))[0] == code, path
    assert (await request(internal, "/channels?channel=demo:x"))[0] == 404
    assert (await request(hub.port, "/channels?channel=demo:x"))[0] == 200
    assert (await request(internal, "/torchannels/torchannel.js"))[0] == 200  # the admin page's
    # Internal connections count against no limit of the public port: 25
    # held there, then the public port still takes its 20.
    inside = [held(internal) for _ in range(25)]
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in inside)), WAIT)
    assert (await request(internal, "/health"))[0] == 200  # accepted after all 25
    public = [held(hub.port) for _ in range(21)]
    await until(lambda: as_true(any(c.refused for c in public)), "the public port full")
    assert sum(c.refused for c in public) == 1 and not any(c.closed.is_set() for c in inside)
    assert b'"too_many_connections"' in next(c.answer for c in public if c.refused)
    # The public port is full, and the internal one answers.
    code, body = await request(internal, "/health")
    assert code == 200 and json.loads(body)["status"] == "ok", body
    code, body = await request(internal, "/api/channels", headers=auth)
    assert code == 200, body
    code, body = await request(internal, "/metrics")
    assert 'torchannels_refused_connections_total{limit="max_connections"} 1.0' in body.decode()


async def as_true(value: bool) -> bool:
    return value


async def test_requests_through_a_trusted_proxy_count_per_forwarded_client(
    spawn: Callable[..., ServerProcess], held: Callable[..., Held]
) -> None:
    hub = spawn("--no-demo", "--anonymous", "t:*", "--trusted-proxies", "127.0.0.1",
                "--max-connections-per-ip", "3")  # fmt: skip

    def stream(client: str) -> bytes:
        return (f"GET /channels?transport=stream&channel=t:a HTTP/1.1\r\nHost: hub\r\n"
                f"X-Forwarded-For: {client}\r\n\r\n").encode()  # fmt: skip

    def live(conn: Held) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return b'"connected"' in conn.answer

        return check

    # The proxy (127.0.0.1) opens 5 streams, more than 3: it is not limited
    # at accept; 3 of 203.0.113.7's run, and 2 for another client do too.
    first = [held(hub.port, "127.0.0.1", stream("203.0.113.7")) for _ in range(3)]
    other = [held(hub.port, "127.0.0.1", stream("203.0.113.8")) for _ in range(2)]
    for conn in first + other:
        await until(live(conn), "a stream connected")
    code, body = await request(hub.port, "/health", headers={"X-Forwarded-For": "203.0.113.7"})
    assert (code, body.strip()) == (503, PER_IP)
    code, _ = await request(hub.port, "/health", headers={"X-Forwarded-For": "203.0.113.9"})
    assert code == 200
    # A client's stream that ends frees its place.
    await first[0].close()

    async def admitted() -> bool:
        headers = {"X-Forwarded-For": "203.0.113.7"}
        return (await request(hub.port, "/health", headers=headers))[0] == 200

    await until(admitted, "203.0.113.7 admitted again")
    # An untrusted peer's X-Forwarded-For changes nothing: it counts as itself.
    spoofed = [held(hub.port, "127.0.0.2", stream(f"198.51.100.{n}")) for n in range(4)]
    await settled(spoofed, 1)
    # Two refusals, one log line: no access-log line per refused request.
    lines = [line for line in hub.log().splitlines() if "503" in line or "refused" in line]
    assert len(lines) == 1 and "the latest from 203.0.113.7" in lines[0], lines


async def test_workers_share_the_internal_port(spawn: Callable[..., ServerProcess]) -> None:
    hub = spawn("--no-demo", "--workers", "2", "--broker", shared_redis(),
                "--redis-prefix", "internal-workers", "--internal-port", "0")  # fmt: skip
    internal = internal_port(hub)
    seen: set[int] = set()

    async def both() -> bool:
        code, body = await request(internal, "/health")
        assert code == 200, body
        seen.add(json.loads(body)["worker"])
        return seen == {0, 1}

    await until(both, "both workers answer on the internal port")
    assert (await request(hub.port, "/health"))[0] == 404


def test_refusals_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    limit = PerAddressLimit(2, TrustedProxies(()), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "torchannels.server"):
        for n in range(500):
            limit.refused(f"192.0.2.{n % 3}")
        now[0] += 10.5
        limit.refused("198.51.100.1")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("refused 1 connection(s) over --max-connections-per-ip 2")
    assert messages[1].startswith("refused 500 connection(s) over --max-connections-per-ip 2 "
                                  "in the last 10s, the latest from 198.51.100.1")  # fmt: skip
    assert limit.refusals == 501


def test_the_dev_banner_publishes_to_the_internal_port(
    spawn: Callable[..., ServerProcess],
) -> None:
    hub = spawn("--dev", "--internal-port", "0")
    internal = internal_port(hub)
    lines = [hub.next_line() for _ in range(5)]
    assert lines[0].startswith(f"dev mode (--dev): open http://127.0.0.1:{hub.port}/ "), lines
    while "/api/publish" not in lines[-1]:
        lines.append(hub.next_line())
    assert f"http://127.0.0.1:{internal}/api/publish" in lines[-1], lines


def test_an_internal_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("serve", "--port", "0", "--no-demo", "--internal-port", str(port))
    assert done.returncode == 1, done
    assert done.stderr.startswith(f"torchannels: cannot listen on 127.0.0.1:{port}: "), done.stderr
    assert "choose another port with --internal-port" in done.stderr
    assert "Traceback" not in done.stderr

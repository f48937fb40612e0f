"""The load generator and probes of bench/presence.py: NDJSON members that
count the presence frames and bytes they receive, a ``/health`` probe, timed
HTTP reads, a private ``redis-server`` and its command counters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import multiprocessing
import os
import re
import socket
import subprocess
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

from fanout_client import API_KEY
from fanout_servers import _cpu_seconds

from torchannels.brokers import RedisBroker
from torchannels.identity import Identity, User
from torchannels.tokens import encode_token

HOST = "127.0.0.1"
SECRET = "bench-secret"  # --token-secret of the benchmark's hubs


def token(user: str, pattern: str, info: dict[str, Any] | None = None) -> str:
    claims: dict[str, Any] = {"sub": user, "channels": [pattern], "exp": time.time() + 3600}
    if info is not None:
        claims["info"] = info
    return encode_token(claims, SECRET)


def percentile(values: list[float], q: float) -> float:
    """``values`` sorted."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


class Member:
    """One NDJSON stream subscribed to one channel: counts the presence
    frames and their bytes, remembers the snapshot's size and user count."""

    def __init__(self, port: int, channel: str, token_: str, *, track: bool = True) -> None:
        self.port = port
        #: Keep the set of users whose joins arrived (parsing every frame of
        #: 2,000 members would keep the load generator busy); else count only.
        self.track = track
        query = urllib.parse.urlencode({"transport": "stream", "channel": channel,
                                        "token": token_})  # fmt: skip
        self.request = f"GET /channels?{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
        self.presence_frames = 0
        self.presence_bytes = 0
        self.snapshot_bytes = 0
        self.snapshot_users = 0
        self.joined: set[str] = set()
        self.join_latency = math.nan
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.subscribed: asyncio.Future[None] | None = None
        self.lines: list[bytes] = []  # the first lines received (for a failure's report)
        self.ended: str | None = None

    def joins_seen(self) -> int:
        return len(self.joined)

    async def connect(self) -> None:
        started = time.perf_counter()
        reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.port, limit=1 << 22), 60
        )
        self.writer.write(self.request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"subscribe refused: {head[:200]!r}")
        self.subscribed = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._read(reader))
        await asyncio.wait_for(asyncio.shield(self.subscribed), 120)
        self.join_latency = time.perf_counter() - started

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        try:
            while size := int((await reader.readline()).split(b";")[0], 16):
                buffer += await reader.readexactly(size)
                await reader.readexactly(2)
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._frame(line)
            self.ended = "the body ended"
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            self.ended = repr(exc)
        finally:
            if self.subscribed is not None and not self.subscribed.done():
                self.subscribed.set_exception(
                    ConnectionError(f"stream ended before subscribed ({self.ended}): {self.lines}")
                )

    def _frame(self, line: bytes) -> None:
        if len(self.lines) < 3:
            self.lines.append(line[:300])
        head = line[:40]
        if b'"type":"presence"' in head:
            self.presence_frames += 1
            self.presence_bytes += len(line) + 1
            if self.track:
                self.joined.update(j["user"] for j in json.loads(line)["joins"])
        elif b'"type":"subscribed"' in head:
            self.snapshot_bytes = len(line) + 1
            self.snapshot_users = int(json.loads(line).get("presence", {}).get("users", 0))
            if self.subscribed is not None and not self.subscribed.done():
                self.subscribed.set_result(None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()


async def _http(port: int, path: str, key: str | None) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}Connection: close\r\n\r\n"
                 .encode())  # fmt: skip
    try:
        data = await reader.read()
    finally:
        writer.close()
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path}: {data[:300]!r}")
    return data


async def http_get_ms(port: int, path: str) -> bytes:
    """One GET (a new connection, the API key): the whole answer."""
    return await _http(port, path, API_KEY)


def _probe(port: int, interval: float, stop: Any, out: Any) -> None:
    """In a process of its own: ``GET /health`` every ``interval`` s (blocking
    sockets) until ``stop`` is set; send the latencies in ms."""
    found: list[float] = []
    request = f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with socket.create_connection((HOST, port), timeout=30) as sock:
                sock.sendall(request.encode())
                while sock.recv(65536):
                    pass
        except OSError:
            found.append(math.inf)
        else:
            found.append((time.perf_counter() - started) * 1000)
        stop.wait(max(0.0, interval - (time.perf_counter() - started)))
    out.send(found)


class HealthProbe:
    """``GET /health`` latency from a process of its own, so that the load
    generator's busy event loop is not in the measurement."""

    def __init__(self, port: int, interval: float) -> None:
        context = multiprocessing.get_context("fork")
        self.stop = context.Event()
        self.receive, send = context.Pipe(duplex=False)
        self.proc = context.Process(target=_probe, args=(port, interval, self.stop, send))
        self.proc.start()

    async def finish(self) -> list[float]:
        """Stop probing; the latencies in ms, sorted."""
        self.stop.set()
        found: list[float] = await asyncio.to_thread(self.receive.recv)
        await asyncio.to_thread(self.proc.join, 10)
        return sorted(found)


# -- Redis ---------------------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` of the benchmark's own on a free port (no
    persistence), so its counters hold only the benchmark's commands."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"redis://{HOST}:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._ping():
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            await asyncio.sleep(0.05)
        return self

    def _ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.proc.pid) if self.proc is not None else 0.0


async def redis_commandstats(url: str) -> dict[str, tuple[int, int]]:
    """(calls, µs) per command so far (``INFO commandstats``), without INFO itself."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        info = await client.info("commandstats")
    finally:
        await client.aclose()
    stats = {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
             for name, v in info.items()}  # fmt: skip
    stats.pop("info", None)
    return stats


def _script_names() -> dict[bytes, str]:
    """SHA1 -> name of the presence store's scripts (to name EVALSHA calls)."""
    from torchannels.brokers import presence_lua

    return {
        hashlib.sha1(value.encode()).hexdigest().encode(): name.lower()
        for name, value in vars(presence_lua).items()
        if name.isupper() and isinstance(value, str)
    }


MONITOR_LINE = re.compile(rb'^(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"(?: "([^"]*)")?')


async def monitor_counts(redis: PrivateRedis, window: float) -> tuple[Counter[str], Counter[str]]:
    """Commands Redis ran during ``window`` seconds, from ``MONITOR``: those
    clients sent (round trips, or fewer when pipelined) and those run inside
    scripts (``[0 lua]``)."""
    out = redis.workdir / f"monitor-{time.time_ns()}.txt"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(["redis-cli", "-p", str(redis.port), "monitor"], stdout=sink)
    await asyncio.sleep(0.5)  # connected and monitoring
    start = time.time()
    await asyncio.sleep(window)
    end = time.time()
    await asyncio.sleep(0.2)
    proc.terminate()
    proc.wait(10)
    top: Counter[str] = Counter()
    inner: Counter[str] = Counter()
    scripts = _script_names()
    for line in out.read_bytes().splitlines():
        match = MONITOR_LINE.match(line)
        if match is None or not start <= float(match[1]) < end:
            continue
        name = match[3].decode().lower()
        if name == "evalsha" and match[4]:
            name = f"evalsha {scripts.get(match[4], 'other script')}"
        (inner if match[2] == b"lua" else top)[name] += 1
    os.unlink(out)
    return top, inner


async def fill_users(url: str, prefix: str, channel: str, count: int) -> RedisBroker:
    """``count`` users (``user-00000`` ...) with one client each in ``channel``,
    written into the presence store as connections would; the broker."""
    broker = RedisBroker.from_url(url, prefix=prefix)
    now = time.time()
    gate = asyncio.Semaphore(32)

    async def add(i: int) -> None:
        identity = Identity(f"bench-{i}", User(f"user-{i:05d}", {"n": i}), "websocket", now)
        async with gate:
            await broker.presence.add(channel, identity, now + 3600)

    await asyncio.gather(*(add(i) for i in range(count)))
    return broker

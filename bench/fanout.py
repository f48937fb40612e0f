"""Fan-out benchmark: one channel, N subscribers, M published messages.

Runs two servers one after the other on loopback, each as its own process:

- ``torchannels``: the real hub, ``python -m torchannels serve``;
- ``baseline``: bench/baseline_server.py, a minimal Tornado server writing
  one pre-encoded frame to every subscriber per publish (the ceiling).

For each, it opens N subscribers on one channel with raw asyncio sockets
(a hand-rolled WebSocket client, or chunked HTTP for SSE and NDJSON stream),
publishes M messages, one message per ``POST /api/publish`` request on one
keep-alive connection (``--window`` requests pipelined), either as fast as
possible or at ``--rate`` per second, and measures delivered messages/s,
publish requests/s, publish-to-receipt latency (from a send time embedded
in each message), the server process's CPU seconds (``/proc/PID/stat``) and
RSS. Every subscriber must get every message exactly once and in order
(consecutive offsets); anything else fails the run. The machine is shared
and noisy: read the ratios, above all server CPU per delivery, not the
absolute numbers. docs/benchmarks.md has the method and results.

    .venv/bin/python bench/fanout.py --transport websocket --repeat 3
    .venv/bin/python bench/fanout.py --transport sse --subscribers 1000 --json out.json
    .venv/bin/python bench/fanout.py --rate 200          # fixed rate: latency

Exit status: 0 when every run delivered everything, 1 otherwise.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CHANNEL = "bench:fanout"
API_KEY = "bench-key"
WARMUP = 20  # messages published and delivered before measuring
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: torchannels on the in-memory broker, the minimal Tornado baseline, and
#: torchannels on Redis with one and with two worker processes.
SERVERS = ("torchannels", "baseline", "redis", "redis-2w")
REDIS_URL = "redis://127.0.0.1:6379/0"

SUBSCRIBED_RE = re.compile(
    rb'"type":"subscribed","channel":"[^"]*","epoch":"([a-z0-9]+)","offset":(\d+)'
)
CONTROL_RE = re.compile(rb'"type":"(reset|reconnect)"[^}]*?"reason":"([a-z_]+)"')
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def message_re(pad: int) -> re.Pattern[bytes]:
    """One delivered message, as both servers stamp it: the publisher's data
    (send time ``t`` and ``pad`` x's) then channel, ts, epoch, offset."""
    return re.compile(
        rb'\{"t":([0-9.]+),"p":"x{%d}","channel":"%s","ts":[0-9.e+-]+,'
        rb'"epoch":"[a-z0-9]+","offset":(\d+)\}' % (pad, CHANNEL.encode())
    )


def pad_for(size: int) -> int:
    """The padding that makes the published ``data`` object about ``size`` bytes."""
    overhead = len(b'{"t":,"p":""}') + 17  # a typical repr(time.perf_counter())
    return max(0, size - overhead)


# -- the server processes ---------------------------------------------------------


class Server:
    """A server subprocess, its address, CPU time and memory."""

    LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)/")

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        profile: Path | None,
        cpus: set[int] | None = None,
    ) -> None:
        self.name = name
        self.cpus = cpus
        self.argv = argv
        self.workdir = workdir
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.port = 0

    async def start(self, timeout: float = 30.0) -> None:
        out = self.workdir / f"{self.name}.out"
        err = self.workdir / f"{self.name}.err"
        argv = self.argv
        if self.profile is not None:
            spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
            argv = [spy, "record", "--format", "raw", "--rate", "250", "--nonblocking"]
            argv += ["--output", str(self.profile), "--", *self.argv]
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            self.proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = self.LISTENING.search(out.read_text(errors="replace"))
            if match:
                self.port = int(match[2])
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {err.read_text(errors='replace')[-2000:]}")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{self.name} did not start within {timeout}s")
        self.pid = self.proc.pid if self.profile is None else _child_of(self.proc.pid)
        if self.cpus:
            os.sched_setaffinity(self.pid, self.cpus)

    def pids(self) -> list[int]:
        """The server process and its children (the workers of ``--workers``)."""
        return [self.pid, *_children(self.pid)]

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server's processes so far."""
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def memory_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the server's processes in MiB, summed."""
        rss = hwm = 0.0
        for pid in self.pids():
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        key, kib = line.split()[:2]
                        if key == "VmRSS:":
                            rss += int(kib) / 1024
                        else:
                            hwm += int(kib) / 1024
        return rss, hwm

    def stderr_tail(self) -> str:
        return (self.workdir / f"{self.name}.err").read_text(errors="replace")[-2000:]

    async def stop(self, timeout: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(self.pid or proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent:
                found.append(int(entry))
    return found


def redis_pid() -> int | None:
    """The pid of the redis-server the Redis runs use (its CPU is counted too)."""
    try:
        out = subprocess.run(
            ["redis-cli", "-u", REDIS_URL, "info", "server"], capture_output=True, timeout=5
        ).stdout.decode()
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"process_id:(\d+)", out)
    return int(match[1]) if match else None


def _child_of(parent: int, timeout: float = 10.0) -> int:
    """The pid of ``parent``'s (py-spy's) child process, the profiled server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _children(parent)
        if children:
            return children[0]
        time.sleep(0.05)
    raise RuntimeError(f"no child process of {parent} found")


def server_argv(name: str, args: argparse.Namespace) -> list[str]:
    if name == "baseline":
        script = str(HERE / "baseline_server.py")
        return [sys.executable, script, "--port", "0", "--api-key", API_KEY]
    extra: list[str] = []
    if name.startswith("redis"):
        # A fresh prefix per run: every run's channel starts at offset 1.
        extra = ["--broker", REDIS_URL, "--redis-prefix", f"bench-{time.time_ns()}"]
    if name == "redis-2w":
        extra += ["--workers", "2"]
    return [*_torchannels_argv(args), *extra]


def _torchannels_argv(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "torchannels", "serve",
        "--port", "0", "--api-key", API_KEY, "--no-demo", "--anonymous", "bench:*",
        # History covers the whole run, so a subscriber that reconnects
        # resumes without a reset; streams are not cut by a byte cap; pings
        # stay out of the measurement.
        "--history-size", str(max(1000, WARMUP + args.messages)),
        "--stream-max-bytes", str(1 << 40),
        "--max-publish-bytes", str(max(65536, 2 * args.size + 1024)),
        "--ping-interval", "3600",
        "--shutdown-timeout", "2",
        "--log-level", args.hub_log_level,
    ]  # fmt: skip


# -- subscribers --------------------------------------------------------------------


class Run:
    """What the subscribers of one server run share."""

    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.transport: str = args.transport
        self.port = port
        self.msg_re = message_re(pad_for(args.size))
        self.warm_top = WARMUP  # offsets up to here are warm-up, not measured
        self.final = WARMUP + args.messages
        self.latencies = array.array("d")
        self.subscribers: list[Subscriber] = []
        self.done = 0
        self.all_done = asyncio.Event()
        self.stopping = False
        self.reconnects: Counter[str] = Counter()
        self.failures: list[str] = []
        self.max_reconnects: int = args.max_reconnects
        self.connect_timeout = 30.0
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def fail(self, text: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(text)


class Subscriber:
    """One subscriber: where it stands in the channel and what it received.
    It outlives its connections: a server that ends one (``reconnect``
    frame, close code) is rejoined from the last offset, as a client would."""

    def __init__(self, run: Run, index: int) -> None:
        self.run = run
        self.index = index
        self.conn: Connection | None = None
        self.ready: asyncio.Future[None] | None = None
        self.epoch: str | None = None
        self.last = -1  # offset of the last message received
        self.received = 0  # measured messages received
        self.duplicates = 0
        self.gaps = 0
        self.done_at: float | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        """Open a connection; on the first one wait for ``subscribed``."""
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future() if self.epoch is None else None
        query = {"channel": CHANNEL}
        if self.epoch is not None:
            query["cursor"] = f"{CHANNEL}={self.epoch}:{self.last}"
        host = f"Host: {HOST}:{self.run.port}\r\n"
        ws_key = base64.b64encode(os.urandom(16))
        if self.run.transport == "websocket":
            request = (
                f"GET /channels/ws?{urllib.parse.urlencode(query)} HTTP/1.1\r\n{host}"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {ws_key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
        else:
            query["transport"] = self.run.transport
            request = f"GET /channels?{urllib.parse.urlencode(query)} HTTP/1.1\r\n{host}\r\n"
        transport, conn = await asyncio.wait_for(
            loop.create_connection(lambda: Connection(self, ws_key), HOST, self.run.port),
            self.run.connect_timeout,
        )
        self.conn = conn
        transport.write(request.encode())
        if self.ready is not None:
            await asyncio.wait_for(self.ready, self.run.connect_timeout)

    def ended(self, reason: str) -> None:
        """The server ended a connection: resume from the last offset."""
        run = self.run
        if self.ready is not None and not self.ready.done():
            detail = "; ".join(run.failures[-1:])
            self.ready.set_exception(ConnectionError(f"subscriber {self.index}: {reason} {detail}"))
            return
        if run.stopping or self.done_at is not None or self.epoch is None:
            return
        self.reconnects += 1
        run.reconnects[reason] += 1
        if self.reconnects > run.max_reconnects:
            run.fail(f"subscriber {self.index}: more than {run.max_reconnects} reconnects")
            return
        run.spawn(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await self.connect()
        except (OSError, TimeoutError) as exc:
            self.run.fail(f"subscriber {self.index}: reconnect failed: {exc!r}")

    def scan(self, data: bytearray, end: int, now: float) -> str | None:
        """Count the messages in ``data[:end]`` (complete frames only); return
        the reason of a ``reconnect`` frame among them."""
        run = self.run
        reason = None
        if self.epoch is None:
            match = SUBSCRIBED_RE.search(data, 0, end)
            if match is None:
                return None
            self.epoch = match[1].decode()
            self.last = int(match[2])
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)
        if data.find(b'"type":"re', 0, end) >= 0:  # rare: reset or reconnect
            for control in CONTROL_RE.finditer(data, 0, end):
                if control[1] == b"reset":
                    run.fail(f"subscriber {self.index}: reset ({control[2].decode()})")
                else:
                    reason = f"reconnect {control[2].decode()}"
        last = self.last
        warm = run.warm_top
        latency = run.latencies.append
        received = 0
        for match in run.msg_re.finditer(data, 0, end):
            offset = int(match[2])
            if offset != last + 1:
                if offset <= last:
                    self.duplicates += 1
                    continue
                self.gaps += offset - last - 1
            last = offset
            if offset > warm:
                received += 1
                latency(now - float(match[1]))
        self.last = last
        self.received += received
        if last >= run.final and self.done_at is None:
            self.done_at = now
            run.done += 1
            if run.done == len(run.subscribers):
                run.all_done.set()
        return reason


class Connection(asyncio.Protocol):
    """One connection of a subscriber, read with as little parsing as
    possible: frames are delimited (WebSocket headers, HTTP chunks, blank
    lines), then one regular expression pulls send time and offset out of
    each message (``Subscriber.scan``)."""

    def __init__(self, sub: Subscriber, ws_key: bytes) -> None:
        self.sub = sub
        self.websocket = sub.run.transport == "websocket"
        self.separator = b"\n" if sub.run.transport == "stream" else b"\n\n"
        self.ws_key = ws_key
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.body = bytearray()
        self.head_done = False
        self.chunk_left = 0
        self.need_crlf = False
        self.reason: str | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(self.reason or "connection lost")

    def _end(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.sub.ended(reason)

    def close(self) -> None:
        """Close without reconnecting (the run is over)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            self.head_done = True
            if not self._check_head(head):
                return
        if self.websocket:
            self._ws_frames(now)
        else:
            self._chunks(now)

    def _check_head(self, head: bytes) -> bool:
        status = head.split(b"\r\n", 1)[0]
        lower = head.lower()
        if self.websocket:
            accept = base64.b64encode(hashlib.sha1(self.ws_key + WS_GUID).digest())
            ok = b" 101 " in status and b"sec-websocket-accept: " + accept.lower() in lower
        else:
            ok = b" 200 " in status and b"transfer-encoding: chunked" in lower
        if not ok:
            run = self.sub.run
            run.fail(f"subscriber {self.sub.index}: bad response {status.decode(errors='replace')}")
            run.stopping = True  # not a server hiccup: stop, do not retry
            self._end("bad response")
        return ok

    def _ws_frames(self, now: float) -> None:
        buf = self.buf
        size = len(buf)
        pos = 0
        close: int | None = None
        while size - pos >= 2:
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + n
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 0x9:  # ping: answer so the server keeps us
                self._ws_send(0xA, bytes(buf[pos + head : end]))
            elif opcode == 0x8:
                close = int.from_bytes(buf[pos + head : pos + head + 2], "big") if n >= 2 else 1005
            pos = end
        if pos:
            # Frame headers are two to ten bytes that never look like JSON, so
            # the scan runs over the whole span of complete frames at once.
            self.reason = self.sub.scan(buf, pos, now) or self.reason
            del buf[:pos]
        if close is not None:
            self._ws_send(0x8, close.to_bytes(2, "big"))
            self._end(f"close {close}")

    def _ws_send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.closed:
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _chunks(self, now: float) -> None:
        buf, body = self.buf, self.body
        size = len(buf)
        pos = 0
        ended = False
        while pos < size:
            if self.chunk_left:
                take = min(self.chunk_left, size - pos)
                body += buf[pos : pos + take]
                pos += take
                self.chunk_left -= take
                if self.chunk_left:
                    break
                self.need_crlf = True
            if self.need_crlf:
                if size - pos < 2:
                    break
                pos += 2
                self.need_crlf = False
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            length = int(buf[pos:eol].split(b";")[0], 16)
            pos = eol + 2
            if length == 0:  # the last chunk: the server ended the response
                ended = True
                break
            self.chunk_left = length
        del buf[:pos]
        cut = body.rfind(self.separator)
        if cut >= 0:
            cut += len(self.separator)
            self.reason = self.sub.scan(body, cut, now) or self.reason
            del body[:cut]
        if ended:
            self._end(self.reason or "response ended")


# -- the publisher ------------------------------------------------------------------


class Publisher:
    """``POST /api/publish``, one message per request, on one keep-alive
    connection, with up to ``window`` requests in flight (HTTP/1.1
    pipelining: Tornado answers them in order, one at a time), so the server
    never waits for the benchmark's event loop to send the next one."""

    def __init__(self, port: int, pad: int) -> None:
        self.port = port
        self.pad = b"x" * pad
        self.head = (
            f"POST /api/publish HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.offsets: list[int] = []  # answered, in order
        self.last_answer = 0.0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, self.port), 10
        )

    def _request(self, sent: float) -> bytes:
        body = b'{"channel":"%s","data":{"t":%s,"p":"%s"}}' % (
            CHANNEL.encode(),
            repr(sent).encode(),
            self.pad,
        )
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def publish(self, count: int, *, rate: float, window: int, limit: float) -> None:
        """Publish ``count`` messages, at ``rate`` per second (0: as fast as the
        window allows); raise if it takes more than ``limit`` seconds."""
        slots = asyncio.Semaphore(window)
        answers = asyncio.ensure_future(self._answers(count, slots))
        start = time.perf_counter()
        try:
            for i in range(count):
                await asyncio.wait_for(slots.acquire(), limit)
                if answers.done():
                    break  # it failed: its exception is raised below
                if rate:
                    # The send time is the scheduled one, so a server that
                    # falls behind shows in latency (no coordinated omission).
                    sent = start + i / rate
                    delay = sent - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    sent = time.perf_counter()
                self.writer.write(self._request(sent))
                if time.perf_counter() - start > limit:
                    raise TimeoutError(f"published {i + 1} of {count} messages in {limit}s")
            await asyncio.wait_for(asyncio.shield(answers), limit)
        finally:
            answers.cancel()

    async def _answers(self, count: int, slots: asyncio.Semaphore) -> None:
        for _ in range(count):
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            answer = await self.reader.readexactly(int(length[1]) if length else 0)
            if not head.startswith(b"HTTP/1.1 200"):
                status = head.split(b"\r\n", 1)[0]
                raise RuntimeError(f"publish failed: {status!r} {answer[:200]!r}")
            self.offsets.append(json.loads(answer)["offset"])
            self.last_answer = time.perf_counter()
            slots.release()

    def close(self) -> None:
        self.writer.close()


# -- one measured run ---------------------------------------------------------------


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def run_server(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start server ``name``, load it, measure it, stop it."""
    profile = None
    if args.profile is not None:
        profile = args.profile / f"{name}-{args.transport}.txt"
    cpus = {0} if args.pin else None
    server = Server(name, server_argv(name, args), workdir, profile, cpus)
    await server.start()
    run = Run(args, server.port)
    publisher = Publisher(server.port, pad_for(args.size))
    result: dict[str, Any] = {"server": name}
    try:
        idle_rss = server.memory_mib()[0]
        run.subscribers = [Subscriber(run, i) for i in range(args.subscribers)]
        gate = asyncio.Semaphore(32)  # under Tornado's listen backlog of 128

        async def join(sub: Subscriber) -> None:
            async with gate:
                await sub.connect()

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(join(s) for s in run.subscribers)), 120)
        connect_s = time.perf_counter() - started
        await publisher.open()
        await publisher.publish(WARMUP, rate=0, window=1, limit=30)
        if not await _wait_until(lambda: all(s.last >= WARMUP for s in run.subscribers), 30):
            run.fail("warm-up messages were not all delivered within 30s")
        connected_rss = server.memory_mib()[0]

        rpid = redis_pid() if name.startswith("redis") else None
        redis0 = _cpu_seconds(rpid) if rpid else 0.0
        cpu0, self0, t0 = server.cpu_seconds(), _self_cpu(), time.perf_counter()
        try:
            await publisher.publish(
                args.messages, rate=args.rate, window=args.window, limit=args.timeout
            )
        except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError) as exc:
            run.fail(f"publishing failed: {exc!r}")
        published = publisher.last_answer
        try:
            await asyncio.wait_for(run.all_done.wait(), args.drain_timeout)
        except TimeoutError:
            run.fail(f"not all subscribers done {args.drain_timeout}s after the last publish")
        finished = max((s.done_at or time.perf_counter()) for s in run.subscribers)
        cpu = server.cpu_seconds() - cpu0
        redis_cpu = (_cpu_seconds(rpid) - redis0) if rpid else 0.0
        self_cpu = _self_cpu() - self0
        rss, hwm = server.memory_mib()
    finally:
        run.stopping = True
        for sub in run.subscribers:
            if sub.conn is not None:
                sub.conn.close()
        for task in list(run.tasks):
            task.cancel()
        if hasattr(publisher, "writer"):
            publisher.close()
        await server.stop()

    expected = args.subscribers * args.messages
    delivered = len(run.latencies)
    lost = sum(max(0, run.final - max(s.last, run.warm_top)) for s in run.subscribers)
    duplicates = sum(s.duplicates for s in run.subscribers)
    gaps = sum(s.gaps for s in run.subscribers)
    if publisher.offsets != list(range(1, len(publisher.offsets) + 1)):
        run.fail("the publish API answered offsets out of sequence")
    if lost or gaps or duplicates or delivered != expected:
        run.fail(
            f"delivery: {delivered} of {expected} messages, {lost} missing at the end, "
            f"{gaps} skipped, {duplicates} duplicated"
        )
    wall = finished - t0
    latencies = sorted(run.latencies)
    result.update(
        ok=not run.failures,
        failures=run.failures,
        delivered=delivered,
        expected=expected,
        connect_s=connect_s,
        wall_s=wall,
        publish_rps=(len(publisher.offsets) - WARMUP) / (published - t0),
        delivered_mps=delivered / wall if wall > 0 else 0.0,
        latency_p50_ms=_percentile(latencies, 0.50) * 1000,
        latency_p99_ms=_percentile(latencies, 0.99) * 1000,
        latency_max_ms=(latencies[-1] if latencies else float("nan")) * 1000,
        server_cpu_s=cpu,
        server_cpu_busy=cpu / wall if wall > 0 else 0.0,
        server_us_per_delivery=cpu / delivered * 1e6 if delivered else float("nan"),
        redis_cpu_s=redis_cpu,
        total_us_per_delivery=(cpu + redis_cpu) / delivered * 1e6 if delivered else float("nan"),
        server_rss_idle_mib=idle_rss,
        server_rss_connected_mib=connected_rss,
        server_rss_mib=rss,
        server_hwm_mib=hwm,
        bench_cpu_busy=self_cpu / wall if wall > 0 else 0.0,
        reconnects=sum(run.reconnects.values()),
        reconnect_reasons=dict(run.reconnects),
    )
    if not result["ok"]:
        result["server_stderr"] = server.stderr_tail()
    return result


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


# -- reporting ----------------------------------------------------------------------

ROWS = [
    # key, label, format, in the ratio column
    ("delivered_mps", "delivered msg/s", "{:,.0f}", True),
    ("publish_rps", "publish req/s", "{:,.1f}", True),
    ("latency_p50_ms", "latency p50 ms", "{:.2f}", True),
    ("latency_p99_ms", "latency p99 ms", "{:.2f}", True),
    ("latency_max_ms", "latency max ms", "{:.2f}", True),
    ("server_cpu_s", "server CPU s", "{:.2f}", True),
    ("server_us_per_delivery", "server CPU us/delivery", "{:.2f}", True),
    ("server_cpu_busy", "server CPU busy", "{:.0%}", False),
    ("redis_cpu_s", "redis-server CPU s", "{:.2f}", False),
    ("total_us_per_delivery", "with redis us/delivery", "{:.2f}", True),
    ("server_rss_mib", "server RSS MiB", "{:.1f}", True),
    ("bench_cpu_busy", "bench client CPU busy", "{:.0%}", False),
    ("wall_s", "measured wall s", "{:.2f}", False),
    ("reconnects", "reconnects", "{:d}", False),
]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each metric over repeated runs of one server."""
    summary: dict[str, Any] = {"runs": len(runs), "ok": all(r["ok"] for r in runs)}
    for key, *_ in ROWS:
        values = [r[key] for r in runs]
        median = statistics.median(values)
        summary[key] = type(values[0])(median) if isinstance(values[0], int) else median
    summary["failures"] = [f for r in runs for f in r["failures"]]
    reasons: Counter[str] = Counter()
    for r in runs:
        reasons.update(r["reconnect_reasons"])
    summary["reconnect_reasons"] = dict(reasons)
    return summary


def ratios(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    return {
        key: ours[key] / base[key] if base[key] else float("nan")
        for key, _, _, in_ratio in ROWS
        if in_ratio
    }


def table(args: argparse.Namespace, summary: dict[str, dict[str, Any]]) -> str:
    names = list(summary)
    mode = f"fixed rate {args.rate:g} msg/s" if args.rate else "as fast as possible"
    lines = [
        f"fan-out over {args.transport}: {args.subscribers} subscribers x {args.messages} "
        f"messages of ~{args.size} B, {mode}, {args.window} publish(es) in flight"
        + (f", median of {args.repeat}" if args.repeat > 1 else ""),
        f"{'':26}" + "".join(f"{name:>14}" for name in names),
    ]
    for key, label, fmt, _ in ROWS:
        lines.append(f"{label:26}" + "".join(f"{fmt.format(summary[n][key]):>14}" for n in names))
    lines.append(
        f"{'result':26}" + "".join(f"{'ok' if summary[n]['ok'] else 'FAILED':>14}" for n in names)
    )
    pairs = [(n, "baseline") for n in names if n != "baseline" and "baseline" in summary]
    pairs += [(n, "torchannels") for n in ("redis", "redis-2w") if n in summary]
    pairs += [("redis-2w", "redis")] if {"redis", "redis-2w"} <= set(summary) else []
    pairs = [(a, b) for a, b in pairs if a in summary and b in summary]
    for a, b in pairs:
        r = ratios(summary[a], summary[b])
        keys = ("delivered_mps", "server_us_per_delivery", "total_us_per_delivery")
        shown = ", ".join(f"{key} {r[key]:.2f}" for key in keys)
        lines.append(f"ratio {a} / {b}: {shown}")
    for name, s in summary.items():
        for failure in s["failures"]:
            lines.append(f"  {name}: {failure}")
        if s["reconnect_reasons"]:
            lines.append(f"  {name} reconnects: {s['reconnect_reasons']}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import tornado

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def git(*argv: str) -> str:
        try:
            out = subprocess.run(["git", *argv], cwd=HERE, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.decode().strip()

    return {
        "git_head": git("rev-parse", "--short", "HEAD"),
        "src_modified": bool(git("status", "--porcelain", "--", "../src")),
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "tornado": tornado.version,
        "loadavg_at_start": os.getloadavg(),
    }


# -- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fan-out benchmark of torchannels against a minimal Tornado baseline."
    )
    parser.add_argument("--subscribers", type=int, default=200, help="subscribers (200)")
    parser.add_argument("--messages", type=int, default=2000, help="messages measured (2000)")
    parser.add_argument("--transport", choices=("websocket", "sse", "stream"), default="websocket")
    parser.add_argument("--size", type=int, default=256, help="bytes of published data (256)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="publish at this many msg/s (default: max)"
    )
    parser.add_argument(
        "--window",
        type=int,
        help="publish requests in flight (default 8, or 64 with --rate); 1: request-response",
    )
    parser.add_argument("--repeat", type=int, default=1, help="server pairs to run (medians)")
    parser.add_argument("--json", type=Path, help="write all results as JSON here")
    parser.add_argument(
        "--only", choices=SERVERS, help="run one server only (no ratios; for profiling)"
    )
    parser.add_argument(
        "--servers",
        default="torchannels,baseline",
        help="comma-separated servers to run, of: "
        + ", ".join(SERVERS)
        + " (redis*: torchannels on the Redis at "
        + REDIS_URL
        + ")",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record each server with py-spy (pip install py-spy) into DIR/SERVER-TRANSPORT.txt",
    )
    parser.add_argument(
        "--hub-log-level",
        default="warning",
        help="torchannels --log-level (warning: no per-request access log; default warning)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to CPU 0 and this process to CPU 1",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="publishing time limit")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--max-reconnects", type=int, default=100, help="per subscriber")
    args = parser.parse_args(argv)
    args.server_names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if not args.server_names or set(args.server_names) - set(SERVERS):
        parser.error("--servers takes names from " + ", ".join(SERVERS))
    if args.window is None:
        args.window = 64 if args.rate else 8
    if (
        args.subscribers < 1
        or args.window < 1
        or args.messages < 1
        or args.repeat < 1
        or args.size < 0
    ):
        parser.error("--subscribers, --messages, --window and --repeat must be positive")
    return args


async def main_async(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.subscribers + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # servers inherit it
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.pin:
        os.sched_setaffinity(0, {1})  # the servers get CPU 0
    names = [args.only] if args.only else args.server_names
    host = machine()  # before the runs: the load average and commit they start with
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        for rep in range(args.repeat):
            # Alternate the order so neither server always runs on a warmer machine.
            for name in names if rep % 2 == 0 else names[::-1]:
                result = await run_server(name, args, Path(tmp))
                runs[name].append(result)
                print(
                    f"  [{rep + 1}/{args.repeat}] {name:11} {result['delivered_mps']:>10,.0f} msg/s"
                    f"  p50 {result['latency_p50_ms']:.2f} ms"
                    f"  cpu {result['server_us_per_delivery']:.2f} us/delivery"
                    f"  {'ok' if result['ok'] else 'FAILED'}",
                    file=sys.stderr,
                    flush=True,
                )
    summary = {name: summarize(results) for name, results in runs.items()}
    if args.only:
        s = summary[args.only]
        for key, label, fmt, _ in ROWS:
            print(f"{label:24}{fmt.format(s[key]):>14}")
        print(f"{'result':24}{'ok' if s['ok'] else 'FAILED':>14}")
        for failure in s["failures"]:
            print(f"  {args.only}: {failure}")
    else:
        print(table(args, summary))
    if args.json is not None:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        document = {
            "config": {**config, "warmup": WARMUP, "channel": CHANNEL},
            "commands": {name: server_argv(name, args) for name in names},
            "machine": host,
            "summary": summary,
            "ratios": {
                f"{a}/{b}": ratios(summary[a], summary[b])
                for a in names
                for b in names
                if a != b and b in ("baseline", "torchannels", "redis")
            },
            "runs": runs,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if all(s["ok"] for s in summary.values()) else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

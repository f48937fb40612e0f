"""Idle connections: server memory per idle connection, and the time to fan
one message out to all of them (issue 23), at 10,000 and 100,000.

For each contender (``SERVER:TRANSPORT`` as in bench/fanout.py: torchannels
over ``stream``, ``sse`` or ``websocket``, the raw asyncio floor
``asyncio:sse``, the minimal Tornado server ``baseline:*``, Nchan
``nchan:sse`` and ``nchan:websocket``) and connection count N:

1. start the server alone (pinned to CPU 0, as bench/fanout.py does) and
   read its RSS;
2. open N subscriptions to one channel from client processes (pinned to
   CPU 1, at most ``--per-client`` connections each), every client socket
   bound to a source address of its own spread over 127.0.0.0/8
   (127.0.1.1, 127.0.1.2, ..., ``--per-address`` connections each), so the
   ephemeral ports of one address are never the limit; each waits for its
   ``subscribed`` frame (Nchan: for the response head);
3. wait ``--settle`` seconds, read RSS again: **RSS per idle connection**
   = (connected - before) / N;
4. ``--rounds`` times, publish one message and take the time from just
   before the publish request to the last subscriber's receipt of it
   (**fan-out time**; receipt times are ``perf_counter()``, the system's
   monotonic clock, the same in every process), with the server's CPU time
   over the round; every connection must get every round's message once.

One server process holds every connection, so N is bounded by its
open-file limit: N + 64 must fit under RLIMIT_NOFILE's hard limit, which
only root with CAP_SYS_RESOURCE can raise. When it does not fit the count
is skipped with a message naming the limit (exit status 0 if nothing
else failed); the JSON records it.

    .venv/bin/python bench/idle.py --connections 10000,19000,100000
    .venv/bin/python bench/idle.py --contenders torchannels:sse --connections 2000 --rounds 3

docs/benchmarks.md (issue 23) has the method and results.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fanout_client import API_KEY, HOST
from fanout_report import machine, update_docs
from fanout_servers import KINDS, Server, label, parse_contender, server_argv

CHANNEL = "bench:idle"
SERVERS = ("torchannels", "asyncio", "baseline", "nchan")
DEFAULT = (
    "torchannels:stream",
    "torchannels:sse",
    "torchannels:websocket",
    "asyncio:sse",
    "nchan:sse",
    "nchan:websocket",
)
#: Open files a server needs beside its connections (listeners, logs, ...).
SPARE_FILES = 64
ROUND_RE = re.compile(rb'"idle":(\d+)')


def source_address(index: int) -> str:
    """The ``index``-th client address: 127.0.1.1 ... 127.0.1.254, 127.0.2.1, ..."""
    return f"127.{1 + index // (254 * 254)}.{1 + index // 254 % 254}.{1 + index % 254}"


# -- the client processes -------------------------------------------------------------


class Idle(asyncio.Protocol):
    """One idle subscription: joined once ``subscribed`` (or, for Nchan, the
    response head) arrives; afterwards only the rounds' messages count."""

    __slots__ = ("client", "head", "joined", "ready", "tail", "transport")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.head = False
        self.joined = False
        self.tail = b""
        #: Done when joined or closed (while connecting only).
        self.ready: asyncio.Future[None] | None = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.client.stopping:
            self.client.lost += 1
        if not self.joined and not self.client.stopping:
            self.client.failed(f"closed before it joined: {exc!r}")
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        data = self.tail + data
        client = self.client
        if not self.head:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.tail = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 200 " not in status and b" 101 " not in status:
                client.failed(f"answered {status.decode(errors='replace')}")
                self.tail = b""
                return
            self.head = True
            data = data[end + 4 :]
            if client.bare:
                self.join()
        if not self.joined:
            if b'"type":"subscribed"' not in data:
                self.tail = data[-64:]
                return
            self.join()
        end = 0
        for match in ROUND_RE.finditer(data):
            client.received(int(match[1]), now)
            end = match.end()
        self.tail = data[end:][-32:]  # a marker cut between two reads, none counted

    def join(self) -> None:
        self.joined = True
        self.client.joined += 1
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)


class Client:
    """One client process: ``count`` connections, then per round the
    receipt times of the round's message, reported on stdout as JSON lines;
    commands on stdin (``report R``, ``quit``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bare = args.bare
        self.joined = 0
        self.lost = 0
        self.errors: list[str] = []
        self.stopping = False
        self.rounds: dict[int, list[float]] = {}
        self.conns: list[Idle] = []

    def failed(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text)

    def received(self, rnd: int, now: float) -> None:
        times = self.rounds.setdefault(rnd, [])
        times.append(now)
        if len(times) == self.args.count:
            self.report(rnd)

    def report(self, rnd: int) -> None:
        times = sorted(self.rounds.get(rnd, []))
        doc: dict[str, Any] = {"round": rnd, "received": len(times), "lost": self.lost}
        if times:
            doc |= {"first": times[0], "median": times[len(times) // 2], "last": times[-1]}
        emit(doc)

    def request(self) -> bytes:
        transport = self.args.transport
        host = f"Host: {HOST}:{self.args.port}\r\n"
        if transport == "websocket":
            key = base64.b64encode(os.urandom(16)).decode()
            return (
                f"GET /channels/ws?channel={CHANNEL} HTTP/1.1\r\n{host}"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        accept = "Accept: text/event-stream\r\n" if transport == "sse" else ""
        return (
            f"GET /channels?channel={CHANNEL}&transport={transport} HTTP/1.1\r\n{host}{accept}\r\n"
        ).encode()

    async def connect_all(self) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(256)
        args = self.args

        async def one(i: int) -> None:
            source = source_address((args.first + i) // args.per_address)
            async with gate:
                try:
                    transport, conn = await loop.create_connection(
                        lambda: Idle(self), HOST, args.port, local_addr=(source, 0)
                    )
                except OSError as exc:
                    self.failed(f"connect from {source}: {exc}")
                    return
                self.conns.append(conn)
                transport.write(self.request())
                assert conn.ready is not None
                try:
                    await asyncio.wait_for(conn.ready, 60)
                except TimeoutError:
                    self.failed("not joined within 60 s")
                conn.ready = None

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.count)))
        emit(
            {
                "joined": self.joined,
                "errors": self.errors,
                "connect_s": time.perf_counter() - started,
            }
        )

    async def serve(self) -> None:
        await self.connect_all()
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().split():
            if line[0] == "report":
                self.report(int(line[1]))
            elif line[0] == "quit":
                break
        self.stopping = True
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0.2)


def emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def client_main(args: argparse.Namespace) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(Client(args).serve())
    return 0


# -- the measuring process ------------------------------------------------------------


class Clients:
    """The client processes of one contender and count, pinned to CPU 1."""

    def __init__(self, args: argparse.Namespace, transport: str, port: int, bare: bool) -> None:
        self.args = args
        self.transport = transport
        self.port = port
        self.bare = bare
        self.procs: list[asyncio.subprocess.Process] = []
        self.shares: list[int] = []

    async def start(self, total: int) -> dict[str, Any]:
        """Start the clients and wait until each has opened its share."""
        per = self.args.per_client
        first = 0
        while first < total:
            share = min(per, total - first)
            argv = [sys.executable, str(Path(__file__).resolve()), "--client",
                    "--port", str(self.port), "--transport", self.transport,
                    "--count", str(share), "--first", str(first),
                    "--per-address", str(self.args.per_address)]  # fmt: skip
            if self.bare:
                argv.append("--bare")
            # pinned as this process is: to the clients' CPU
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            self.procs.append(proc)
            self.shares.append(share)
            first += share
        reports = await asyncio.gather(*(self._read(p, 600) for p in self.procs))
        return {
            "joined": sum(r["joined"] for r in reports),
            "errors": [e for r in reports for e in r["errors"]],
            "connect_s": max(r["connect_s"] for r in reports),
        }

    async def _read(self, proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"a client process exited (status {await proc.wait()})")
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def round(self, rnd: int, timeout: float) -> list[dict[str, Any]]:
        """Every client's report of round ``rnd``; a client that has not got
        all its messages within ``timeout`` is asked for what it has."""
        pending = [asyncio.ensure_future(self._read(p, timeout)) for p in self.procs]
        done, _ = await asyncio.wait(pending, timeout=timeout)
        reports = []
        for proc, task in zip(self.procs, pending, strict=True):
            if task not in done:
                assert proc.stdin is not None
                proc.stdin.write(f"report {rnd}\n".encode())
                await proc.stdin.drain()
            reports.append(await asyncio.wait_for(task, 30))
        return reports

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.write(b"quit\n")
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def publish(port: int, rnd: int, bare: bool) -> None:
    """One message carrying ``"idle": rnd`` on its own connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    if bare:  # Nchan's publisher location: the body is the message
        body = b'{"idle":%d}' % rnd
        head = f"POST /api/publish HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    else:
        body = b'{"channel":"%s","data":{"idle":%d}}' % (CHANNEL.encode(), rnd)
        head = (
            f"POST /api/publish HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\n"
        )
    request = head + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(request.encode() + body)
    status = (await asyncio.wait_for(reader.readline(), 60)).decode().strip()
    writer.close()
    if not status.split()[1:2] or status.split()[1] not in ("200", "201", "202"):
        raise RuntimeError(f"publish answered {status!r}")


async def measure(
    contender: str, count: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One contender at one count: connect, settle, read RSS, fan out."""
    server_name, transport = parse_contender(contender)
    kind = KINDS[server_name]
    result: dict[str, Any] = {"contender": contender, "connections": count, "ok": False}
    need = count + SPARE_FILES
    if need > args.hard_limit:
        result["skipped"] = (
            f"{count:,} idle connections need about {need:,} open files in the one server "
            f"process, over this machine's RLIMIT_NOFILE hard limit of {args.hard_limit:,} "
            "(only root with CAP_SYS_RESOURCE can raise it: ulimit -Hn, or LimitNOFILE= "
            "for a service); not measured"
        )
        return result
    options = SimpleNamespace(history=0, size=64, hub_log_level="warning")
    argv = server_argv(server_name, options)
    if server_name == "torchannels":
        # past the default cap (nine tenths of the open-file limit)
        argv += ["--max-connections", str(args.hard_limit - SPARE_FILES)]
    server = Server(
        f"idle-{server_name}-{transport}", argv, workdir, None, {0} if args.pin else None,
        native=bool(kind.native),
    )  # fmt: skip
    clients: Clients | None = None
    failures: list[str] = []
    try:
        await server.start()
        await asyncio.sleep(args.settle)
        result["rss_before_mib"] = server.memory_mib()[0]
        clients = Clients(args, transport, server.port, bool(kind.native))
        joined = await clients.start(count)
        result["connect_s"] = joined["connect_s"]
        if joined["joined"] != count:
            failures.append(f"{joined['joined']:,} of {count:,} joined: {joined['errors'][:3]}")
        await asyncio.sleep(args.settle)
        rss, hwm = server.memory_mib()
        result["rss_connected_mib"] = rss
        result["rss_per_conn_kib"] = (rss - result["rss_before_mib"]) * 1024 / count
        rounds = []
        for rnd in range(1, args.rounds + 1 if not failures else 1):
            cpu0 = server.cpu_seconds()
            started = time.perf_counter()
            await publish(server.publish_port, rnd, bool(kind.native))
            reports = await clients.round(rnd, args.timeout)
            received = sum(r["received"] for r in reports)
            lost = sum(r["lost"] for r in reports)
            if received != count or lost:
                failures.append(f"round {rnd}: {received:,} of {count:,} received, {lost} closed")
                break
            cpu = server.cpu_seconds() - cpu0
            rounds.append({
                "fanout_ms": (max(r["last"] for r in reports) - started) * 1000,
                "first_ms": (min(r["first"] for r in reports) - started) * 1000,
                "server_cpu_ms": cpu * 1000,
            })  # fmt: skip
            await asyncio.sleep(args.pause)
        result["rounds"] = rounds
        if rounds:
            result["fanout_ms"] = statistics.median(r["fanout_ms"] for r in rounds)
            result["first_ms"] = statistics.median(r["first_ms"] for r in rounds)
            # over all rounds: CPU time is counted in 10 ms ticks
            cpu_ms = sum(r["server_cpu_ms"] for r in rounds)
            result["cpu_us_per_delivery"] = cpu_ms * 1000 / (count * len(rounds))
        result["rss_end_mib"], result["hwm_mib"] = server.memory_mib()[0], hwm
    except (OSError, RuntimeError, TimeoutError) as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        if clients is not None:
            await clients.stop()
        await server.stop()
    result["failures"] = failures
    result["ok"] = not failures
    if failures:
        result["server_stderr"] = server.stderr_tail()
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    """The table, then why a row is missing (the open-file limit, failures)."""
    out = [
        "| contender | idle connections | RSS per idle connection | RSS connected "
        "| fan-out of one message: first / last receipt | server CPU per delivery | checked |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    notes: list[str] = []
    for r in results:
        name, count = label(r["contender"]), r["connections"]
        if "skipped" in r:
            out.append(f"| {name} | {count:,} | — | — | — | — | not measurable here |")
            notes.append(r["skipped"])
        elif not r["ok"]:
            out.append(f"| {name} | {count:,} | — | — | — | — | **FAILED** |")
            notes += [f"FAILED {r['contender']} at {count:,}: {f}" for f in r["failures"]]
        else:
            out.append(
                f"| {name} | {count:,} | {r['rss_per_conn_kib']:.1f} KiB "
                f"| {r['rss_connected_mib']:.0f} MiB "
                f"| {r['first_ms']:.0f} / {r['fanout_ms']:.0f} ms "
                f"| {r['cpu_us_per_delivery']:.1f} µs | ok |"
            )
    out.append("")
    out += [f"- {note}" for note in dict.fromkeys(notes)]
    return "\n".join(out).rstrip() + "\n"


async def main_async(args: argparse.Namespace) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it
    args.hard_limit = hard
    args.per_client = min(args.per_client, hard - SPARE_FILES)
    if args.pin:
        os.sched_setaffinity(0, set(args.client_cpus))
    host = machine()
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="idle-") as tmp:
        for count in args.counts:
            for name in args.names:
                result = await measure(name, count, args, Path(tmp))
                results.append(result)
                if "skipped" in result:
                    status = "skipped: " + result["skipped"]
                elif result["ok"]:
                    status = (
                        f"{result['rss_per_conn_kib']:.1f} KiB/conn, fan-out "
                        f"{result['fanout_ms']:.0f} ms"
                    )
                else:
                    status = "FAILED: " + "; ".join(result["failures"])
                print(f"  {name:24} {count:>7,} idle  {status}", file=sys.stderr, flush=True)
    host["duration_s"] = time.perf_counter() - started
    host["loadavg_at_end"] = os.getloadavg()
    table = markdown(results)
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table)
    if args.docs is not None:
        what = f"{args.rounds} message(s) fanned out per row, medians"
        update_docs(args.docs, args.docs_section, "bench/idle.py", args.command, host, what, table)
    if args.json is not None:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        doc = {"config": config, "machine": host, "results": results}
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0 if all(r["ok"] or "skipped" in r for r in results) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--contenders", default=",".join(DEFAULT), help="comma-separated SERVER:TRANSPORT")
    add("--connections", default="10000,100000", help="comma-separated counts (10000,100000)")
    add("--rounds", type=int, default=5, help="messages fanned out, one at a time (5)")
    add("--settle", type=float, default=2.0, help="seconds before reading RSS (2)")
    add("--pause", type=float, default=0.5, help="seconds between rounds (0.5)")
    add("--timeout", type=float, default=60.0, help="seconds a round may take (60)")
    add("--per-client", type=int, default=10_000, help="connections per client process")
    add("--per-address", type=int, default=1000, help="connections per source address")
    add("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
        help="server on CPU 0, clients on CPU 1 (default with 2+ CPUs)")  # fmt: skip
    add("--json", type=Path, help="write the results as JSON here")
    add("--markdown", type=Path, help="write the table here")
    add("--docs", type=Path, help="put the table between the markers of this markdown file")
    add("--docs-section", default="bench-idle", help="the markers' name (bench-idle)")
    add("--command", default="", help="the command to name in --docs (make bench-idle)")
    # the client processes' own options
    add("--client", action="store_true", help=argparse.SUPPRESS)
    add("--port", type=int, help=argparse.SUPPRESS)
    add("--transport", help=argparse.SUPPRESS)
    add("--count", type=int, help=argparse.SUPPRESS)
    add("--first", type=int, default=0, help=argparse.SUPPRESS)
    add("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return args
    args.names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    try:
        for name in args.names:
            if parse_contender(name)[0] not in SERVERS:
                raise ValueError(f"{name}: bench/idle.py serves {', '.join(SERVERS)}")
        args.counts = [int(n) for n in args.connections.split(",")]
    except ValueError as exc:
        parser.error(str(exc))
    args.client_cpus = {1} if args.pin else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(args)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

"""Outbox benchmark (issue 22): the PostgreSQL outbox against the publish API, in one run.

Every measurement starts a fresh ``torchannels serve`` on the shared Redis
(a new ``--redis-prefix``) with one NDJSON stream subscribed to all
``--channels`` channels, and ends when that subscriber has every message:
rates are messages from the first send (or insert) to the subscriber's
last receipt. The subscriber checks that each channel's offsets come
consecutively from 1, every message once; anything else fails the run.

Throughput (rounds interleaved, medians):

- ``api``: the baseline. ``POST /api/publish`` in its batch form
  (``{"messages": [...]}``, ``--api-batch`` messages a request over the
  channels in turn), ``--window`` requests pipelined on one keep-alive
  connection, no idempotency keys; ``api+keys``: the same with a unique
  ``idempotency_key`` per message (the work the outbox's publishes do).
- ``drain B``: ``--rows`` rows committed in one transaction while
  ``serve --outbox DSN --outbox-batch B`` waits; from the ``COMMIT`` to the
  last receipt. The consumer's own rate: B is its batch (rows claimed per
  partition per transaction).
- ``stream B``: ``--writers`` connections insert with ``aenqueue`` (one
  ``INSERT`` a row) in transactions of B rows for ``--seconds`` while the
  consumer (``--outbox-batch B``) runs; from the first insert to the last
  receipt. B is both the insert transaction size and the consumer's batch.
  The writers' own rate is shown beside it.

Latency (``--rate`` messages a second for ``--latency-seconds``, one message
each; p50 and p99 of receipt minus start):

- ``api``: one-message ``POST /api/publish`` requests on a keep-alive
  connection, from writing the request;
- ``outbox``: one-row transactions (``aenqueue`` then ``COMMIT``) on one
  connection, consumer at the default batch of 100, from sending the
  ``COMMIT`` (the commit's own time is shown apart).

PostgreSQL is the server at ``--postgres`` (a database made for the run and
dropped after it); Redis the one at ``--redis``. Not part of ``make test``;
about 2 minutes on 2 cores::

    .venv/bin/python bench/outbox.py
    .venv/bin/python bench/outbox.py --rounds 3 --json test-output/bench-outbox.json

Exit status: 0 when every measurement succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from fanout_report import machine
from serve_process import HOST, start_serve

from torchannels.outbox import aenqueue, ddl

KEY = "bench-key"
TABLE = "torchannels_outbox"
POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


# -- the processes --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Served:
    """One ``serve`` process for one measurement (``--outbox`` when ``batch``)."""

    def __init__(self, args: argparse.Namespace, dsn: str, batch: int | None) -> None:
        self.args = args
        self.flags = [
            "--api-key", KEY, "--no-demo", "--anonymous", "bench:*", "--log-level", "warning",
            "--broker", args.redis, "--redis-prefix", f"bench-outbox-{secrets.token_hex(6)}",
            "--history-ttl", "120", "--history-meta-ttl", "120",
            "--max-publish-bytes", str(8 << 20), "--stream-max-bytes", str(1 << 30),
            "--max-pending-bytes", str(1 << 28),
        ]  # fmt: skip
        if batch is not None:
            self.flags += ["--outbox", dsn, "--outbox-batch", str(batch)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    async def __aenter__(self) -> Served:
        log = Path(self.args.workdir) / f"serve-{time.time_ns()}.log"
        self.proc, self.port = await start_serve(self.flags, log)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        await asyncio.to_thread(self.proc.wait, 15)

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)


class Subscriber:
    """An NDJSON stream of every channel; the receipt time of each message."""

    def __init__(self, port: int, channels: Sequence[str]) -> None:
        self.port = port
        self.channels = list(channels)
        #: (receipt time, message data) of every message, in arrival order.
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.failures: list[str] = []
        self._last: dict[str, int] = dict.fromkeys(self.channels, 0)
        self._subscribed: set[str] = set()
        self._want = 0
        self._reached = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_connection(HOST, self.port, limit=1 << 24)
        query = "&".join(f"channel={c}" for c in self.channels)
        self._writer.write(
            f"GET /channels?transport=stream&{query} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
            raise RuntimeError(f"subscribe failed: {head!r}")
        self._task = asyncio.ensure_future(self._read(reader))
        await asyncio.wait_for(self._ready.wait(), 20)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        rest = b""
        try:
            while size := int((await reader.readline()).split(b";")[0], 16):
                chunk = await reader.readexactly(size + 2)
                now = time.perf_counter()
                *lines, rest = (rest + chunk[:-2]).split(b"\n")
                for line in lines:
                    self._frame(now, json.loads(line))
            self.failures.append("stream ended")
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            self.failures.append(f"stream ended: {exc!r}")
        self._reached.set()

    def _frame(self, now: float, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "message":
            data = frame["data"]
            channel, offset = data["channel"], data["offset"]
            if offset != self._last[channel] + 1:
                self.failures.append(f"{channel}: offset {offset} after {self._last[channel]}")
            self._last[channel] = offset
            self.got.append((now, data))
            if len(self.got) >= self._want > 0:
                self._reached.set()
        elif kind == "subscribed":
            self._subscribed.add(frame["channel"])
            if frame["offset"] != 0:
                self.failures.append(f"{frame['channel']}: subscribed at {frame['offset']}")
            if self._subscribed == set(self.channels):
                self._ready.set()
        elif kind not in ("connected", "ping"):
            self.failures.append(f"unexpected frame {frame}")

    async def until(self, count: int, timeout: float) -> float:
        """Wait until ``count`` messages arrived; the last one's receipt time."""
        self._want = count
        if len(self.got) < count:
            self._reached.clear()
            try:
                await asyncio.wait_for(self._reached.wait(), timeout)
            except TimeoutError:
                self.failures.append(f"{len(self.got)} of {count} messages in {timeout} s")
        if len(self.got) != count:
            self.failures.append(f"{len(self.got)} messages, expected {count}")
        return self.got[-1][0] if self.got else float("nan")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def channel_names(args: argparse.Namespace) -> list[str]:
    return [f"bench:c{i}" for i in range(args.channels)]


# -- throughput ------------------------------------------------------------------------


def publish_request(body: bytes) -> bytes:
    """``POST /api/publish`` with ``body``, as bytes on the wire."""
    return (
        f"POST /api/publish HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Pipelined:
    """HTTP/1.1 requests pipelined on one keep-alive connection, ``window``
    in flight; every answer must be 200."""

    def __init__(self, port: int, window: int) -> None:
        self.port = port
        self.window = asyncio.Semaphore(window)
        self.failures: list[str] = []
        self._sent: asyncio.Queue[None] = asyncio.Queue()

    async def run(self, bodies: Sequence[bytes]) -> None:
        reader, writer = await asyncio.open_connection(HOST, self.port, limit=1 << 24)
        reading = asyncio.ensure_future(self._answers(reader, len(bodies)))
        for body in bodies:
            await self.window.acquire()
            if reading.done():
                break
            writer.write(publish_request(body))
        await asyncio.wait_for(reading, 120)
        writer.close()

    async def _answers(self, reader: asyncio.StreamReader, count: int) -> None:
        for _ in range(count):
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            answer = await reader.readexactly(int(length[1]) if length else 0)
            if not head.startswith(b"HTTP/1.1 200"):
                self.failures.append(f"{head.split(b' ', 2)[1].decode()} {answer[:200]!r}")
                return
            self.window.release()


async def api_throughput(args: argparse.Namespace, keys: bool) -> dict[str, Any]:
    channels = channel_names(args)
    total = args.rows - args.rows % args.api_batch
    bodies = []
    for start in range(0, total, args.api_batch):
        items: list[dict[str, Any]] = []
        for k in range(start, start + args.api_batch):
            item: dict[str, Any] = {"channel": channels[k % len(channels)], "data": {"k": k}}
            if keys:
                item["idempotency_key"] = f"bench-{k}"
            items.append(item)
        bodies.append(json.dumps({"messages": items}).encode())
    async with Served(args, "", None) as served:
        sub = Subscriber(served.port, channels)
        await sub.start()
        publisher = Pipelined(served.port, args.window)
        cpu0, t0 = served.cpu(), time.perf_counter()
        await publisher.run(bodies)
        end = await sub.until(total, args.timeout)
        cpu = served.cpu() - cpu0
        await sub.close()
    return _throughput("api+keys" if keys else "api", None, total, end - t0, cpu,
                       sub.failures + publisher.failures)  # fmt: skip


async def reset_table(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"TRUNCATE {TABLE}")
        await conn.execute(f"VACUUM ANALYZE {TABLE}")


async def drain(args: argparse.Namespace, dsn: str, batch: int) -> dict[str, Any]:
    channels = channel_names(args)
    await reset_table(dsn)
    async with Served(args, dsn, batch) as served:
        sub = Subscriber(served.port, channels)
        await sub.start()
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute(
                f"INSERT INTO {TABLE} (channel, data)"
                " SELECT (%(ch)s::text[])[i %% %(n)s + 1], json_build_object('k', i)::text"
                " FROM generate_series(0, %(last)s) AS i ORDER BY i",
                {"ch": channels, "n": len(channels), "last": args.rows - 1},
            )
            cpu0, t0 = served.cpu(), time.perf_counter()
            await conn.commit()
        end = await sub.until(args.rows, args.timeout)
        cpu = served.cpu() - cpu0
        await sub.close()
    return _throughput("drain", batch, args.rows, end - t0, cpu, sub.failures)


async def stream(args: argparse.Namespace, dsn: str, batch: int) -> dict[str, Any]:
    channels = channel_names(args)
    await reset_table(dsn)
    committed = [0] * args.writers

    async def writer(w: int, deadline: float) -> None:
        mine = channels[w :: args.writers]
        k = 0
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            while time.perf_counter() < deadline:
                async with conn.transaction():
                    for _ in range(batch):
                        await aenqueue(conn, mine[k % len(mine)], {"k": k * args.writers + w})
                        k += 1
                committed[w] = k

    async with Served(args, dsn, batch) as served:
        sub = Subscriber(served.port, channels)
        await sub.start()
        cpu0, t0 = served.cpu(), time.perf_counter()
        await asyncio.gather(*(writer(w, t0 + args.seconds) for w in range(args.writers)))
        wrote = time.perf_counter() - t0
        end = await sub.until(sum(committed), args.timeout)
        tail = end - (t0 + wrote)
        cpu = served.cpu() - cpu0
        await sub.close()
    result = _throughput("stream", batch, sum(committed), end - t0, cpu, sub.failures)
    result["inserted_per_s"] = sum(committed) / wrote
    result["tail_ms"] = tail * 1e3
    return result


def _throughput(
    mode: str, batch: int | None, rows: int, wall: float, cpu: float, failures: list[str]
) -> dict[str, Any]:
    return {
        "mode": mode,
        "batch": batch,
        "messages": rows,
        "seconds": wall,
        "per_s": rows / wall,
        "server_us_per_message": cpu / rows * 1e6,
        "ok": not failures,
        "failures": failures[:5],
    }


# -- latency ---------------------------------------------------------------------------


async def api_latency(args: argparse.Namespace) -> dict[str, Any]:
    channels = channel_names(args)
    count = int(args.rate * args.latency_seconds)
    sent: dict[int, float] = {}
    failures: list[str] = []
    async with Served(args, "", None) as served:
        sub = Subscriber(served.port, channels)
        await sub.start()
        reader, writer = await asyncio.open_connection(HOST, served.port)

        async def answers() -> None:
            for _ in range(count):
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length[1]) if length else 0)
                if not head.startswith(b"HTTP/1.1 200"):
                    failures.append(head[:40].decode())

        reading = asyncio.ensure_future(answers())
        start = time.perf_counter()
        for k in range(count):
            await _at(start + k / args.rate)
            body = json.dumps({"channel": channels[k % len(channels)], "data": {"k": k}})
            sent[k] = time.perf_counter()
            writer.write(publish_request(body.encode()))
        await asyncio.wait_for(reading, 60)
        writer.close()
        await sub.until(count, args.timeout)
        await sub.close()
    return _latency("api", sent, sub, failures + sub.failures, [])


async def outbox_latency(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    channels = channel_names(args)
    count = int(args.rate * args.latency_seconds)
    sent: dict[int, float] = {}
    commits: list[float] = []
    await reset_table(dsn)
    async with Served(args, dsn, 100) as served:
        sub = Subscriber(served.port, channels)
        await sub.start()
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            start = time.perf_counter()
            for k in range(count):
                await _at(start + k / args.rate)
                await aenqueue(conn, channels[k % len(channels)], {"k": k})
                sent[k] = time.perf_counter()
                await conn.commit()
                commits.append(time.perf_counter() - sent[k])
        await sub.until(count, args.timeout)
        await sub.close()
    return _latency("outbox", sent, sub, sub.failures, commits)


async def _at(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _latency(
    mode: str, sent: dict[int, float], sub: Subscriber, failures: list[str], commits: list[float]
) -> dict[str, Any]:
    ms = sorted((t - sent[data["k"]]) * 1e3 for t, data in sub.got)
    return {
        "mode": mode,
        "messages": len(ms),
        "p50_ms": _pct(ms, 50),
        "p99_ms": _pct(ms, 99),
        "max_ms": ms[-1] if ms else float("nan"),
        "commit_p50_ms": _pct(sorted(c * 1e3 for c in commits), 50) if commits else None,
        "commit_p99_ms": _pct(sorted(c * 1e3 for c in commits), 99) if commits else None,
        "ok": not failures,
        "failures": failures[:5],
    }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


# -- the run ---------------------------------------------------------------------------


class Database:
    """A database of the run's own on the ``--postgres`` server, with the outbox table."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.name = "torchannels_bench_" + secrets.token_hex(6)
        self.dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=self.name)

    async def __aenter__(self) -> str:
        async with await psycopg.AsyncConnection.connect(self.server_dsn, autocommit=True) as c:
            await c.execute(f"CREATE DATABASE {self.name}")
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as c:
            await c.execute(ddl())
        return self.dsn

    async def __aexit__(self, *exc: object) -> None:
        async with await psycopg.AsyncConnection.connect(self.server_dsn, autocommit=True) as c:
            await c.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def postgres_settings(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        names = ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def label(result: dict[str, Any]) -> str:
    return str(result["mode"]) + ("" if result["batch"] is None else f" {result['batch']}")


async def main_async(args: argparse.Namespace) -> int:
    host = machine() | {"postgres": postgres_settings(args.postgres)}
    started = time.monotonic()
    throughput: dict[str, list[dict[str, Any]]] = {}
    latency: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as workdir:
        args.workdir = workdir
        async with Database(args.postgres) as dsn:
            for round_ in range(args.rounds):
                jobs: list[Any] = []
                if "throughput" in args.parts:
                    jobs += [lambda k=k: api_throughput(args, k) for k in (False, True)]
                for b in args.batches if "throughput" in args.parts else []:
                    jobs.append(lambda b=b: drain(args, dsn, b))
                    jobs.append(lambda b=b: stream(args, dsn, b))
                if round_ % 2:
                    jobs.reverse()
                for job in jobs:
                    result = await job()
                    throughput.setdefault(label(result), []).append(result)
                    _print_throughput(result)
                latency_jobs = [lambda: api_latency(args), lambda: outbox_latency(args, dsn)]
                for job in latency_jobs if "latency" in args.parts else []:
                    result = await job()
                    latency.setdefault(result["mode"], []).append(result)
                    _print_latency(result)
    host["load_end"] = os.getloadavg()
    host["minutes"] = (time.monotonic() - started) / 60
    summary = {k: _median(v) for k, v in throughput.items()}
    lat = {k: _median(v) for k, v in latency.items()}
    print()
    print(report(args, host, summary, lat))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k not in ("json", "workdir")}
        args.json.write_text(json.dumps({"config": config, "machine": host,
                                         "throughput": throughput, "latency": latency},
                                        indent=2, default=str) + "\n")  # fmt: skip
    every = [r for rs in (*throughput.values(), *latency.values()) for r in rs]
    return 0 if all(r["ok"] for r in every) else 1


def _ok(result: dict[str, Any]) -> str:
    return "ok" if result["ok"] else "FAILED " + "; ".join(result["failures"])


def _print_throughput(r: dict[str, Any]) -> None:
    extra = ""
    if "inserted_per_s" in r:
        extra = f"  (inserted {r['inserted_per_s']:,.0f}/s, tail {r['tail_ms']:.0f} ms)"
    print(f"  {label(r):12} {r['per_s']:>9,.0f} msg/s  {r['server_us_per_message']:6.1f} us/msg"
          f"{extra}  {_ok(r)}", flush=True)  # fmt: skip


def _print_latency(r: dict[str, Any]) -> None:
    commit = (
        ""
        if r["commit_p50_ms"] is None
        else (f"  (COMMIT p50 {r['commit_p50_ms']:.2f}, p99 {r['commit_p99_ms']:.2f} ms)")
    )
    print(f"  latency {r['mode']:7} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
          f"  max {r['max_ms']:6.2f} ms{commit}  {_ok(r)}", flush=True)  # fmt: skip


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "batch":
            out[key] = statistics.median(r[key] for r in results)
    out["ok"] = all(r["ok"] for r in results)
    return out


def report(
    args: argparse.Namespace,
    host: dict[str, Any],
    summary: dict[str, dict[str, Any]],
    lat: dict[str, dict[str, Any]],
) -> str:
    """The run's tables, in Markdown."""
    load = ", ".join(f"{x:.2f}" for x in host["loadavg_at_start"])
    end = ", ".join(f"{x:.2f}" for x in host["load_end"])
    pg = host["postgres"]
    lines = [
        f"{host['date']}, commit `{host['git_head']}`"
        f"{' + uncommitted changes in src/' if host['src_modified'] else ''}; "
        f"{host['nproc']} CPUs ({host['cpu']}), Python {host['python']}; PostgreSQL "
        f"{pg['server_version']} (fsync {pg['fsync']}, synchronous_commit "
        f"{pg['synchronous_commit']}); load average at start {load}, at end {end}; "
        f"{args.rounds} round(s), medians; {host['minutes']:.1f} minutes.",
        "",
        f"**Throughput** ({args.channels} channels, one NDJSON subscriber of all; "
        "messages from the first send or insert to the subscriber's last receipt):",
        "",
        "| path | batch | messages | msg/s | ratio to `api` | server µs/msg | note | checked |",
        "|---|--:|--:|--:|--:|--:|---|---|",
    ]
    base = summary["api"]["per_s"]
    for r in summary.values():
        note = ""
        if "inserted_per_s" in r:
            note = f"inserted {r['inserted_per_s']:,.0f}/s; last row {r['tail_ms']:.0f} ms after"
        batch = args.api_batch if r["batch"] is None else r["batch"]
        lines.append(
            f"| {r['mode']} | {batch:,} | {r['messages']:,.0f} | {r['per_s']:,.0f} | "
            f"{r['per_s'] / base:.2f} | {r['server_us_per_message']:.1f} | {note} | "
            f"{'ok' if r['ok'] else 'FAILED'} |"
        )
    lines += [
        "",
        f"**Latency** ({args.rate:g} messages/s for {args.latency_seconds:g} s, one a "
        "request or transaction):",
        "",
        "| path | p50 ms | p99 ms | max ms | the COMMIT alone, p50 / p99 ms | checked |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for name, r in lat.items():
        commit = ""
        if r["commit_p50_ms"] is not None:
            commit = f"{r['commit_p50_ms']:.2f} / {r['commit_p99_ms']:.2f}"
        lines.append(
            f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {commit} | "
            f"{'ok' if r['ok'] else 'FAILED'} |"
        )
    if "api" in lat and "outbox" in lat:
        a, o = lat["api"], lat["outbox"]
        lines += [
            "",
            f"Added by the outbox: p50 +{o['p50_ms'] - a['p50_ms']:.2f} ms "
            f"({o['p50_ms'] / a['p50_ms']:.2f}x), p99 +{o['p99_ms'] - a['p99_ms']:.2f} ms "
            f"({o['p99_ms'] / a['p99_ms']:.2f}x).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=POSTGRES,
                        help="a PostgreSQL server (a database is made and dropped)")  # fmt: skip
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rows", type=int, default=20_000, help="messages per throughput run")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100, 1000],
                        help="outbox batch sizes")  # fmt: skip
    parser.add_argument("--api-batch", type=int, default=500, help="messages per API request")
    parser.add_argument("--window", type=int, default=16, help="API requests in flight")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--writers", type=int, default=4, help="inserting connections (stream)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of inserts (stream)")
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s (latency)")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parts", nargs="+", default=["throughput", "latency"],
                        choices=["throughput", "latency"], help="what to measure")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for delivery")
    parser.add_argument("--json", type=Path, help="write every result as JSON here")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

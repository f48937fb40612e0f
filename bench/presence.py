"""Presence benchmark (issue 18): what presence costs, measured on loopback.

Four parts, each printed as a table and, with ``--docs``, written into the
"Presence" section of docs/benchmarks.md (between its markers):

- ``fanout``: one channel, N WebSocket subscribers (each its own user, with
  a token), M messages published flat out (bench/fanout.py's load generator
  and checks), with and without ``presence`` + ``join_leave`` on the channel,
  in alternating rounds. Reported: deliveries/s and server CPU µs per
  delivery of each, and their ratio (goal: presence >= 0.9x).
- ``storm``: 2,000 clients join one presence + join_leave channel within
  ``--storm-seconds`` (NDJSON streams, each its own user, joining at an even
  rate), on one process (memory broker) and on two processes with Redis
  (clients alternate between them). Reported: the hubs' CPU (and Redis's),
  the presence frames and bytes each member received (the first joiner, the
  median, the last), join latency (connect to ``subscribed``) and
  ``GET /health`` latency during the storm (one probe every 100 ms).
- ``reads``: a channel of 10,000 users in Redis: ``counts`` and a page of 100
  members, timed on the store and over HTTP (``GET /api/channels/NAME`` and
  ``GET /api/channels/NAME/presence?limit=100``).
- ``heartbeat``: 10,000 NDJSON connections present in one channel of one
  process on Redis; Redis's commands per second by name (``INFO
  commandstats`` deltas) and its client round trips per second (``MONITOR``:
  commands a client sent, not those run inside scripts), over a window of
  several heartbeats, scaled to the default ``--presence-ttl`` of 30 s.

Every Redis part runs on a private ``redis-server`` on a free port (the
shared one's counters include everyone else's commands). Not part of ``make
test`` or ``make bench``; about 3-5 minutes on 2 cores::

    .venv/bin/python bench/presence.py
    .venv/bin/python bench/presence.py --parts fanout,storm --docs docs/benchmarks.md
    .venv/bin/python bench/presence.py --parts heartbeat --connections 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fanout import phase, tear_down
from fanout_client import WARMUP, Publisher, Run, Subscriber, pad_for
from fanout_report import machine
from fanout_servers import Server, _torchannels_argv
from presence_load import (
    HealthProbe,
    Member,
    PrivateRedis,
    fill_users,
    http_get_ms,
    monitor_counts,
    percentile,
    redis_commandstats,
    token,
)

CONFIG = '[channels."{pattern}"]\npresence = true\njoin_leave = true\n'
#: Presence without join/leave frames: 10,000 members of one channel with
#: join_leave would receive 50 million join entries between them.
QUIET = '[channels."quiet:*"]\npresence = true\n'
BEGIN, END = (
    "<!-- presence:begin (written by bench/presence.py --docs) -->",
    "<!-- presence:end -->",
)
PARTS = ("fanout", "storm", "reads", "heartbeat")


def hub_argv(workdir: Path, pattern: str | None, *extra: str) -> list[str]:
    """``torchannels serve`` as the fan-out bench starts it, plus the token
    secret and, with ``pattern``, a config giving it presence + join_leave."""
    ns = argparse.Namespace(history=1000, size=256, hub_log_level="warning")
    argv = [*_torchannels_argv(ns), "--token-secret", "bench-secret", *extra]
    if pattern is not None:
        config = workdir / f"presence-{time.time_ns()}.toml"
        config.write_text(CONFIG.format(pattern=pattern) + QUIET)
        argv += ["--config", str(config)]
    return argv


# -- fan-out with and without presence -------------------------------------------------


async def fanout_once(args: argparse.Namespace, workdir: Path, presence: bool) -> dict[str, Any]:
    server = Server(
        f"fanout-{'on' if presence else 'off'}",
        hub_argv(workdir, "bench:*" if presence else None),
        workdir,
        None,
        {0} if args.pin else None,
    )
    run = Run("websocket", 0, size=256, max_reconnects=10)
    run.tokens = [token(f"user-{i:05d}", "bench:*", {"n": i}) for i in range(args.subscribers)]
    publisher: Publisher | None = None
    try:
        await server.start()
        run.port = server.port
        publisher = Publisher(server.port, pad_for(256))
        run.subscribers = [Subscriber(run, i) for i in range(args.subscribers)]
        gate = asyncio.Semaphore(256)

        async def join(sub: Subscriber) -> None:
            async with gate:
                await sub.connect()

        await asyncio.wait_for(asyncio.gather(*(join(s) for s in run.subscribers)), 300)
        await asyncio.sleep(1.0)  # the joins' presence frames are flushed
        await publisher.open()
        await publisher.publish(WARMUP, rate=0, window=4, limit=120)
        deadline = time.monotonic() + 60
        while not all(s.last >= WARMUP for s in run.subscribers):
            if time.monotonic() > deadline:
                raise RuntimeError("warm-up not delivered within 60 s")
            await asyncio.sleep(0.01)
        ns = argparse.Namespace(window=0, timeout=300.0, drain_timeout=60.0)
        result = await phase(run, server, publisher, ns, args.messages, 0.0)
    finally:
        await tear_down(run, publisher, server)
    if run.failures:
        raise RuntimeError("; ".join(run.failures))
    return result


async def part_fanout(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    if args.pin:
        os.sched_setaffinity(0, {1})  # the server gets CPU 0
    try:
        for rnd in range(args.rounds):
            for presence in (False, True) if rnd % 2 == 0 else (True, False):
                result = await fanout_once(args, workdir, presence)
                runs[presence].append(result)
                print(f"  fanout presence={presence}: {result['delivered_mps']:,.0f}/s, "
                      f"{result['server_us_per_delivery']:.1f} us", file=sys.stderr)  # fmt: skip
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))

    def med(presence: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs[presence])

    out = {
        "subscribers": args.subscribers,
        "messages": args.messages,
        "rounds": args.rounds,
        "off_mps": med(False, "delivered_mps"),
        "on_mps": med(True, "delivered_mps"),
        "off_us": med(False, "server_us_per_delivery"),
        "on_us": med(True, "server_us_per_delivery"),
        "runs": {"off": runs[False], "on": runs[True]},
    }
    out["ratio_mps"] = out["on_mps"] / out["off_mps"]
    out["ratio_cpu"] = out["off_us"] / out["on_us"]  # > 1: presence cheaper
    return out


# -- join storm --------------------------------------------------------------------------


async def storm(
    args: argparse.Namespace, servers: list[Server], redis: PrivateRedis | None, presence: bool
) -> dict[str, Any]:
    """``--clients`` members join ``room:storm`` (presence + join_leave) or
    ``plain:storm`` (no presence: the control) at an even rate over
    ``--storm-seconds``, round robin over ``servers``."""
    channel = "room:storm" if presence else "plain:storm"
    count, seconds = args.clients, args.storm_seconds
    members = [
        Member(servers[i % len(servers)].port, channel,
               token(f"u{i:05d}", "*", {"name": f"User {i}"}),
               track=presence and (i % 50 == 0 or i == count - 1))
        for i in range(count)
    ]  # fmt: skip
    probe = HealthProbe(servers[0].port, 0.1)
    for server in servers:
        await server.gc_pauses()  # the collector's pauses from here on
    cpu0 = sum(s.cpu_seconds() for s in servers)
    redis0 = redis.cpu_seconds() if redis else 0.0
    start = time.perf_counter()

    async def join(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i * seconds / count - time.perf_counter()))
        await members[i].connect()

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(join(i) for i in range(count)), return_exceptions=True), seconds + 120
    )
    failed = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    if failed:
        print(f"  {len(failed)} of {count} joins failed, e.g. {failed[0]}", file=sys.stderr)
        for server in servers:
            print(f"  {server.name}: {server.stderr_tail()[-1500:]}", file=sys.stderr)
    joined = time.perf_counter() - start
    ok = [not isinstance(o, BaseException) for o in outcomes]
    tracked = [m for m, fine in zip(members, ok, strict=True) if m.track and fine]
    # Every member has every join once the last coalesced frame is flushed.
    deadline = time.monotonic() + 30
    while not all(m.joins_seen() >= count - m.snapshot_users for m in tracked):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    settled = time.perf_counter() - start
    cpu = sum(s.cpu_seconds() for s in servers) - cpu0
    redis_cpu = (redis.cpu_seconds() - redis0) if redis else 0.0
    health = await probe.finish()
    pauses = [await server.gc_pauses() for server in servers]
    gc_max = max((p["max_s"] for p in pauses if p), default=float("nan"))
    complete = sum(1 for m in tracked if m.joins_seen() >= count - m.snapshot_users)
    for m in members:
        m.close()
    frames = sorted(m.presence_frames for m in members)
    sizes = sorted(m.presence_bytes for m in members)
    latencies = sorted(m.join_latency for m in members)
    return {
        "processes": len(servers),
        "clients": count,
        "joined_s": joined,
        "settled_s": settled,
        "complete_members": complete,
        "tracked_members": len(tracked),
        "failed_joins": len(failed),
        "failures": failed[:5],
        "hub_cpu_s": cpu,
        "hub_cpu_busy": cpu / settled,
        "redis_cpu_s": redis_cpu,
        "frames_first": members[0].presence_frames,
        "frames_median": frames[len(frames) // 2],
        "frames_max": frames[-1],
        "frames_last": members[-1].presence_frames,
        "bytes_first": members[0].presence_bytes,
        "bytes_median": sizes[len(sizes) // 2],
        "bytes_last": members[-1].presence_bytes,
        "snapshot_bytes_last": members[-1].snapshot_bytes,
        "join_p50_ms": percentile(latencies, 0.5) * 1000,
        "join_p99_ms": percentile(latencies, 0.99) * 1000,
        "gc_max_ms": gc_max * 1000,
        "health_n": len(health),
        "health_p50_ms": percentile(health, 0.5),
        "health_p99_ms": percentile(health, 0.99),
        "health_max_ms": max(health) if health else float("nan"),
    }


async def part_storm(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Each storm on fresh processes: with presence, then the control without."""
    results: dict[str, Any] = {}
    for presence in (True, False):
        key = "" if presence else "-control"
        one = Server("storm-memory", hub_argv(workdir, "room:*"), workdir, None)
        try:
            await one.start()
            results[f"memory{key}"] = await storm(args, [one], None, presence)
        finally:
            await one.stop()
        async with PrivateRedis(workdir) as redis:
            flags = ["--broker", redis.url, "--redis-prefix", "bench-storm"]
            two = [Server(f"storm-redis-{i}", hub_argv(workdir, "room:*", *flags), workdir, None)
                   for i in range(2)]  # fmt: skip
            try:
                for server in two:
                    await server.start()
                results[f"redis{key}"] = await storm(args, two, redis, presence)
            finally:
                for server in two:
                    await server.stop()
    return results


# -- reads of a 10,000-user channel -------------------------------------------------------


async def timed(call: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99)}


async def part_reads(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    channel = "room:big"
    async with PrivateRedis(workdir) as redis:
        broker = await fill_users(redis.url, "bench-reads", channel, args.users)
        store = broker.presence
        try:
            now = time.time
            out: dict[str, Any] = {"users": args.users}
            out["store_counts"] = await timed(lambda: store.counts(channel, now()), args.reads)
            out["store_page_first"] = await timed(
                lambda: store.page(channel, None, 100, now()), args.reads
            )
            middle = f"user-{args.users // 2:05d}"
            out["store_page_middle"] = await timed(
                lambda: store.page(channel, middle, 100, now()), args.reads
            )
            flags = ["--broker", redis.url, "--redis-prefix", "bench-reads"]
            server = Server("reads", hub_argv(workdir, "room:*", *flags), workdir, None)
            await server.start()
            try:
                port = server.port
                out["http_health"] = await timed(lambda: http_get_ms(port, "/health"), args.reads)
                out["http_channel"] = await timed(
                    lambda: http_get_ms(port, f"/api/channels/{channel}"), args.reads
                )
                out["http_page"] = await timed(
                    lambda: http_get_ms(port, f"/api/channels/{channel}/presence?limit=100"),
                    args.reads,
                )
            finally:
                await server.stop()
        finally:
            await broker.close()
    return out


# -- heartbeat cost ----------------------------------------------------------------------


async def part_heartbeat(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    channel = "quiet:hb"
    ttl = args.heartbeat_ttl
    async with PrivateRedis(workdir) as redis:
        flags = ["--broker", redis.url, "--redis-prefix", "bench-hb", "--presence-ttl", str(ttl)]
        server = Server("heartbeat", hub_argv(workdir, "room:*", *flags), workdir, None)
        await server.start()
        members = [Member(server.port, channel, token(f"u{i:05d}", "quiet:*"))
                   for i in range(args.connections)]  # fmt: skip
        try:
            gate = asyncio.Semaphore(256)

            async def join(m: Member) -> None:
                async with gate:
                    await m.connect()

            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(join(m) for m in members)), 600)
            connect_s = time.perf_counter() - t0
            await asyncio.sleep(2.0)  # the joins are written; steady state
            before = await redis_commandstats(redis.url)
            cpu0, rcpu0 = server.cpu_seconds(), redis.cpu_seconds()
            window = args.heartbeat_window
            top, inner = await monitor_counts(redis, window)
            after = await redis_commandstats(redis.url)
            cpu, rcpu = server.cpu_seconds() - cpu0, redis.cpu_seconds() - rcpu0
        finally:
            for m in members:
                m.close()
            await server.stop()
        # The store's heartbeat alone, timed: 10,000 clients of one channel.
        broker = await fill_users(redis.url, "bench-hb2", "quiet:one", args.connections)
        ids = [f"bench-{i}" for i in range(args.connections)]
        start_stats = await redis_commandstats(redis.url)
        beats: list[float] = []
        for _ in range(20):
            t0 = time.perf_counter()
            await broker.presence.heartbeat({"quiet:one": ids}, time.time() + 60)
            beats.append((time.perf_counter() - t0) * 1000)
        end_stats = await redis_commandstats(redis.url)
        await broker.close()
    delta = {k: after[k][0] - before.get(k, (0, 0))[0] for k in after}
    per_s = {k: v / window for k, v in sorted(delta.items()) if v}
    usec = sum(after[k][1] - before.get(k, (0, 0))[1] for k in after)
    beat_usec = (end_stats["evalsha"][1] - start_stats.get("evalsha", (0, 0))[1]) / len(beats)
    beats.sort()
    return {
        "redis_ms_per_s": usec / 1000 / window,
        "heartbeat_call_p50_ms": percentile(beats, 0.5),
        "heartbeat_redis_ms": beat_usec / 1000,
        "connections": args.connections,
        "connect_s": connect_s,
        "ttl": ttl,
        "interval": ttl / 3,
        "window_s": window,
        "commands_per_s": per_s,
        "commands_total_per_s": sum(per_s.values()),
        "round_trips_per_s": sum(top.values()) / window,
        "top_level": {k: v / window for k, v in sorted(top.items())},
        "script_inner_per_s": sum(inner.values()) / window,
        "hub_cpu_busy": cpu / window,
        "redis_cpu_busy": rcpu / window,
    }


# -- report ------------------------------------------------------------------------------


def report(host: dict[str, Any], results: dict[str, Any], args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.2f}" for x in host["load_start"])
    lines = [
        f"`bench/presence.py`, {host['date']}, commit `{host['git_head']}`"
        f"{' (src modified)' if host['src_modified'] else ''}; {host['nproc']} CPUs "
        f"({host['cpu']}), Python {host['python']}, Tornado {host['tornado']}; "
        f"load average at start "
        f"{load}, at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{host['duration_s'] / 60:.1f} minutes.",
        "",
    ]
    if "fanout" in results:
        f = results["fanout"]
        lines += [
            f"**Fan-out** ({f['subscribers']:,} WebSocket subscribers, each its own user; "
            f"{f['messages']} messages flat out; {f['rounds']} rounds, medians):",
            "",
            "| channel | deliveries/s | CPU µs/delivery |",
            "|---|--:|--:|",
            f"| without presence | {f['off_mps']:,.0f} | {f['off_us']:.1f} |",
            f"| presence + join_leave | {f['on_mps']:,.0f} | {f['on_us']:.1f} |",
            f"| **ratio (presence / without)** | **{f['ratio_mps']:.2f}x** | "
            f"**{f['ratio_cpu']:.2f}x** (inverse CPU) |",
            "",
        ]
    if "storm" in results:
        lines += [
            f"**Join storm** ({args.clients:,} clients, each its own user, joining one "
            f"presence + join_leave channel evenly over {args.storm_seconds:g} s; NDJSON):",
            "",
            "| | 1 process, memory | 2 processes, Redis | control: memory, no presence "
            "| control: Redis, no presence |",
            "|---|--:|--:|--:|--:|",
        ]
        columns = [results["storm"].get(k, {}) for k in
                   ("memory", "redis", "memory-control", "redis-control")]  # fmt: skip
        rows = [
            ("all joined after", "joined_s", "{:.1f} s"),
            ("every member had every join after", "settled_s", "{:.1f} s"),
            ("tracked members (every 50th) that saw every join", None, None),
            ("joins that failed", "failed_joins", "{:,}"),
            ("hub CPU (sum of processes)", "hub_cpu_s", "{:.1f} s"),
            ("hub CPU busy (per core-second)", "hub_cpu_busy", "{:.0%}"),
            ("Redis CPU", "redis_cpu_s", "{:.2f} s"),
            ("longest GC pause of a hub", "gc_max_ms", "{:.0f} ms"),
            ("presence frames: first joiner / median / last", None, None),
            ("presence bytes: first joiner / median / last", None, None),
            ("snapshot (subscribed frame) of the last joiner", "snapshot_bytes_last", "{:,} B"),
            ("join latency p50 / p99 (connect to subscribed)", None, None),
            ("GET /health latency p50 / p99 / max", None, None),
        ]
        for label, key, fmt in rows:
            cells = []
            for d in columns:
                if not d:
                    cells.append("-")
                elif key is not None and fmt is not None:
                    cells.append(fmt.format(d[key]))
                elif label.startswith("tracked"):
                    cells.append(f"{d['complete_members']} of {d['tracked_members']}")
                elif label.startswith("presence frames"):
                    cells.append(f"{d['frames_first']} / {d['frames_median']} / {d['frames_last']}")
                elif label.startswith("presence bytes"):
                    cells.append(f"{d['bytes_first']:,} / {d['bytes_median']:,} / "
                                 f"{d['bytes_last']:,}")  # fmt: skip
                elif label.startswith("join latency"):
                    cells.append(f"{d['join_p50_ms']:.0f} / {d['join_p99_ms']:.0f} ms")
                else:
                    probes = f"{d['health_max_ms']:.1f} ms ({d['health_n']} probes)"
                    cells.append(f"{d['health_p50_ms']:.1f} / {d['health_p99_ms']:.1f} / {probes}")
            lines.append(f"| {label} | {' | '.join(cells)} |")
        lines.append("")
    if "reads" in results:
        d = results["reads"]
        lines += [
            f"**Reads of a {d['users']:,}-user channel on Redis** ({args.reads} each, "
            "p50 / p99 ms):",
            "",
            "| read | p50 ms | p99 ms |",
            "|---|--:|--:|",
        ]
        for label, key in (
            ("store `counts()`", "store_counts"),
            ("store `page(limit=100)`, first page", "store_page_first"),
            ("store `page(limit=100)`, from the middle", "store_page_middle"),
            ("HTTP `GET /health` (for comparison)", "http_health"),
            ("HTTP `GET /api/channels/NAME` (with counts)", "http_channel"),
            ("HTTP `GET /api/channels/NAME/presence?limit=100`", "http_page"),
        ):
            lines.append(f"| {label} | {d[key]['p50_ms']:.2f} | {d[key]['p99_ms']:.2f} |")
        lines.append("")
    if "heartbeat" in results:
        h = results["heartbeat"]
        scale = h["ttl"] / 30.0  # per second at the default TTL of 30 s
        commands = ", ".join(f"{k} {v:.1f}" for k, v in h["commands_per_s"].items())
        top = ", ".join(f"{k} {v:.1f}" for k, v in h["top_level"].items())
        lines += [
            f"**Heartbeat cost on Redis** ({h['connections']:,} present connections in one "
            f"channel of one process; `--presence-ttl {h['ttl']:g}`, so a heartbeat every "
            f"{h['interval']:g} s; a {h['window_s']:g} s window):",
            "",
            f"- Redis commands/s (`INFO commandstats`, script-inner ones included): "
            f"{h['commands_total_per_s']:.1f} ({commands}).",
            f"- Client round trips/s (`MONITOR`, commands sent by clients): "
            f"{h['round_trips_per_s']:.1f} ({top}); commands run inside scripts: "
            f"{h['script_inner_per_s']:.1f}/s.",
            f"- Redis time in commands: {h['redis_ms_per_s']:.1f} ms per second.",
            f"- One heartbeat of {h['connections']:,} clients of one channel, on the store alone "
            f"(20 calls): {h['heartbeat_call_p50_ms']:.1f} ms per call (p50, one round trip), "
            f"{h['heartbeat_redis_ms']:.1f} ms of Redis time.",
            f"- At the default `--presence-ttl 30` (a heartbeat every 10 s) the heartbeat part "
            f"is {scale:.2f}x of the above; the per-second sweep's part does not change.",
            f"- Hub CPU {h['hub_cpu_busy']:.1%}, Redis CPU {h['redis_cpu_busy']:.1%} of a core "
            "over the window.",
            "",
        ]
    return "\n".join(lines)


def update_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path}: no presence markers")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    add("--subscribers", type=int, default=1000, help="fan-out subscribers (1000)")
    add("--messages", type=int, default=150, help="fan-out messages per run (150)")
    add("--rounds", type=int, default=2, help="fan-out rounds, alternating (2)")
    add("--clients", type=int, default=2000, help="join-storm clients (2000)")
    add("--storm-seconds", type=float, default=8.0, help="join-storm duration (8)")
    add("--users", type=int, default=10_000, help="users of the read benchmark (10000)")
    add("--reads", type=int, default=200, help="timed reads of each kind (200)")
    add("--connections", type=int, default=10_000, help="heartbeat connections (10000)")
    add("--heartbeat-ttl", type=float, default=9.0, help="--presence-ttl there (9: every 3 s)")
    add("--heartbeat-window", type=float, default=15.0, help="measured seconds (15)")
    add("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
        help="fan-out: server on CPU 0, load generator on CPU 1")  # fmt: skip
    add("--json", type=Path, help="write all results as JSON here")
    add("--docs", type=Path, help="write the report between the markers of this markdown file")
    args = parser.parse_args(argv)
    args.part_list = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.part_list) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    return args


async def main_async(args: argparse.Namespace) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it
    host = machine()
    host["load_start"] = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    parts = {"fanout": part_fanout, "storm": part_storm, "reads": part_reads,
             "heartbeat": part_heartbeat}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="presence-") as tmp:
        for name in args.part_list:
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = await parts[name](args, Path(tmp))
    host["duration_s"] = time.perf_counter() - started
    host["load_end"] = os.getloadavg()
    text = report(host, results, args)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"host": host, "results": results}, indent=1, default=str))
    if args.docs:
        update_docs(args.docs, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

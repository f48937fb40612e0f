"""Fan-out benchmark: one channel, N subscribers, M published messages, with
torchannels and its peers in the same run.

Each contender (``SERVER:TRANSPORT``, see fanout_servers.py) runs as its
own process on loopback, pinned to CPU 0 (``--pin``; the load generator
takes CPU 1), one after the other. For each: N subscribers connect
(fanout_client.py: raw asyncio sockets, a hand-rolled WebSocket,
Socket.IO or chunked HTTP client), 20 warm-up messages go to all of them,
then M messages are published one per ``POST /api/publish`` request (or
the native server's publish API) on one keep-alive connection
(``--window`` requests pipelined) as fast as
possible ("saturation"), then, with ``--half``, M/2 more at half the
saturation rate, to read latency on a server that keeps up. Measured:
deliveries/s, CPU µs per delivery (``/proc/PID/stat``), RSS per idle
connection, publish-to-receipt latency, and the collector's pauses
(bench/gcprobe). Every subscriber must get every message exactly once and
in order; anything else fails the run (exit status 1).

    make bench       # the standard set at 1,000 and 10,000, table and chart
    make bench-extra # Pushpin beside the floor, torchannels and Nchan
    .venv/bin/python bench/fanout.py --contenders torchannels:sse,baseline:sse --subscribers 200
    .venv/bin/python bench/fanout.py --servers torchannels,baseline --transport websocket

docs/benchmarks.md has the method and results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fanout_client import PUBLISHERS, WARMUP, Publisher, Run, Subscriber, pad_for
from fanout_report import machine, summarize, text_table, write_outputs
from fanout_servers import (
    KINDS,
    REFERENCE,
    SETS,
    Server,
    _cpu_seconds,
    parse_contender,
    redis_pid,
    server_argv,
)


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


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


async def phase(
    run: Run,
    server: Server,
    publisher: Publisher,
    args: argparse.Namespace,
    messages: int,
    rate: float,
) -> dict[str, Any]:
    """Publish ``messages`` (at ``rate``/s, 0: flat out) and measure until
    every subscriber has them all."""
    run.begin_phase(messages)
    await server.gc_pauses()  # starts the probe's count afresh
    rpid = redis_pid() if server.name.startswith("redis") else None
    redis0 = _cpu_seconds(rpid) if rpid else 0.0
    answered = len(publisher.offsets)
    cpu0, self0, t0 = server.cpu_seconds(), _self_cpu(), time.perf_counter()
    window = args.window or (64 if rate else 8)
    try:
        await publisher.publish(messages, rate=rate, window=window, limit=args.timeout)
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
    gc = await server.gc_pauses()
    expected = len(run.subscribers) * messages
    delivered = len(run.latencies)
    lost = sum(max(0, run.final - max(s.last, run.warm_top)) for s in run.subscribers)
    duplicates = sum(s.duplicates for s in run.subscribers)
    gaps = sum(s.gaps for s in run.subscribers)
    if lost or gaps or duplicates or delivered != expected:
        run.fail(
            f"delivery: {delivered} of {expected} messages, {lost} missing at the end, "
            f"{gaps} skipped, {duplicates} duplicated"
        )
    wall = finished - t0
    latencies = sorted(run.latencies)
    per = 1e6 / delivered if delivered else float("nan")
    return {
        "messages": messages,
        "rate": rate,
        "delivered": delivered,
        "expected": expected,
        "wall_s": wall,
        "delivered_mps": delivered / wall if wall > 0 else 0.0,
        "publish_rps": (len(publisher.offsets) - answered) / max(1e-9, published - t0),
        "latency_p50_ms": _percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": _percentile(latencies, 0.99) * 1000,
        "latency_max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "server_cpu_s": cpu,
        "server_cpu_busy": cpu / wall if wall > 0 else 0.0,
        "server_us_per_delivery": cpu * per,
        "redis_cpu_s": redis_cpu,
        "total_us_per_delivery": (cpu + redis_cpu) * per,
        "bench_cpu_busy": self_cpu / wall if wall > 0 else 0.0,
        "gc_total_s": gc["total_s"] if gc else float("nan"),
        "gc_share": gc["total_s"] / cpu if gc and cpu > 0 else float("nan"),
        "gc_max_ms": gc["max_s"] * 1000 if gc else float("nan"),
        "gc_full": gc["collections"][2] if gc else float("nan"),
        "gc_over_10ms": gc["over_10ms"] if gc else float("nan"),
    }


async def tear_down(run: Run, publisher: Publisher | None, server: Server) -> None:
    """Close every subscriber and the publisher, cancel the run's tasks and
    stop the server (also after a failed run)."""
    run.stopping = True
    for sub in run.subscribers:
        if sub.conn is not None:
            sub.conn.close()
    for task in list(run.tasks):
        task.cancel()
    if publisher is not None and hasattr(publisher, "writer"):
        publisher.close()
    await server.stop()


async def run_contender(
    contender: str, subscribers: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Start ``contender``, connect, measure its phases, stop it."""
    server_name, transport = parse_contender(contender)
    profile = None
    if args.profile is not None:
        profile = args.profile / f"{contender.replace(':', '-')}-{subscribers}.txt"
    most = args.messages or max(20, args.deliveries // subscribers)
    args.history = most * 2 + WARMUP
    cpus = {0} if args.pin else None
    name = f"{server_name}-{transport}"
    kind = KINDS[server_name]
    argv = server_argv(server_name, args)
    server = Server(name, argv, workdir, profile, cpus, native=bool(kind.native))
    run = Run(
        transport,
        0,
        size=args.size,
        max_reconnects=args.max_reconnects,
        socketio=kind.socketio,
        bare=bool(kind.native),
        track=kind.ahead > 0,
    )
    publisher: Publisher | None = None
    result: dict[str, Any] = {"contender": contender, "subscribers": subscribers}
    phases: dict[str, dict[str, Any]] = {}
    try:
        await server.start()
        run.port = server.port
        publisher = PUBLISHERS[kind.native](server.publish_port, pad_for(args.size))
        if kind.ahead:
            publisher.ahead = max(1, kind.ahead // subscribers)
            publisher.until_delivered = run.until_reached
        idle_rss = server.memory_mib()[0]
        run.subscribers = [Subscriber(run, i) for i in range(subscribers)]
        gate = asyncio.Semaphore(kind.connect_gate)

        async def join(sub: Subscriber) -> None:
            async with gate:
                await sub.connect()

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(join(s) for s in run.subscribers)), 300)
        result["connect_s"] = time.perf_counter() - started
        await asyncio.sleep(0.5)  # let the server settle before reading its memory
        connected_rss = server.memory_mib()[0]
        result["rss_idle_mib"] = idle_rss
        result["rss_connected_mib"] = connected_rss
        result["rss_per_conn_kib"] = (connected_rss - idle_rss) * 1024 / subscribers
        await publisher.open()
        warm = time.perf_counter()
        await publisher.publish(WARMUP, rate=0, window=4, limit=120)
        if not await _wait_until(lambda: all(s.last >= WARMUP for s in run.subscribers), 60):
            run.fail("warm-up messages were not all delivered within 60s")
        # Enough messages for about --phase-seconds at the warm-up's pace (a
        # slow contender gets fewer), within --deliveries; --messages fixes it.
        pace = WARMUP / max(1e-3, time.perf_counter() - warm)
        messages = args.messages or max(5, min(most, int(pace * args.phase_seconds)))
        if not run.failures:
            phases["max"] = await phase(run, server, publisher, args, messages, args.rate)
        if args.half and not run.failures:
            rate = phases["max"]["delivered_mps"] / subscribers / 2
            # about as long as the saturation phase, at least 4 messages
            count = args.messages // 2 or max(4, min(most, round(rate * args.phase_seconds)))
            phases["half"] = await phase(run, server, publisher, args, count, rate)
        result["rss_end_mib"], result["hwm_mib"] = server.memory_mib()
    except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError) as exc:
        run.fail(f"{type(exc).__name__}: {exc}")  # the next contender still runs
    finally:
        await tear_down(run, publisher, server)
    answered = publisher.offsets if publisher is not None else []
    if answered != list(range(1, len(answered) + 1)):
        run.fail("the publish API answered offsets out of sequence")
    result.update(
        ok=not run.failures,
        failures=run.failures,
        reconnects=sum(run.reconnects.values()),
        reconnect_reasons=dict(run.reconnects),
        phases=phases,
    )
    if not result["ok"]:
        result["server_stderr"] = server.stderr_tail()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--contenders", help="comma-separated SERVER:TRANSPORT (default: --set)")
    add("--set", choices=sorted(SETS), default="standard",
        help="the contenders when none are named: standard (make bench) or extra")  # fmt: skip
    add("--servers", help="old form: comma-separated servers, each over --transport")
    add("--transport", choices=("websocket", "sse", "stream"),
        help="old form: torchannels and baseline (or --servers) over this transport")  # fmt: skip
    add("--subscribers", default="200", help="comma-separated counts (200)")
    add("--messages", type=int, default=0, help="messages per run (default: --deliveries / N)")
    add("--deliveries", type=int, default=400_000, help="most deliveries per phase (400,000)")
    add("--phase-seconds", type=float, default=8.0,
        help="size phases to last about this long at the warm-up's pace (8)")  # fmt: skip
    add("--size", type=int, default=256, help="bytes of published data (256)")
    add("--rate", type=float, default=0.0, help="first phase at this many msg/s (default: max)")
    add("--half", action="store_true", help="then a phase at half the measured rate (latency)")
    add("--window", type=int, help="publish requests in flight (8, 64 with a rate)")
    add("--rounds", "--repeat", type=int, default=1, help="interleaved rounds (medians)")
    add("--json", type=Path, help="write all results as JSON here")
    add("--from-json", type=Path, metavar="JSON",
        help="run nothing: write the table, chart and docs of this --json file's run")  # fmt: skip
    add("--markdown", type=Path, help="write the results table (markdown) here")
    add("--chart", type=Path, help="draw deliveries/s per contender into this PNG")
    add("--docs", type=Path, help="put the table between the markers of this markdown file")
    add("--docs-section", default="bench",
        help="the markers' name: <!-- NAME:begin --> ... <!-- NAME:end --> (bench)")  # fmt: skip
    add("--command", default="", help="the command to name in --docs (make bench)")
    add("--profile", type=Path, metavar="DIR", help="record each server with py-spy into DIR")
    add("--hub-log-level", default="warning", help="torchannels --log-level (warning)")
    add("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
        help="server on CPU 0, load generator on CPU 1 (default with 2+ CPUs)")  # fmt: skip
    add("--timeout", type=float, default=300.0, help="publishing time limit per phase")
    add("--drain-timeout", type=float, default=60.0)
    add("--max-reconnects", type=int, default=100, help="per subscriber")
    args = parser.parse_args(argv)
    if args.contenders:
        names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    elif args.servers or args.transport:
        servers = (args.servers or "torchannels,baseline").split(",")
        transport = args.transport or "websocket"
        names = [f"{s.strip()}:{transport}" for s in servers if s.strip()]
    else:
        names = list(SETS[args.set])
    try:
        for name in names:
            parse_contender(name)
        args.counts = [int(n) for n in args.subscribers.split(",")]
    except ValueError as exc:
        parser.error(str(exc))
    args.names = names
    args.reference = REFERENCE if REFERENCE in names else names[0]
    if min(args.counts) < 1 or args.rounds < 1 or args.size < 0 or args.messages < 0:
        parser.error("--subscribers, --rounds must be positive")
    return args


async def main_async(args: argparse.Namespace) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(args.counts) + 1024
    if hard < need:
        print(f"open-file limit {hard} is under {need}: raise ulimit -Hn", file=sys.stderr)
        return 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.pin:
        os.sched_setaffinity(0, {1})  # the servers get CPU 0
    host = machine()  # before the runs: the load average and commit they start with
    host["load_generator_loop"] = type(asyncio.get_running_loop()).__module__
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        for rnd in range(args.rounds):
            for count in args.counts:
                # Alternate the order so no contender always runs on a warmer machine.
                for name in args.names if rnd % 2 == 0 else args.names[::-1]:
                    result = await run_contender(name, count, args, Path(tmp))
                    runs.setdefault((name, count), []).append(result)
                    sat = result["phases"].get("max", {})
                    print(
                        f"  [{rnd + 1}/{args.rounds}] {name:24} {count:>6} subs"
                        f" {sat.get('delivered_mps', 0):>10,.0f} deliveries/s"
                        f"  cpu {sat.get('server_us_per_delivery', float('nan')):.1f} us"
                        f"  {'ok' if result['ok'] else 'FAILED: ' + '; '.join(result['failures'])}",
                        file=sys.stderr,
                        flush=True,
                    )
    host["duration_s"] = time.perf_counter() - started
    host["loadavg_at_end"] = os.getloadavg()
    summary = {key: summarize(results) for key, results in runs.items()}
    print(text_table(args, summary))
    write_outputs(args, host, summary, runs)
    return 0 if all(s["ok"] for s in summary.values()) else 1


def report_only(args: argparse.Namespace) -> int:
    """``--from-json``: the outputs of an earlier run, from its JSON."""
    document = json.loads(args.from_json.read_text())
    config = document["config"]
    args.names, args.counts = config["names"], config["counts"]
    args.reference, args.rounds, args.size = config["reference"], config["rounds"], config["size"]

    def key(text: str) -> tuple[str, int]:
        name, _, count = text.rpartition("@")
        return name, int(count)

    summary = {key(k): v for k, v in document["summary"].items()}
    runs = {key(k): v for k, v in document["runs"].items()}
    print(text_table(args, summary))
    args.json = None  # the file read stays as it is
    write_outputs(args, document["machine"], summary, runs)
    return 0 if all(s["ok"] for s in summary.values()) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        return report_only(args)
    try:  # the load generator on uvloop when the bench extra is installed
        import uvloop
    except ImportError:
        return asyncio.run(main_async(args))
    result: int = uvloop.run(main_async(args))
    return result


if __name__ == "__main__":
    sys.exit(main())

"""The Redis presence store's costs, on a real Redis (docs/scaling.md).

Fills one channel with 10,000 users (one client each), then times, one call
at a time from one process: ``counts``, a page of 100 members (first and
middle of the list), a sweep that finds nothing, and the sweep that removes
all 10,000 at once (a SIGKILLed process's clients, found by one sweep).
Then 10,000 present clients spread over 100 channels are heartbeated: one
``heartbeat`` call (one pipeline, a script call per channel), timed, with
the Redis CPU it took. Each timed row gives the median and 95th percentile
of the call as the process sees it (round trip and decoding included) and
the Redis CPU per call (``INFO commandstats``). Without ``--url`` it starts
its own ``redis-server`` on a free loopback port (so no other client skews
the Redis CPU figures); with one, keys go under a fresh prefix, deleted at
the end.

    .venv/bin/python bench/presence_redis.py [--url redis://127.0.0.1:6379/0]

Prints a Markdown table; exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis.asyncio

from torchannels.brokers.redis import RedisBroker
from torchannels.identity import Identity, User


async def evalsha_usec(admin: redis.asyncio.Redis) -> tuple[int, int]:
    stats = await admin.info("commandstats")
    row = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(row["calls"]), int(row["usec"])


async def timed(
    admin: redis.asyncio.Redis, call: Callable[[], Awaitable[Any]], runs: int
) -> tuple[float, float, float, float]:
    """Median and 95th percentile milliseconds of ``runs`` calls, script
    calls per call, and Redis CPU milliseconds per call."""
    calls, usec = await evalsha_usec(admin)
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        took.append((time.perf_counter() - start) * 1000)
    calls_after, usec_after = await evalsha_usec(admin)
    took.sort()
    return (
        statistics.median(took),
        took[max(0, int(len(took) * 0.95) - 1)],
        (calls_after - calls) / runs,
        (usec_after - usec) / 1000 / runs,
    )


def describe(median: float, p95: float, calls: float, redis_ms: float) -> str:
    return (
        f"{median:.2f} ms (p95 {p95:.2f}); {calls:.0f} script call(s), 1 round trip each; "
        f"{redis_ms:.3f} ms Redis CPU"
    )


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis to use (default: start a private one)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if args.url:
        await run(args)
    else:
        with private_redis() as url:
            args.url = url
            await run(args)


async def run(args: argparse.Namespace) -> None:
    prefix = "bench-" + secrets.token_hex(6)
    broker = RedisBroker.from_url(args.url, prefix=prefix)
    admin = redis.asyncio.Redis.from_url(args.url)
    store = broker.presence
    rows: list[tuple[str, str]] = []
    try:
        now = time.time()
        big = "room:big"
        users = [f"user{n:05d}" for n in range(args.users)]
        start = time.perf_counter()
        for i in range(0, len(users), 50):
            await asyncio.gather(
                *(
                    store.add(
                        big, Identity("c-" + u, User(u, {"name": u}), "websocket", now), now + 600
                    )
                    for u in users[i : i + 50]
                )
            )
        fill = time.perf_counter() - start
        rows.append((f"add (join) of {args.users:,} users, 50 in flight", f"{fill:.2f} s total"))
        middle = users[len(users) // 2]
        for label, call in [
            ("counts", lambda: store.counts(big, time.time())),
            ("page of 100, first", lambda: store.page(big, None, 100, time.time())),
            ("page of 100, middle", lambda: store.page(big, middle, 100, time.time())),
            ("sweep, nothing expired", lambda: store.sweep(big, time.time())),
        ]:
            rows.append(
                (f"{label} ({args.users:,} users)", describe(*await timed(admin, call, args.runs)))
            )
        left: list[str] = []

        async def sweep_all() -> None:
            left.extend(await store.sweep(big, now + 601))

        median, _, calls, redis_ms = await timed(admin, sweep_all, 1)
        assert len(left) == args.users
        rows.append(
            (
                f"sweep removing all {args.users:,} clients (a killed process's)",
                f"{median:.0f} ms; {calls:.0f} script calls of at most 1,000 clients, "
                f"{redis_ms:.0f} ms Redis CPU in all",
            )
        )

        per = args.users // args.channels
        entries = {f"room:{c}": [f"h{c}-{k}" for k in range(per)] for c in range(args.channels)}
        for channel, clients in entries.items():
            await asyncio.gather(
                *(
                    store.add(channel, Identity(cl, User(cl), "websocket", now), now + 30)
                    for cl in clients
                )
            )
        await store.heartbeat(entries, time.time() + 30)  # loads the script
        median, p95, calls, redis_ms = await timed(
            admin, lambda: store.heartbeat(entries, time.time() + 30), 20
        )
        rows.append(
            (
                f"heartbeat of {args.users:,} clients in {args.channels} channels",
                f"{median:.1f} ms (p95 {p95:.1f}); 1 round trip (a pipeline of "
                f"{calls:.0f} script calls); {redis_ms:.1f} ms Redis CPU",
            )
        )
        interval = 10.0
        rows.append(
            (
                f"heartbeats at presence_ttl / 3 = {interval:.0f} s",
                f"{args.channels / interval:.0f} commands/s, {1 / interval:.1f} round trips/s, "
                f"{redis_ms / (interval * 1000) * 100:.2f}% of one Redis core",
            )
        )
    finally:
        keys = [key async for key in admin.scan_iter(match=f"{{{prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
        await broker.close()
    print("| operation | cost |\n| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    asyncio.run(main())

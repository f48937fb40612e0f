"""Client publish benchmark (issue 20): does one client publishing flat out slow the others?

One ``torchannels serve`` process (in-memory broker). ``--bystanders``
WebSockets subscribe to ``bench:quiet``; a probe publishes there through the
API every 20 ms and times each message until every bystander has it. In
alternating rounds, one WebSocket client publishes to ``bench:loud`` (one
subscriber) as fast as it can, one command after another (the server answers
each before reading the next), at ``--flood-rate`` publishes a second at
most (the server's ``--client-publish-rate``; past it ``rate_limited``) or,
with ``--flood-rate 0``, the default 10 a second. Reported: the bystanders'
latency (median and 99th percentile) with and without the flood, their
ratio, the flood's accepted publishes a second, and the server's CPU.

Not part of ``make test``; about 40 s on 2 cores::

    .venv/bin/python bench/client_publish.py
    .venv/bin/python bench/client_publish.py --flood-rate 100000 --bystanders 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import tornado.httpclient
import tornado.websocket
from serve_process import HOST, start_serve

KEY = "bench-key"


async def start(rate: float, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    config = log.with_suffix(".toml")
    config.write_text('[channels."bench:*"]\npublish = "subscribers"\n')
    flags = ["--api-key", KEY, "--no-demo", "--anonymous", "bench:*", "--config", str(config),
             "--log-level", "warning"]  # fmt: skip
    if rate:
        flags += ["--client-publish-rate", str(rate)]
    return await start_serve(flags, log)


async def subscriber(port: int, channel: str) -> tornado.websocket.WebSocketClientConnection:
    conn = await tornado.websocket.websocket_connect(f"ws://{HOST}:{port}/channels/ws?channel={channel}")
    while True:
        raw = await conn.read_message()
        if raw is not None and json.loads(raw)["type"] == "subscribed":
            return conn


class Bystanders:
    """Every bystander's arrival time of each probe number."""

    def __init__(self, conns: list[Any]) -> None:
        self.arrived: dict[int, list[float]] = {}
        self.tasks = [asyncio.ensure_future(self._read(c)) for c in conns]

    async def _read(self, conn: Any) -> None:
        while (raw := await conn.read_message()) is not None:
            frame = json.loads(raw)
            if frame["type"] == "message":
                self.arrived.setdefault(frame["data"]["n"], []).append(time.perf_counter())


async def flood(port: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    conn = await tornado.websocket.websocket_connect(f"ws://{HOST}:{port}/channels/ws")
    n = 0
    while not stop.is_set():
        n += 1
        await conn.write_message(json.dumps(
            {"type": "publish", "channel": "bench:loud", "data": {"n": n}, "id": n}))  # fmt: skip
        while True:
            frame = json.loads(await conn.read_message() or "{}")
            if frame.get("id") == n:
                kind = frame["type"]
                counts[kind] = counts.get(kind, 0) + 1
                break
    conn.close()


async def probe_round(port: int, by: Bystanders, first: int, count: int, n_by: int) -> list[float]:
    client = tornado.httpclient.AsyncHTTPClient()
    latencies = []
    for n in range(first, first + count):
        sent = time.perf_counter()
        await client.fetch(f"http://{HOST}:{port}/api/publish", method="POST",
                           body=json.dumps({"channel": "bench:quiet", "data": {"n": n}}),
                           headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
        deadline = time.monotonic() + 10
        while len(by.arrived.get(n, ())) < n_by:
            if time.monotonic() > deadline:
                raise RuntimeError(f"probe {n}: {len(by.arrived.get(n, ()))} of {n_by}")
            await asyncio.sleep(0.001)
        latencies.append((max(by.arrived[n]) - sent) * 1000)
        await asyncio.sleep(0.02)
    return latencies


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = await start(args.flood_rate, Path(tmp) / "hub.log")
        try:
            conns = [await subscriber(port, "bench:quiet") for _ in range(args.bystanders)]
            loud = await subscriber(port, "bench:loud")
            by = Bystanders(conns)
            quiet: list[float] = []
            loud_lat: list[float] = []
            counts: dict[str, int] = {}
            flooded = 0.0
            n = 0
            for _ in range(args.rounds):
                quiet += await probe_round(port, by, n, args.probes, args.bystanders)
                n += args.probes
                stop = asyncio.Event()
                task = asyncio.ensure_future(flood(port, stop, counts))
                started, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
                loud_lat += await probe_round(port, by, n, args.probes, args.bystanders)
                n += args.probes
                stop.set()
                await task
                flooded += time.monotonic() - started
                cpu = cpu_seconds(proc.pid) - cpu0
            loud.close()
        finally:
            proc.terminate()
            proc.wait(10)

    def row(name: str, values: list[float]) -> str:
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return f"  {name:34} {statistics.median(ordered):7.2f} {p99:7.2f}"

    print(f"{args.bystanders} bystander WebSockets, {args.rounds} alternating rounds of "
          f"{args.probes} probes (ms: median, p99)")  # fmt: skip
    print(row("quiet (no flood)", quiet))
    print(row("while one client floods", loud_lat))
    ratio = statistics.median(loud_lat) / statistics.median(quiet)
    print(f"  ratio flood / quiet (medians)      {ratio:7.2f}")
    accepted = counts.get("published", 0) / flooded
    print(f"  flood: {accepted:.0f} publishes/s accepted, {counts.get('publish_error', 0)} "
          f"refused; server CPU in the last flood round {cpu:.2f} s")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bystanders", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--flood-rate", type=float, default=100000,
                        help="the server's --client-publish-rate (0: its default, 10)")  # fmt: skip
    asyncio.run(main(parser.parse_args()))

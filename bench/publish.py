"""Publish API throughput with no subscribers: ``torchannels serve`` on the
in-memory broker and on Redis, in the same run.

Each mode posts M publications on one keep-alive connection with W requests
in flight (HTTP/1.1 pipelining). ``single``: one message per request;
``batched``: one request carries the same message to B channels
(``{"channels": [...], "data": ...}``), which the server stores in one Redis
round trip; ``batch-api``: one request carries N messages
(``{"messages": [{"channel", "data"}, ...]}``) spread over C channels in turn.
Every answer must be 200, and every channel's offsets must come back
consecutive and in order; anything else fails the run.

    .venv/bin/python bench/publish.py --messages 5000 --batch 20
    .venv/bin/python bench/publish.py --modes batch-api --messages 200000 --batch-size 500

Exit status: 0 when every run succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
API_KEY = "bench-key"
REDIS_URL = "redis://127.0.0.1:6379/0"
LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)/")


async def start(broker: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    argv = [sys.executable, "-m", "torchannels", "serve", "--port", "0", "--api-key", API_KEY,
            "--no-demo", "--log-level", "warning", "--broker", broker,
            "--redis-prefix", f"benchpub-{time.time_ns()}", "--max-publish-bytes", str(8 << 20)]  # fmt: skip
    out = workdir / f"{time.time_ns()}.out"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = LISTENING.search(out.read_text(errors="replace"))
        if match:
            return proc, int(match[2])
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode})")
        await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def run(broker: str, mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    proc, port = await start(broker, workdir)
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        batch = {"batched": args.batch, "batch-api": args.batch_size}.get(mode, 1)
        channels = [f"bench:p{i}" for i in range(batch)]
        if mode == "batch-api":
            channels = [f"bench:b{i}" for i in range(args.batch_channels)]
            items = [{"channel": channels[i % len(channels)], "data": {"p": "x" * args.size}}
                     for i in range(batch)]  # fmt: skip
            body = json.dumps({"messages": items})
        elif batch == 1:
            body = json.dumps({"channel": channels[0], "data": {"p": "x" * args.size}})
        else:
            body = json.dumps({"channels": channels, "data": {"p": "x" * args.size}})
        raw = body.encode()
        request = (
            f"POST /api/publish HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n"
        ).encode() + raw
        requests = max(1, args.messages // batch)
        slots = asyncio.Semaphore(args.window)
        seen: dict[str, list[int]] = {c: [] for c in channels}
        failures: list[str] = []

        async def answers() -> None:
            for _ in range(requests):
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                answer = await reader.readexactly(int(length[1]) if length else 0)
                if not head.startswith(b"HTTP/1.1 200"):
                    failures.append(f"{head.split(b' ', 2)[1].decode()} {answer[:200]!r}")
                    return
                doc = json.loads(answer)
                for result in doc.get("results", [doc]):
                    seen[result["channel"]].append(result["offset"])
                slots.release()

        reading = asyncio.ensure_future(answers())
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        for _ in range(requests):
            await asyncio.wait_for(slots.acquire(), 60)
            if reading.done():
                break
            writer.write(request)
        await asyncio.wait_for(reading, 120)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        writer.close()
    finally:
        proc.terminate()
        proc.wait(15)
    for channel, offsets in seen.items():
        if offsets != list(range(1, len(offsets) + 1)):
            failures.append(f"{channel}: offsets not consecutive")
    published = sum(len(o) for o in seen.values())
    return {
        "broker": "memory" if broker == "memory" else "redis",
        "mode": mode,
        "requests": requests,
        "published": published,
        "requests_per_s": requests / wall,
        "messages_per_s": published / wall,
        "server_us_per_message": cpu / published * 1e6 if published else float("nan"),
        "ok": not failures,
        "failures": failures,
    }


async def main_async(args: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
        for broker in ("memory", REDIS_URL):
            for mode in args.modes:
                result = await run(broker, mode, args, Path(tmp))
                results.append(result)
                print(
                    f"  {result['broker']:7} {mode:9} {result['messages_per_s']:>10,.0f} msg/s"
                    f" {result['requests_per_s']:>9,.0f} req/s"
                    f" {result['server_us_per_message']:>7.1f} us/msg"
                    f"  {'ok' if result['ok'] else 'FAILED ' + '; '.join(result['failures'])}",
                    flush=True,
                )
    if args.json is not None:
        args.json.write_text(json.dumps({"config": vars(args) | {"json": None},
                                         "results": results}, indent=2) + "\n")  # fmt: skip
    return 0 if all(r["ok"] for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="publications per run")
    parser.add_argument("--batch", type=int, default=20, help="channels per batched request")
    parser.add_argument("--batch-size", type=int, default=500,
                        help="messages per batch-api request (the server takes 1000 at most)")
    parser.add_argument("--batch-channels", type=int, default=4,
                        help="channels a batch-api request's messages go to, in turn")
    parser.add_argument("--modes", nargs="+", default=["single", "batched", "batch-api"],
                        choices=["single", "batched", "batch-api"], help="modes to run")
    parser.add_argument("--window", type=int, default=16, help="requests in flight")
    parser.add_argument("--size", type=int, default=100, help="bytes of data per message")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

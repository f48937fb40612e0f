"""Control benchmark (issue 19): how fast a disconnect reaches a user on every process.

Three ``torchannels serve`` processes share a private ``redis-server``.
``--idle`` WebSockets of other users are spread over them (the
connections each process scans). Then, per round, one user opens
``--per-process`` WebSockets on each process, and the benchmark measures:

- the baseline: ``POST /api/publish`` to the first process until every one
  of the user's sockets got the message (delivery across processes through
  Redis);
- ``POST /api/disconnect`` to the first process until every socket got the
  ``disconnect`` frame, and the API's own answer time.

Rounds alternate the two, so noise hits both alike; the report gives their
medians and 90th percentiles and the ratio disconnect / publish. Not part
of ``make test``; about 30 s on 2 cores::

    .venv/bin/python bench/control.py
    .venv/bin/python bench/control.py --rounds 50 --idle 3000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import tornado.httpclient
import tornado.websocket
from presence_load import PrivateRedis
from serve_process import HOST, start_serve

KEY = "bench-api-key"
SECRET = "bench-token-secret"


def token(user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": user, "exp": time.time() + 3600, "iat": int(time.time()), "channels": ["*"]}
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


async def start_server(redis_url: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    flags = ["--broker", redis_url, "--api-key", KEY, "--token-secret", SECRET, "--no-demo"]
    return await start_serve(flags, log)


class Sock:
    """One WebSocket, read in the background; ``seen`` resolves on a frame type."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.task = asyncio.ensure_future(self._read())

    def expect(self, kind: str) -> asyncio.Future[float]:
        future = self.waiters[kind] = asyncio.get_running_loop().create_future()
        return future

    async def _read(self) -> None:
        while (raw := await self.conn.read_message()) is not None:
            frame = json.loads(raw)
            waiter = self.waiters.pop(frame["type"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(time.perf_counter())


async def open_sock(port: int, user: str, channel: str) -> Sock:
    url = f"ws://{HOST}:{port}/channels/ws?channel={channel}&token={token(user)}"
    conn = await tornado.websocket.websocket_connect(url)
    while True:  # until subscribed
        raw = await conn.read_message()
        if raw is None:
            raise RuntimeError("socket closed before subscribed")
        if json.loads(raw)["type"] == "subscribed":
            return Sock(conn)


async def post(client: Any, port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.fetch(
        f"http://{HOST}:{port}{path}", method="POST", body=json.dumps(body),
        headers={"Authorization": f"Bearer {KEY}"},
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(response.body)
    return answer


async def one_round(client: Any, ports: list[int], n: int, per: int) -> dict[str, float]:
    user, channel = f"user-{n}", f"bench:{n}"
    socks = [await open_sock(p, user, channel) for p in ports for _ in range(per)]
    waits = [s.expect("message") for s in socks]
    started = time.perf_counter()
    await post(client, ports[0], "/api/publish", {"channel": channel, "data": {"n": n}})
    publish_ms = (max(await asyncio.gather(*waits)) - started) * 1000
    waits = [s.expect("disconnect") for s in socks]
    started = time.perf_counter()
    answer = await post(client, ports[0], "/api/disconnect", {"user": user})
    answered_ms = (time.perf_counter() - started) * 1000
    disconnect_ms = (max(await asyncio.gather(*waits)) - started) * 1000
    if answer["connections"] != len(socks) or answer["answered"] != len(ports):
        raise RuntimeError(f"round {n}: {answer} for {len(socks)} sockets")
    for sock in socks:
        await sock.task
    return {"publish": publish_ms, "disconnect": disconnect_ms, "answer": answered_ms}


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{statistics.median(ordered):7.1f} {p90:7.1f} {ordered[-1]:7.1f}"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with PrivateRedis(Path(tmp)) as redis:
            started = [await start_server(redis.url, Path(tmp) / f"s{i}.log") for i in range(3)]
            ports = [port for _, port in started]
            try:
                idle = [await open_sock(ports[i % 3], f"idle-{i}", "bench:idle")
                        for i in range(args.idle)]  # fmt: skip
                client = tornado.httpclient.AsyncHTTPClient()
                rounds = [await one_round(client, ports, n, args.per_process)
                          for n in range(args.rounds)]  # fmt: skip
                for sock in idle:
                    sock.conn.close()
            finally:
                for proc, _ in started:
                    proc.terminate()
                    proc.wait(10)
    per = 3 * args.per_process
    print(f"3 processes on one Redis, {args.idle} idle WebSockets, {args.rounds} rounds, "
          f"{per} sockets of the user per round (ms: median, p90, max)")  # fmt: skip
    for name, label in (("publish", "publish -> every socket (baseline)"),
                        ("disconnect", "disconnect -> every socket"),
                        ("answer", "disconnect API answer")):  # fmt: skip
        print(f"  {label:38} {summary([r[name] for r in rounds])}")
    ratio = statistics.median(r["disconnect"] for r in rounds) / statistics.median(
        r["publish"] for r in rounds
    )
    print(f"  ratio disconnect / publish (medians)   {ratio:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--per-process", type=int, default=2)
    asyncio.run(main(parser.parse_args()))

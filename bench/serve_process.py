"""One ``torchannels serve`` process for a benchmark: on a free loopback
port, its log in a file, returned once ``/health`` answers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import tornado.httpclient

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def start_serve(flags: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``torchannels serve FLAGS`` on a free port; (the process, its port)."""
    port = free_port()
    argv = [sys.executable, "-m", "torchannels", "serve", "--host", HOST, "--port", str(port),
            "--max-connections-per-ip", "100000", *flags]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    client = tornado.httpclient.AsyncHTTPClient()
    deadline = time.monotonic() + 20
    while True:
        try:
            await client.fetch(f"http://{HOST}:{port}/health", request_timeout=1)
            return proc, port
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}") from None
            await asyncio.sleep(0.1)

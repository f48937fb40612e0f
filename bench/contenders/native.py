"""What the launchers of the native contenders (nchan.py, pushpin.py)
share: free loopback ports, starting the server as a child that dies with
its launcher, waiting until it accepts, and stopping it on SIGTERM.

A launcher is what bench/fanout.py starts for a native server: it writes
the server's config into a directory of its own, starts the server, prints
``... listening on http://127.0.0.1:PORT/`` once every port accepts, and
on SIGTERM stops the server and removes the directory. The benchmark
measures the launcher's descendants (the server's processes), never the
launcher itself, which only sleeps meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def open_files() -> int:
    """The open-file limit the server may raise itself to (the hard one)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies, so a killed
    launcher leaves no server behind (it stops its own workers on SIGTERM)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _descendants(parent: int) -> list[int]:
    found: list[int] = []
    todo = [parent]
    while todo:
        pid = todo.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        found += [int(c) for c in children]
        todo += [int(c) for c in children]
    return found


async def _accepting(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    writer.close()
    return True


async def serve(
    argv: list[str],
    ports: dict[str, int],
    workdir: Path,
    *,
    log: Path,
    timeout: float = 30.0,
    cleanup: Callable[[], None] = lambda: None,
) -> None:
    """Run ``argv`` until SIGTERM or SIGINT. ``ports``: the line to print per
    port once it accepts (``{"Nchan listening on": 8080}``)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=workdir,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        deadline = time.monotonic() + timeout
        for port in ports.values():
            while not await _accepting(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{argv[0]} did not start:\n{log.read_text()[-3000:]}")
                await asyncio.sleep(0.05)
        for text, port in ports.items():
            print(f"{text} http://{HOST}:{port}/", flush=True)
        waiter = asyncio.ensure_future(stop.wait())
        exited = asyncio.ensure_future(asyncio.to_thread(proc.wait))
        await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            raise SystemExit(f"{argv[0]} exited:\n{log.read_text()[-3000:]}")
    finally:
        _stop(proc)
        cleanup()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (nginx: fast shutdown; Pushpin's runner stops its services;
    both wait for their processes), then SIGKILL for the whole tree if it
    is still there after 10 s."""
    if proc.poll() is not None:
        return
    tree = _descendants(proc.pid)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *tree]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(5)

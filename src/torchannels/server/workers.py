"""``torchannels serve --workers N``: N server processes on one port.

The supervisor forks the workers before any event loop exists. Each worker
binds the same address with ``SO_REUSEPORT``, so the kernel spreads new
connections over them, and runs the ordinary single-process server; they
share channels through the broker (Redis). The supervisor prints the
banner once every worker listens, forwards SIGTERM and SIGINT to all of
them (each shuts down gracefully), and restarts a worker that dies
unexpectedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from types import FrameType

from tornado.netutil import bind_sockets

from .config import ServerConfig
from .run import banner, cannot_listen, pin_internal_port, serve

log = logging.getLogger("torchannels.server")

#: A worker that dies this soon after it started is not restarted (it would
#: only die again: a bad configuration, an unreachable dependency).
MIN_LIFETIME = 2.0


def run_workers(config: ServerConfig, key_generated: bool = False) -> int:
    """Fork ``config.workers`` workers and supervise them until they stop."""
    try:
        # Port 0 means "any": pick one here, then every worker binds that one.
        probe = bind_sockets(
            config.port, config.host, reuse_port=True, backlog=config.listen_backlog()
        )
    except OSError as exc:
        print(cannot_listen(config, exc), file=sys.stderr)
        return 1
    port = probe[0].getsockname()[1]
    for sock in probe:
        sock.close()
    try:
        config = pin_internal_port(config)  # --internal-port 0: one port for all
    except OSError as exc:
        print(cannot_listen(config, exc, internal=True), file=sys.stderr)
        return 1
    ready_r, ready_w = os.pipe()
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker number, start time)
    stopping = False

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_r)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os._exit(_worker(config, number, port, ready_w))
        children[pid] = (number, time.monotonic())

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for number in range(config.workers):
        spawn(number)
    ready = 0
    while ready < config.workers and children:
        chunk = os.read(ready_r, config.workers - ready)
        if not chunk:
            break
        ready += len(chunk)
    print(banner(config, port, key_generated), flush=True)
    log.info("%d workers (pids %s)", config.workers, ", ".join(map(str, children)))
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        number, started = children.pop(pid)
        failed = os.waitstatus_to_exitcode(status) != 0
        if failed:
            code = 1
        if failed and not stopping and time.monotonic() - started >= MIN_LIFETIME:
            log.error("worker %d (pid %d) died; starting it again", number, pid)
            spawn(number)
    print("torchannels server stopped", flush=True)
    return code


def _worker(config: ServerConfig, number: int, port: int, ready_w: int) -> int:
    try:
        sockets = bind_sockets(port, config.host, reuse_port=True, backlog=config.listen_backlog())
    except OSError as exc:
        print(f"torchannels: worker {number} cannot listen: {exc}", file=sys.stderr)
        return 1

    def ready() -> None:
        os.write(ready_w, b"!")

    try:
        return asyncio.run(serve(config, worker=number, sockets=sockets, on_ready=ready))
    except Exception:
        log.exception("worker %d failed", number)
        return 1

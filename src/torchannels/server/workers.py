"""``torchannels serve --workers N``: N server processes on one port.

The supervisor forks the workers before any event loop exists. Each worker
binds the same address with ``SO_REUSEPORT``, so the kernel spreads new
connections over them, and runs the ordinary single-process server; they
share channels through the broker (Redis).

The supervisor waits in one selector on two pipes: the *ready* pipe, on
which each worker writes ``NUMBER:PID`` once it listens, and the signal
wakeup pipe (:func:`signal.set_wakeup_fd`), which SIGCHLD, SIGTERM and
SIGINT write to. So it never blocks where a signal or a dead worker could
go unnoticed:

- Start-up: the banner is printed once every worker is ready. A worker
  that exits before that fails the whole start-up: the supervisor stops
  the others and exits 1 (each worker prints its own error). Half a fleet
  that looks healthy is worse than none.
- Running: a worker that dies is logged and started again: at once if it
  had lived :data:`MIN_LIFETIME` seconds, else after a delay that doubles
  with each quick death in a row (:data:`BACKOFF_FIRST` up to
  :data:`BACKOFF_CAP`), so a crash loop is visible and cheap.
- SIGTERM or SIGINT, at any time: forwarded to every worker (each shuts
  down gracefully); the supervisor exits 0 once they are gone, 1 if one of
  them failed or had to be killed after ``--shutdown-timeout`` plus
  :data:`STOP_MARGIN` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType

from tornado.netutil import bind_sockets

from .config import ServerConfig
from .run import banner, cannot_listen, loop_runner, pin_internal_port, serve

log = logging.getLogger("torchannels.server")

#: A worker that lived this long before dying is started again at once.
MIN_LIFETIME = 2.0
#: The restart delay after a quick death, doubled for each one in a row ...
BACKOFF_FIRST = 0.5
#: ... up to this many seconds.
BACKOFF_CAP = 30.0
#: Seconds past ``--shutdown-timeout`` the workers get before SIGKILL.
STOP_MARGIN = 5.0

_STOP = (signal.SIGTERM, signal.SIGINT)
_WATCHED = {*_STOP, signal.SIGCHLD}


@dataclass
class Worker:
    """One worker slot: its process (``pid`` 0 while none runs) and its
    crash-loop count."""

    number: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    quick_deaths: int = 0
    restart_at: float | None = None


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
    return Supervisor(config, port, key_generated).run()


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the wakeup pipe carries the signal."""


def _describe(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


class Supervisor:
    """The parent process of ``--workers``: see the module docstring."""

    def __init__(self, config: ServerConfig, port: int, key_generated: bool) -> None:
        self.config = config
        self.port = port
        self.key_generated = key_generated
        self.workers = [Worker(number) for number in range(config.workers)]
        self.running: dict[int, Worker] = {}  # by pid
        self.listening = False  # the banner is out
        self.stop_by: float | None = None  # set once stopping: the SIGKILL deadline
        self.code = 0
        self._ready_r, self._ready_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._ready_r, self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._pending = b""

    def run(self) -> int:
        handlers = {sig: signal.signal(sig, _ignore) for sig in _WATCHED}
        wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        selector = selectors.DefaultSelector()
        selector.register(self._ready_r, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            for worker in self.workers:
                self._spawn(worker)
            while self.running or self.stop_by is None:
                for key, _ in selector.select(self._select_timeout()):
                    if key.fd == self._wake_r:
                        self._on_signals(_drain(self._wake_r))
                    else:
                        self._on_ready(_drain(self._ready_r))
                self._reap()
                self._tick()
        finally:
            signal.set_wakeup_fd(wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            selector.close()
            for fd in (self._ready_r, self._ready_w, self._wake_r, self._wake_w):
                os.close(fd)
        print("torchannels server stopped", flush=True)
        return self.code

    # -- workers --------------------------------------------------------------

    def _spawn(self, worker: Worker) -> None:
        # Signals stay blocked across fork: one arriving in the child before
        # it restores the defaults would otherwise wake the supervisor.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in _WATCHED:
                    signal.signal(sig, signal.SIG_DFL)
                for fd in (self._ready_r, self._wake_r, self._wake_w):
                    os.close(fd)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                code = _worker(self.config, worker.number, self.port, self._ready_w)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        worker.pid, worker.started, worker.ready = pid, time.monotonic(), False
        worker.restart_at = None
        self.running[pid] = worker

    def _on_ready(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            number, _, pid = line.partition(b":")
            worker = self.running.get(int(pid))
            if worker is None or worker.number != int(number) or worker.ready:
                continue
            worker.ready = True
            if self.listening:
                log.info("worker %d (pid %d) is back", worker.number, worker.pid)
        if not self.listening and self.stop_by is None and all(w.ready for w in self.workers):
            self.listening = True
            print(banner(self.config, self.port, self.key_generated), flush=True)
            log.info("%d workers (pids %s)", len(self.workers), ", ".join(map(str, self.running)))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.running.pop(pid, None)
            if worker is not None:
                worker.pid = 0
                self._exited(worker, pid, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: Worker, pid: int, code: int) -> None:
        if self.stop_by is not None:  # asked to stop: a signal we sent is a clean exit
            if code > 0:
                log.error("worker %d (pid %d) %s while stopping", worker.number, pid,
                          _describe(code))  # fmt: skip
                self.code = 1
            return
        if not self.listening:
            print(
                f"torchannels: worker {worker.number} (pid {pid}) {_describe(code)} before it "
                "was ready; stopping the other workers",
                file=sys.stderr,
                flush=True,
            )
            self.code = 1
            self._stop(signal.SIGTERM)
            return
        lived = time.monotonic() - worker.started
        if lived >= MIN_LIFETIME:
            worker.quick_deaths, delay = 0, 0.0
        else:
            worker.quick_deaths += 1
            delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (worker.quick_deaths - 1))
        log.error(
            "worker %d (pid %d) %s after %.1f s%s; starting it again in %.1f s",
            worker.number,
            pid,
            _describe(code),
            lived,
            f" (within {MIN_LIFETIME:g} s of its start, {worker.quick_deaths} times in a row)"
            if worker.quick_deaths
            else "",
            delay,
        )
        worker.restart_at = time.monotonic() + delay

    # -- signals and timers ---------------------------------------------------

    def _on_signals(self, data: bytes) -> None:
        for signum in data:
            if signum in _STOP:
                if self.stop_by is None:
                    log.info("%s: stopping the workers", signal.Signals(signum).name)
                    self._stop(signal.Signals(signum))
                else:  # again: pass it on (a worker still starting up ends at once)
                    self._kill_all(signal.Signals(signum))

    def _stop(self, sig: signal.Signals) -> None:
        self.stop_by = time.monotonic() + self.config.shutdown_timeout + STOP_MARGIN
        for worker in self.workers:
            worker.restart_at = None
        self._kill_all(sig)

    def _kill_all(self, sig: signal.Signals) -> None:
        for pid in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _tick(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None and worker.restart_at <= now:
                self._spawn(worker)
        if self.stop_by is not None and now >= self.stop_by and self.running:
            log.error("workers %s did not stop in time: killing them", sorted(self.running))
            self._kill_all(signal.SIGKILL)
            self.code = 1
            self.stop_by = float("inf")

    def _select_timeout(self) -> float | None:
        deadlines = [w.restart_at for w in self.workers if w.restart_at is not None]
        if self.stop_by is not None:
            deadlines.append(self.stop_by)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())


def _drain(fd: int) -> bytes:
    data = b""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while chunk := os.read(fd, 4096):
            data += chunk
    return data


def _worker(config: ServerConfig, number: int, port: int, ready_w: int) -> int:
    try:
        sockets = bind_sockets(port, config.host, reuse_port=True, backlog=config.listen_backlog())
    except OSError as exc:
        print(f"torchannels: worker {number} cannot listen: {exc}", file=sys.stderr)
        return 1
    started = False

    def ready() -> None:
        nonlocal started
        started = True
        os.write(ready_w, f"{number}:{os.getpid()}\n".encode())

    try:
        run_loop = loop_runner(config)  # the CLI checked that it loads
        return run_loop(serve(config, worker=number, sockets=sockets, on_ready=ready))
    except Exception as exc:
        if started:
            log.exception("worker %d failed", number)
        else:  # one line; the traceback is for --log-level debug
            print(f"torchannels: worker {number} cannot start: {exc!r}", file=sys.stderr)
            log.debug("worker %d failed to start", number, exc_info=True)
        return 1

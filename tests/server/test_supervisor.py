"""The ``--workers`` supervisor: real ``torchannels serve`` processes.

Start-up failures are injected with a ``sitecustomize`` on ``PYTHONPATH``
(written here) that makes ``make_apps`` raise, or wait, in chosen workers:
``make_apps`` is what every worker calls before it is ready, and it is
told the worker's number. Each server runs in a session of its own, so
"every worker is gone" is checked on its process group.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_servers import shared_redis
from server.processes import LISTENING, START_TIMEOUT, STOP_TIMEOUT, WAIT, clean_env
from torchannels.server.workers import BACKOFF_CAP, BACKOFF_FIRST

SHIM = """
import os
import time

import torchannels.server.app as app

_make_apps = app.make_apps


def make_apps(config, hub=None, *, worker=0):
    hold = os.environ.get("SHIM_HOLD")
    if hold:  # say "starting", then wait while the hold file exists
        open(os.path.join(hold, f"started-{worker}"), "w").close()
        while os.path.exists(os.path.join(hold, "hold")):
            time.sleep(0.02)
    failing = os.environ.get("SHIM_FAIL", "").split(",")
    flag = os.environ.get("SHIM_FAIL_FLAG")
    if str(worker) in failing and (not flag or os.path.exists(flag)):
        raise RuntimeError(f"injected start-up failure of worker {worker}")
    return _make_apps(config, hub, worker=worker)


app.make_apps = make_apps
"""


class Supervised:
    """A ``torchannels serve --workers N`` process in its own session."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str]) -> None:
        shim = tmp / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(SHIM)
        self.err_path = tmp / f"serve-{time.monotonic_ns()}.log"
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "torchannels", "serve", "--port", "0", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=clean_env({"PYTHONPATH": str(shim), **env}),
                start_new_session=True,
            )
        self.out = b""

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s; log: {self.log()}") from None
        self.out += out
        return self.proc.returncode

    def banner(self) -> int:
        """Wait for the banner; the port."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in self.out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                self.out += chunk
        line, _, self.out = self.out.partition(b"\n")
        line += b"\n"
        match = LISTENING.fullmatch(line)
        assert match is not None, (line, self.log())
        return int(match.group(1))

    def wait_log(
        self, pattern: str, count: int = 1, timeout: float = START_TIMEOUT
    ) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while len(found := list(re.finditer(pattern, self.log()))) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{count} x {pattern!r} not in the log: {self.log()}")
            time.sleep(0.02)
        return found

    def worker_pids(self) -> list[int]:
        match = self.wait_log(r"\d+ workers \(pids ([\d, ]+)\)")[0]
        return [int(pid) for pid in match.group(1).split(", ")]

    def group_gone(self) -> bool:
        """True once no process of the server's group is left (bounded poll)."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def start(*args: str, **env: str) -> Supervised:
        server = Supervised(tmp_path, list(args), env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def redis_flags() -> list[str]:
    prefix = f"t{os.urandom(4).hex()}"
    return ["--broker", shared_redis(), "--redis-prefix", prefix, "--no-demo"]


def test_every_worker_failing_at_start_up_exits_1_with_their_error(supervise: Any) -> None:
    server = supervise("--workers", "2", *redis_flags(), SHIM_FAIL="0,1")
    assert server.wait_exit(START_TIMEOUT) == 1
    log = server.log()
    assert "injected start-up failure of worker" in log, log
    assert re.search(r"torchannels: worker \d \(pid \d+\) exited with status 1 before it was "
                     r"ready; stopping the other workers", log), log  # fmt: skip
    assert "Traceback" not in log, log
    assert b"listening" not in server.out
    assert server.group_gone()


def test_one_worker_failing_at_start_up_fails_the_whole_start_up(supervise: Any) -> None:
    """A worker that cannot start at all fails the start-up: the healthy one
    is stopped too, and no banner promises a fleet that is not there."""
    server = supervise("--workers", "2", *redis_flags(), SHIM_FAIL="1")
    assert server.wait_exit(START_TIMEOUT) == 1
    log = server.log()
    assert "torchannels: worker 1 cannot start: RuntimeError('injected start-up failure of " \
           "worker 1')" in log, log  # fmt: skip
    assert "worker 1 (pid" in log and "stopping the other workers" in log
    assert "worker 0 cannot start" not in log
    assert b"listening" not in server.out
    assert server.group_gone()


def test_sigterm_during_start_up_stops_everything_and_exits_0(
    supervise: Any, tmp_path: Path
) -> None:
    hold = tmp_path / "hold-dir"
    hold.mkdir()
    (hold / "hold").touch()
    server = supervise("--workers", "2", *redis_flags(), SHIM_HOLD=str(hold))
    deadline = time.monotonic() + START_TIMEOUT
    while not all((hold / f"started-{n}").exists() for n in (0, 1)):
        assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0, server.log()
    assert server.out == b"torchannels server stopped\n"
    assert server.group_gone()


def test_sigterm_after_a_restart_exits_0(supervise: Any) -> None:
    server = supervise("--workers", "2", *redis_flags())
    server.banner()
    _, second = server.worker_pids()
    os.kill(second, signal.SIGKILL)
    server.wait_log(rf"worker 1 \(pid {second}\) was killed by SIGKILL after [\d.]+ s")
    server.wait_log(r"worker 1 \(pid \d+\) is back")
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0, server.log()
    assert server.out.endswith(b"torchannels server stopped\n")
    assert server.group_gone()


def test_a_crash_looping_worker_is_logged_and_backed_off(supervise: Any, tmp_path: Path) -> None:
    """Worker 1 starts, then every restart of it fails: each death is one
    log line, the delays double, and worker 0 keeps serving meanwhile. Once
    the fault is gone worker 1 comes back, and SIGTERM still exits 0."""
    flag = tmp_path / "fail-now"
    server = supervise("--workers", "2", *redis_flags(), SHIM_FAIL="1", SHIM_FAIL_FLAG=str(flag))
    server.banner()
    _, second = server.worker_pids()
    flag.touch()
    os.kill(second, signal.SIGKILL)
    deaths = server.wait_log(
        r"worker 1 \(pid \d+\) (?:exited with status 1|was killed by SIGKILL) after [\d.]+ s "
        r"\(within 2 s of its start, (\d+) times in a row\); starting it again in ([\d.]+) s",
        count=3,
        timeout=START_TIMEOUT,
    )
    flag.unlink()
    counts = [int(m.group(1)) for m in deaths]
    first = counts[0]
    assert counts[:3] == [first, first + 1, first + 2], counts
    for match in deaths[:3]:
        n = int(match.group(1))
        assert float(match.group(2)) == min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (n - 1))
    assert server.proc.poll() is None, "the supervisor gave up"
    server.wait_log(r"worker 1 \(pid \d+\) is back", timeout=START_TIMEOUT)
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0, server.log()
    assert server.group_gone()

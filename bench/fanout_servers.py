"""The server processes of bench/fanout.py: the contenders, how each is
started, its CPU time, memory and garbage-collector pauses.

A contender is a server and a transport, named ``SERVER:TRANSPORT``
(``torchannels:sse``). Every Python server starts with bench/gcprobe on
its ``PYTHONPATH``: SIGUSR2 makes it write its collector's pauses since
the last signal (see bench/gcprobe/sitecustomize.py). The native servers
(Nchan in nginx, Pushpin) are started by a Python launcher in
bench/contenders that writes their config and stops them; what is measured
is the launcher's child processes, never the launcher, and they get no
signal but the launcher's SIGTERM (SIGUSR2 would make nginx upgrade
itself).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanout_client import API_KEY, WARMUP

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Kind:
    """A server: how to start it and which transports it serves."""

    label: str
    transports: tuple[str, ...]
    socketio: bool = False
    #: "nchan" or "pushpin": a native server (bench/contenders/NATIVE.py
    #: launches it; bare subscribers and its own publisher, see
    #: fanout_client.py); "": a Python server with the GC probe.
    native: str = ""
    #: Subscribe requests in flight while connecting: well under every
    #: server's listen backlog (4096). Pushpin answers part of a burst of
    #: 128 or more with 502 (its proxy's requests to zurl are refused as
    #: "unavailable"), and at 32 its handler cancels some of the held
    #: streams it takes over ("received message out of sequence,
    #: canceling"; closed later, 3 runs in 4 at 1,000), so it is given 8.
    connect_gate: int = 256
    #: Deliveries the publisher may be ahead of the slowest subscriber, in
    #: whole messages: max(1, ahead // subscribers) (0: no limit). Pushpin
    #: drops deliveries when too many are queued (16 messages ahead: none
    #: lost at 1,000 subscribers, 22% at 10,000), so it gets 16,000: 16
    #: messages at 1,000 subscribers, 1 at 10,000.
    ahead: int = 0


#: The servers. torchannels on the in-memory broker; the minimal Tornado
#: server (bench/baseline_server.py, the floor the ratios are taken to over
#: SSE); a bare asyncio.Protocol (the physical floor); two peers on
#: uvicorn; torchannels on Redis with one and two worker processes; the
#: native peers: Nchan (an nginx module in C) and Pushpin (C++ and Rust).
KINDS: dict[str, Kind] = {
    "asyncio": Kind("raw asyncio protocol", ("sse",)),
    "baseline": Kind("minimal Tornado", ("sse", "stream", "websocket")),
    "torchannels": Kind("torchannels", ("sse", "stream", "websocket")),
    "sse-starlette": Kind("sse-starlette (uvicorn)", ("sse",)),
    "socketio": Kind("python-socketio (uvicorn)", ("websocket",), socketio=True),
    "redis": Kind("torchannels, Redis", ("sse", "stream", "websocket")),
    "redis-2w": Kind("torchannels, Redis, 2 workers", ("sse", "stream", "websocket")),
    "nchan": Kind("Nchan (C)", ("sse", "websocket"), native="nchan"),
    "pushpin": Kind("Pushpin", ("sse",), native="pushpin", connect_gate=8, ahead=16_000),
}
#: ``make bench``: the floor, the hub on every streaming transport and on
#: Redis (one and two workers), the Python peers and Nchan.
STANDARD = (
    "asyncio:sse",
    "baseline:sse",
    "torchannels:sse",
    "torchannels:stream",
    "torchannels:websocket",
    "redis:sse",
    "redis-2w:sse",
    "nchan:sse",
    "nchan:websocket",
    "sse-starlette:sse",
    "socketio:websocket",
)
#: ``make bench-extra``: Pushpin, beside the rows it is read against.
EXTRA = ("asyncio:sse", "torchannels:sse", "nchan:sse", "pushpin:sse")
SETS = {"standard": STANDARD, "extra": EXTRA}
REFERENCE = "baseline:sse"
#: The Nchan row each transport's ratio to Nchan is taken to.
NCHAN = {"sse": "nchan:sse", "websocket": "nchan:websocket"}


def parse_contender(name: str) -> tuple[str, str]:
    """``SERVER:TRANSPORT`` -> (server, transport); ValueError if unknown."""
    server, _, transport = name.partition(":")
    kind = KINDS.get(server)
    if kind is None or transport not in kind.transports:
        choices = ", ".join(f"{k}:{t}" for k, v in KINDS.items() for t in v.transports)
        raise ValueError(f"unknown contender {name!r}; one of {choices}")
    return server, transport


def label(contender: str) -> str:
    server, transport = parse_contender(contender)
    names = {"sse": "SSE", "stream": "NDJSON stream", "websocket": "WebSocket"}
    if server in ("asyncio", "sse-starlette", "socketio"):
        return KINDS[server].label
    if server == "redis":
        return f"torchannels on Redis, {names[transport]}"
    if server == "redis-2w":
        return f"torchannels on Redis, 2 workers, {names[transport]}"
    return f"{KINDS[server].label}, {names[transport]}"


class Server:
    """A server subprocess, its address, CPU time and memory."""

    LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)/")
    #: A native server whose publish API has a port of its own (Pushpin).
    PUBLISHING = re.compile(r"publish on http://([0-9.]+):(\d+)/")

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        profile: Path | None,
        cpus: set[int] | None = None,
        native: bool = False,
    ) -> None:
        self.name = name
        self.cpus = cpus
        self.native = native
        self.argv = argv
        self.workdir = workdir
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.port = 0
        self.publish_port = 0  # the publish API's, when not ``port``
        self.gc_dir = workdir / f"gc-{name}-{time.time_ns()}"
        self._gc_seq: dict[int, int] = {}

    async def start(self, timeout: float = 30.0) -> None:
        out = self.workdir / f"{self.name}.out"
        err = self.workdir / f"{self.name}.err"
        argv = self.argv
        if self.profile is not None:
            spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
            argv = [spy, "record", "--format", "raw", "--rate", "250", "--nonblocking"]
            argv += ["--output", str(self.profile), "--", *self.argv]
        self.gc_dir.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            cpus = self.cpus
            self.proc = subprocess.Popen(
                argv,
                stdout=stdout,
                stderr=stderr,
                env=server_env(self.gc_dir),
                # pinned before it starts, so worker processes inherit it
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = self.LISTENING.search(out.read_text(errors="replace"))
            if match:
                self.port = int(match[2])
                publishing = self.PUBLISHING.search(out.read_text(errors="replace"))
                self.publish_port = int(publishing[2]) if publishing else self.port
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {err.read_text(errors='replace')[-2000:]}")
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{self.name} did not start within {timeout}s")
        self.pid = self.proc.pid if self.profile is None else _child_of(self.proc.pid)
        if self.cpus:
            os.sched_setaffinity(self.pid, self.cpus)

    def pids(self) -> list[int]:
        """The server process and its descendants (the workers of
        ``--workers``); for a native server, its launcher's descendants."""
        found = _descendants(self.pid)
        return found if self.native else [self.pid, *found]

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server's processes so far."""
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def memory_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the server's processes in MiB, summed."""
        rss = hwm = 0.0
        for pid in self.pids():
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        key, kib = line.split()[:2]
                        if key == "VmRSS:":
                            rss += int(kib) / 1024
                        else:
                            hwm += int(kib) / 1024
        return rss, hwm

    async def gc_pauses(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The collector's pauses in every server process since the last call
        (None if the probe did not answer, or not a Python server)."""
        if self.native:
            return None
        found: list[dict[str, Any]] = []
        for pid in self.pids():
            seq = self._gc_seq.get(pid, 0) + 1
            path = self.gc_dir / f"{pid}-{seq}.json"
            try:
                os.kill(pid, signal.SIGUSR2)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while not path.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)  # written with a rename: complete once it exists
            if not path.exists():
                return None
            self._gc_seq[pid] = seq
            found.append(json.loads(path.read_text()))
        if not found:
            return None
        pauses = sorted(p for doc in found for p in doc["pauses"])
        return {
            "collections": [sum(d["collections"][g] for d in found) for g in range(3)],
            "total_s": sum(d["total_s"] for d in found),
            "max_s": max(d["max_s"] for d in found),
            "full_s": sum(d["full_s"] for d in found),
            "over_10ms": sum(1 for p in pauses if p >= 0.010),
        }

    def stderr_tail(self) -> str:
        return (self.workdir / f"{self.name}.err").read_text(errors="replace")[-2000:]

    async def stop(self, timeout: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(self.pid or proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent:
                found.append(int(entry))
    return found


def _descendants(parent: int) -> list[int]:
    """``parent``'s children, their children, and so on."""
    found: list[int] = []
    todo = [parent]
    while todo:
        children = _children(todo.pop())
        found += children
        todo += children
    return found


def redis_pid() -> int | None:
    """The pid of the redis-server the Redis runs use (its CPU is counted too)."""
    try:
        out = subprocess.run(
            ["redis-cli", "-u", REDIS_URL, "info", "server"], capture_output=True, timeout=5
        ).stdout.decode()
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"process_id:(\d+)", out)
    return int(match[1]) if match else None


def _child_of(parent: int, timeout: float = 10.0) -> int:
    """The pid of ``parent``'s (py-spy's) child process, the profiled server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _children(parent)
        if children:
            return children[0]
        time.sleep(0.05)
    raise RuntimeError(f"no child process of {parent} found")


def server_argv(server: str, args: Any) -> list[str]:
    """The command line of ``server`` (``args``: messages, size, hub_log_level)."""
    py = sys.executable
    if server == "baseline":
        return [py, str(HERE / "baseline_server.py"), "--port", "0", "--api-key", API_KEY]
    if server == "asyncio":
        return [py, str(HERE / "contenders" / "asyncio_sse.py"), "--port", "0"]
    if server == "sse-starlette":
        return [py, str(HERE / "contenders" / "starlette_sse.py"), "--port", "0"]
    if server == "socketio":
        return [py, str(HERE / "contenders" / "socketio_app.py"), "--port", "0"]
    if server in ("nchan", "pushpin"):
        # a message buffer (Nchan) as long as the hub's history
        return [py, str(HERE / "contenders" / f"{server}.py"), "--port", "0",
                "--buffer", str(max(1000, WARMUP + args.history))]  # fmt: skip
    extra: list[str] = []
    if server.startswith("redis"):
        # A fresh prefix per run: every run's channel starts at offset 1.
        extra = ["--broker", REDIS_URL, "--redis-prefix", f"bench-{time.time_ns()}"]
    if server == "redis-2w":
        extra += ["--workers", "2"]
    return [*_torchannels_argv(args), *extra]


def _torchannels_argv(args: Any) -> list[str]:
    return [
        sys.executable, "-m", "torchannels", "serve",
        "--port", "0", "--api-key", API_KEY, "--no-demo", "--anonymous", "bench:*",
        # History covers the whole run, so a subscriber that reconnects
        # resumes without a reset; streams are not cut by a byte cap; pings
        # stay out of the measurement.
        "--history-size", str(max(1000, WARMUP + args.history)),
        "--stream-max-bytes", str(1 << 40),
        "--max-publish-bytes", str(max(65536, 2 * args.size + 1024)),
        "--ping-interval", "3600",
        "--shutdown-timeout", "2",
        "--log-level", args.hub_log_level,
        # Every subscriber connects from this machine's one address.
        "--max-connections-per-ip", str(1 << 30),
    ]  # fmt: skip


def server_env(gc_dir: Path) -> dict[str, str]:
    """The environment of a server: the GC probe loaded and writing to ``gc_dir``."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(HERE / "gcprobe") + (os.pathsep + path if path else "")
    env["GCPROBE"] = str(gc_dir)
    return env

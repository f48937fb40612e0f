"""Real Redis servers for the tests: the shared one, and ones a test owns.

The shared server (``TORCHANNELS_TEST_REDIS``, default 127.0.0.1:6379) is
used with a random key prefix per test and never flushed. A test that kills
or restarts Redis starts its own ``redis-server`` (Debian's) on a free port.
Without Redis, a test fails under CI (``CI=true``) and skips elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SHARED_URL = os.environ.get("TORCHANNELS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def missing(what: str) -> None:
    """Fail in CI, skip elsewhere: a test of Redis never passes without it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: Redis tests must run; .ci/run starts redis-server)")
    pytest.skip(what)


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def shared_redis() -> str:
    """The shared server's URL, or fail/skip when it does not answer."""
    rest = SHARED_URL.partition("://")[2].rpartition("@")[2]
    hostport = rest.partition("/")[0]
    host, _, port = hostport.rpartition(":")
    if not _ping(host or "127.0.0.1", int(port or 6379)):
        missing(f"no Redis answers at {SHARED_URL} (set TORCHANNELS_TEST_REDIS)")
    return SHARED_URL


def free_port(plus: int = 0) -> int:
    """A free TCP port; with ``plus``, one whose ``port + plus`` is free too
    (a Cluster node also listens on its bus port, port + 10000)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not plus:
            return port
        if port + plus < 65536:
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + plus))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class RedisServer:
    """A ``redis-server`` this test owns: started, killed, restarted."""

    def __init__(self, workdir: Path, *extra: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed (apt-get install redis-server)")
        self.binary = str(binary)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port(10000 if "--cluster-enabled" in extra else 0)
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(
            [*args, *self.extra],
            stdout=(self.workdir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not _ping("127.0.0.1", self.port, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on {self.port} did not start:\n{log}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: what was not saved is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def save_and_stop(self) -> None:
        """SHUTDOWN SAVE: the next start loads the dump."""
        self.cli("SHUTDOWN", "SAVE")
        if self.process is not None:
            self.process.wait(10)
        self.process = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return done.stdout


class LocalCluster:
    """Three masters (no replicas) from Debian's redis-server, on free ports."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [
            RedisServer(
                workdir / f"node{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(
            ["redis-cli", *create],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        deadline = time.monotonic() + 20
        while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def node_for(self, key: str) -> RedisServer:
        slot = int(self.nodes[0].cli("CLUSTER", "KEYSLOT", key).strip())
        for node in self.nodes:
            if self._owns(node, slot):
                return node
        raise RuntimeError(f"no node owns slot {slot}")

    @staticmethod
    def _owns(node: RedisServer, slot: int) -> bool:
        myself = next(
            line for line in node.cli("CLUSTER", "NODES").splitlines() if "myself" in line
        )
        for part in myself.split()[8:]:
            low, _, high = part.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                return True
        return False

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@contextmanager
def running_cluster(workdir: Path) -> Iterator[LocalCluster]:
    """A :class:`LocalCluster`, started, and stopped on the way out."""
    local = LocalCluster(workdir)
    try:
        local.start()
        yield local
    finally:
        local.stop()

"""Debian's nginx in front of a hub, run by the test itself.

Every proxy test starts ``nginx -c CONF -p DIR -g 'daemon off;'`` as a
subprocess with a config and prefix of its own, on a free loopback port,
never the system service. The site config is the deployment guide's,
examples/nginx/torchannels.conf, read from disk: a test names the few lines
it changes (:func:`site`), and each change must match exactly once, so the
file and the tests cannot drift apart. Without nginx, a test fails under CI
(``CI=true``) and skips elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
#: The configuration docs/deployment.md shows.
GUIDE_CONFIG = ROOT / "examples" / "nginx" / "torchannels.conf"
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
START_TIMEOUT = 10.0

#: The guide's lines the tests change.
LISTEN = "listen 80;"
UPSTREAM = "server 127.0.0.1:8090;"
HOST_LINE = "proxy_set_header Host $http_host;"
BUFFERING_OFF = "proxy_buffering off;"
READ_TIMEOUT = "proxy_read_timeout 60s;"
UPGRADE_LINE = "proxy_set_header Upgrade $http_upgrade;"
CONNECTION_LINE = "proxy_set_header Connection $torchannels_connection;"
#: The changes that leave WebSocket handshakes out (as a site never set up
#: for them): nginx passes no ``Upgrade``, the hub answers 400.
NO_UPGRADE = ((UPGRADE_LINE, "# no Upgrade line"), (CONNECTION_LINE, "# no Connection line"))


def missing(what: str) -> None:
    """Fail in CI, skip elsewhere: a proxy test never passes without nginx."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: proxy tests must run; make test installs nginx)")
    pytest.skip(what)


def nginx_binary() -> str:
    found = shutil.which(NGINX) if not os.path.isabs(NGINX) else NGINX
    if not found or not os.access(found, os.X_OK):
        missing(f"nginx is not installed at {NGINX} (scripts/ensure-nginx.sh)")
    assert found is not None
    return found


def site(hub_port: int, listen_port: int, *changes: tuple[str, str]) -> str:
    """The guide's config for a hub on ``hub_port``, listening on
    ``listen_port``, with each ``(line, replacement)`` applied once."""
    text = GUIDE_CONFIG.read_text()
    changes = (
        (LISTEN, f"listen 127.0.0.1:{listen_port};"),
        (UPSTREAM, f"server 127.0.0.1:{hub_port};"),
        *changes,
    )
    for old, new in changes:
        count = text.count(old)
        assert count == 1, f"{old!r} occurs {count} times in {GUIDE_CONFIG}, not once"
        text = text.replace(old, new)
    return text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Nginx:
    """One nginx master (and worker) serving ``site`` from ``workdir``."""

    def __init__(self, workdir: Path, hub_port: int, *changes: tuple[str, str]) -> None:
        self.binary = nginx_binary()
        self.workdir = workdir
        self.hub_port = hub_port
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        (workdir / "site.conf").write_text(site(hub_port, self.port, *changes))
        temp = "\n".join(
            f"    {kind}_temp_path {workdir / 'temp' / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root the master would hand the worker to "nobody", which cannot
        # write under the test's private temp directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"{user}worker_processes 1;\n"
            f"pid {workdir / 'nginx.pid'};\n"
            f"error_log {workdir / 'error.log'} info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {workdir / 'access.log'};\n"
            f"{temp}\n"
            f"    include {workdir / 'site.conf'};\n"
            "}\n"
        )
        (workdir / "temp").mkdir(exist_ok=True)
        command = [*self._command(), "-g", "daemon off;"]
        with open(workdir / "stderr.log", "wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            self._wait_listening()
        except BaseException:
            self.close()
            raise

    def _command(self) -> list[str]:
        workdir = self.workdir
        return [self.binary, "-e", str(workdir / "error.log"), "-p", str(workdir),
                "-c", str(workdir / "nginx.conf")]  # fmt: skip

    def reload(self, *changes: tuple[str, str]) -> None:
        """Rewrite the site (the guide's config with ``changes``) and run
        ``nginx -s reload`` with the same -p/-c. Returns once the old worker
        was told to stop: from then on new connections get the new config
        (the old worker still finishes the requests it holds)."""
        (self.workdir / "site.conf").write_text(site(self.hub_port, self.port, *changes))
        stopped = self._error_log().count("gracefully shutting down")
        done = subprocess.run(
            [*self._command(), "-s", "reload"], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, f"nginx -s reload: {done.stdout}{done.stderr}{self.log()}"
        deadline = time.monotonic() + START_TIMEOUT
        while self._error_log().count("gracefully shutting down") <= stopped:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx did not reload in {START_TIMEOUT}s: {self.log()}")
            time.sleep(0.02)

    def _error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}: {self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx not listening after {START_TIMEOUT}s: {self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def close(self) -> None:
        """Fast shutdown (SIGTERM: open streams are cut), bounded; never raises."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

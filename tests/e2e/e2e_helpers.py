"""Helpers of the browser tests: bounded waits with useful failure messages,
unique channel names, and real server processes started and stopped cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUTPUT = os.path.join(ROOT, "test-output")
TRANSPORTS = ["websocket", "sse", "stream", "longpoll", "poll"]


def unique(prefix: str) -> str:
    """A channel name no other test uses (the test site lives for the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def page_state(page: Page) -> dict[str, Any]:
    """What the client page observed, compactly, for failure messages."""
    try:
        state: dict[str, Any] = page.evaluate(
            """() => ({
                offsets: Object.fromEntries(Object.entries(window.received || {}).map(
                    ([c, ms]) => [c, ms.map((m) => m.offset)])),
                resets: window.resets, errors: window.errors,
                transports: window.transports, failures: window.failures,
                state: window.client && window.client.state,
            })"""
        )
    except Exception as exc:  # the page itself is broken: say so
        return {"page_state_unavailable": repr(exc)}
    return state


def wait_js(
    page: Page, expression: str, arg: Any = None, timeout: float = 10.0, what: str = ""
) -> None:
    """Wait until ``expression`` (a JS function of ``arg``) is truthy, at most
    ``timeout`` seconds; fail with what the page saw when it never is."""
    try:
        page.wait_for_function(expression, arg=arg, timeout=timeout * 1000, polling=50)
    except PlaywrightTimeout:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what or expression}; "
            f"page saw {json.dumps(page_state(page))}"
        ) from None


def wait_until(
    check: Callable[[], bool], timeout: float = 10.0, what: str = "", page: Page | None = None
) -> None:
    """Poll a Python condition, at most ``timeout`` seconds. With ``page``,
    wait through Playwright so the page's events (requests, frames) are
    dispatched to their Python listeners meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            extra = f"; page saw {json.dumps(page_state(page))}" if page is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        if page is not None:
            page.wait_for_timeout(50)
        else:
            time.sleep(0.05)


def wait_count(page: Page, channel: str, count: int, timeout: float = 10.0) -> None:
    wait_js(
        page,
        "([c, n]) => (window.received[c] || []).length >= n",
        [channel, count],
        timeout,
        f"{count} messages on {channel}",
    )


def received(page: Page, channel: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = page.evaluate("(c) => window.received[c] || []", channel)
    return messages


def offsets(page: Page, channel: str) -> list[int]:
    return [m["offset"] for m in received(page, channel)]


def failure_count(page: Page) -> int:
    count: int = page.evaluate("() => window.failures.length")
    return count


# ---- real processes ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The environment for a child server: none of our TORCHANNELS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHANNELS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Process:
    """A server process whose output is collected by a thread, so it can be
    read line by line with a timeout and shown when a test fails."""

    def __init__(self, args: list[str], cwd: str = ROOT) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
        """The first output line for which ``predicate`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(
                    f"{self.args} exited with {self.proc.wait(5)} before it was ready:\n"
                    + "".join(self.output)
                )
            if predicate(line):
                return line
        raise AssertionError(f"{self.args} not ready after {timeout}s:\n" + "".join(self.output))

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, a bounded wait, then SIGKILL. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._reader.join(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


PYTHON = sys.executable


@contextlib.contextmanager
def served(*flags: str) -> Iterator[str]:
    """A ``torchannels serve --port 0 FLAGS`` process, stopped on exit: its base URL."""
    proc = Process([PYTHON, "-m", "torchannels", "serve", "--port", "0", *flags])
    try:
        line = proc.wait_for_line(lambda line: "torchannels server listening on" in line)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.stop()

"""Connection-level abuse of a running hub (issue 9, findings 3 and 7):
slowloris, descriptor exhaustion, oversized headers and URLs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.processes import WAIT, ServerProcess, fetch, until
from torchannels.server.listener import AcceptErrorFilter


async def raw(port: int, data: bytes, timeout: float = WAIT) -> bytes:
    """Send ``data`` on a fresh connection (as far as the server reads it)
    and return everything answered until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        chunks = []
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), timeout):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"GET /health HTTP/1.1\r\n" + b"X-Many: 1234567890\r\n" * 4000 + b"\r\n", b"431"),
        (b"GET /health?x=" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    ],
    ids=["one-big-header", "many-headers", "1MiB-url"],
)
async def test_oversized_headers_and_urls_are_answered(
    main_server: ServerProcess, request_head: bytes, status: bytes
) -> None:
    answer = await raw(main_server.port, request_head)
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200]
    assert b"Connection: close\r\n" in answer
    # A request just under the limit is still served.
    ok = await raw(main_server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000
                   + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:200]


async def dribble(port: int) -> bytes:
    """A slowloris connection: a request line, then a header byte every
    0.2 s, never finishing; returns what the server answered before closing."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return b"(not connected)"
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                writer.write(b"a")
                continue
            if not chunk:
                return answer
            answer += chunk
    except ConnectionError:
        return answer or b"(reset)"
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def dribblers(port: int, count: int) -> AsyncIterator[list[asyncio.Task[bytes]]]:
    """``count`` :func:`dribble` connections, cancelled on exit."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(dribble(port)))
        await asyncio.sleep(0)
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_slowloris_leaves_health_answering(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    hub = spawn("--no-demo", "--max-connections", "100", "--header-timeout", "1.5",
                open_files=(1024, 1024))  # fmt: skip
    async with dribblers(hub.port, 300) as tasks:
        started = time.monotonic()
        first = await fetch(http, hub.base + "/health", timeout=5)
        # Answered at once: 503 while the cap is full, never left hanging.
        assert first.code in (200, 503), first
        if first.code == 503:
            assert first.headers["Connection"] == "close" and first.headers["Retry-After"]

        async def healthy() -> bool:
            return (await fetch(http, hub.base + "/health", timeout=5)).code == 200

        while not await healthy():  # the header timeout frees the cap
            assert time.monotonic() - started < 6, "health not 200 within 6s under slowloris"
            await asyncio.sleep(0.1)
        # Every dribbler was refused or timed out: the server closed them all.
        ends = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        assert sum(e.startswith(b"HTTP/1.1 503 ") for e in ends) >= 150
    assert "Traceback" not in hub.log()


async def test_descriptor_exhaustion_is_logged_sparingly(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    # Past 64 descriptors accept() fails with EMFILE (the cap is set too high
    # on purpose); the hub must not write a line per failed accept.
    hub = spawn("--no-demo", "--max-connections", "1000", "--header-timeout", "1",
                open_files=(64, 64))  # fmt: skip

    async def healthy() -> bool:
        return (await fetch(http, hub.base + "/health", timeout=5)).code == 200

    async with dribblers(hub.port, 120):
        await until(lambda: as_true("Too many open files" in hub.log()), "EMFILE")
        # Descriptors stay exhausted until the header timeout (1 s) closes
        # the dribblers: before the fix, thousands of lines in that time.
        failing_since = time.monotonic()
        await until(healthy, "health 200 again", timeout=8)
    assert time.monotonic() - failing_since > 0.5
    assert hub.log().count("Too many open files") <= 5, hub.log().count("Too many open files")


async def as_true(value: bool) -> bool:
    return value


def test_open_file_limit_is_raised_to_the_hard_limit(spawn: Callable[..., ServerProcess]) -> None:
    hub = spawn("--no-demo", open_files=(256, 2048))
    limits = Path(f"/proc/{hub.proc.pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
    assert line.split()[3:5] == ["2048", "2048"], line
    assert "open-file limit raised from 256 to 2048" in hub.log()


def test_accept_errors_pass_once_per_interval_with_a_count() -> None:
    now = [100.0]
    flt = AcceptErrorFilter(interval=10.0, clock=lambda: now[0])

    def record(exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "Exception in callback %s",
                                 ("accept",), info)  # fmt: skip

    emfile = OSError(24, "Too many open files")
    assert flt.filter(record(emfile))
    assert not any(flt.filter(record(emfile)) for _ in range(1000))
    assert flt.filter(record(ValueError("other"))) and flt.filter(record(None))
    now[0] += 10.5
    passed = record(emfile)
    assert flt.filter(passed)
    assert passed.getMessage() == "Exception in callback accept (1000 more like it not logged)"

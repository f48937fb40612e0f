"""What ``torchannels subscribe`` says on stderr while it cannot connect: one
line per retry in plain words, "could not connect" before a connection was
made, "disconnected" only for one that was."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
import time
from collections.abc import Callable

from tornado.httpclient import AsyncHTTPClient

from server.processes import ServerProcess, auth, clean_env

WAIT = 10.0
#: The CLI's pause floor (Client's default ``min_delay``): no two retries come closer.
MIN_DELAY = 0.5


async def start(url: str, *channels: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "torchannels", "subscribe", *channels, "--url", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env(),
    )  # fmt: skip


async def stderr_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    raw = await asyncio.wait_for(proc.stderr.readline(), WAIT)
    assert raw, "stderr ended"
    return raw.decode().rstrip("\n")


async def interrupt(proc: asyncio.subprocess.Process) -> tuple[int, list[str]]:
    """SIGINT; the exit code and the rest of stderr."""
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    rest = await asyncio.wait_for(proc.stderr.read(), WAIT)
    return await asyncio.wait_for(proc.wait(), WAIT), rest.decode().splitlines()


async def test_nothing_listening_gives_one_plain_line_per_retry() -> None:
    with socket.socket() as held:  # bound and never listening: connections are refused
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}"
        began = time.monotonic()
        proc = await start(url, "open:x")
        try:
            lines = [await stderr_line(proc) for _ in range(3)]  # the window: three retries
            window = time.monotonic() - began
            code, rest = await interrupt(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
    retry = re.compile(
        rf"torchannels: could not connect to {re.escape(url)}/channels "
        r"\(websocket, sse, stream, longpoll, poll: connection refused\); retrying in \d+\.\d s"
    )
    lines += rest
    assert lines[-1] == "torchannels: cursor ", lines
    assert all(retry.fullmatch(line) for line in lines[:-1]), lines
    assert len(lines) - 1 <= 1 + (window + 1.0) / MIN_DELAY, (window, lines)
    assert code == 130


async def test_a_lost_connection_is_disconnected_then_could_not_connect(
    start_hub: Callable[..., ServerProcess],
) -> None:
    hub = start_hub()
    proc = await start(hub.base, "open:lost", "--transport", "websocket")
    try:
        assert await stderr_line(proc) == "torchannels: connected (websocket)"
        await subscribed_at(hub, "open:lost")  # its position is known: a cursor to print
        hub.close()  # the hub asks its clients to reconnect, and stops listening
        lost = await stderr_line(proc)
        refused = await stderr_line(proc)
        code, rest = await interrupt(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert re.fullmatch(r"torchannels: disconnected \(websocket: .+\); reconnecting in \d+\.\d s",
                        lost), lost  # fmt: skip
    assert re.fullmatch(
        rf"torchannels: could not connect to {re.escape(hub.base)}/channels "
        r"\(websocket: connection refused\); retrying in \d+\.\d s",
        refused,
    ), refused
    assert code == 130 and rest[-1].startswith("torchannels: cursor open:lost="), rest


async def subscribed_at(hub: ServerProcess, channel: str, timeout: float = 20) -> None:
    """Wait until ``hub`` serves ``channel`` to a subscriber ("connected" comes
    before the channel's ``subscribed`` frame, which gives the position)."""
    client = AsyncHTTPClient()
    deadline = time.monotonic() + timeout
    while True:
        answer = await client.fetch(
            f"{hub.base}/api/channels/{channel}", headers=auth(), raise_error=False
        )
        if answer.code == 200 and json.loads(answer.body).get("subscribers", 0) >= 1:
            return
        assert time.monotonic() < deadline, f"{channel} not subscribed: {answer.code}"
        await asyncio.sleep(0.05)

"""``serve --event-loop``: the hub on asyncio's loop or on uvloop's.

uvloop is in the dev extra and lock, so the uvloop test runs
wherever the tests do; without it, ``serve --event-loop uvloop`` says how
to get it and exits 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from server.processes import KEY, ServerProcess, api, poll
from torchannels.server.cli import main


@pytest.mark.parametrize(
    ("flags", "loop"),
    [
        ((), "asyncio.unix_events._UnixSelectorEventLoop"),
        (("--event-loop", "uvloop"), "uvloop.Loop"),
    ],
)
async def test_serve_runs_on_the_chosen_loop(
    spawn: Callable[..., ServerProcess],
    http: Any,
    lives: Any,
    sockets: Any,
    flags: tuple[str, ...],
    loop: str,
) -> None:
    hub = spawn(
        "--no-demo", "--api-key", KEY, "--anonymous", "loop:*", "--log-level", "debug", *flags
    )
    # Logged before the banner: at INFO for uvloop, at DEBUG for the default.
    level = "DEBUG" if loop.startswith("asyncio") else "INFO"
    assert f"{level} torchannels.server: event loop: {loop}\n" in hub.log()
    # Every kind of client on that loop: streams and WebSocket by direct
    # writes, long-poll answered, then a graceful SIGTERM.
    sse = lives(hub.url(transport="sse", channel="loop:a"))
    stream = lives(hub.url(transport="stream", channel="loop:a"))
    ws = await sockets(hub.ws_url(channel="loop:a"))
    for client in (sse, stream, ws):
        await client.wait(lambda fs: [f["type"] for f in fs] == ["subscribed"])
    first = await poll(http, hub, ["loop:a"])
    response = await api(http, hub, "/api/publish", {"channel": "loop:a", "data": {"n": 1}})
    assert response.code == 200, response.body
    for client in (sse, stream, ws):
        frames = await client.wait(lambda fs: len(fs) == 2)
        assert (frames[1]["type"], frames[1]["data"]["n"]) == ("message", 1)
    doc = await poll(http, hub, ["loop:a"], cursor=first["cursor"])
    assert [f["data"]["n"] for f in doc["frames"] if f["type"] == "message"] == [1]
    hub.signal()
    assert await hub.exited(15) == 0


def test_uvloop_missing_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert main(["serve", "--event-loop", "uvloop", "--port", "0"], {}) == 2
    err = capsys.readouterr().err
    assert err == (
        "torchannels: --event-loop: uvloop is not installed: "
        "pip install uvloop (or --event-loop asyncio)\n"
    )

"""Real WebSocket clients against the taken-over socket (transports/ws_detached.py):
the ``websockets`` library (in the dev lock) and Node's ``ws`` package (in
package.json: ``make test`` installs the repo's node_modules). Neither is
skipped: a missing one fails. Chromium speaks to it in the browser tests
(tests/e2e). Each client connects,
subscribes in-band, gets a message, pings, and closes with a code that
the server echoes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from support import Server, eventually
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    hub = Hub(MemoryBroker(), Settings(ping_interval=5))
    handler = cast(type[ChannelMixin], type("Handler", (ChannelMixin,), {"hub": hub}))
    return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])


async def test_the_websockets_library(server: Server) -> None:
    from websockets.asyncio import client

    url = server.url("/channels/ws").replace("http:", "ws:")
    async with client.connect(url, compression=None) as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
        await ws.send(json.dumps({"type": "subscribe", "channels": ["a"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        server.hub.channel("a").send({"text": "é" * 300})  # a 16-bit length
        message = json.loads(await ws.recv())
        assert message["type"] == "message" and message["data"]["text"] == "é" * 300
        await asyncio.wait_for(await ws.ping(b"x"), 5)  # answered with its PONG
        await ws.close(4000, "bye")
        assert ws.close_code == 4000  # the server echoed it
    await eventually(lambda: not server.hub.connections)


NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
NODE_CLIENT = """
const WebSocket = require("ws");
const ws = new WebSocket(process.argv[1]);
const seen = [];
ws.on("message", (data) => {
  const frame = JSON.parse(data);
  seen.push(frame.type);
  if (frame.type === "connected") ws.send(JSON.stringify({type: "subscribe", channels: ["a"]}));
  if (frame.type === "subscribed") console.log("subscribed");
  if (frame.type === "message") ws.ping("x");
});
ws.on("pong", (data) => { seen.push("PONG:" + data); ws.close(4000, "bye"); });
ws.on("close", (code) => { console.log(JSON.stringify({seen, code})); });
"""


async def test_nodes_ws_package(server: Server) -> None:
    node = shutil.which("node")
    assert node is not None, "Node 20 is needed for this test"
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    found = subprocess.run([node, "-e", "require.resolve('ws')"], capture_output=True, env=env)
    assert found.returncode == 0, f"Node's ws is not in {NODE_MODULES}: run npm ci (make test does)"
    url = server.url("/channels/ws").replace("http:", "ws:")
    proc = await asyncio.create_subprocess_exec(
        node, "-e", NODE_CLIENT, url, stdout=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 10)).strip() == b"subscribed"
    server.hub.channel("a").send({"n": 1})
    result = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
    assert result == {"seen": ["connected", "subscribed", "message", "PONG:x"], "code": 4000}
    assert await proc.wait() == 0
    await eventually(lambda: not server.hub.connections)

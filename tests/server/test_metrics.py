"""``--metrics``: the Prometheus endpoint follows the hub, and is off by default."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from server.processes import (
    KEY,
    WAIT,
    RawWebSocket,
    ServerProcess,
    api,
    as_json,
    cli,
    fetch,
    outline,
    poll,
)


def test_metrics_without_prometheus_client_fail_with_an_install_hint(tmp_path: Path) -> None:
    """``--metrics`` needs the ``metrics`` extra; without it the hub must say
    so in one line, like any other configuration problem."""
    fake = tmp_path / "prometheus_client"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    result = cli("serve", "--port", "0", "--metrics", "--no-demo",
                 env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert result.returncode in (1, 2)
    assert "listening" not in result.stdout
    assert result.stderr.startswith("torchannels: "), result.stderr
    assert "pip install 'torchannels[metrics]'" in result.stderr
    assert "Traceback" not in result.stderr


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of every sample."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_metrics_follow_publishing_and_subscribing(
    spawn: Callable[..., ServerProcess], http: Any, lives: Any, sockets: Any
) -> None:
    hub = spawn("--metrics", "--no-demo", "--api-key", KEY, "--anonymous", "*",
                "--max-publish-bytes", "600000")  # fmt: skip

    async def scrape() -> dict[str, float]:
        response = await fetch(http, hub.base + "/metrics")
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.body.decode()
        for family, kind in (("torchannels_connections", "gauge"),
                             ("torchannels_subscriptions", "gauge"),
                             ("torchannels_published", "counter"),
                             ("torchannels_delivered", "counter"),
                             ("torchannels_resets", "counter"),
                             ("torchannels_slow_clients_dropped", "counter"),
                             ("torchannels_failed_publishes", "counter")):  # fmt: skip
            # prometheus_client names counter families with or without _total.
            assert re.search(rf"^# TYPE {family}(_total)? {kind}$", text, re.M), family
        return parse_metrics(text)

    async def until(expected: Mapping[str, float]) -> dict[str, float]:
        deadline = time.monotonic() + WAIT
        while True:
            got = await scrape()
            now = {name: got.get(name, 0.0) for name in expected}
            if now == dict(expected):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics {now} never became {dict(expected)}")
            await asyncio.sleep(0.05)

    def conns(transport: str) -> str:
        return f'torchannels_connections{{transport="{transport}"}}'

    base = await scrape()
    assert {k: v for k, v in base.items() if v} == {}, base

    for n in (1, 2):
        await api(http, hub, "/api/publish", {"channel": "m", "data": {"n": n}})
    await until({"torchannels_published_total": 2, "torchannels_delivered_total": 0})

    sse = lives(hub.url(transport="sse", channel="m"))
    await sse.wait(lambda fs: len(fs) == 3)  # subscribed + 2 messages
    await until({conns("sse"): 1, "torchannels_subscriptions": 1,
                 "torchannels_delivered_total": 2})  # fmt: skip
    stream = lives(hub.url(transport="stream", channel="m"))
    await stream.wait(lambda fs: len(fs) == 3)
    ws = await sockets(hub.ws_url(channel="m"))
    await ws.wait(lambda fs: len(fs) == 3)
    info = as_json(await api(http, hub, "/api/channels/m"))
    held = asyncio.ensure_future(
        poll(
            http,
            hub,
            ["m"],
            transport="longpoll",
            timeout=20,
            cursor=f"m={info['epoch']}:{info['offset']}",
        )
    )
    await until({conns("sse"): 1, conns("stream"): 1, conns("websocket"): 1,
                 conns("longpoll"): 1, "torchannels_subscriptions": 4,
                 "torchannels_delivered_total": 6})  # fmt: skip

    await api(http, hub, "/api/publish", {"channel": "m", "data": {"n": 3}})
    assert outline((await asyncio.wait_for(held, WAIT))["frames"]) == [("message", "m")]
    await until({"torchannels_published_total": 3, "torchannels_delivered_total": 10,
                 conns("longpoll"): 0, "torchannels_subscriptions": 3})  # fmt: skip

    # A stale epoch: reset, then the whole history again (3 more deliveries).
    doc = await poll(http, hub, ["m"], cursor="m=zzzzzz:1")
    assert outline(doc["frames"])[0] == ("reset",)
    await until({"torchannels_resets_total": 1, "torchannels_delivered_total": 13})

    for live in (sse, stream):
        await live.aclose()
    await ws.aclose()
    await until({conns("sse"): 0, conns("stream"): 0, conns("websocket"): 0,
                 "torchannels_subscriptions": 0})  # fmt: skip

    # A WebSocket client that stops reading is cut off once it is more than
    # max_pending_bytes (1 MiB) behind: close code 4001, counted.
    slow = await RawWebSocket.connect(hub.port, "/channels/ws?channel=slow", rcvbuf=4096)
    try:
        await until({conns("websocket"): 1, "torchannels_subscriptions": 1})
        chunk = {"pad": "x" * 500_000}
        for _ in range(60):
            response = await api(http, hub, "/api/publish", {"channel": "slow", "data": chunk})
            assert response.code == 200
            if (await scrape()).get("torchannels_slow_clients_dropped_total"):
                break
        await until({"torchannels_slow_clients_dropped_total": 1})
        frames, code = await slow.until_close(timeout=WAIT)
        assert code == 4001
        assert outline(frames[:2]) == [("connected",), ("subscribed", "slow")]
    finally:
        await slow.aclose()


async def test_metrics_are_off_by_default(bare_server: ServerProcess, http: Any) -> None:
    assert (await fetch(http, bare_server.base + "/metrics")).code == 404


async def test_a_failed_queued_publish_is_counted() -> None:
    """``send()`` with Redis gone: logged, raised by ``flush()``, and counted."""
    import socket

    from torchannels import Hub
    from torchannels.brokers.redis import RedisBroker
    from torchannels.errors import BrokerUnavailable
    from torchannels.server.metrics import HubCollector

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    hub = Hub(RedisBroker.from_url(f"redis://127.0.0.1:{dead}/0"))

    def failed() -> float:
        [family] = [f for f in HubCollector(hub).collect() if f.name.endswith("failed_publishes")]
        return float(family.samples[0].value)

    assert failed() == 0
    sent = hub.channel("gone").send({"n": 1})
    assert sent["channel"] == "gone" and "offset" not in sent  # queued, not yet stored
    try:
        await hub.flush()
    except BrokerUnavailable:
        pass
    else:
        raise AssertionError("flush() did not raise the failed publish")
    assert failed() == 1
    await hub.close()

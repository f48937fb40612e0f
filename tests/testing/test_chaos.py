"""Chaos against real ``torchannels serve`` processes, through the kit.

Numbered messages are published through the API while a
:class:`~torchannels.testing.FaultProxy` cuts subscriber connections at
random on every transport, and the server is SIGKILLed and restarted once
(in-memory broker: a new epoch). Every :class:`CheckingSubscriber` must end
at the last position published with no violation, no silent loss, and a
``reset`` (``epoch_changed``) for each channel across the restart.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import tornado.httpclient

from server.processes import KEY, ServerProcess
from torchannels.testing import TRANSPORTS, CheckingSubscriber, FaultProxy, Position

CHANNELS = ["chaos:a", "chaos:b"]
PER_PHASE = 120  # messages published before the restart, and after it
CUT_EVERY = 0.05  # seconds between rounds of random cuts
CUT_PROBABILITY = 0.25  # of each open connection, per round


def start_hub(log_dir: Path, port: int = 0) -> ServerProcess:
    flags = ["--port", str(port), "--no-demo", "--api-key", KEY, "--anonymous", "chaos:*",
             "--ping-interval", "1", "--longpoll-timeout", "2"]  # fmt: skip
    return ServerProcess(log_dir, flags, None)


async def publish(
    client: tornado.httpclient.AsyncHTTPClient, hub: ServerProcess, n: int,
    published: dict[str, list[Position]],
) -> None:  # fmt: skip
    response = await client.fetch(
        hub.base + "/api/publish", method="POST", raise_error=False, request_timeout=5,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        body=json.dumps({"channels": CHANNELS, "data": {"n": n}}),
    )  # fmt: skip
    assert response.code == 200, response.body
    for result in json.loads(response.body)["results"]:
        published[result["channel"]].append((result["epoch"], result["offset"]))


async def cutting(proxy: FaultProxy) -> None:
    while True:
        await asyncio.sleep(CUT_EVERY)
        proxy.cut_random(CUT_PROBABILITY)


async def test_no_silent_loss_under_cuts_and_a_restart(tmp_path: Path) -> None:
    hubs = [start_hub(tmp_path)]
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    proxy = FaultProxy("127.0.0.1", hubs[0].port, seed=9)
    await proxy.start()
    url = f"http://127.0.0.1:{proxy.port}/channels"
    subs = [
        CheckingSubscriber(url, CHANNELS, transport, idle_timeout=4, longpoll_timeout=2,
                           poll_interval=0.05, backoff=(0.02, 0.5), seed=i)
        for i, transport in enumerate(TRANSPORTS)
    ]  # fmt: skip
    published: dict[str, list[Position]] = {c: [] for c in CHANNELS}
    chaos: asyncio.Task[None] | None = None
    try:
        for sub in subs:
            await sub.start()
        for sub in subs:  # every channel joined before the first publish
            await sub.wait(joined(sub), 10)
        chaos = asyncio.create_task(cutting(proxy))
        for n in range(PER_PHASE):
            await publish(client, hubs[0], n, published)
            await asyncio.sleep(0.01)
        hubs[0].signal(signal.SIGKILL)
        await hubs[0].exited(10)
        # in a thread: the subscribers keep trying (and failing) meanwhile
        hubs.append(await asyncio.to_thread(start_hub, tmp_path))
        proxy.retarget("127.0.0.1", hubs[1].port)
        for n in range(PER_PHASE, 2 * PER_PHASE):
            await publish(client, hubs[1], n, published)
            await asyncio.sleep(0.01)
        chaos.cancel()
        last = {c: published[c][-1] for c in CHANNELS}
        for sub in subs:
            await sub.reached(last, timeout=15)
    finally:
        if chaos is not None:
            chaos.cancel()
        for sub in subs:
            await sub.stop()
        await proxy.stop()
        client.close()
        for hub in hubs:
            hub.close()

    epochs = {e for positions in published.values() for e, _ in positions}
    lost = {s.transport: sum(len(s.unaccounted(c, published[c])) for c in CHANNELS) for s in subs}
    duplicates = {s.transport: sum(v.kind == "duplicate" for v in s.violations) for s in subs}
    figures = (
        f"{proxy.counters.cuts} cuts, {2 * PER_PHASE} messages x {len(CHANNELS)} channels, "
        f"epochs {len(epochs)}, losses {lost}, duplicates {duplicates}\n"
        + "\n".join(sub.report() for sub in subs)
    )
    print(figures)
    assert len(epochs) == 2, figures
    assert proxy.counters.cuts > 0, figures
    assert not any(lost.values()), figures
    for sub in subs:
        assert not sub.violations and sub.fatal is None, figures
        assert sub.stats.resets["epoch_changed"] >= len(CHANNELS), figures
        assert sub.stats.drops > 0 and sub.stats.resumes > 0, figures
        for channel in CHANNELS:  # the numbers of the last epoch came in order, once each
            new = [m["n"] for m in sub.received(channel) if m["epoch"] == last_epoch(published)]
            assert new == sorted(set(new)) and new[-1] == 2 * PER_PHASE - 1, figures


def joined(sub: CheckingSubscriber) -> Callable[[], bool]:
    return lambda: all(sub.position(c) for c in CHANNELS)


def last_epoch(published: dict[str, list[Position]]) -> str:
    return published[CHANNELS[0]][-1][0]

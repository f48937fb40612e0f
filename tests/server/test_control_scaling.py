"""The control API across three server processes on one Redis: a disconnect
reaches a user's connections on every process and transport, an unsubscribe
leaves the other channels flowing, and a revocation is honoured by every
process, including one cut off from Redis while it was issued. Runs against
the shared redis-server with a key prefix of its own (a failure in CI when
Redis is missing, never a skip)."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis_servers import shared_redis
from server.control_support import Open, attached, ended, got, open_live, polled, token
from server.processes import KEY, SECRET, ServerProcess, api, as_json, until
from torchannels.testing import FaultProxy


def flags(broker: str, prefix: str) -> list[str]:
    return ["--broker", broker, "--redis-prefix", prefix, "--api-key", KEY,
            "--token-secret", SECRET, "--no-demo"]  # fmt: skip


def redis_port() -> int:
    return int(shared_redis().rsplit(":", 1)[1].split("/")[0])


async def test_a_disconnect_reaches_every_process_and_transport(
    spawn: Callable[..., ServerProcess], http: Any, lives: Any, sockets: Any
) -> None:
    prefix = f"tc-ctl-{uuid.uuid4().hex[:10]}"
    a, b, c = (spawn(*flags(shared_redis(), prefix)) for _ in range(3))
    channel = "c:room"
    await api(http, a, "/api/publish", {"channel": channel, "data": {"n": 0}})
    tok = token("hal")
    placed = [(a, "websocket"), (b, "sse"), (c, "stream"), (c, "longpoll"), (a, "longpoll")]
    opened = [await open_live(http, lives, sockets, hub, t, tok, [channel]) for hub, t in placed]
    bystander = await open_live(http, lives, sockets, b, "websocket", token("ivy"), [channel])
    for hub, n in ((a, 2), (b, 2), (c, 2)):
        await attached(http, hub, channel, n)
    started = time.monotonic()
    answer = as_json(await api(http, b, "/api/disconnect", {"user": "hal"}))
    assert answer == {"connections": 5, "processes": 3, "answered": 3}
    frames = await asyncio.gather(*(ended(o) for o in opened))
    took = time.monotonic() - started
    print(f"disconnect reached 5 connections on 3 processes in {took * 1000:.0f} ms")
    for got_frames in frames:
        assert got_frames[-1] == {
            "type": "disconnect", "reason": "disconnected_by_server", "reconnect": False,
        }  # fmt: skip
    assert opened[0].close_code == 4003
    await api(http, c, "/api/publish", {"channel": channel, "data": {"n": 1}})
    await until(lambda: got(bystander, 1), "the other user still served")


async def test_an_unsubscribe_on_every_process_leaves_the_other_channels(
    spawn: Callable[..., ServerProcess], http: Any, lives: Any, sockets: Any
) -> None:
    prefix = f"tc-ctl-{uuid.uuid4().hex[:10]}"
    a, b, c = (spawn(*flags(shared_redis(), prefix)) for _ in range(3))
    gone, kept = "c:gone", "c:kept"
    for channel in (gone, kept):
        await api(http, a, "/api/publish", {"channel": channel, "data": {"n": 0}})
    tok = token("jo")
    placed = [(a, "websocket"), (b, "sse"), (c, "stream")]
    opened = [await open_live(http, lives, sockets, h, t, tok, [gone, kept]) for h, t in placed]
    for hub in (a, b, c):
        await attached(http, hub, kept, 1)
    answer = as_json(await api(http, c, "/api/unsubscribe", {"user": "jo", "channel": gone}))
    assert answer == {"connections": 3, "processes": 3, "answered": 3}
    await api(http, b, "/api/publish", {"channel": gone, "data": {"n": 1}})
    await api(http, b, "/api/publish", {"channel": kept, "data": {"n": 2}})
    for one in opened:
        await until(functools.partial(got, one, 2), f"{one.transport}: the kept channel flows")
        assert _unsubscribed(one, gone)
        assert not any(f.get("channel") == gone and f["type"] == "message" and
                       f["data"]["n"] == 1 for f in one.current())  # fmt: skip


def _unsubscribed(opened: Open, channel: str) -> bool:
    return any(
        f["type"] == "error" and f.get("channel") == channel and f["code"] == "unsubscribed"
        for f in opened.current()
    )


async def test_a_revocation_reaches_a_process_cut_off_from_redis_when_it_came(
    spawn: Callable[..., ServerProcess], http: Any, lives: Any, sockets: Any
) -> None:
    prefix = f"tc-ctl-{uuid.uuid4().hex[:10]}"
    async with FaultProxy("127.0.0.1", redis_port()) as proxy:
        a, b = (spawn(*flags(shared_redis(), prefix)) for _ in range(2))
        # In a thread: the proxy runs on this loop while the process starts.
        c = await asyncio.to_thread(spawn, *flags(f"redis://127.0.0.1:{proxy.port}/0", prefix))
        channel = "c:revoked"
        await api(http, a, "/api/publish", {"channel": channel, "data": {"n": 0}})
        old = token("kim", iat=int(time.time()) - 60)
        on_a = await open_live(http, lives, sockets, a, "websocket", old, [channel])
        on_c = await open_live(http, lives, sockets, c, "sse", old, [channel])
        await attached(http, c, channel, 1)
        # Cut c off: its pub/sub connection and every reconnect fail.
        proxy.retarget("127.0.0.1", 1)
        proxy.cut_all()
        await until(lambda: _unhealthy(http, c), "c noticed Redis is gone")
        body = {"user": "kim", "before": int(time.time()) - 30}
        answer = as_json(await api(http, b, "/api/revoke", body))
        assert (answer["connections"], answer["processes"]) == (1, 2)  # c did not hear it
        assert (await ended(on_a))[-1]["reason"] == "token_revoked"
        assert on_c.task is not None and not on_c.task.done()
        proxy.retarget("127.0.0.1", redis_port())  # c reconnects and loads the revocation
        frames = await ended(on_c)
        assert frames[-1] == {"type": "disconnect", "reason": "token_revoked", "reconnect": False}
        for hub in (a, b, c):
            refused = await polled(http, hub, [channel], "poll", token=old)
            assert [f.get("code") for f in refused["frames"]] == ["token_revoked"], hub.port
        fresh = token("kim", iat=int(time.time()))
        served = await polled(http, c, [channel], "poll", token=fresh)
        assert served["frames"][0]["type"] == "subscribed"


async def _unhealthy(http: Any, hub: ServerProcess) -> bool:
    response = await api(http, hub, "/health", method="GET")
    return response.code != 200

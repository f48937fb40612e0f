"""Many server processes on one Redis: every message reaches every process,
once and in order, and a client resumes on any of them (issue 8). Runs
against the shared redis-server at 127.0.0.1:6379 with a key prefix of its
own; in CI a missing Redis is a failure, never a skip."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from redis_servers import RedisServer, shared_redis
from server.processes import (
    KEY,
    Live,
    ServerProcess,
    Socket,
    api,
    as_json,
    cli,
    fetch,
    poll,
    until,
)
from support import messages, track_cursor


@pytest.fixture
def redis_flags() -> list[str]:
    """``--broker`` (the shared Redis) and a fresh ``--redis-prefix`` for one
    test's processes."""
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    return ["--broker", shared_redis(), "--redis-prefix", prefix, "--history-ttl", "120",
            "--api-key", KEY, "--no-demo"]  # fmt: skip


def numbers(frames: list[dict[str, Any]]) -> list[int]:
    return [m["n"] for m in messages(frames)]


def offsets(frames: list[dict[str, Any]]) -> list[int]:
    return [m["offset"] for m in messages(frames)]


async def publish(http: Any, server: ServerProcess, channel: str, n: int) -> dict[str, Any]:
    response = await api(http, server, "/api/publish", {"channel": channel, "data": {"n": n}})
    assert response.code == 200, response.body
    result: dict[str, Any] = as_json(response)
    return result


async def test_three_servers_deliver_every_message_once_and_in_order(
    spawn: Callable[..., ServerProcess],
    redis_flags: list[str],
    http: Any,
    lives: Callable[..., Live],
    sockets: Callable[[str], Any],
) -> None:
    a, b, c = (spawn(*redis_flags) for _ in range(3))
    sse = lives(b.url(transport="sse", channel="demo:x"))
    stream = lives(c.url(transport="stream", channel="demo:x"))
    ws: Socket = await sockets(a.ws_url(channel="demo:x"))
    for live in (sse, stream):
        await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    await ws.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    published = [await publish(http, (a, b, c)[n % 3], "demo:x", n) for n in range(30)]
    assert [p["offset"] for p in published] == list(range(1, 31))  # global positions
    assert len({p["epoch"] for p in published}) == 1
    want = list(range(30))
    for live in (sse, stream):
        frames = await live.wait(lambda fs: len(messages(fs)) >= 30)
        assert numbers(frames) == want and offsets(frames) == list(range(1, 31))
    frames = await ws.wait(lambda fs: len(messages(fs)) >= 30)
    assert numbers(frames) == want
    last = published[-1]
    cursor = f"demo:x={last['epoch']}:{last['offset']}"
    held = asyncio.ensure_future(poll(http, c, ["demo:x"], transport="longpoll", cursor=cursor))
    # c holds the stream and, once it is waiting, the long-poll.
    await until(lambda: _health_connections(http, c, at_least=2), "the long-poll is held")
    await publish(http, a, "demo:x", 30)
    doc = await held
    assert numbers(doc["frames"]) == [30]


async def _health_connections(http: Any, server: ServerProcess, *, at_least: int) -> bool:
    body = as_json(await fetch(http, server.base + "/health"))
    return int(body["connections"]) >= at_least


async def test_a_client_resumes_on_another_server(
    spawn: Callable[..., ServerProcess],
    redis_flags: list[str],
    http: Any,
    lives: Callable[..., Live],
) -> None:
    a, b = spawn(*redis_flags), spawn(*redis_flags)
    first = await poll(http, a, ["demo:r"])
    for n in range(5):
        await publish(http, a, "demo:r", n)
    cursor = first["cursor"]
    on_b = await poll(http, b, ["demo:r"], cursor=cursor)
    assert numbers(on_b["frames"]) == [0, 1, 2, 3, 4]
    assert not [f for f in on_b["frames"] if f["type"] == "reset"]
    cursor = track_cursor(cursor, on_b["frames"])
    assert cursor == on_b["cursor"]
    for n in range(5, 8):
        await publish(http, b, "demo:r", n)
    sse = lives(a.url(transport="sse", channel="demo:r", cursor=cursor))
    frames = await sse.wait(lambda fs: len(messages(fs)) >= 3)
    assert numbers(frames) == [5, 6, 7]  # exactly what it missed, from the other server


async def test_workers_share_one_port_and_every_subscriber_gets_everything(
    spawn: Callable[..., ServerProcess],
    redis_flags: list[str],
    http: Any,
    lives: Callable[..., Live],
) -> None:
    server = spawn(*redis_flags, "--workers", "2")
    subscribers = [lives(server.url(transport="sse", channel="demo:w")) for _ in range(16)]
    for live in subscribers:
        await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    seen: dict[int, int] = {}

    async def both_workers_counted() -> bool:
        client = tornado_client()
        try:
            body = as_json(await fetch(client, server.base + "/health"))
        finally:
            client.close()
        seen[int(body["worker"])] = int(body["connections"])
        return len(seen) == 2 and sum(seen.values()) == 16

    await until(both_workers_counted, "both workers answered /health")
    assert all(count > 0 for count in seen.values()), seen  # the kernel spread them
    for n in range(20):
        await publish(http, server, "demo:w", n)
    for live in subscribers:
        frames = await live.wait(lambda fs: len(messages(fs)) >= 20)
        assert numbers(frames) == list(range(20))


def tornado_client() -> Any:
    """A fresh client, so each request opens a new connection (and the
    kernel may hand it to either worker)."""
    import tornado.httpclient

    return tornado.httpclient.AsyncHTTPClient(force_instance=True)


def test_workers_are_refused_with_the_memory_broker() -> None:
    result = cli("serve", "--port", "0", "--workers", "2")
    assert result.returncode == 2
    assert "--workers 2 needs a shared broker" in result.stderr
    assert "in-memory broker" in result.stderr


async def status(http: Any, server: ServerProcess, path: str, body: Any = None) -> tuple[int, Any]:
    if body is None:
        response = await fetch(http, server.base + path)
    else:
        response = await api(http, server, path, body)
    return response.code, as_json(response)


@pytest.mark.parametrize("keeps_data", [True, False], ids=["saved", "empty"])
async def test_a_server_rides_out_a_redis_restart(
    spawn: Callable[..., ServerProcess],
    http: Any,
    lives: Callable[..., Live],
    tmp_path: Any,
    keeps_data: bool,
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        server = spawn("--broker", redis.url, "--api-key", KEY, "--no-demo")
        sse = lives(server.url(transport="sse", channel="demo:k"))
        await sse.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
        for n in range(3):
            await publish(http, server, "demo:k", n)
        await sse.wait(lambda fs: len(messages(fs)) >= 3)
        if keeps_data:
            redis.save_and_stop()
        else:
            redis.kill()
        one = {"channel": "demo:k", "data": {"n": -1}}

        async def refused() -> bool:
            code, body = await status(http, server, "/api/publish", one)
            return code == 503 and body["error"] == "broker_unavailable"

        await until(refused, "publishing answers 503 broker_unavailable")
        code, body = await status(http, server, "/health")
        assert (code, body["status"], body["broker"]) == (503, "broker_unavailable", "unavailable")
        assert not sse.complete  # the subscriber stays connected meanwhile
        redis.start()

        async def healthy() -> bool:
            return (await status(http, server, "/health"))[0] == 200

        await until(healthy, "the broker is back")
        after = await publish(http, server, "demo:k", 3)
        frames = await sse.wait(lambda fs: len(messages(fs)) >= 4)
        assert numbers(frames) == [0, 1, 2, 3]  # nothing lost, nothing twice
        resets = [f for f in frames if f["type"] == "reset"]
        if keeps_data:
            assert resets == [] and after["offset"] == 4
        else:  # an empty Redis: a new epoch, said in-band before the new message
            assert [r["reason"] for r in resets] == ["epoch_changed"]
            assert after["offset"] == 1 and after["epoch"] != messages(frames)[0]["epoch"]
            kinds = [f["type"] for f in frames]
            assert kinds.index("reset") < len(kinds) - 1 - kinds[::-1].index("message")
    finally:
        redis.kill()

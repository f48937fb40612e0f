"""The review's reproduction of issue 17 (2.1) with real ``torchannels serve``
processes on one Redis: A keeps 100 messages of history, B (a rolling
deploy, say) keeps none. A resumer is told what it lost, never handed
history with a hole in it as if it were complete."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio

from redis_servers import shared_redis
from server.processes import KEY, ServerProcess, api, as_json, poll


async def test_history_written_by_processes_with_different_sizes_has_no_silent_hole(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    url = shared_redis()
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    flags = ["--broker", url, "--redis-prefix", prefix, "--api-key", KEY, "--no-demo",
             "--anonymous", "pub:*"]  # fmt: skip
    a = spawn(*flags, "--history-size", "100")
    b = spawn(*flags, "--history-size", "0")

    async def publish(server: ServerProcess, n: int) -> dict[str, Any]:
        response = await api(http, server, "/api/publish", {"channel": "pub:c", "data": {"n": n}})
        assert response.code == 200, response.body
        result: dict[str, Any] = as_json(response)
        return result

    admin = redis.asyncio.Redis.from_url(url)
    try:
        epoch = (await publish(a, 1))["epoch"]
        for n in (2, 3):
            await publish(a, n)
        for n in (4, 5, 6):
            await publish(b, n)
        await publish(a, 7)
        for server in (a, b):
            doc = await poll(http, server, ["pub:c"], cursor=f"pub:c={epoch}:2")
            frames = doc["frames"]
            assert [f["type"] for f in frames] == ["reset", "subscribed", "message"], frames
            assert frames[0]["reason"] == "history_trimmed"
            assert (frames[1]["epoch"], frames[1]["offset"]) == (epoch, 6)
            assert frames[2]["data"]["n"] == 7
            assert doc["cursor"] == f"pub:c={epoch}:7"
    finally:
        keys = [k async for k in admin.scan_iter(match=f"{{{prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()

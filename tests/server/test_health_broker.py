"""``/health`` asks the broker (issue 17, section 2b.4): a process on a
dead Redis, or on a frozen one, must not say ``ok``."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError

from redis_servers import LocalCluster, RedisServer, free_port
from server.processes import WAIT, ServerProcess, fetch, until
from torchannels import MemoryBroker
from torchannels.brokers.redis import RedisBroker
from torchannels.server.health import BrokerCheck


async def health(http: Any, hub: ServerProcess) -> tuple[int, dict[str, Any]]:
    response = await fetch(http, hub.base + "/health", timeout=10)
    return response.code, json.loads(response.body)


def pings(redis: RedisServer) -> int:
    match = re.search(r"cmdstat_ping:calls=(\d+)", redis.cli("INFO", "commandstats"))
    return int(match.group(1)) if match else 0


async def test_health_follows_a_frozen_redis(
    spawn: Callable[..., ServerProcess], http: Any, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        hub = spawn("--broker", redis.url, "--no-demo")
        assert (await health(http, hub))[0] == 200
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)  # connections stay open, nothing answers
        try:

            async def unavailable() -> bool:
                code, body = await health(http, hub)
                return (code, body.get("broker")) == (503, "unavailable")

            await until(unavailable, "/health 503 while Redis is frozen", timeout=15)
            code, body = await health(http, hub)
            assert (code, body["status"]) == (503, "broker_unavailable")
        finally:
            redis.process.send_signal(signal.SIGCONT)

        async def healthy() -> bool:
            code, body = await health(http, hub)
            return (code, body.get("broker")) == (200, "ok")

        await until(healthy, "/health 200 once Redis answers again", timeout=15)
    finally:
        redis.kill()


async def test_health_is_503_from_the_start_on_a_dead_redis(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    hub = spawn("--broker", f"redis://127.0.0.1:{free_port()}/0", "--no-demo")
    code, body = await health(http, hub)  # the very first answer: no command ran before
    assert (code, body["status"], body["broker"]) == (503, "broker_unavailable", "unavailable")
    assert "Traceback" not in hub.log()


async def test_a_flood_of_health_checks_is_one_ping(
    spawn: Callable[..., ServerProcess], http: Any, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        hub = spawn("--broker", redis.url, "--no-demo")
        assert (await health(http, hub))[0] == 200
        await asyncio.sleep(1.1)  # past the 1 s the answer is kept: the burst asks again
        before = pings(redis)
        answers = await asyncio.gather(*(health(http, hub) for _ in range(40)))
        assert {code for code, _ in answers} == {200}
        # 40 at once share one PING (more only if the burst spans the 1 s
        # the answer is kept, or the pub/sub connection pinged meanwhile).
        assert 1 <= pings(redis) - before <= 3, pings(redis) - before
    finally:
        redis.kill()


async def test_a_cluster_ping_asks_every_primary(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    cluster.start()
    broker = RedisBroker.from_url(cluster.url, prefix="health-ping")
    try:
        await asyncio.wait_for(broker.ping(), WAIT)
        cluster.nodes[2].kill()  # one primary of three: a third of the slots
        with pytest.raises((RedisError, OSError)):
            await asyncio.wait_for(broker.ping(), WAIT)
    finally:
        await broker.close()
        cluster.stop()


async def test_the_memory_broker_always_answers() -> None:
    broker = MemoryBroker()
    await broker.ping()  # raises if it does not answer
    assert await BrokerCheck(broker).ok()

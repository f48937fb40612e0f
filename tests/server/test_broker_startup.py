"""``serve --broker redis://...`` when Redis is not there: a bad URL option,
redis-py missing, Redis unreachable at start-up, and Redis going away and
coming back. Real ``torchannels serve`` processes, real ``redis-server``."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from redis_servers import RedisServer, free_port
from server.processes import KEY, START_TIMEOUT, ServerProcess, api, as_json, cli, until

MISSING = (
    "torchannels: --broker: the Redis broker needs redis-py: pip install 'torchannels[redis]'\n"
)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("via", ["flag", "env"])
def test_a_bad_url_option_is_refused_with_its_name(workers: str, via: str) -> None:
    url = "redis://:hunter2@127.0.0.1:6379/0?socket_timeout=abc"
    if via == "flag":
        done = cli("serve", "--port", "0", "--workers", workers, "--broker", url)
    else:
        done = cli("serve", "--port", "0", "--workers", workers, env={"TORCHANNELS_BROKER": url})
    assert done.returncode == 2, done
    source = "--broker" if via == "flag" else "TORCHANNELS_BROKER"
    assert done.stderr == f"torchannels: {source}: URL option socket_timeout=abc must be a number\n"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_without_redis_py_the_error_is_one_line(tmp_path: Path, workers: str) -> None:
    """redis-py made unimportable by a package of that name on PYTHONPATH."""
    shim = tmp_path / "redis"
    shim.mkdir()
    (shim / "__init__.py").write_text(
        "raise ImportError(\"No module named 'redis' (test shim)\")\n"
    )
    done = cli("serve", "--port", "0", "--workers", workers, "--broker",
               "redis://127.0.0.1:6379/0", env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert (done.returncode, done.stderr) == (2, MISSING), done


def lines(log: str) -> list[str]:
    """Log lines (continuation lines of a traceback included), without DEBUG ones."""
    return [line for line in log.splitlines() if " DEBUG " not in line]


async def wait_log(hub: ServerProcess, pattern: str, count: int = 1) -> None:
    deadline = time.monotonic() + START_TIMEOUT  # 8 reconnect attempts take up to 7 s
    while len(re.findall(pattern, hub.log())) < count:
        assert time.monotonic() < deadline, f"{count} x {pattern!r} not in: {hub.log()}"
        await asyncio.sleep(0.05)


async def test_an_unreachable_redis_is_said_once_and_the_demo_stays_quiet(
    spawn: Callable[..., ServerProcess],
) -> None:
    """Nothing listens on the port: one warning says Redis is unreachable and
    retried; the demo ticker logs nothing. The window is eight reconnect
    attempts (DEBUG lines), several ticks of the demo ticker."""
    port = free_port()
    hub = spawn("--broker", f"redis://127.0.0.1:{port}/0", "--log-level", "debug")
    await wait_log(hub, r"DEBUG torchannels\.broker: Redis pub/sub reconnect failed", count=8)
    log = hub.log()
    said = lines(log)
    down = [line for line in said if "unreachable" in line]
    assert len(down) == 1, said
    assert f"Redis is unreachable (pub/sub connect): ConnectionError: Error 111 connecting to " \
           f"127.0.0.1:{port}" in down[0]  # fmt: skip
    assert "retrying in the background" in down[0]
    assert "Traceback" not in log and "demo ticker" not in log
    assert len(said) <= 3, said  # that line, "no API key set", at most one more


async def ticker(http: Any, hub: ServerProcess) -> dict[str, Any]:
    """``demo:ticker``'s position, once it has one."""
    info: dict[str, Any] = {}

    async def published() -> bool:
        nonlocal info
        info = as_json(await api(http, hub, "/api/channels/demo:ticker"))
        return bool(info.get("offset"))

    await until(published, "demo:ticker has no message")
    return info


async def test_redis_going_away_and_coming_back_is_two_lines(
    spawn: Callable[..., ServerProcess], tmp_path: Path, http: Any
) -> None:
    """One line when Redis goes, one when it is back; the demo ticker is
    quiet meanwhile and publishes again after (a new epoch: the restarted
    Redis is empty)."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        hub = spawn("--broker", redis.url, "--api-key", KEY)
        before = await ticker(http, hub)
        redis.kill()
        await wait_log(hub, r"Redis pub/sub connection lost")
        redis.start()
        await wait_log(hub, r"Redis is reachable again after [\d.]+ s")

        async def ticking_again() -> bool:
            now = await ticker(http, hub)
            return bool(now["epoch"] != before["epoch"] and now["offset"] >= 1)

        await until(ticking_again, "the demo ticker did not resume")
        log = hub.log()
    finally:
        redis.kill()
    said = [line for line in lines(log) if "torchannels.broker" in line]
    assert len(said) == 2, said
    assert "Redis pub/sub connection lost (ConnectionError: " in said[0], said
    assert "Traceback" not in log and "demo ticker" not in log, log

"""The Redis broker before it has ever reached Redis: URL options checked
up front, ``from_url`` options, and what an unreachable Redis logs."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from redis_servers import free_port, shared_redis
from support import eventually
from torchannels.brokers import RedisBroker, redis_delivery
from torchannels.brokers.redis_errors import check_url

GOOD = [
    "redis://127.0.0.1:6379/0",
    "redis://127.0.0.1:6379/0?socket_timeout=2.5&socket_connect_timeout=1",
    "rediss://:pw@example.com:6380/1?ssl_check_hostname=false",
    "redis+cluster://127.0.0.1:7000?max_connections=10",
    "unix:///run/redis.sock?db=2",
]

BAD = [
    ("redis://127.0.0.1:6379/0?socket_timeout=abc",
     "URL option socket_timeout=abc must be a number"),
    ("redis://127.0.0.1:6379/0?db=one", "URL option db=one must be an integer"),
    ("redis+cluster://127.0.0.1:7000?max_connections=x",
     "URL option max_connections=x must be an integer"),
    ("redis://127.0.0.1:port/0", "not a valid Redis URL: Port could not be cast to integer"),
]  # fmt: skip


@pytest.mark.parametrize("url", GOOD)
def test_valid_urls_pass(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(("url", "message"), BAD)
def test_an_invalid_option_is_named(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_url(url)
    assert str(caught.value).startswith(message)


async def test_from_url_takes_the_broker_s_own_options() -> None:
    broker = RedisBroker.from_url(
        shared_redis(), subscribe_timeout=2, ping_interval=3, reconnect_cap=0.5, socket_timeout=4
    )
    try:
        assert broker._delivery._subscribe_timeout == 2
        assert broker._delivery._ping_interval == 3
        client: Any = broker.client  # a single Redis: its pool holds redis-py's options
        assert client.connection_pool.connection_kwargs["socket_timeout"] == 4
    finally:
        await broker.close()


async def test_an_unreachable_redis_is_said_once_then_summed_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """connect() says at once that Redis is out of reach and retried, then
    only a summary every SUMMARY_EVERY seconds: no line per attempt."""
    monkeypatch.setattr(redis_delivery, "SUMMARY_EVERY", 0.2)
    caplog.set_level(logging.INFO, "torchannels.broker")
    broker = RedisBroker.from_url(f"redis://127.0.0.1:{free_port()}/0", reconnect_cap=0.02)
    try:
        await broker.connect()
        assert not broker.available

        def summaries() -> list[str]:
            return [r.getMessage() for r in caplog.records if "still unreachable" in r.getMessage()]

        await eventually(lambda: len(summaries()) >= 2, timeout=5)
        lines = [r.getMessage() for r in caplog.records]
        first = [line for line in lines if "retrying in the background" in line]
        assert len(first) == 1, lines
        assert first[0].startswith("Redis is unreachable (pub/sub connect): ConnectionError: ")
        assert all("still unreachable after" in line for line in lines[1:]), lines
        assert not any(r.exc_info for r in caplog.records)
    finally:
        await broker.close()

"""The Redis broker's publish queue (brokers/publish_queue.py) when its pump
is cancelled mid-batch: every publish it held ends, none waits forever."""

from __future__ import annotations

import asyncio
import signal

import pytest

from redis_servers import RedisServer
from support import eventually
from test_redis_broker import brokers, make, server
from torchannels.brokers import Broker, MemoryBroker, RedisBroker
from torchannels.errors import BrokerError

__all__ = ["brokers", "server"]  # fixtures, used by name


async def test_a_cancelled_pump_fails_every_publish_it_held(
    server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker = make(brokers, server.url)
    await broker.publish("news", {"n": 0})  # connected, scripts loaded
    queue = broker._queue
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)  # the next batch hangs in Redis
    try:
        in_batch = [
            asyncio.ensure_future(broker.publish("news", {"n": 1})),
            asyncio.ensure_future(broker.publish_many([("news", {"n": 2}), ("b", {"n": 1})])),
            asyncio.ensure_future(broker.set_state("news", [{"s": 1}])),
        ]
        broker.publish_soon("news", {"n": 3})
        # The pump took the batch and waits on Redis; queue more behind it.
        await eventually(lambda: queue._pump is not None and not queue._queue)
        behind = [asyncio.ensure_future(broker.publish("news", {"n": 4}))]
        broker.set_state_soon("news", [{"s": 2}])
        assert queue._pump is not None
        queue._pump.cancel()
        waiting = in_batch + behind
        _, pending = await asyncio.wait(waiting, timeout=5)
        assert not pending, "a cancelled pump left publishes waiting forever"
        for future in waiting:
            with pytest.raises(BrokerError, match="publish queue stopped"):
                future.result()
        assert broker.failed_publishes == 2  # the two queued without a waiter
        with pytest.raises(BrokerError, match="publish queue stopped"):
            await broker.flush()
        assert queue._pump is None
    finally:
        server.process.send_signal(signal.SIGCONT)
    # The queue still works: a new pump starts with the next publish.
    pub = await broker.publish("news", {"n": 5})
    assert pub.data["n"] == 5


def test_broker_is_a_pure_interface() -> None:
    """The queue is the Redis broker's, not every broker's: the base class
    holds no queue state, and the memory broker has none to bypass."""
    for name in ("_queue", "_pump", "_failures", "_drain", "_store", "_enqueue"):
        assert not hasattr(Broker, name), name
        assert not hasattr(MemoryBroker(), name), name
    # publish and publish_many (the base's, for their overloads) only call these
    publishing = {
        "publish_soon",
        "set_state_soon",
        "_publish_message",
        "_publish_batch",
        "set_state",
    }
    assert publishing <= Broker.__abstractmethods__

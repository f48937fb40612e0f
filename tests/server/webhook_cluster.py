"""What the webhook tests across processes share: ``serve`` processes on the
shared Redis that post their lifecycle events to a test's
:class:`~webhook_receiver.Receiver`, clients of users on any
transport, and the processes' webhook metrics.

Each cluster has a fresh ``--redis-prefix`` (its keys are deleted once its
processes are stopped), presence on ``room:*`` channels (a TOML
``--config``; ``plain:*`` channels have none), every event type, and a
short presence grace and TTL so that offline comes quickly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis.asyncio

from redis_servers import shared_redis
from server.presence_members import Member
from server.processes import KEY, SECRET, WAIT, ServerProcess, fetch, jwt
from torchannels.brokers.lifecycle import EVENT_TYPES
from webhook_receiver import Receiver

HOOK_SECRET = "test-webhook-secret"
CONFIG = '[channels."room:*"]\npresence = true\n'


class Cluster:
    """``serve`` processes of one test, posting to ``receiver``."""

    def __init__(self, log_dir: Path, receiver: Receiver) -> None:
        self.log_dir = log_dir
        self.receiver = receiver
        self.flags: list[str] = []
        self.processes: list[ServerProcess] = []
        self.prefixes: list[str] = []

    def start(
        self, count: int = 3, *flags: str, grace: float = 1.0, ttl: float = 3.0
    ) -> list[ServerProcess]:
        """``count`` processes with the presence ``grace`` and ``ttl``, and ``flags``."""
        config = self.log_dir / f"webhooks-{uuid.uuid4().hex[:8]}.toml"
        config.write_text(CONFIG)
        prefix = f"tc-hook-{uuid.uuid4().hex[:12]}"
        self.prefixes.append(prefix)
        self.flags = [
            "--port", "0", "--broker", shared_redis(), "--redis-prefix", prefix,
            "--api-key", KEY, "--token-secret", SECRET, "--no-demo", "--metrics",
            "--config", str(config), "--presence-grace", str(grace), "--presence-ttl", str(ttl),
            "--webhook-url", self.receiver.url, "--webhook-secret", HOOK_SECRET,
            "--webhook-events", ",".join(EVENT_TYPES), *flags,
        ]  # fmt: skip
        return [self.add() for _ in range(count)]

    def add(self) -> ServerProcess:
        """One more process with the flags of the last :meth:`start` (blocks
        while it starts: call it in a thread while the receiver must answer)."""
        hub = ServerProcess(self.log_dir, self.flags, None)
        self.processes.append(hub)
        return hub

    async def close(self) -> None:
        """Stop the processes, then delete their keys."""
        await asyncio.gather(*(asyncio.to_thread(hub.close) for hub in self.processes))
        admin = redis.asyncio.Redis.from_url(shared_redis())
        try:
            for prefix in self.prefixes:
                keys = [key async for key in admin.scan_iter(match=f"*{prefix}*")]
                if keys:
                    await admin.delete(*keys)
        finally:
            await admin.aclose()


def token(user: str | None, info: Mapping[str, Any] | None = None) -> str:
    """A token for ``room:*`` and ``plain:*``; ``user`` None: anonymous."""
    claims: dict[str, Any] = {"exp": time.time() + 600, "channels": ["room:*", "plain:*"]}
    if user is not None:
        claims["sub"] = user
    if info is not None:
        claims["info"] = dict(info)
    return jwt(claims)


class Clients:
    """Clients opened by one test (:class:`Member`), closed at teardown."""

    def __init__(self) -> None:
        self.opened: list[Member] = []

    async def open(
        self, hub: ServerProcess, transport: str, channel: str, user: str | None,
        info: Mapping[str, Any] | None = None,
    ) -> Member:  # fmt: skip
        """A client of ``user`` subscribed to ``channel``, once subscribed."""
        member = Member(hub, transport, channel, user)
        member.token = token(user, info)
        self.opened.append(member)
        return await member.open()

    async def close(self) -> None:
        for member in self.opened:
            await member.close()


async def metric(http: Any, hub: ServerProcess, name: str) -> float:
    """The sum of every sample of ``name`` (any labels) in ``hub``'s /metrics."""
    response = await fetch(http, hub.base + "/metrics")
    assert response.code == 200, response.body
    total = 0.0
    for line in response.body.decode().splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name or sample.startswith(name + "{"):
            total += float(value)
    return total


async def sending(http: Any, hubs: list[ServerProcess], timeout: float = WAIT) -> ServerProcess:
    """The one process of ``hubs`` that holds the send lease
    (``torchannels_webhook_sending`` 1), once one does."""
    deadline = time.monotonic() + timeout
    while True:
        senders = [h for h in hubs if await metric(http, h, "torchannels_webhook_sending") == 1]
        if len(senders) == 1:
            return senders[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no process of {[h.port for h in hubs]} took the lease")
        await asyncio.sleep(0.05)

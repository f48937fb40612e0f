"""``GET /health``: whether this process serves, and whether its broker answers.

The broker is asked actively (:meth:`~torchannels.Broker.ping`): a process
started against a dead Redis, or one whose Redis is frozen, must not say
``ok`` until a command happens to fail. One check runs at a time and its
answer is kept for :data:`CHECK_TTL`, so a flood of ``/health`` requests
costs one PING a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import tornado.web

from ..brokers import Broker
from ..hub import Hub
from ..protocol import dumps
from . import outbox_health

#: Seconds the broker gets to answer a check.
CHECK_TIMEOUT = 1.0
#: Seconds an answer is reused.
CHECK_TTL = 1.0


class BrokerCheck:
    """The broker's answer to a PING within ``timeout`` seconds, reused for
    ``ttl`` seconds; concurrent callers share one PING."""

    def __init__(
        self,
        broker: Broker,
        timeout: float = CHECK_TIMEOUT,
        ttl: float = CHECK_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.timeout = timeout
        self.ttl = ttl
        self.clock = clock
        self._answer = False
        self._at = -float("inf")
        self._running: asyncio.Task[bool] | None = None

    async def ok(self) -> bool:
        """True if the broker answered the latest check and is not known
        to be unreachable."""
        if self.clock() - self._at >= self.ttl:
            if self._running is None:
                self._running = asyncio.ensure_future(self._check())
            # A request that goes away must not cancel the others' check.
            await asyncio.shield(self._running)
        return self._answer and self.broker.available

    async def _check(self) -> bool:
        try:
            await asyncio.wait_for(self.broker.ping(), self.timeout)
            answer = True
        except Exception:  # a timeout, a refused connection: either way no answer
            answer = False
        finally:
            self._running = None
        self._answer, self._at = answer, self.clock()
        return answer


class HealthHandler(tornado.web.RequestHandler):
    """200 ``{"status": "ok", "broker": "ok", ...}``; 503 while shutting
    down or while the broker does not answer. With an outbox consumer,
    ``"outbox": {"connected", "backlog", "oldest"}`` too."""

    def initialize(self, hub: Hub, check: BrokerCheck, worker: int = 0) -> None:
        self.hub = hub
        self.check = check
        self.worker = worker

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        hub = self.hub
        if hub.closing:
            self.set_status(503)
            self.finish(dumps({"status": "shutting_down"}))
            return
        broker = "ok" if await self.check.ok() else "unavailable"
        status = "ok" if broker == "ok" else "broker_unavailable"
        self.set_status(200 if status == "ok" else 503)
        body: dict[str, object] = {"status": status, "broker": broker, "worker": self.worker}
        body["connections"] = len(hub.connections)
        if hub.outbox is not None:  # PostgreSQL away: shown, never a 503
            body["outbox"] = outbox_health.health_body(hub.outbox.stats)
        self.finish(dumps(body))

"""The one sender of webhook events in a cluster, in queue order.

Every process runs a :class:`WebhookSender`; the one holding the store's
lease (:meth:`LifecycleStore.lease`, ``lease_ttl`` 2 s, renewed every
``renew_every`` 0.5 s; the others try as often) sends. Its loop:

1. take the oldest events (:meth:`LifecycleStore.head`): up to
   ``batch_max`` (50), once that many are queued or ``batch_wait``
   (250 ms) after the oldest one's time, whichever comes first;
2. POST them, signed (:mod:`.webhook_post`);
3. on a 2xx, acknowledge them (they leave the queue); on a refusal for
   good (3xx, other 4xx), acknowledge them too, dropped as ``rejected``;
   on a failure (408, 429, 5xx, no answer), drop the events queued more
   than ``retry_for`` seconds ago (``expired``), wait the backoff and
   send the head of the queue again.

A renewal that fails cancels the loop at once, wherever it is; the batch
it held stays queued for the next holder (at least once: a receiver dedupes
by id). Store failures are warned about and retried; warnings of each
kind come at most once a minute. :class:`WebhookStats` gets the counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient

from .brokers.lifecycle import LifecycleStore, QueuedEvent
from .cancelling import cancel_and_wait
from .webhook_post import Outcome, Warnings, backoff, batch_body, new_client, post, shown_url
from .webhook_stats import WebhookStats

log = logging.getLogger("torchannels.webhooks")

#: Seconds an idle leader waits on the queue before looking again anyway.
IDLE_WAIT = 1.0
#: Events looked at per store call when dropping expired ones.
EXPIRY_SCAN = 1000


class WebhookSender:
    """Sends ``store``'s events to ``url``, signed with ``secret``, while
    ``owner`` (this process's id) holds the lease; counts into ``stats``.

    ``timeout`` bounds each attempt (connecting and answering); events
    still failing ``retry_for`` seconds after they were queued are dropped.
    The other arguments are the timings of the module doc (tests shorten
    them); ``queue_length`` is read at least every ``length_every`` seconds,
    leader or not.
    """

    def __init__(
        self,
        store: LifecycleStore,
        url: str,
        secret: str,
        *,
        stats: WebhookStats,
        owner: str,
        timeout: float = 10.0,
        retry_for: float = 600.0,
        batch_max: int = 50,
        batch_wait: float = 0.25,
        lease_ttl: float = 2.0,
        renew_every: float = 0.5,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        length_every: float = 2.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a webhook URL must be http:// or https:// with a host, not {url!r}")
        if not secret:
            raise ValueError("a webhook needs a non-empty secret to sign its calls")
        if not (timeout > 0 and retry_for > 0 and batch_max >= 1 and renew_every < lease_ttl):
            raise ValueError("timeout and retry_for must be positive, batch_max at least 1, "
                             "and renew_every shorter than lease_ttl")  # fmt: skip
        self.store, self.url, self.stats, self.owner = store, url, stats, owner
        self.timeout, self.retry_for = float(timeout), float(retry_for)
        self.batch_max, self.batch_wait = batch_max, batch_wait
        self.lease_ttl, self.renew_every, self.length_every = lease_ttl, renew_every, length_every
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._key = secret.encode()
        self._http: AsyncHTTPClient | None = None  # made in start(), in its loop
        self._warnings = Warnings(log)
        self._keeper: asyncio.Task[None] | None = None
        self._sending: asyncio.Task[None] | None = None
        self._length_due = 0.0

    def __repr__(self) -> str:
        return f"WebhookSender({shown_url(self.url)})"

    def start(self) -> None:
        """Start taking the lease, and sending while it is held (in the running loop)."""
        if self._keeper is None:
            self._http = new_client()
            self._keeper = asyncio.ensure_future(self._keep())

    async def close(self) -> None:
        """Stop sending (a batch in flight stays queued), give the lease up
        and close the HTTP client. Never raises."""
        for task in (self._keeper, self._sending):
            if task is not None:
                await cancel_and_wait(task)
        self.stats.sending = False
        try:
            async with asyncio.timeout(self.lease_ttl):
                await self.store.unlease(self.owner)
        except Exception as exc:  # it expires by itself within lease_ttl
            log.warning("could not give the webhook lease up: %s: %s", type(exc).__name__, exc)
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- the lease ----------------------------------------------------------------

    async def _keep(self) -> None:
        while True:
            await self._tick()
            await asyncio.sleep(self.renew_every)

    async def _tick(self) -> None:
        """Take or renew the lease: start sending, or stop at once; read the queue's length."""
        try:
            async with asyncio.timeout(self.renew_every):
                held = await self.store.lease(self.owner, self.lease_ttl)
        except Exception as exc:  # unsure whether it is still ours: stop
            held = False
            self._store_failed(exc)
        running = self._sending is not None and not self._sending.done()
        if held and not running:
            self._sending = asyncio.ensure_future(self._lead())
        elif not held and self._sending is not None:
            await cancel_and_wait(self._sending)
            self._sending = None
        self.stats.sending = held
        now = time.monotonic()
        if now >= self._length_due:
            try:
                async with asyncio.timeout(self.renew_every):  # never holds the next renewal up
                    self.stats.queue_length = await self.store.length()
                self._length_due = now + self.length_every
            except Exception as exc:
                self._store_failed(exc)

    # -- sending ------------------------------------------------------------------

    async def _lead(self) -> None:
        """Send batch after batch; returns if an ack finds the lease lost."""
        failures = 0
        while True:
            try:
                events = await self._next_batch()
                outcome = await self._post(events)
                if outcome.kind == "retry":
                    failures += 1
                    await self._failed(outcome, failures)
                    continue
                failures = 0
                if not await self._settle(events, outcome):
                    return  # no longer ours: the next holder sends them again
            except Exception as exc:
                self._store_failed(exc)
                await asyncio.sleep(self.renew_every)

    async def _post(self, events: Sequence[QueuedEvent]) -> Outcome:
        assert self._http is not None  # made by start(), which runs this
        return await post(self._http, self.url, self._key, batch_body(events), self.timeout)

    async def _next_batch(self) -> list[QueuedEvent]:
        """The head of the queue, once it is full or old enough to go."""
        first: tuple[str, float] | None = None  # the oldest event, and when it was first seen
        while True:
            events = await self.store.head(self.batch_max)
            if not events:
                await self.store.wait(IDLE_WAIT)
                continue
            now = time.time()
            if first is None or first[0] != events[0].id:
                first = (events[0].id, now)
            # From its time, or from when it was seen if the store's clock is ahead.
            due = min(events[0].time, first[1]) + self.batch_wait - now
            if len(events) >= self.batch_max or due <= 0:
                return events
            await self.store.wait(due)

    async def _settle(self, events: Sequence[QueuedEvent], outcome: Outcome) -> bool:
        """Count and acknowledge a batch delivered or rejected; False if the lease is lost."""
        now = time.time()
        if outcome.kind == "delivered":
            self.stats.sent += len(events)
            self.stats.last_success = now
            for event in events:
                self.stats.observe_latency(now - event.time)
        if not await self.store.ack(self.owner, [event.id for event in events]):
            return False
        if outcome.kind == "rejected":
            self.stats.dropped["rejected"] += len(events)
            self.stats.last_error = (now, f"{outcome.detail}: rejected")
            self._warnings.warn(
                "rejected",
                f"the webhook ({shown_url(self.url)}) answered {outcome.detail}: "
                f"{len(events)} events dropped for good, not retried",
            )
        return True

    async def _failed(self, outcome: Outcome, failures: int) -> None:
        """After a failed attempt: count it, drop what waited too long, back off."""
        self.stats.retries += 1
        self.stats.last_error = (time.time(), outcome.detail)
        self._warnings.warn(
            "failed", f"the webhook ({shown_url(self.url)}) failed: {outcome.detail}; retrying"
        )
        await self._expire()
        await asyncio.sleep(backoff(failures, self.backoff_base, self.backoff_cap))

    async def _expire(self) -> None:
        """Drop the events queued more than ``retry_for`` seconds ago."""
        cutoff, dropped = time.time() - self.retry_for, 0
        while True:
            events = await self.store.head(EXPIRY_SCAN)
            old = [event.id for event in events if event.time < cutoff]
            if not old or not await self.store.ack(self.owner, old):
                break
            dropped += len(old)
            self.stats.dropped["expired"] += len(old)
            if len(old) < len(events):
                break
        if dropped:
            self._warnings.warn(
                "expired",
                f"the webhook kept failing: {dropped} events queued more than "
                f"{self.retry_for:g} s ago dropped",
            )

    def _store_failed(self, exc: Exception) -> None:
        text = f"the lifecycle store failed: {type(exc).__name__}: {exc}"
        self.stats.last_error = (time.time(), text)
        self._warnings.warn("store", f"webhooks: {text}")

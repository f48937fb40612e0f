"""WebhookSender against a real Tornado receiver on loopback (tests/webhook_receiver.py)
and a real lifecycle store: batches, order, signatures, outcomes, retries,
expiry, the lease, and what its stats say.

Timings are shortened (backoff 50-200 ms, lease 0.6 s renewed every 0.1 s);
batch_wait stays 250 ms unless a test says otherwise.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from itertools import pairwise
from typing import Any

import pytest
import redis.asyncio

from redis_servers import free_port, shared_redis
from support import eventually
from torchannels import __version__
from torchannels.brokers import RedisBroker
from torchannels.brokers.lifecycle import EVENT_TYPES, LifecycleStore, QueuedEvent, user_hold
from torchannels.brokers.lifecycle_memory import MemoryLifecycle
from torchannels.webhook_post import USER_AGENT, WARN_INTERVAL, Warnings
from torchannels.webhook_sender import WebhookSender
from torchannels.webhook_stats import LATENCY_BUCKETS, WebhookStats
from torchannels.webhooks import TIMESTAMP_HEADER
from webhook_receiver import Receiver, receiving

SECRET = "whsec-" + secrets.token_hex(8)
FAST: dict[str, Any] = {
    "lease_ttl": 0.6,
    "renew_every": 0.1,
    "backoff_base": 0.05,
    "backoff_cap": 0.2,
    "length_every": 0.2,
}

MakeSender = Callable[..., WebhookSender]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving(SECRET) as made:
        yield made


@pytest.fixture
def store() -> LifecycleStore:
    made = MemoryLifecycle()
    made.configure(EVENT_TYPES)
    return made


@pytest.fixture
async def make_sender(
    store: LifecycleStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[MakeSender]:
    """``make_sender(store=..., **options)``: a started sender to the receiver."""
    caplog.set_level(logging.INFO, "torchannels.webhooks")
    made: list[WebhookSender] = []

    def make(on: LifecycleStore | None = None, **options: Any) -> WebhookSender:
        sender = WebhookSender(
            on or store,
            receiver.url,
            SECRET,
            stats=WebhookStats(),
            owner=f"proc-{len(made)}",
            **{**FAST, **options},
        )
        sender.start()
        made.append(sender)
        return sender

    yield make
    for sender in made:
        await sender.close()
    assert SECRET not in caplog.text  # never logged


async def queue_users(store: LifecycleStore, names: list[str]) -> list[str]:
    """Queue a ``user_online`` per name; the ids of the events queued."""
    before = {e.id for e in await store.head(100_000)}
    await store.hold("p-" + secrets.token_hex(4), [user_hold(n) for n in names], time.time() + 60)
    return [e.id for e in await store.head(100_000) if e.id not in before]


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


def batch_ids(receiver: Receiver) -> list[list[str]]:
    """The ids each call carried (verified at its arrival), in arrival order."""
    return [ids(batch) for batch in receiver.batches()]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "torchannels.webhooks"]


async def test_batches_of_at_most_50_go_in_queue_order_signed(
    store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    names = [f"u{i}" for i in range(120)]
    queued = await queue_users(store, names)
    head = await store.head(1)
    sender = make_sender()
    await eventually(lambda: len(receiver.delivered()) == 120)
    assert [len(b) for b in batch_ids(receiver)] == [50, 50, 20]
    assert ids(receiver.delivered()) == queued  # once each, in queue order
    assert [e["user"] for e in receiver.delivered()] == names
    assert receiver.delivered()[0] == {
        "id": head[0].id, "type": "user_online", "time": head[0].time, "user": "u0"
    }  # fmt: skip
    # Each call as docs/api.md says (Content-Type, User-Agent, the HMAC-SHA256
    # signature, compact JSON of events from "id" on), ids in queue order.
    receiver.check()
    assert f"torchannels/{__version__}" == USER_AGENT  # what the calls carried
    for post in receiver.posts:
        assert abs(int(post.headers[TIMESTAMP_HEADER]) - post.received) < 2
    await eventually(lambda: sender.stats.queue_length == 0)
    assert await store.length() == 0
    stats = sender.stats
    assert (stats.sent, stats.retries, stats.sending) == (120, 0, True)
    assert stats.latency_count == 120 and stats.latency_buckets[-1] == 120
    assert stats.last_success is not None and stats.last_error is None


async def test_a_partial_batch_goes_250_ms_after_its_oldest_event(
    store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    sender = make_sender()
    await eventually(lambda: sender.stats.sending)
    first = await queue_users(store, ["ann"])
    oldest = (await store.head(1))[0]
    await eventually(lambda: time.time() >= oldest.time + 0.1)
    second = await queue_users(store, ["bob"])
    await eventually(lambda: len(receiver.posts) == 1)
    assert batch_ids(receiver) == [first + second]  # one batch: the second joined it
    waited = receiver.posts[0].received - oldest.time
    assert 0.25 <= waited < 1.0, waited


async def test_a_full_batch_goes_at_once(
    store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    make_sender(batch_wait=5.0)
    queued = await queue_users(store, [f"u{i}" for i in range(60)])
    oldest = (await store.head(1))[0]
    await eventually(lambda: len(receiver.posts) == 1)
    assert receiver.posts[0].received - oldest.time < 2.0  # not the 5 s batch_wait
    assert batch_ids(receiver) == [queued[:50]]


@pytest.mark.parametrize("failure", [500, 503, 429, 408])
async def test_a_retryable_answer_is_retried_until_delivered_once(
    failure: int, store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    receiver.answers.extend([failure, failure])
    queued = await queue_users(store, ["ann", "bob", "cy"])
    sender = make_sender()
    await eventually(lambda: sender.stats.sent == 3)
    assert batch_ids(receiver) == [queued, queued, queued]
    assert [p.status for p in receiver.posts] == [failure, failure, 200]
    assert ids(receiver.delivered()) == queued  # delivered once
    arrived = [post.received for post in receiver.posts]
    gaps = [b - a for a, b in pairwise(arrived)]
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05  # backoff: d/2 at least, d = 0.05, 0.1
    stats = sender.stats
    assert (stats.sent, stats.retries) == (3, 2)
    assert stats.last_error is not None and stats.last_error[1] == f"HTTP {failure}"
    assert stats.last_success is not None and stats.last_success >= stats.last_error[0]
    assert await store.length() == 0


@pytest.mark.parametrize("refusal", [400, 404, 302])
async def test_a_refusal_for_good_drops_the_batch_unretried(
    refusal: int,
    store: LifecycleStore,
    receiver: Receiver,
    make_sender: MakeSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.answers.append(refusal)
    rejected = await queue_users(store, ["ann", "bob"])
    sender = make_sender()
    await eventually(lambda: sender.stats.dropped["rejected"] == 2)
    assert await store.length() == 0
    later = await queue_users(store, ["cy"])
    await eventually(lambda: sender.stats.sent == 1)
    assert batch_ids(receiver) == [rejected, later]  # the refused batch never came again
    assert (sender.stats.sent, sender.stats.retries) == (1, 0)
    assert sender.stats.dropped == {"queue_full": 0, "expired": 0, "rejected": 2}
    assert warnings(caplog) == [
        f"the webhook ({receiver.url}) answered HTTP {refusal}: "
        "2 events dropped for good, not retried"
    ]


async def test_no_answer_within_the_timeout_is_retried(
    store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    receiver.delay = 5.0
    queued = await queue_users(store, ["ann", "bob"])
    sender = make_sender(timeout=0.3)
    await eventually(lambda: len(receiver.posts) == 1)
    receiver.delay = 0.0
    await eventually(lambda: sender.stats.sent == 2)
    # The sender hung up on the first call (still being answered) and sent again.
    assert batch_ids(receiver) == [queued, queued] and receiver.posts[0].gone
    assert receiver.posts[1].received - receiver.posts[0].received >= 0.3
    assert sender.stats.retries == 1 and sender.stats.sent == 2
    assert sender.stats.last_error is not None
    assert sender.stats.last_error[1] == "no answer within 0.3 s"


async def test_a_refused_connection_is_retried_and_latency_is_counted(
    store: LifecycleStore,
    receiver: Receiver,
    make_sender: MakeSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await receiver.stop()
    queued = await queue_users(store, ["ann", "bob"])
    oldest = (await store.head(1))[0]
    sender = make_sender()
    await eventually(lambda: sender.stats.retries >= 3)
    assert sender.stats.last_error is not None
    assert "ConnectionRefusedError" in sender.stats.last_error[1]
    await eventually(lambda: time.time() > oldest.time + 1.1)
    await receiver.start()
    await eventually(lambda: sender.stats.sent == 2, timeout=5)
    assert ids(receiver.delivered()) == queued
    stats = sender.stats
    assert stats.latency_count == 2 and 2.2 <= stats.latency_sum < 20
    assert stats.latency_buckets[: LATENCY_BUCKETS.index(1.0) + 1] == [0] * 5
    assert stats.latency_buckets[-1] == 2
    failed = [w for w in warnings(caplog) if "failed: ConnectionRefusedError" in w]
    assert len(failed) == 1  # once a minute, however many attempts failed


async def test_events_waiting_longer_than_retry_for_are_dropped_at_a_failure(
    store: LifecycleStore,
    receiver: Receiver,
    make_sender: MakeSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.status = 500
    old = await queue_users(store, ["ann", "bob"])
    sender = make_sender(retry_for=1.0)
    oldest = (await store.head(1))[0]
    await eventually(lambda: time.time() >= oldest.time + 0.5)
    young = await queue_users(store, ["cy"])
    await eventually(lambda: sender.stats.dropped["expired"] == 2, timeout=5)
    assert [e.id for e in await store.head(10)] == young  # only those older than 1 s
    assert time.time() - oldest.time >= 1.0
    receiver.status = 200
    await eventually(lambda: sender.stats.sent == 1)
    assert ids(receiver.delivered()) == young
    assert batch_ids(receiver)[0] == old  # tried before it expired
    assert sender.stats.dropped == {"queue_full": 0, "expired": 2, "rejected": 0}
    assert "the webhook kept failing: 2 events queued more than 1 s ago dropped" in warnings(caplog)


async def test_one_sender_at_a_time_on_one_store(
    store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    one, two = make_sender(), make_sender()
    await eventually(lambda: one.stats.sending or two.stats.sending)
    first = await queue_users(store, [f"a{i}" for i in range(10)])
    await eventually(lambda: one.stats.sent + two.stats.sent == 10)
    leader, other = (one, two) if one.stats.sending else (two, one)
    assert (leader.stats.sent, other.stats.sent) == (10, 0)
    assert not other.stats.sending
    await leader.close()
    await eventually(lambda: other.stats.sending)
    second = await queue_users(store, [f"b{i}" for i in range(5)])
    await eventually(lambda: other.stats.sent == 5)
    assert ids(receiver.delivered()) == first + second  # each once, in order


async def test_a_sender_closed_mid_retry_loses_nothing(
    store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    receiver.status = 503
    queued = await queue_users(store, ["ann", "bob", "cy"])
    first = make_sender()
    await eventually(lambda: first.stats.retries >= 2)
    await first.close()
    assert not first.stats.sending
    assert await store.lease("probe", 1.0)  # close gave the lease up
    await store.unlease("probe")
    receiver.status = 200
    second = make_sender()
    await eventually(lambda: second.stats.sent == 3)
    assert ids(receiver.delivered()) == queued
    assert (second.stats.sent, first.stats.sent) == (3, 0)


async def test_a_lost_lease_stops_the_batch_in_flight(
    store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    receiver.delay = 1.0  # answers 200, after the lease is gone
    queued = await queue_users(store, ["ann", "bob"])
    sender = make_sender(timeout=5.0)
    await eventually(lambda: len(receiver.posts) == 1)
    await store.unlease(sender.owner)
    assert await store.lease("thief", 30.0)
    await eventually(lambda: not sender.stats.sending)
    await eventually(lambda: receiver.answered == 1)
    assert await store.length() == 2 and sender.stats.sent == 0  # the 200 came to nobody
    receiver.delay = 0.0
    await store.unlease("thief")
    await eventually(lambda: sender.stats.sent == 2)
    assert batch_ids(receiver) == [queued, queued]


async def test_the_queue_length_is_read_while_not_sending(
    store: LifecycleStore, receiver: Receiver, make_sender: MakeSender
) -> None:
    assert await store.lease("elsewhere", 30.0)
    await queue_users(store, ["ann", "bob"])
    sender = make_sender(length_every=2.0)
    await eventually(lambda: sender.stats.queue_length == 2)  # read at start
    await queue_users(store, [f"u{i}" for i in range(5)])
    await eventually(lambda: sender.stats.queue_length == 7, timeout=3.0)  # and again within 2 s
    assert not sender.stats.sending and receiver.posts == []


async def test_close_before_start_and_twice_is_quiet(store: LifecycleStore) -> None:
    stats = WebhookStats()
    sender = WebhookSender(store, "http://127.0.0.1:9/hook", SECRET, stats=stats, owner="x")
    await sender.close()
    sender.start()
    await sender.close()
    await sender.close()
    assert not sender.stats.sending


@pytest.mark.parametrize(
    ("url", "secret"),
    [("ftp://example.com/hook", SECRET), ("http:///hook", SECRET), ("http://h/hook", "")],
)
def test_a_bad_url_or_an_empty_secret_is_refused(
    store: LifecycleStore, url: str, secret: str
) -> None:
    with pytest.raises(ValueError, match="webhook"):
        WebhookSender(store, url, secret, stats=WebhookStats(), owner="x")


def test_warnings_come_once_an_interval_per_kind_counting_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = logging.getLogger("torchannels.webhooks.test")
    warns = Warnings(log, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, log.name):
        for _ in range(3):
            warns.warn("failed", "down")
        warns.warn("expired", "old")
        now[0] += WARN_INTERVAL
        warns.warn("failed", "down again")
    assert [r.getMessage() for r in caplog.records] == [
        "down",
        "old",
        "down again (2 more like it since the last warning)",
    ]


def test_an_event_body_is_the_documented_json() -> None:
    event = QueuedEvent("1764139200123-0", "member_joined", 1764139200.123,
                        '{"channel":"room","user":"ann","info":null}')  # fmt: skip
    assert event.body() == (
        b'{"id":"1764139200123-0","type":"member_joined","time":1764139200.123,'
        b'"channel":"room","user":"ann","info":null}'
    )


@pytest.fixture
async def redis_brokers() -> AsyncIterator[Callable[[], RedisBroker]]:
    """``make()``: another broker (another process's client) on the shared
    Redis, all under one fresh prefix, their keys deleted afterwards."""
    url, prefix = shared_redis(), "test-" + secrets.token_hex(6)
    made: list[RedisBroker] = []

    def make() -> RedisBroker:
        broker = RedisBroker.from_url(url, prefix=prefix)
        broker.lifecycle.configure(EVENT_TYPES)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()
    admin = redis.asyncio.Redis.from_url(url)
    keys = [key async for key in admin.scan_iter(match=f"{{{prefix}}}:*")]
    if keys:
        await admin.delete(*keys)
    await admin.aclose()


async def test_on_redis_one_process_sends_and_the_next_takes_over_mid_retry(
    redis_brokers: Callable[[], RedisBroker], receiver: Receiver, make_sender: MakeSender
) -> None:
    """Two processes (two clients) on one Redis queue: one sends, in order;
    closed mid-retry, the other delivers its batch; nothing is lost or repeated."""
    one, two = redis_brokers().lifecycle, redis_brokers().lifecycle
    first, second = make_sender(one), make_sender(two)
    await eventually(lambda: first.stats.sending or second.stats.sending)
    leader, other = (first, second) if first.stats.sending else (second, first)
    sent = await queue_users(one, [f"a{i}" for i in range(60)])
    await eventually(lambda: leader.stats.sent == 60)
    assert [len(b) for b in batch_ids(receiver)] == [50, 10]
    assert other.stats.sent == 0 and not other.stats.sending
    receiver.status = 500
    kept = await queue_users(two, ["b0", "b1", "b2"])
    await eventually(lambda: leader.stats.retries >= 2)
    await leader.close()
    receiver.status = 200
    await eventually(lambda: other.stats.sent == 3)
    assert ids(receiver.delivered()) == sent + kept
    assert batch_ids(receiver)[-1] == kept
    await eventually(lambda: other.stats.queue_length == 0)
    assert await one.length() == 0


async def test_an_unreachable_store_is_warned_about_and_close_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "torchannels.webhooks")
    broker = RedisBroker.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix="nowhere")
    sender = WebhookSender(
        broker.lifecycle, "http://127.0.0.1:9/hook", SECRET, stats=WebhookStats(), owner="x", **FAST
    )
    sender.start()
    await eventually(lambda: sender.stats.last_error is not None)
    assert sender.stats.last_error is not None
    assert sender.stats.last_error[1].startswith("the lifecycle store failed: ")
    await sender.close()  # its unlease fails too: logged, not raised
    await broker.close()
    assert not sender.stats.sending
    assert any(w.startswith("webhooks: the lifecycle store failed") for w in warnings(caplog))
    assert any(w.startswith("could not give the webhook lease up") for w in warnings(caplog))

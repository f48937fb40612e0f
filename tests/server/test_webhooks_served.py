"""Lifecycle webhooks across three ``serve`` processes on one Redis (issue 21,
"Done when"), posted to a real receiver in the test (tests/webhook_receiver.py):
occupied/vacated, online/offline and joined/left in the right order and once
each; a reconnect within the grace, to the same or another process, making
nothing; a SIGKILLed process's users going offline once, within the
presence TTL plus the batch interval; the receiver down for a minute, then
back, getting everything once (deduped by id) in queue order; a receiver
slower than ``--webhook-timeout`` handling calls twice, deduped by id; the
sending process killed or stopped while its batch is being retried (then
started again), losing nothing; and the live requests verifying, while a
forged or stale one is refused.

Every POST is checked against docs/api.md by hand (headers, the HMAC of
``TIMESTAMP.BODY``, compact JSON of 1 to 50 events with exactly their
fields) and with :func:`torchannels.webhooks.verify`. Negative checks ("no
vacated yet", "nothing after the reload") wait for a later event that any
such event would have been queued before (a marker client's off events, due
a grace after it left), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from server.control_support import subscribers
from server.processes import ServerProcess, until
from server.webhook_cluster import HOOK_SECRET, Clients, Cluster, metric, sending
from torchannels.brokers.lifecycle import OFF_EVENT
from torchannels.lifecycle_hub import SWEEP
from torchannels.webhooks import WebhookVerificationError, verify
from webhook_receiver import Receiver, Spec, receiving, spec, spec_of

#: Seconds from queueing to posting at most, when fewer than 50 are queued.
BATCH = 0.25
#: Seconds a reloading client is away: two sweeps of its process
#: (lifecycle_hub.SWEEP), so only the grace keeps its keys held meanwhile.
RELOAD = 2 * SWEEP
#: A process heartbeats its expiry ``TTL - SWEEP`` ahead and sweeps every
#: SWEEP, so a killed one's off events are queued within the TTL; a second
#: for a busy machine is the slack of "within the TTL plus the batch interval".
SLACK = 1.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving(HOOK_SECRET) as hook:
        yield hook


@pytest.fixture
async def cluster(log_dir: Path, receiver: Receiver) -> AsyncIterator[Cluster]:
    processes = Cluster(log_dir, receiver)
    yield processes
    await processes.close()


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    opened = Clients()
    yield opened
    await opened.close()


# -- events by name ---------------------------------------------------------------------


def came(user: str, channel: str) -> list[Spec]:
    """A user's first subscription, to a channel nobody had."""
    return [spec("user_online", user=user), spec("channel_occupied", channel=channel)]


def went(user: str, channel: str) -> list[Spec]:
    """The off events of :func:`came`."""
    return [spec("user_offline", user=user), spec("channel_vacated", channel=channel)]


def off_of(event: Spec) -> Spec | None:
    """An on event's off event (None for an off event)."""
    kind, fields = event
    if kind not in OFF_EVENT:
        return None
    doc = json.loads(fields)
    doc.pop("info", None)
    return spec(OFF_EVENT[kind], **doc)


def assert_once_each(receiver: Receiver, expected: Iterable[Spec]) -> None:
    """After dedupe, exactly ``expected`` arrived, each once, each on event
    before its off event."""
    specs = receiver.specs()
    got, want = Counter(specs), Counter(expected)
    assert got == want, {"unexpected": got - want, "missing": want - got}
    for event in specs:
        off = off_of(event)
        if off is not None and off in got:
            assert specs.index(event) < specs.index(off), specs


async def gone(http: Any, hub: ServerProcess, channel: str) -> None:
    """Wait until ``hub`` serves ``channel`` to nobody (it saw the client go)."""

    async def none() -> bool:
        return await subscribers(http, hub, channel) == 0

    await until(none, f"{channel} left on :{hub.port}")


# -- the tests ------------------------------------------------------------------------------


async def test_occupied_online_joined_then_vacated_offline_left_once_each_in_order(
    cluster: Cluster, receiver: Receiver, clients: Clients, http: Any
) -> None:
    grace = 1.0
    a, b, c = cluster.start(grace=grace)
    started = time.time()
    ann_a = await clients.open(a, "websocket", "plain:lobby", "ann")
    bob_b = await clients.open(b, "sse", "plain:lobby", "bob")
    ann_c = await clients.open(c, "websocket", "room:1", "ann", {"name": "Ann"})
    bob_c = await clients.open(c, "longpoll", "room:1", "bob")  # a member without info
    anon = await clients.open(a, "stream", "plain:anon", None)  # no user: no user event
    on = [
        *came("ann", "plain:lobby"), spec("user_online", user="bob"),
        spec("channel_occupied", channel="room:1"),
        spec("member_joined", channel="room:1", user="ann", info={"name": "Ann"}),
        spec("member_joined", channel="room:1", user="bob", info=None),
        spec("channel_occupied", channel="plain:anon"),
    ]  # fmt: skip
    await receiver.arrived(*on)

    # ann leaves the lobby on a: bob still has it on b, and ann room:1 on c.
    await ann_a.close()
    await gone(http, a, "plain:lobby")
    marker = await clients.open(a, "poll", "plain:marker", "marker")
    await marker.close()
    await receiver.arrived(*went("marker", "plain:marker"))
    early = {spec("channel_vacated", channel="plain:lobby"), spec("user_offline", user="ann")}
    assert not early & set(receiver.specs()), receiver.specs()

    last_left = time.time()
    for client in (bob_b, bob_c, ann_c, anon):
        await client.close()
    off = [
        spec("channel_vacated", channel="plain:lobby"), spec("user_offline", user="bob"),
        spec("user_offline", user="ann"), spec("member_left", channel="room:1", user="ann"),
        spec("member_left", channel="room:1", user="bob"),
        spec("channel_vacated", channel="room:1"), spec("channel_vacated", channel="plain:anon"),
    ]  # fmt: skip
    events = await receiver.arrived(*off)
    receiver.check()
    assert_once_each(receiver, [*on, *came("marker", "plain:marker"),
                                *went("marker", "plain:marker"), *off])  # fmt: skip
    assert len(receiver.delivered()) == len(events), "an event came twice, nothing failing"
    assert all(started - 0.01 <= e["time"] <= time.time() for e in events), events
    lobby = next(e for e in events if e["type"] == "channel_vacated"
                 and e["channel"] == "plain:lobby")  # fmt: skip
    assert lobby["time"] >= last_left + grace - 0.01, (lobby, last_left)  # bob's leave + grace
    latency = max(receiver.arrival(spec_of(e)) - e["time"] for e in events)
    print(f"{len(events)} events in {len(receiver.posts)} posts; "
          f"the slowest arrived {latency * 1000:.0f} ms after it was queued")  # fmt: skip
    assert latency < BATCH + SLACK, latency


async def test_a_reconnect_within_the_grace_makes_no_event(
    cluster: Cluster, receiver: Receiver, clients: Clients, http: Any
) -> None:
    a, b, c = cluster.start(grace=RELOAD + 1.5)
    ann = await clients.open(a, "websocket", "room:r", "ann", {"name": "Ann"})
    cy = await clients.open(b, "sse", "plain:p", "cy")
    on = [
        spec("user_online", user="ann"), spec("channel_occupied", channel="room:r"),
        spec("member_joined", channel="room:r", user="ann", info={"name": "Ann"}),
        *came("cy", "plain:p"),
    ]  # fmt: skip
    await receiver.arrived(*on)

    # ann reloads onto another process (c), cy onto the same one (b); each
    # server saw the client go, and sweeps twice, before it comes back.
    await ann.close()
    await cy.close()
    await gone(http, a, "room:r")
    await gone(http, b, "plain:p")
    await asyncio.sleep(RELOAD)  # a slow page load: the scenario, not a check
    ann = await clients.open(c, "websocket", "room:r", "ann", {"name": "Ann"})
    cy = await clients.open(b, "sse", "plain:p", "cy")
    # Any off event of the reloads was due a grace after they left a and b:
    # before the off events of markers that leave these processes later.
    markers = [await clients.open(hub, "websocket", f"plain:m-{i}", f"m-{i}")
               for i, hub in enumerate((a, b))]  # fmt: skip
    for marker in markers:
        await marker.close()
    marked = [*came("m-0", "plain:m-0"), *came("m-1", "plain:m-1"),
              *went("m-0", "plain:m-0"), *went("m-1", "plain:m-1")]  # fmt: skip
    await receiver.arrived(*marked)
    assert_once_each(receiver, on + marked)

    await ann.close()
    await cy.close()
    off = [
        spec("user_offline", user="ann"), spec("channel_vacated", channel="room:r"),
        spec("member_left", channel="room:r", user="ann"), *went("cy", "plain:p"),
    ]  # fmt: skip
    await receiver.arrived(*off)
    receiver.check()
    assert_once_each(receiver, on + marked + off)


async def test_a_killed_process_s_users_go_offline_once_within_the_ttl(
    cluster: Cluster, receiver: Receiver, clients: Clients
) -> None:
    ttl = 3.0
    a, b, c = cluster.start(grace=1.0, ttl=ttl)
    on_c = [
        await clients.open(c, "websocket", "plain:k", "x"),
        await clients.open(c, "sse", "room:k", "y", {"n": 1}),
        await clients.open(c, "stream", "plain:shared", "w"),  # w and plain:shared stay on a
    ]
    await clients.open(a, "longpoll", "plain:shared", "w")
    sentinel = await clients.open(b, "websocket", "plain:sentinel", "sentinel")
    on = [
        *came("x", "plain:k"), *came("y", "room:k"),
        spec("member_joined", channel="room:k", user="y", info={"n": 1}),
        *came("w", "plain:shared"), *came("sentinel", "plain:sentinel"),
    ]  # fmt: skip
    await receiver.arrived(*on)

    killed = time.time()
    c.signal(signal.SIGKILL)
    await c.exited(10)
    for client in on_c:
        await client.close()
    dead = [*went("x", "plain:k"), *went("y", "room:k"),
            spec("member_left", channel="room:k", user="y")]  # fmt: skip
    await receiver.arrived(*dead, timeout=ttl + BATCH + SLACK + 5)
    took = {event: receiver.arrival(event) - killed for event in dead}
    print("offline after SIGKILL, s: " + ", ".join(f"{e[0]} {e[1]} {t:.2f}"
                                                   for e, t in took.items()))  # fmt: skip
    assert max(took.values()) <= ttl + BATCH + SLACK, took
    # A second announcement would come from another process's sweep, a
    # second later at most; the sentinel's leave is queued a grace after
    # it leaves, later still.
    await sentinel.close()
    await receiver.arrived(*went("sentinel", "plain:sentinel"))
    receiver.check()
    assert_once_each(receiver, on + dead + went("sentinel", "plain:sentinel"))


async def test_the_receiver_down_for_a_minute_gets_everything_once_in_queue_order(
    cluster: Cluster, receiver: Receiver, clients: Clients, http: Any
) -> None:
    hubs = cluster.start()
    transports = ("websocket", "sse", "stream", "longpoll", "poll")
    previous = await clients.open(hubs[0], "websocket", "plain:d-0", "u-0")
    expected = came("u-0", "plain:d-0")
    await receiver.arrived(*expected)

    await receiver.stop()
    down = time.monotonic()
    # One user every 5 s for a minute, each on the next process; each
    # leaves when the next one comes. The sleeps are the scenario.
    for i in range(1, 12):
        client = await clients.open(hubs[i % 3], transports[i % 5], f"plain:d-{i}", f"u-{i}")
        await previous.close()
        expected += came(f"u-{i}", f"plain:d-{i}") + went(f"u-{i - 1}", f"plain:d-{i - 1}")
        previous = client
        await asyncio.sleep(max(0.0, down + 5 * i - time.monotonic()))
    await previous.close()
    expected += went("u-11", "plain:d-11")

    async def all_queued() -> bool:  # every process reads the queue's length
        lengths = [await metric(http, hub, "torchannels_webhook_queue_length") for hub in hubs]
        return min(lengths) >= len(expected) - 2  # all but the first two

    await until(all_queued, "the queue holds what came while the receiver was down")
    await asyncio.sleep(max(0.0, down + 60 - time.monotonic()))
    await receiver.start()
    back = time.monotonic()
    await receiver.arrived(*expected, timeout=30)
    took = time.monotonic() - back
    receiver.check()  # in queue order too
    assert_once_each(receiver, expected)
    retries = sum([await metric(http, hub, "torchannels_webhook_retries_total") for hub in hubs])
    repeated = len(receiver.delivered()) - len(receiver.unique())
    print(
        f"{len(expected)} events; everything within {took:.1f} s of the receiver's return, "
        f"in {len(receiver.posts)} posts, {repeated} repeated; {retries:.0f} retries"
    )
    assert retries >= 1


async def test_a_receiver_slower_than_the_timeout_gets_everything_deduped_by_id(
    cluster: Cluster, receiver: Receiver, clients: Clients, http: Any
) -> None:
    timeout = 1.0
    hubs = cluster.start(3, "--webhook-timeout", str(timeout))
    receiver.delay = timeout + 0.5  # the receiver handles each call, too late
    users = [await clients.open(hub, "sse", f"plain:t-{i}", f"t-{i}") for i, hub in enumerate(hubs)]
    on = [event for i in range(3) for event in came(f"t-{i}", f"plain:t-{i}")]

    def timed_out(n: int) -> bool:
        return sum(p.gone and p.answered is not None for p in receiver.posts) >= n

    await receiver.until(lambda: timed_out(2), "two calls timed out", timeout=15)
    receiver.delay = 0.0
    await receiver.arrived(*on, timeout=15)
    for user in users:
        await user.close()
    off = [event for i in range(3) for event in went(f"t-{i}", f"plain:t-{i}")]
    await receiver.arrived(*off)
    receiver.check()
    assert_once_each(receiver, on + off)  # after dedupe
    repeated = len(receiver.delivered()) - len(receiver.unique())
    retries = sum([await metric(http, hub, "torchannels_webhook_retries_total") for hub in hubs])
    print(f"{repeated} events handled twice or more, deduped by id; {retries:.0f} retries")
    assert repeated >= 1 and retries >= 2, (repeated, retries)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_the_sender_stopped_mid_retry_loses_nothing(
    cluster: Cluster, receiver: Receiver, clients: Clients, http: Any, how: signal.Signals
) -> None:
    ttl = 3.0
    hubs = cluster.start(ttl=ttl)
    sender = await sending(http, hubs)
    others = [hub for hub in hubs if hub is not sender]
    receiver.status = 500
    users = {hub.port: await clients.open(hub, "websocket", f"plain:s-{i}", f"s-{i}")
             for i, hub in enumerate(hubs)}  # fmt: skip
    on = [event for i in range(3) for event in came(f"s-{i}", f"plain:s-{i}")]

    def failed(n: int) -> bool:
        return sum(p.status == 500 for p in receiver.posts) >= n

    await receiver.until(lambda: failed(2), "two attempts answered 500")
    retried = {e["id"] for p in receiver.posts for e in p.events or ()}
    sender.signal(how)
    await sender.exited(20)
    new = await sending(http, others, timeout=10)
    attempts = sum(p.status == 500 for p in receiver.posts)
    await receiver.until(lambda: failed(attempts + 1), "the new sender tried too")
    # The process comes back (it holds nothing, and need not send).
    restarted = await asyncio.to_thread(cluster.add)
    receiver.status = 200
    mine = hubs.index(sender)
    dead = went(f"s-{mine}", f"plain:s-{mine}")
    await receiver.arrived(*on, *dead, timeout=ttl + BATCH + SLACK + 10)
    assert retried <= {e["id"] for e in receiver.unique()}, "an event being retried was lost"

    late = await clients.open(restarted, "sse", "plain:late", "late")
    await late.close()
    for hub in others:
        await users[hub.port].close()
    off = [e for i in range(3) if i != mine for e in went(f"s-{i}", f"plain:s-{i}")]
    await receiver.arrived(*off, *came("late", "plain:late"), *went("late", "plain:late"))
    receiver.check()
    assert_once_each(receiver, on + dead + off + came("late", "plain:late")
                     + went("late", "plain:late"))  # fmt: skip
    print(f"{how.name}: sender :{sender.port}, then :{new.port}; "
          f"{attempts} attempts answered 500 in all")  # fmt: skip


async def test_live_requests_verify_and_a_forged_or_stale_one_is_refused(
    cluster: Cluster, receiver: Receiver, clients: Clients
) -> None:
    [hub] = cluster.start(1)
    client = await clients.open(hub, "websocket", "plain:sig", "sig")
    await receiver.arrived(*came("sig", "plain:sig"))
    await client.close()
    await receiver.arrived(*went("sig", "plain:sig"))
    receiver.check()  # each verified in the receiver, and signed as documented
    post = receiver.posts[-1]
    body, headers = post.body, post.headers
    stamp = int(headers["X-Torchannels-Timestamp"])
    assert verify(body, headers, HOOK_SECRET) == post.events
    lower = {name.lower(): value for name, value in headers.items()}
    assert verify(body, lower, HOOK_SECRET) == post.events  # names in any case

    def refused(body: bytes, headers: dict[str, str], **kwargs: Any) -> str:
        with pytest.raises(WebhookVerificationError) as caught:
            verify(body, headers, HOOK_SECRET, **kwargs)
        assert isinstance(caught.value, ValueError) and str(caught.value)
        return str(caught.value)

    for i in range(len(body)):  # any one byte changed
        refused(body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :], headers)
    signature = headers["X-Torchannels-Signature"]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    refused(body, {**headers, "X-Torchannels-Signature": flipped})
    with pytest.raises(WebhookVerificationError):
        verify(body, headers, HOOK_SECRET + "x")
    # The same request replayed later than the tolerance (300 s) is stale.
    assert verify(body, headers, HOOK_SECRET, now=stamp + 299) == post.events
    refused(body, headers, now=stamp + 301)
    refused(body, headers, now=stamp - 301)  # or from too far ahead
    # An old timestamp, signed right (by whoever knew the secret), is stale too;
    # the old timestamp on the live signature does not match it.
    old = str(stamp - 600)
    mac = hmac.new(HOOK_SECRET.encode(), old.encode() + b"." + body, hashlib.sha256).hexdigest()
    resigned = {
        **headers,
        "X-Torchannels-Timestamp": old,
        "X-Torchannels-Signature": f"sha256={mac}",
    }
    refused(body, resigned)
    assert verify(body, resigned, HOOK_SECRET, now=stamp - 600) == post.events
    refused(body, {**headers, "X-Torchannels-Timestamp": old})
    for name in ("X-Torchannels-Timestamp", "X-Torchannels-Signature"):
        refused(body, {k: v for k, v in headers.items() if k != name})

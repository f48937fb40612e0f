"""Presence across processes: two hubs on two RedisBrokers (one Redis),
each serving real loopback sockets (issue 18)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from presence_support import Member, joined, left, presence_hub, serve, snapshot_users
from redis_servers import shared_redis
from support import Server
from test_presence_hub import EVERY, Joiner, settle
from torchannels import Hub
from torchannels.brokers import RedisBroker


@pytest.fixture
async def hubs() -> AsyncIterator[Callable[..., Hub]]:
    """``hubs(**settings)``: a hub on its own RedisBroker; all made by one
    test share a key prefix, as processes of one deployment do."""
    url, prefix = shared_redis(), "p" + secrets.token_hex(4)
    made: list[Hub] = []

    def make(**settings: Any) -> Hub:
        broker = RedisBroker.from_url(url, prefix=prefix, reconnect_cap=0.2)
        settings.setdefault("client_id_secret", b"shared")
        hub = presence_hub(broker, **settings)
        made.append(hub)
        return hub

    yield make
    for hub in made:
        await hub.close()


@pytest.mark.parametrize("transport", EVERY)
async def test_joins_and_leaves_cross_processes(
    make_server: Callable[..., Server], hubs: Callable[..., Hub], transport: str
) -> None:
    one, two = hubs(), hubs()
    a, b = serve(make_server, one), serve(make_server, two)
    ann = await Member.connect(a, "user=ann&channel=room:1")
    await ann.wait(lambda fs: bool(ann.of("subscribed")))
    bob = Joiner(b, transport, "bob")
    await bob.join()
    assert bob.first is not None and snapshot_users(bob.first) == ["ann", "bob"]
    await ann.wait(lambda fs: "bob" in joined(fs))
    await bob.hold()
    if transport != "poll":
        cy = await Member.connect(a, "user=cy&channel=room:1")
        await bob.wait(lambda fs: "cy" in joined(fs))
        await cy.close()
    await bob.leave()
    await ann.wait(lambda fs: "bob" in left(fs))
    dee = await Member.connect(b, "user=dee&channel=room:1")
    await ann.wait(lambda fs: "dee" in joined(fs))
    assert (joined(ann.frames).count("bob"), left(ann.frames).count("bob")) == (1, 1)
    assert await one.presence_counts("room:1") == await two.presence_counts("room:1")
    await dee.close()
    await ann.close()


async def test_moving_to_another_process_within_grace_makes_no_leave(
    make_server: Callable[..., Server], hubs: Callable[..., Hub]
) -> None:
    one, two = hubs(presence_grace=2.0), hubs(presence_grace=2.0)
    a, b = serve(make_server, one), serve(make_server, two)
    ann = await Member.connect(a, "user=ann&channel=room:1")
    bob = await Member.connect(b, "user=bob&channel=room:1")
    await ann.wait(lambda fs: "bob" in joined(fs))
    await bob.close()
    gone = time.time()
    again = await Member.connect(a, "user=bob&channel=room:1")  # the other process
    await again.wait(lambda fs: bool(again.of("subscribed")))
    for hub in (one, two):
        await settle(hub, gone + 2.0)  # both processes swept after the grace
    cy = await Member.connect(b, "user=cy&channel=room:1")
    await ann.wait(lambda fs: "cy" in joined(fs))
    assert (joined(ann.frames).count("bob"), left(ann.frames)) == (1, [])
    assert await two.presence_counts("room:1") == (3, 3)
    for member in (cy, again, ann):
        await member.close()


async def test_graceful_close_of_one_process_announces_its_leaves_at_once(
    make_server: Callable[..., Server], hubs: Callable[..., Hub]
) -> None:
    one, two = hubs(presence_grace=60.0), hubs(presence_grace=60.0)
    a, b = serve(make_server, one), serve(make_server, two)
    ann = await Member.connect(a, "user=ann&channel=room:1")
    bob = await Member.connect(b, "user=bob&channel=room:1")
    await ann.wait(lambda fs: "bob" in joined(fs))
    assert await one.presence_counts("room:1") == (2, 2)
    await two.shutdown(5.0)  # bob is told to reconnect elsewhere
    await bob.closed.wait()
    await two.close()  # removes bob at once, not after the 60 s grace
    await ann.wait(lambda fs: "bob" in left(fs))
    assert await one.presence_counts("room:1") == (1, 1)
    await ann.close()


async def test_reading_presence_across_processes(
    make_server: Callable[..., Server], hubs: Callable[..., Hub]
) -> None:
    one, two = hubs(), hubs()
    a, b = serve(make_server, one), serve(make_server, two)
    members = [
        await Member.connect(s, f"user=u{n}&channel=quiet:1") for n, s in enumerate([a, b, a, b])
    ]
    for m in members:
        await m.nth("subscribed", 0)
    for server in (a, b):
        resp = await server.fetch(server.url(presence="quiet:1", limit="3"))
        doc = json.loads(resp.body)  # the cursor is signed with the shared key
        assert ([m["user"] for m in doc["members"]], doc["users"]) == (["u0", "u1", "u2"], 4)
        rest = await server.fetch(server.url(presence="quiet:1", after=doc["next"]))
        assert [m["user"] for m in json.loads(rest.body)["members"]] == ["u3"]
    for m in members:
        await m.close()

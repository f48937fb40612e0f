"""The broker contract of ``Broker.publish_many``, for every broker of
test_broker_contract.py: a batch of messages to several channels, stored
in order, each channel's offsets consecutive, as one ``publish`` each."""

from __future__ import annotations

import json
from typing import Any

import pytest

import test_broker_contract as contract
from support import eventually
from test_broker_contract import Kit, MakeKit, offsets, texts
from torchannels import HistoryPolicy, Position
from torchannels.errors import MessageError

# The contract's fixtures: every test here runs against every broker.
kit = contract.kit
make_kit = contract.make_kit


def interleaved(count: int, channels: list[str]) -> list[tuple[str, dict[str, int]]]:
    return [(channels[i % len(channels)], {"n": i}) for i in range(count)]


async def test_order_and_offsets_per_channel(kit: Kit) -> None:
    before = await kit.broker.publish("a", {"n": -1})
    batch = interleaved(9, ["a", "b", "c"])
    pubs = await kit.broker.publish_many(batch)
    assert [(p.channel, p.data["n"]) for p in pubs] == [(c, m["n"]) for c, m in batch]
    by_channel = {c: [p for p in pubs if p.channel == c] for c in "abc"}
    assert offsets(by_channel["a"]) == [2, 3, 4]  # after the earlier publish
    assert offsets(by_channel["b"]) == offsets(by_channel["c"]) == [1, 2, 3]
    assert {p.epoch for p in by_channel["a"]} == {before.epoch}
    for pub in pubs:
        assert json.loads(pub.payload) == pub.data
        assert pub.data["channel"] == pub.channel and pub.data["offset"] == pub.offset
    later = await kit.broker.publish("b", {"n": 99})
    assert later.offset == 4
    read = await kit.broker.read("a", None)
    assert texts(read.publications) == [-1, 0, 3, 6]
    positions = await kit.broker.positions(["a", "b", "c"])
    assert positions == {"a": pubs[6].position, "b": later.position, "c": pubs[8].position}


async def test_more_messages_than_one_script_call_carries(kit: Kit) -> None:
    batch = interleaved(1000, ["x", "y", "z", "x:2"])  # several calls on Redis
    pubs = await kit.broker.publish_many(batch)
    for channel in ("x", "y", "z", "x:2"):
        mine = [p for p in pubs if p.channel == channel]
        assert offsets(mine) == list(range(1, 251))
        read = await kit.broker.read(channel, Position(mine[0].epoch, 0))
        assert read.reset is None
        assert [p.payload for p in read.publications] == [p.payload for p in mine]


async def test_listeners_get_the_batch_in_order(kit: Kit) -> None:
    got: list[Any] = []
    await kit.broker.subscribe("a", got.append)
    await kit.broker.subscribe("b", got.append)
    pubs = await kit.broker.publish_many(interleaved(6, ["a", "b", "quiet"]))
    await eventually(lambda: len(got) == 4)
    assert [(p.channel, p.offset) for p in got] == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert [p.payload for p in got] == [p.payload for p in pubs if p.channel != "quiet"]


async def test_a_bad_message_stores_none(kit: Kit) -> None:
    batch: list[tuple[str, dict[str, object]]] = [("a", {"n": 1}), ("b", {"bad": {1, 2}})]
    with pytest.raises(MessageError):
        await kit.broker.publish_many(batch)
    for channel in ("a", "b"):
        assert (await kit.broker.info(channel)).position.offset == 0
    assert await kit.broker.publish_many([]) == []


async def test_history_is_trimmed_per_channel(make_kit: MakeKit) -> None:
    kit = await make_kit(HistoryPolicy(size=3))
    pubs = await kit.broker.publish_many([*interleaved(10, ["long", "short"]), ("short", {})])
    assert (await kit.broker.info("long")).history_length == 3
    read = await kit.broker.read("short", None)
    assert offsets(read.publications) == [4, 5, 6]
    assert read.position == Position(pubs[1].epoch, 3)  # pubs[1] is short's first


async def test_queued_publishes_and_states_keep_their_order(kit: Kit) -> None:
    kit.broker.publish_soon("a", {"n": 1})
    kit.broker.set_state_soon("a", [{"s": 1}])
    pubs = await kit.broker.publish_many([("a", {"n": 2}), ("b", {"n": 1})])
    assert [p.offset for p in pubs] == [2, 1]
    read = await kit.broker.read("a", None)
    assert read.position.offset == 1  # the state stands for the first publish
    assert read.state is not None and [p.data["s"] for p in read.state] == [1]
    assert texts(read.publications) == [2]

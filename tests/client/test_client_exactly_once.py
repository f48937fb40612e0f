"""Publish exactly once, end to end (issue 22): the publisher's two forms and
``torchannels publish`` against a real ``torchannels serve``. A publish whose
answer is lost (a ``FaultProxy`` cuts the connection after the hub stored
it) is retried with its keys, answered as a duplicate, and subscribers get
the message once; the same key again is a duplicate, in another channel it
is not; a key the server refuses is a ``RequestError``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from client.client_helpers import Reader, channels_url, publisher
from server.processes import KEY, ServerProcess, cli
from torchannels.client import AsyncPublisher, Client, Publisher, RequestError
from torchannels.client.calls import Call
from torchannels.testing import FaultProxy

FORMS = ("sync", "async")
WAIT = 10.0


def unique(what: str) -> str:
    return f"open:once-{what}-{uuid.uuid4().hex[:10]}"


async def call(form: str, base: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """``method`` of a publisher of ``base`` in either form (the sync one in
    a thread, so that the proxy in this loop keeps forwarding)."""
    if form == "sync":
        sync = Publisher(base, KEY, seed=1)
        return await asyncio.to_thread(getattr(sync, method), *args, **kwargs)
    async with AsyncPublisher(base, KEY, seed=1) as pub:
        return await getattr(pub, method)(*args, **kwargs)


async def offset(hub: ServerProcess, channel: str) -> int:
    async with publisher(hub) as api:
        return (await api.channel(channel)).offset


@pytest.fixture
async def reader(hub: ServerProcess) -> AsyncIterator[Any]:
    """``await reader(*channels)``: a subscriber of ``channels`` on ``hub``,
    subscribed (its positions known) before it is returned."""
    started: list[tuple[Client, Reader]] = []

    async def subscribe(*channels: str) -> Reader:
        client = Client(channels_url(hub), transport="websocket")
        read = Reader(client.subscribe(*channels))
        started.append((client, read))
        await read.wait(lambda: set(channels) <= set(read.sub.positions), "subscribed")
        return read

    yield subscribe
    for client, read in started:
        await read.stop()
        await client.aclose()


async def lose_the_answer(hub: ServerProcess, proxy: FaultProxy, channel: str,
                          stored: int) -> None:  # fmt: skip
    """Once ``hub`` has stored up to offset ``stored`` in ``channel`` (the
    answer held back by the proxy's delay), cut every connection through
    the proxy (RST) and let the next ones through at once."""
    deadline = time.monotonic() + WAIT
    while await offset(hub, channel) < stored:
        assert time.monotonic() < deadline, f"{channel}: the publish was not stored"
        await asyncio.sleep(0.02)
    assert proxy.cut_all() == 1
    proxy.delay = 0.0


@pytest.mark.parametrize("form", FORMS)
async def test_a_publish_whose_answer_was_lost_is_stored_once(hub: ServerProcess, reader: Any,
                                                              form: str) -> None:  # fmt: skip
    channel = unique(form)
    read = await reader(channel)
    async with FaultProxy("127.0.0.1", hub.port) as proxy:
        proxy.delay = 1.0  # every chunk waits: the answer is still in the proxy when cut
        task = asyncio.ensure_future(
            call(form, f"http://127.0.0.1:{proxy.port}", "publish", channel, {"n": 1})
        )
        await lose_the_answer(hub, proxy, channel, 1)
        result = await asyncio.wait_for(task, WAIT)
        assert proxy.counters.accepted == 2  # the attempt cut, and the retry
    assert (result.channel, result.offset, result.duplicate) == (channel, 1, True)
    assert await offset(hub, channel) == 1
    # The subscriber got it once: a later message comes right after it.
    after = await call(form, hub.base, "publish", channel, {"n": 2})
    assert (after.offset, after.duplicate) == (2, False)
    await read.received(channel, 2, "the message and the one after")
    assert [(m.offset, m.data["n"]) for m in read.messages(channel)] == [(1, 1), (2, 2)]
    assert read.messages(channel)[0].data["ts"] == result.ts  # the first one's ts


@pytest.mark.parametrize("form", FORMS)
async def test_a_batch_whose_answer_was_lost_is_stored_once(hub: ServerProcess, reader: Any,
                                                            form: str) -> None:  # fmt: skip
    a, b = unique(f"{form}-a"), unique(f"{form}-b")
    read = await reader(a, b)
    batch = [(a, {"n": 1}), {"channel": b, "data": {"n": 2}}, (a, {"n": 3})]
    async with FaultProxy("127.0.0.1", hub.port) as proxy:
        proxy.delay = 1.0
        task = asyncio.ensure_future(
            call(form, f"http://127.0.0.1:{proxy.port}", "publish_batch", batch)
        )
        await lose_the_answer(hub, proxy, a, 2)
        results = await asyncio.wait_for(task, WAIT)
    assert [(r.channel, r.offset, r.duplicate) for r in results] == [
        (a, 1, True), (b, 1, True), (a, 2, True),
    ]  # fmt: skip
    assert (await offset(hub, a), await offset(hub, b)) == (2, 1)
    await call(form, hub.base, "publish", b, {"n": 4})  # b's next message shows b got one
    await read.received(b, 2, "b's message and the one after")
    await read.received(a, 2, "a's two messages")
    assert [m.data["n"] for m in read.messages(b)] == [2, 4]
    assert [m.data["n"] for m in read.messages(a)] == [1, 3]


@pytest.mark.parametrize("form", FORMS)
async def test_the_same_key_again_is_a_duplicate(hub: ServerProcess, form: str) -> None:
    a, b = unique(f"{form}-a"), unique(f"{form}-b")
    key = f"job-{uuid.uuid4().hex}"
    first = await call(form, hub.base, "publish", a, {"n": 1}, idempotency_key=key)
    again = await call(form, hub.base, "publish", a, {"n": 99}, idempotency_key=key)
    assert (first.offset, first.duplicate) == (1, False)
    assert (again.epoch, again.offset, again.ts, again.duplicate) == (
        first.epoch, 1, first.ts, True
    )  # fmt: skip
    elsewhere = await call(form, hub.base, "publish", b, {"n": 1}, idempotency_key=key)
    assert (elsewhere.offset, elsewhere.duplicate) == (1, False)  # a key is per channel
    many = await call(form, hub.base, "publish_many", [a, b, unique("c")], {"n": 2},
                      idempotency_key=key)  # fmt: skip
    assert [(r.offset, r.duplicate) for r in many] == [(1, True), (1, True), (1, False)]
    made = await call(form, hub.base, "publish", a, {"n": 3})  # a key of its own: stored
    assert (made.offset, made.duplicate) == (2, False)
    assert await offset(hub, a) == 2


@pytest.mark.parametrize("form", FORMS)
async def test_a_key_the_server_refuses_is_a_request_error(hub: ServerProcess, form: str) -> None:
    """Sent past the client's own check (a raw call): the server's code."""
    body = json.dumps({"channel": unique(form), "data": {}}).encode()
    with pytest.raises(RequestError) as info:
        await call(form, hub.base, "request", Call("POST", "/api/publish", body, True, "x" * 129))
    assert (info.value.status, info.value.code) == (400, "invalid_idempotency_key")


async def test_cli_publish_with_a_key_twice_stores_once(hub: ServerProcess) -> None:
    channel = unique("cli")
    args = ("publish", channel, '{"n": 1}', "--url", hub.base, "--api-key", KEY,
            "--idempotency-key", "deploy 1.4.2")  # fmt: skip
    first = await asyncio.to_thread(cli, *args)
    again = await asyncio.to_thread(cli, *args)
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert "duplicate" not in one and two == {**one, "duplicate": True}
    assert await offset(hub, channel) == 1

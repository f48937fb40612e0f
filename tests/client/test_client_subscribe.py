"""The Python client against real hubs, on every transport it speaks:
delivery with state, resume after cut connections, a reset after a hub
restart, token renewal, and cancellation that leaves no task behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from client.client_helpers import Reader, Statuses, channels_url, publisher, tasks_left
from server.processes import KEY, SECRET, ServerProcess
from torchannels.client import (
    TRANSPORTS,
    ChannelError,
    Client,
    Event,
    Message,
    Publisher,
    Reset,
    SubscribeError,
    subscribe_sync,
)
from torchannels.client.client import TokenSource
from torchannels.testing import FaultProxy
from torchannels.tokens import encode_token


def fast(url: str, **options: Any) -> Client:
    """A client that retries within a test's time."""
    return Client(url, min_delay=0.05, max_delay=0.3, poll_interval=0.05, longpoll_timeout=2,
                  **options)  # fmt: skip


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_delivery_state_history_and_cursor(hub: ServerProcess, transport: str) -> None:
    a, b = f"open:deliver-{transport}-a", f"open:deliver-{transport}-b"
    async with publisher(hub) as pub:
        state = await pub.set_state(a, [{"k": 1}, {"k": 2}])
        await pub.publish(b, {"n": 0})
        statuses = Statuses()
        async with fast(channels_url(hub), transport=transport, on_status=statuses) as client:
            sub = client.subscribe(a, b)
            reader = Reader(sub)
            await reader.wait(lambda: len(reader.messages(a, state=True)) == 2
                              and reader.offsets(b) == [1], "state and history")  # fmt: skip
            assert [m.data["k"] for m in reader.messages(a, state=True)] == [1, 2]
            assert {(m.epoch, m.offset) for m in reader.messages(a, state=True)} == {
                (state.epoch, state.offset)
            }
            sent = []
            for n in range(1, 4):
                sent.append(await pub.publish(a, {"n": n}))
                sent.append(await pub.publish(b, {"n": n}))
            await reader.wait(lambda: len(reader.offsets(b)) == 4, "live messages")
            assert reader.offsets(a) == [1, 2, 3] and reader.offsets(b) == [1, 2, 3, 4]
            assert [m.data["n"] for m in reader.messages(b)] == [0, 1, 2, 3]
            first = reader.messages(a)[0]
            assert first.data == {"n": 1, "channel": a, "epoch": sent[0].epoch, "offset": 1,
                                  "ts": sent[0].ts}  # fmt: skip
            assert sub.cursor == f"{a}={sent[-2].epoch}:3,{b}={sent[-1].epoch}:4"
            assert sub.transport == transport
            assert statuses and statuses[0].state == "connected"
            assert statuses[0].transport == transport
            assert not [e for e in reader.events if not isinstance(e, Message)]
            await reader.stop()


async def test_resume_from_a_cursor(hub: ServerProcess) -> None:
    channel = "open:cursor"
    async with publisher(hub) as pub:
        for n in range(3):
            await pub.publish(channel, {"n": n})
        async with Client(channels_url(hub), transport="websocket") as client:
            sub = client.subscribe(channel)
            async for event in sub:
                assert isinstance(event, Message)
                if event.offset == 2:
                    break
            saved = sub.cursor
        assert saved.endswith(":2")
        await pub.publish(channel, {"n": 3})
        for transport in TRANSPORTS:
            async with fast(channels_url(hub), transport=transport) as client:
                sub = client.subscribe(cursor=saved)  # the cursor's channels
                got = []
                async for event in sub:
                    assert isinstance(event, Message)
                    got.append(event.data["n"])
                    if len(got) == 2:
                        break
                assert got == [2, 3], transport


async def test_resume_after_the_connection_is_cut(hub: ServerProcess) -> None:
    """Every transport at once through one proxy, which cuts every open
    connection three times; messages published meanwhile all arrive, once."""
    channel = "open:cuts"
    async with FaultProxy("127.0.0.1", hub.port, seed=3) as proxy, publisher(hub) as pub:
        statuses = [Statuses() for _ in TRANSPORTS]
        clients = [fast(channels_url(proxy.port), transport=t, on_status=statuses[n])
                   for n, t in enumerate(TRANSPORTS)]  # fmt: skip
        readers = [Reader(c.subscribe(channel)) for c in clients]
        sent = 0
        for _ in range(3):
            await readers[0].wait(lambda: all(r.sub.transport for r in readers), "connected")
            assert proxy.cut_all() >= 1
            for _ in range(5):
                sent += 1
                await pub.publish(channel, {"n": sent})
            for reader in readers:
                await reader.received(channel, sent, "resumed")
        for transport, reader in zip(TRANSPORTS, readers, strict=True):
            assert reader.offsets(channel) == list(range(1, sent + 1)), transport
            assert not [e for e in reader.events if not isinstance(e, Message)], transport
        assert proxy.counters.cuts >= 3
        for transport, heard in zip(TRANSPORTS, statuses, strict=True):
            if transport in ("websocket", "sse", "stream"):  # polls may be between requests
                assert heard.states().count("reconnecting") >= 3, (transport, heard)
        for client, reader in zip(clients, readers, strict=True):
            await reader.stop()
            await client.aclose()


async def test_reset_after_a_hub_restart(start_hub: Callable[..., ServerProcess]) -> None:
    """The in-memory broker loses history on restart: every transport gets
    ``reset`` (``epoch_changed``), then the new epoch's messages."""
    channel = "open:restart"
    first = start_hub()
    async with FaultProxy("127.0.0.1", first.port) as proxy:
        clients = [fast(channels_url(proxy.port), transport=t) for t in TRANSPORTS]
        readers = [Reader(c.subscribe(channel)) for c in clients]
        async with publisher(first) as pub:
            old = [await pub.publish(channel, {"n": n}) for n in range(2)]
        for reader in readers:
            await reader.received(channel, 2, "before")
        first.close()
        second = start_hub()
        proxy.retarget("127.0.0.1", second.port)
        async with publisher(second) as pub:
            new = [await pub.publish(channel, {"n": n}) for n in range(2, 4)]
        assert new[0].epoch != old[0].epoch
        for transport, reader in zip(TRANSPORTS, readers, strict=True):
            await reader.received(channel, 4, "after")
            kinds = [(type(e).__name__, getattr(e, "epoch", getattr(e, "reason", None)))
                     for e in reader.events]  # fmt: skip
            assert (
                kinds
                == [("Message", old[0].epoch)] * 2
                + [("Reset", "epoch_changed")]
                + [("Message", new[0].epoch)] * 2
            ), transport
            assert reader.offsets(channel) == [1, 2, 1, 2]
            assert reader.sub.cursor == f"{channel}={new[0].epoch}:2"
        for client, reader in zip(clients, readers, strict=True):
            await reader.stop()
            await client.aclose()


def token(ttl: float) -> str:
    return encode_token({"exp": time.time() + ttl, "channels": ["priv:*"]}, SECRET)


async def test_a_lapsed_token_is_renewed_without_loss(hub: ServerProcess) -> None:
    """Tokens lapse after 1.5 s; ``get_token`` (async for some clients,
    plain for others) gives fresh ones, and no message is lost or refused."""
    channel = "priv:renew"
    calls = dict.fromkeys(TRANSPORTS, 0)

    def source(transport: str) -> TokenSource:
        def plain() -> str:
            calls[transport] += 1
            return token(60)

        async def awaitable() -> str:
            return plain()

        return awaitable if transport in ("websocket", "stream", "poll") else plain

    clients = [fast(channels_url(hub), transport=t, token=token(1.5), get_token=source(t))
               for t in TRANSPORTS]  # fmt: skip
    readers = [Reader(c.subscribe(channel)) for c in clients]
    async with publisher(hub) as pub:
        await pub.publish(channel, {"n": 1})
        for reader in readers:
            await reader.received(channel, 1, "before the expiry")
        await readers[0].wait(lambda: all(calls.values()), "every client renewed", timeout=8)
        await pub.publish(channel, {"n": 2})
        for transport, reader in zip(TRANSPORTS, readers, strict=True):
            await reader.received(channel, 2, "after")
            assert reader.offsets(channel) == [1, 2], transport
            assert all(isinstance(e, Message) for e in reader.events), (transport, reader.events)
            assert calls[transport] <= 2, calls  # renewed, not in a loop
    for client, reader in zip(clients, readers, strict=True):
        await reader.stop()
        await client.aclose()


async def test_without_get_token_a_lapsed_token_refuses_the_channel(hub: ServerProcess) -> None:
    """The socket ends at the expiry (4002); asked again with the same token,
    the channel is refused, and with no channel left the iteration ends."""
    async with publisher(hub) as pub:
        await pub.publish("priv:lapse", {"n": 1})
    async with fast(channels_url(hub), transport="websocket", token=token(1.0)) as c:

        async def events() -> list[Event]:
            return [event async for event in c.subscribe("priv:lapse")]

        got = await asyncio.wait_for(events(), 10)
    assert [type(e) for e in got] == [Message, ChannelError], got
    assert isinstance(got[1], ChannelError) and got[1].code == "token_expired"


async def test_the_first_token_comes_from_get_token(hub: ServerProcess) -> None:
    asked = []

    def get_token() -> str:
        asked.append(1)
        return token(60)

    async with publisher(hub) as pub, Client(channels_url(hub), get_token=get_token) as client:
        await pub.publish("priv:first", {"n": 1})
        async for event in client.subscribe("priv:first"):
            assert isinstance(event, Message) and event.data["n"] == 1
            break
    assert asked == [1]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancelling_leaves_no_task_and_no_subscriber(hub: ServerProcess, transport: str
                                                          ) -> None:  # fmt: skip
    channel = f"open:cancel-{transport}"
    async with publisher(hub) as pub:
        client = fast(channels_url(hub), transport=transport)
        reader = Reader(client.subscribe(channel))
        await pub.publish(channel, {"n": 1})
        await reader.wait(lambda: reader.offsets(channel) == [1], "delivered")
        reader.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader.task
        left = await tasks_left()
        assert not left, left
        if transport != "poll":  # a poll holds no subscription between requests

            async def gone() -> bool:
                return (await pub.channel(channel)).local_subscribers == 0

            deadline = time.monotonic() + 5
            while not await gone():
                assert time.monotonic() < deadline, "the hub still holds the subscriber"
                await asyncio.sleep(0.02)
        await client.aclose()


async def test_aclose_from_another_task_ends_the_iteration(hub: ServerProcess) -> None:
    async with Client(channels_url(hub), transport="sse") as client:
        sub = client.subscribe("open:aclose")
        reader = Reader(sub)
        await reader.wait(lambda: sub.transport == "sse", "connected")
        await sub.aclose()
        await asyncio.wait_for(reader.task, 5)
        assert reader.error is None
    assert not await tasks_left()


async def test_falls_back_when_the_websocket_route_is_missing(hub: ServerProcess) -> None:
    statuses = Statuses()
    async with (
        publisher(hub) as pub,
        Client(
            channels_url(hub), ws_url=f"ws://127.0.0.1:{hub.port}/nowhere", on_status=statuses
        ) as client,
    ):
        await pub.publish("open:fallback", {"n": 1})
        async for event in client.subscribe("open:fallback"):
            assert isinstance(event, Message)
            break
    assert statuses[0].state == "connected" and statuses[0].transport == "sse", statuses


async def test_refusals(hub: ServerProcess) -> None:
    many = [f"open:many-{n}" for n in range(65)]  # the hub's max_channels is 64
    async with Client(channels_url(hub), transport="sse") as client:
        with pytest.raises(SubscribeError) as info:
            await asyncio.wait_for(anext(client.subscribe(*many)), 10)
        assert info.value.code == "too_many_channels"
    async with Client(channels_url(hub), transport="websocket") as client:

        async def refused() -> list[Event]:
            return [e async for e in client.subscribe("priv:none")]  # ends: all refused

        events = await asyncio.wait_for(refused(), 10)
    assert events == [ChannelError("priv:none", "token_required", events[0].message)]  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        Client(channels_url(hub)).subscribe("a b")
    with pytest.raises(ValueError):
        Client(channels_url(hub), transport="carrier-pigeon")


def test_the_script_helper(hub: ServerProcess) -> None:
    pub = Publisher(hub.base, KEY)
    sent = [pub.publish("open:sync", {"n": n}) for n in range(2)]
    with subscribe_sync(channels_url(hub), "open:sync", transport="stream", timeout=1.0) as sub:
        got = [e for e in sub]  # ends after a second without an event
    assert [(m.offset, m.data["n"]) for m in got if isinstance(m, Message)] == [(1, 0), (2, 1)]
    assert sub.cursor == f"open:sync={sent[1].epoch}:2"
    assert not [e for e in got if isinstance(e, Reset)]

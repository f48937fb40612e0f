"""``Client.publish`` against real ``torchannels serve`` processes (issue
20): two processes on the shared Redis; a client of one publishes, over
its subscription's WebSocket or over HTTP, and a subscriber of the other
receives the message with the ``sender`` the server stamped, at the
position the publish returned. Then the refusals as ``PublishError``s
(docs/python-client.md, "Publishing from a client")."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from client.client_helpers import FLAGS, Reader, channels_url, publisher, tasks_left
from redis_servers import shared_redis
from server.processes import SECRET, ServerProcess
from torchannels.client import Client, ClientError, Published, PublishError
from torchannels.tokens import encode_token

CONFIG = """
[channels."pub:*"]
publish = "subscribers"
[channels."tok:*"]
publish = "token"
"""


@pytest.fixture(scope="module")
def hubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Two processes on the shared Redis, under a key prefix of their own."""
    path = tmp_path_factory.mktemp("publish-hubs")
    (path / "channels.toml").write_text(CONFIG)
    prefix = f"tc-pub-{uuid.uuid4().hex[:10]}"
    flags = ["--port", "0", *FLAGS, "--config", str(path / "channels.toml"),
             "--max-client-publish-bytes", "200",
             "--broker", shared_redis(), "--redis-prefix", prefix]  # fmt: skip
    started: list[ServerProcess] = []
    try:
        started += [ServerProcess(path, flags, None) for _ in range(2)]
        yield started
    finally:
        for server in started:
            server.close()


def token(user: str, **claims: Any) -> str:
    body = {"sub": user, "exp": time.time() + 600, "channels": ["pub:*", "tok:*", "none:*"]}
    return encode_token({**body, **claims}, SECRET)


def unique(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:10]}"


def fast(url: str, **options: Any) -> Client:
    return Client(url, min_delay=0.05, max_delay=0.3, poll_interval=0.05, longpoll_timeout=2,
                  **options)  # fmt: skip


async def subscribed(hub: ServerProcess, reader: Reader, channel: str, transport: str) -> None:
    """Wait until ``reader``'s feed has its position in ``channel`` and
    (but for poll, served by nobody between two requests) ``hub`` serves it."""
    await reader.wait(lambda: channel in reader.sub.positions, f"subscribed to {channel}")
    if transport == "poll":
        return
    async with publisher(hub) as api:
        deadline = time.monotonic() + 10
        while (await api.channel(channel)).local_subscribers != 1:
            assert time.monotonic() < deadline, f"{channel} not served"


@pytest.fixture
async def reading(hubs: list[ServerProcess]) -> AsyncIterator[list[Reader]]:
    """Readers to stop at teardown (and no task left behind)."""
    readers: list[Reader] = []
    yield readers
    for reader in readers:
        await reader.stop()
        await reader.sub.client.aclose()
    assert not await tasks_left()


@pytest.mark.parametrize("transport", ["websocket", "longpoll"])
async def test_a_publish_reaches_a_subscriber_on_the_other_process(
    hubs: list[ServerProcess], reading: list[Reader], transport: str
) -> None:
    """Over the WebSocket the message names the publishing subscription's
    client id; a client on an HTTP transport POSTs, and the server names
    that request's client (a new one)."""
    user, channel = unique("ann"), f"pub:{unique('room')}"
    other = fast(channels_url(hubs[1]), token=token(unique("bob")))
    reading.append(reader := Reader(other.subscribe(channel)))
    await subscribed(hubs[1], reader, channel, "websocket")
    client = fast(channels_url(hubs[0]), transport=transport, token=token(user))
    reading.append(own := Reader(client.subscribe(channel)))
    await subscribed(hubs[0], own, channel, transport)

    done = await client.publish(channel, {"text": "hi"})
    assert isinstance(done, Published) and done.ts is None, done
    await reader.received(channel, 1, "the publish, on the other process")
    await own.received(channel, 1, "the publish, back to its publisher")

    [got] = reader.messages(channel)
    assert (done.channel, done.epoch, done.offset) == (channel, got.epoch, got.offset)
    sender = got.data["sender"]
    assert set(sender) == {"user", "client"} and sender["user"] == user, got.data
    assert got.data["text"] == "hi" and own.messages(channel)[0].data == got.data
    feed_id = own.sub.client_id
    assert feed_id is not None and sender["client"] and "~" not in sender["client"]
    if transport == "websocket":
        assert sender["client"] == feed_id.partition("~")[0], (sender, feed_id)
    else:
        assert sender["client"] != feed_id.partition("~")[0], (sender, feed_id)


REFUSALS = [
    ("none:x", {}, "publish_forbidden", 403),  # no publish option: nobody
    ("tok:x", {}, "publish_forbidden", 403),  # the token policy, no publish claim
    ("pub:x", {"p": "x" * 300}, "publish_too_large", 413),  # --max-client-publish-bytes
]


@pytest.mark.parametrize("transport", ["websocket", None])
@pytest.mark.parametrize(("channel", "data", "code", "status"), REFUSALS)
async def test_refusals_raise_publish_errors(
    hubs: list[ServerProcess], reading: list[Reader], transport: str | None,
    channel: str, data: dict[str, Any], code: str, status: int,
) -> None:  # fmt: skip
    """``None``: a client with no subscription, so over HTTP."""
    client = fast(channels_url(hubs[0]), transport="websocket", token=token(unique("cy")))
    if transport is not None:
        reading.append(reader := Reader(client.subscribe(f"pub:{unique('sub')}")))
        await subscribed(hubs[0], reader, reader.sub.channels[0], transport)
    with pytest.raises(PublishError) as caught:
        await client.publish(channel, data)
    error = caught.value
    assert isinstance(error, ClientError) and error.code == code, error
    assert (error.retry, error.retry_after) == (False, None), error
    assert error.status == (0 if transport else status), error
    assert error.message, error
    # Still subscribed: a refused publish touches no subscription.
    if transport is not None:
        assert reader.error is None and not reader.task.done(), reader.events


async def test_a_forged_sender_is_refused_before_sending(hubs: list[ServerProcess]) -> None:
    client = Client(channels_url(hubs[0]), token=token(unique("eve")))
    with pytest.raises(ValueError, match="sender"):
        await client.publish("pub:forged", {"sender": {"user": "root", "client": "x"}})


@pytest.mark.parametrize("transport", ["websocket", None])
async def test_the_publish_claim_lets_a_client_publish(
    hubs: list[ServerProcess], reading: list[Reader], transport: str | None
) -> None:
    """``None``: another client of the same user, with no subscription, so over HTTP."""
    user, channel, url = unique("dee"), f"tok:{unique('claimed')}", channels_url(hubs[0])
    claimed = token(user, publish=["tok:*"])
    client = fast(url, transport="websocket", token=claimed)
    reading.append(reader := Reader(client.subscribe(channel)))
    await subscribed(hubs[0], reader, channel, "websocket")
    sender = client if transport else Client(url, token=claimed)
    done = await sender.publish(channel, {"n": 1})
    await reader.received(channel, 1, "the claimed publish")
    [got] = reader.messages(channel)
    assert (got.offset, got.data["sender"]["user"]) == (done.offset, user), got.data

"""The Python client told to go, across three server processes on one Redis:
one ``Publisher.disconnect`` ends a user's subscriptions on every process
and transport, and none of them comes back (issue 19)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from client.client_helpers import Reader, channels_url
from client.test_client_control import control, delivering, ended, fast, token
from redis_servers import shared_redis
from server.processes import KEY, SECRET, ServerProcess, api, as_json
from torchannels.client import TRANSPORTS, Client, Disconnected


async def subscribers(hub: ServerProcess, channel: str) -> int:
    import tornado.httpclient

    http = tornado.httpclient.AsyncHTTPClient()
    answer = as_json(await api(http, hub, f"/api/channels/{channel}", method="GET"))
    return int(answer["local_subscribers"])


async def test_one_disconnect_ends_the_user_on_every_process_for_good(
    start_hub: Callable[..., ServerProcess],
) -> None:
    prefix = f"tc-ctl-py-{uuid.uuid4().hex[:10]}"
    flags = ["--broker", shared_redis(), "--redis-prefix", prefix, "--api-key", KEY,
             "--token-secret", SECRET, "--no-demo"]  # fmt: skip
    hubs = [start_hub(base=flags) for _ in range(3)]
    user, channel = "ctl-py-user", "ctl:everywhere"
    clients: list[Client] = []
    readers: list[Reader] = []
    try:
        for n, transport in enumerate(TRANSPORTS):
            hub = hubs[n % 3]
            client = fast(channels_url(hub), transport=transport, token=token(user))
            clients.append(client)
            reader = Reader(client.subscribe(channel))
            readers.append(reader)
            await delivering(reader, hub, channel, n)
        started = time.monotonic()
        result = await control("async", hubs[0].base, "disconnect", user=user)
        errors = await asyncio.gather(*(ended(r) for r in readers))
        took = time.monotonic() - started
        print(f"5 Python subscriptions on 3 processes ended in {took * 1000:.0f} ms")
        for error, reader in zip(errors, readers, strict=True):
            assert isinstance(error, Disconnected), (error, reader.events)
            assert (error.reason, error.reconnect) == ("disconnected_by_server", False)
        assert (result.processes, result.answered) == (3, 3)
        assert result.connections >= 3  # streams and the socket; polls are told on their next
        # Nothing comes back: the subscriptions are over, and no process serves the user.
        await _stays_unsubscribed(hubs, channel)
    finally:
        for client in clients:
            await client.aclose()


async def _stays_unsubscribed(hubs: list[ServerProcess], channel: str) -> None:
    """A bounded look, over a second (many times the client's quickest
    reconnect of 50 ms), at every process's subscribers of ``channel``."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        counts = [await subscribers(hub, channel) for hub in hubs]
        assert counts == [0, 0, 0], counts
        await asyncio.sleep(0.05)

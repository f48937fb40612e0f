"""What the control API tests share: connections of every transport for a
user, watched until the server ends them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from server.processes import ServerProcess, api, as_json, fetch, jwt, poll, until

LIVE = ("stream", "sse", "websocket", "longpoll")


def token(user: str, *channels: str, **claims: Any) -> str:
    body = {"sub": user, "exp": time.time() + 300, "channels": list(channels) or ["c:*"]}
    return jwt({**body, **claims})


async def subscribers(http: Any, hub: ServerProcess, channel: str) -> int:
    answer = as_json(await api(http, hub, f"/api/channels/{channel}", method="GET"))
    return int(answer["local_subscribers"])


async def attached(http: Any, hub: ServerProcess, channel: str, n: int) -> None:
    await until(lambda: at_least(http, hub, channel, n), f"{n} subscribers of {channel}")


async def at_least(http: Any, hub: ServerProcess, channel: str, n: int) -> bool:
    return await subscribers(http, hub, channel) >= n


class Open:
    """One live connection of any transport, its frames and how it ended."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.task: asyncio.Task[Any] | None = None
        self.live: Any = None

    def current(self) -> list[dict[str, Any]]:
        """The frames so far (a stream's as parsed up to now)."""
        return list(self.live.frames()) if self.live is not None else self.frames


async def open_live(
    http: Any, lives: Any, sockets: Any, hub: ServerProcess, transport: str, tok: str,
    channels: list[str],
) -> Open:  # fmt: skip
    """Open a connection and wait until its channels are attached."""
    opened = Open(transport)
    if transport == "websocket":
        sock = await sockets(hub.ws_url(channel=channels, token=tok))
        await sock.wait(lambda fs: sum(f["type"] == "subscribed" for f in fs) == len(channels))
        opened.task = asyncio.ensure_future(_read_socket(sock, opened))
    elif transport == "longpoll":
        first = await poll(http, hub, channels, transport="longpoll", token=tok, timeout=5)
        query = {"token": tok, "cursor": first["cursor"], "client": first["client"]}
        opened.task = asyncio.ensure_future(held_poll(http, hub, channels, **query))
    else:
        live = lives(hub.url(transport=transport, channel=channels, token=tok))
        await live.wait(lambda fs: sum(f["type"] == "subscribed" for f in fs) == len(channels))
        opened.live = live
        opened.task = asyncio.ensure_future(live.ended(timeout=20))
    return opened


async def polled(
    http: Any, hub: ServerProcess, channels: list[str], transport: str, **query: Any
) -> dict[str, Any]:
    """One poll or long-poll answer (a long-poll held at most 1 s)."""
    if transport == "longpoll":
        query.setdefault("timeout", 1)
    response = await fetch(http, hub.url(transport=transport, channel=channels, **query))
    assert response.code == 200, response.body
    return dict(as_json(response))


async def held_poll(http: Any, hub: ServerProcess, channels: list[str], **query: Any) -> Any:
    """A long-poll held for up to 20 s."""
    url = hub.url(transport="longpoll", channel=channels, timeout=20, **query)
    response = await fetch(http, url, timeout=25)
    assert response.code == 200, response.body
    return as_json(response)


async def _read_socket(sock: Any, opened: Open) -> None:
    with_close = await sock.conn.read_message()
    while with_close is not None:
        opened.frames.append(json.loads(with_close))
        with_close = await sock.conn.read_message()
    sock.closed = True
    opened.close_code = sock.conn.close_code


async def ended(opened: Open) -> list[dict[str, Any]]:
    """The frames a connection got until the server ended it."""
    assert opened.task is not None
    result = await asyncio.wait_for(opened.task, 10)
    if opened.transport == "longpoll":
        opened.frames.extend(result["frames"])
    return opened.current()


async def got(opened: Open, n: int) -> bool:
    """Whether ``opened`` got the message ``{"n": n}``."""
    return any(f.get("data", {}).get("n") == n for f in opened.current())

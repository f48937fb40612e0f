"""What the presence tests across processes share: a cluster of ``serve``
processes on the shared Redis with presence on ``room:*``, and members on any
transport that collect the frames they receive.

A member is one client of one user (``sub`` in its token, ``info`` beside
it). Live members (stream, sse, websocket) hold one connection; polling
members (poll, long-poll) run a loop of requests in the background that
carries the server's signed client id and the cursor from one request to the
next, as a client library does, so the user stays present while it polls.
Every request is made on its own socket (:class:`support.Stream`), so closing
a member really drops its connection, as a browser leaving the page does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import tornado.websocket

from redis_servers import shared_redis
from server.processes import KEY, SECRET, WAIT, ServerProcess, as_json, fetch, jwt
from support import HOUSEKEEPING, Stream

Frames = list[dict[str, Any]]
#: The channel pattern the cluster's config gives presence and join/leave.
PATTERN = "room:*"
CONFIG = f'[channels."{PATTERN}"]\npresence = true\njoin_leave = true\n'


def cluster_flags(tmp: Path, *, grace: float, ttl: float) -> list[str]:
    """Flags of one test's processes: the shared Redis under a fresh prefix,
    the API key and token secret, presence on ``room:*`` (a TOML config),
    and the presence grace and TTL."""
    config = tmp / f"presence-{uuid.uuid4().hex[:8]}.toml"
    config.write_text(CONFIG)
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    return ["--broker", shared_redis(), "--redis-prefix", prefix, "--api-key", KEY,
            "--token-secret", SECRET, "--no-demo", "--config", str(config),
            "--presence-grace", str(grace), "--presence-ttl", str(ttl)]  # fmt: skip


def prefix_of(flags: list[str]) -> str:
    return flags[flags.index("--redis-prefix") + 1]


def token(user: str | None, info: Mapping[str, Any] | None = None) -> str:
    """A subscription token for ``room:*``; ``user`` None: no ``sub`` (anonymous)."""
    claims: dict[str, Any] = {"exp": time.time() + 600, "channels": [PATTERN]}
    if user is not None:
        claims["sub"] = user
    if info is not None:
        claims["info"] = dict(info)
    return jwt(claims)


# -- what members saw ------------------------------------------------------------------


def presence_frames(frames: Frames, channel: str) -> Frames:
    return [f for f in frames if f["type"] == "presence" and f["channel"] == channel]


def joins(frames: Frames, channel: str) -> list[str]:
    """The users of every join among ``frames``, in order (repeats kept)."""
    return [j["user"] for f in presence_frames(frames, channel) for j in f["joins"]]


def leaves(frames: Frames, channel: str) -> list[str]:
    return [u["user"] for f in presence_frames(frames, channel) for u in f["leaves"]]


def join_info(frames: Frames, channel: str) -> dict[str, Any]:
    """user -> the info of its (last) join."""
    return {j["user"]: j.get("info") for f in presence_frames(frames, channel) for j in f["joins"]}


def check_frames(frames: Frames) -> None:
    """Every presence frame has the documented shape; none names a user twice."""
    for f in frames:
        if f["type"] != "presence":
            continue
        assert set(f) == {"type", "channel", "joins", "leaves"}, f
        users = [j["user"] for j in f["joins"]] + [u["user"] for u in f["leaves"]]
        assert len(users) == len(set(users)), f  # never in joins and leaves at once
        assert all(set(u) == {"user"} for u in f["leaves"]), f


# -- members -----------------------------------------------------------------------------


class Member:
    """One client of ``user`` in ``channel`` on ``hub`` over ``transport``."""

    def __init__(
        self,
        hub: ServerProcess,
        transport: str,
        channel: str,
        user: str | None,
        info: Mapping[str, Any] | None = None,
        *,
        interval: float = 0.25,
    ) -> None:
        self.hub = hub
        self.transport = transport
        self.channel = channel
        self.user = user
        self.token = token(user, info)
        self.interval = interval  # between poll requests
        self.frames: Frames = []
        self.client: str | None = None  # the signed client id the server gave
        self.cursor: str | None = None
        self.answers = 0  # poll answers received
        self._arrived = asyncio.Event()
        self._socket: tornado.websocket.WebSocketClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stream: Stream | None = None
        self._loop: asyncio.Task[None] | None = None
        self.stopped = False

    # opening and closing

    async def open(self) -> Member:
        """Connect and wait for the channel's ``subscribed`` frame."""
        query: dict[str, Any] = {"channel": self.channel, "token": self.token}
        if self.transport == "websocket":
            self._socket = await asyncio.wait_for(
                tornado.websocket.websocket_connect(self.hub.ws_url(**query)), WAIT
            )
            self._reader = asyncio.ensure_future(self._read_socket())
        elif self.transport in ("stream", "sse"):
            self._stream = Stream(self.hub.url(transport=self.transport, **query), {})
            self._reader = asyncio.ensure_future(self._read_stream())
        else:
            self._loop = asyncio.ensure_future(self._poll_loop())
        await self.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
        return self

    async def close(self) -> None:
        """Leave as a client does: drop the connection, or stop polling."""
        self.stopped = True
        if self._socket is not None:
            self._socket.close()
        if self._stream is not None:
            self._stream.close()
        for task in (self._reader, self._loop):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._arrived.set()

    async def send(self, text: str) -> None:
        """Send a WebSocket command (websocket members only)."""
        assert self._socket is not None, self
        await self._socket.write_message(text)

    # reading

    def content(self) -> Frames:
        return [f for f in self.frames if f["type"] not in HOUSEKEEPING]

    def _add(self, frames: Frames) -> None:
        self.frames.extend(frames)
        for f in frames:
            if f["type"] == "connected" and "client" in f:
                self.client = f["client"]
        self._arrived.set()

    async def wait(self, predicate: Callable[[Frames], bool], timeout: float = WAIT) -> Frames:
        """Wait until ``predicate(content frames)`` holds; return them."""

        async def loop() -> None:
            while not predicate(self.content()):
                if self.stopped:
                    raise AssertionError(f"{self} stopped first: {self.frames}")
                self._arrived.clear()
                await self._arrived.wait()

        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self}: not within {timeout}s; frames {self.frames}") from None
        return self.content()

    async def _read_socket(self) -> None:
        assert self._socket is not None
        while (message := await self._socket.read_message()) is not None:
            self._add([json.loads(message)])
        self.stopped = True
        self._arrived.set()

    async def _read_stream(self) -> None:
        stream = self._stream
        assert stream is not None
        seen = 0

        def more(_: bytes) -> bool:
            return len(stream.frames()) > seen

        while True:
            with contextlib.suppress(AssertionError):  # raised when the stream ended
                await stream.wait_for(more, timeout=3600)
            frames = stream.frames()
            self._add(frames[seen:])
            seen = len(frames)
            if stream.response.done():
                self.stopped = True
                self._arrived.set()
                return

    async def request(self) -> dict[str, Any]:
        """One poll or long-poll request (on its own socket); its answer."""
        query: dict[str, Any] = {"transport": self.transport, "channel": self.channel,
                                 "token": self.token}  # fmt: skip
        if self.cursor is not None:
            query["cursor"] = self.cursor
        if self.client is not None:
            query["client"] = self.client
        stream = Stream(self.hub.url(**query), {})
        self._stream = stream
        try:
            await asyncio.wait_for(asyncio.shield(stream.response), 60)
        finally:
            self._stream = None
        assert stream.status == 200 and stream.complete, (stream.status, stream.buffer)
        doc: dict[str, Any] = json.loads(stream.buffer)
        return doc

    async def _poll_loop(self) -> None:
        while not self.stopped:
            doc = await self.request()
            self.cursor = doc["cursor"]
            self.client = doc.get("client", self.client)
            self.answers += 1
            self._add(doc["frames"])
            if self.transport == "poll":
                await asyncio.sleep(self.interval)

    def __repr__(self) -> str:
        return f"<{self.transport} member {self.user!r} on :{self.hub.port}>"


async def held(http: Any, hub: ServerProcess, connections: int) -> None:
    """Wait until ``hub`` has ``connections`` open (a long-poll counts while held)."""
    deadline = time.monotonic() + WAIT
    while True:
        body = as_json(await fetch(http, hub.base + "/health"))
        if int(body["connections"]) >= connections:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{hub.base}: {body['connections']} of {connections} connections")
        await asyncio.sleep(0.02)


async def read_presence(http: Any, hub: ServerProcess, channel: str, user_token: str,
                        **query: Any) -> dict[str, Any]:  # fmt: skip
    """A subscriber's presence read over HTTP: ``GET /channels?presence=C``."""
    response = await fetch(http, hub.url(presence=channel, token=user_token, **query))
    body: dict[str, Any] = as_json(response)
    assert response.code == 200, body
    return body


@contextlib.asynccontextmanager
async def member_pool() -> AsyncIterator[Callable[..., Awaitable[Member]]]:
    """``await open_member(hub, transport, channel, user, info)``: an open
    :class:`Member`; all are closed on the way out (the tests' ``members``
    fixture)."""
    opened: list[Member] = []

    async def open_member(*args: Any, **kwargs: Any) -> Member:
        member = Member(*args, **kwargs)
        opened.append(member)
        return await member.open()

    try:
        yield open_member
    finally:
        for member in opened:
            await member.close()

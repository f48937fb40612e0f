"""A subscriber that follows the protocol on any transport and checks
every frame it gets: exactly-once, in-order delivery per channel, or an
explicit ``reset``.

Point it at a deployment (directly, or through a :class:`FaultProxy`), let
it run while you publish, restart, cut, and read its verdict::

    sub = CheckingSubscriber("http://127.0.0.1:8090/channels", ["news"], "sse")
    async with sub:
        ...  # publish, inject faults
        await sub.reached({"news": (epoch, last_offset)}, timeout=10)
    assert not sub.violations, sub.report()
    assert not sub.unaccounted("news", published_positions)

It keeps its own position per channel from the frames (it never just echoes
the server's cursor; it compares the two), resumes from it after every end
of a connection, failed or not, with full-jitter backoff after failures, and
gives up only on answers that retrying cannot change (HTTP 4xx, an expired
token), which it records in :attr:`CheckingSubscriber.fatal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import tornado.httpclient
import tornado.iostream
import tornado.websocket

from .checker import DeliveryChecker, Position, Violation
from .wire import HTTPFailure, get

TRANSPORTS = ("poll", "longpoll", "stream", "sse", "websocket")


class _Drop(Exception):
    """This connection is over; resume with backoff."""


class _Fatal(Exception):
    """Retrying cannot help: stop."""


@dataclass
class SubscriberStats:
    """What one checking subscriber went through."""

    connects: int = 0  #: requests (poll, longpoll) or connections opened
    drops: int = 0  #: connections that failed: cut, timed out, refused, or a 5xx
    resumes: int = 0  #: connections opened with a cursor right after a failed one
    reconnect_frames: int = 0  #: ``reconnect`` frames received (the server ended on purpose)
    frames: int = 0  #: frames received, keep-alives included
    messages: int = 0  #: ``message`` frames received
    resets: Counter[str] = field(default_factory=Counter)  #: ``reset`` frames by reason
    last_failure: str = ""  #: why the last failed connection failed


class CheckingSubscriber:
    """Subscribes ``channels`` at ``url`` (the subscribe URL, by convention
    ``.../channels``) on ``transport`` and checks what it receives.

    ``token`` is sent as the ``token`` query parameter. ``idle_timeout``:
    seconds without a byte after which a connection counts as dead (keep it
    above the server's ping interval). ``seed`` fixes the backoff jitter.
    The WebSocket URL is ``ws_url``, by default ``url + "/ws"``.
    """

    def __init__(
        self, url: str, channels: Iterable[str], transport: str = "sse", *,
        token: str | None = None, ws_url: str | None = None, idle_timeout: float = 40.0,
        longpoll_timeout: float = 10.0, poll_interval: float = 0.1,
        backoff: tuple[float, float] = (0.05, 2.0), seed: int | None = None,
    ) -> None:  # fmt: skip
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.url = url
        self.ws_url = ws_url or url.replace("http", "ws", 1) + "/ws"
        self.channels = list(dict.fromkeys(channels))
        self.transport = transport
        self.token = token
        self.idle_timeout = idle_timeout
        self.longpoll_timeout = longpoll_timeout
        self.poll_interval = poll_interval
        self.backoff = backoff
        self.checker = DeliveryChecker()
        self.stats = SubscriberStats()
        #: why the subscriber stopped on its own (None while it runs or was stopped)
        self.fatal: str | None = None
        self._rng = random.Random(seed)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- control -------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        # Cancel until it ends: on Python 3.11 ``asyncio.wait_for`` swallows a
        # cancellation that lands in the same loop turn as its result, and the
        # run loop would then go on for ever (and ``stop`` with it).
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> CheckingSubscriber:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- verdict -------------------------------------------------------------------

    @property
    def violations(self) -> list[Violation]:
        return self.checker.violations

    def position(self, channel: str) -> Position | None:
        return self.checker.log(channel).position

    def unaccounted(self, channel: str, published: Iterable[Position]) -> list[Position]:
        """Silent losses: see :meth:`DeliveryChecker.unaccounted`."""
        return self.checker.unaccounted(channel, published)

    def received(self, channel: str) -> list[dict[str, Any]]:
        """The messages of ``channel`` received, in arrival order."""
        return [message for _, _, message in self.checker.log(channel).messages]

    def report(self) -> str:
        """One line of figures, then one line per violation."""
        s = self.stats
        lines = [
            f"{self.transport}: {s.connects} connects, {s.drops} drops, {s.resumes} resumes, "
            f"{s.reconnect_frames} reconnect frames, {s.messages} messages, "
            f"resets {dict(s.resets)}, {len(self.violations)} violations"
            + (f", fatal: {self.fatal}" if self.fatal else "")
        ]
        lines += [f"  {v}" for v in self.violations[:50]]
        return "\n".join(lines)

    async def wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds (checked after each frame)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.fatal is not None:
                raise AssertionError(f"subscriber stopped: {self.fatal}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"not within {timeout} s; {self.report()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def reached(self, positions: Mapping[str, Position], timeout: float) -> None:
        """Wait until the subscriber holds exactly ``positions`` (channel ->
        (epoch, offset)), for example the last ones published."""
        await self.wait(
            lambda: all(self.position(c) == tuple(p) for c, p in positions.items()), timeout
        )

    # -- the loop ------------------------------------------------------------------

    def _wanted(self) -> list[str]:
        """Channels to name: all but those refused with an ``error`` frame."""
        return [c for c in self.channels if not self.checker.log(c).errors]

    def _feed(self, frame: Any) -> None:
        self.stats.frames += 1
        if not isinstance(frame, dict):
            self.checker.malformed(f"a frame that is not an object: {frame!r:.200}")
            raise _Drop("malformed frame")
        kind = frame.get("type")
        if kind == "message":
            self.stats.messages += 1
        elif kind == "reset":
            self.stats.resets[str(frame.get("reason"))] += 1
        elif kind == "reconnect":
            self.stats.reconnect_frames += 1
            if frame.get("reason") == "token_expired":
                raise _Fatal("reconnect: token_expired (the kit does not refresh tokens)")
        self.checker.feed(frame)
        self._changed.set()

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception as exc:  # a bug here must not pass for a quiet subscriber
            self.fatal = f"crashed: {exc!r}"
        self._changed.set()

    async def _loop(self) -> None:
        failures = 0
        connect = {
            "poll": self._poll, "longpoll": self._poll, "stream": self._stream,
            "sse": self._sse, "websocket": self._websocket,
        }[self.transport]  # fmt: skip
        while True:
            if not self._wanted():
                self.fatal = "every channel was refused"
                break
            self.stats.connects += 1
            if failures and self.checker.positions():
                self.stats.resumes += 1
            try:
                await connect()
                failures = 0
                if self.transport == "poll":
                    await asyncio.sleep(self.poll_interval)
            except _Fatal as exc:
                self.fatal = str(exc)
                break
            except ValueError as exc:  # not JSON: a protocol violation, then resume
                self.checker.malformed(f"undecodable frame: {exc}")
                failures += 1
                self.stats.drops += 1
                await asyncio.sleep(self.backoff[0])
            except (_Drop, HTTPFailure, OSError, TimeoutError,
                    tornado.iostream.StreamClosedError,
                    tornado.websocket.WebSocketError) as exc:  # fmt: skip
                self.stats.drops += 1
                self.stats.last_failure = repr(exc)
                failures += 1
                low, high = self.backoff
                await asyncio.sleep(self._rng.uniform(0, min(high, low * 2 ** min(failures, 16))))

    def _query(self, transport: str, cursor: bool = True) -> str:
        query: dict[str, Any] = {"transport": transport, "channel": self._wanted()}
        if cursor and self.checker.positions():
            query["cursor"] = self.checker.cursor()
        if self.token is not None:
            query["token"] = self.token
        if transport == "longpoll":
            query["timeout"] = self.longpoll_timeout
        return urlencode(query, doseq=True)

    @staticmethod
    def _check_status(status: int, body: bytes) -> None:
        if status == 200:
            return
        if status >= 500 or status == 429:
            raise _Drop(f"HTTP {status}: {body[:200]!r}")
        raise _Fatal(f"HTTP {status}: {body[:200]!r}")

    async def _poll(self) -> None:
        timeout = self.idle_timeout + (self.longpoll_timeout if self.transport == "longpoll" else 0)
        async with get(f"{self.url}?{self._query(self.transport)}", timeout=timeout) as response:
            body = await response.body(timeout)
        self._check_status(response.status, body)
        try:
            doc = json.loads(body)
            frames, cursor = doc["frames"], doc["cursor"]
        except (ValueError, KeyError, TypeError) as exc:
            raise _Drop(f"bad poll answer {body[:200]!r}") from exc
        for frame in frames:
            self._feed(frame)
        self.checker.check_cursor(cursor, self._wanted())

    async def _stream(self) -> None:
        async with get(f"{self.url}?{self._query('stream')}", timeout=self.idle_timeout) as r:
            if r.status != 200:
                self._check_status(r.status, await r.body(self.idle_timeout))
            buffer = b""
            async for chunk in r.chunks(self.idle_timeout):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    frame = json.loads(line)
                    self._feed(frame)
                    if frame.get("type") == "reconnect":
                        return
        raise _Drop("the stream ended without a reconnect frame")

    async def _sse(self) -> None:
        headers = {"Accept": "text/event-stream"}
        if self.checker.positions():  # how a browser's EventSource resumes
            headers["Last-Event-ID"] = self.checker.cursor()
        url = f"{self.url}?{self._query('sse', cursor=False)}"
        async with get(url, headers, timeout=self.idle_timeout) as r:
            if r.status != 200:
                self._check_status(r.status, await r.body(self.idle_timeout))
            buffer = b""
            event: dict[str, list[str]] = {}
            async for chunk in r.chunks(self.idle_timeout):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode().rstrip("\r")
                    if line:
                        name, _, value = line.partition(":")
                        event.setdefault(name, []).append(value.removeprefix(" "))
                        continue
                    if self._sse_event(event):
                        return
                    event = {}
        raise _Drop("the SSE stream ended without a reconnect event")

    def _sse_event(self, event: Mapping[str, list[str]]) -> bool:
        """Apply one SSE event; True if it was ``reconnect``."""
        if "data" not in event:
            return False
        data = json.loads("\n".join(event["data"]))
        name = event.get("event", ["message"])[-1]
        frame = {"type": "message", "data": data} if name == "message" else data
        self._feed(frame)
        if "id" in event:
            self.checker.check_cursor(event["id"][-1], self._wanted())
        return name == "reconnect"

    async def _websocket(self) -> None:
        query = urlencode({"token": self.token}) if self.token is not None else ""
        request = tornado.httpclient.HTTPRequest(
            self.ws_url + (f"?{query}" if query else ""), connect_timeout=self.idle_timeout
        )
        try:
            conn = await asyncio.wait_for(
                tornado.websocket.websocket_connect(request), self.idle_timeout
            )
        except tornado.httpclient.HTTPClientError as exc:
            if exc.code >= 500 or exc.code == 599:
                raise _Drop(repr(exc)) from exc
            raise _Fatal(repr(exc)) from exc
        try:
            command: dict[str, Any] = {"type": "subscribe", "channels": self._wanted()}
            if self.checker.positions():
                command["cursor"] = self.checker.cursor()
            await conn.write_message(json.dumps(command))
            while True:
                message = await asyncio.wait_for(conn.read_message(), self.idle_timeout)
                if message is None:
                    raise _Drop(f"closed: {conn.close_code} {conn.close_reason}")
                frame = json.loads(message)
                if frame.get("type") == "error" and "channel" not in frame:
                    raise _Fatal(f"the server refused the subscribe command: {frame}")
                self._feed(frame)
                if frame.get("type") == "reconnect":
                    return
        finally:
            conn.close()

"""The asyncio subscriber: :class:`Client` and the :class:`ChannelFeed` it gives.

::

    async with Client("http://127.0.0.1:8090/channels", token=token) as client:
        sub = client.subscribe("chat", "news", cursor=saved)
        async for event in sub:
            if isinstance(event, Message):
                handle(event.data)
            elif isinstance(event, Reset):
                forget(event.channel)
            saved = sub.cursor

A subscription is driven by its iteration: no task runs in the background.
Cancelling the iterating task, leaving the ``async for``/``async with``, or
:meth:`ChannelFeed.aclose` closes its connection before returning.
See docs/python-client.md.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from ..protocol import Position, check_channel, format_cursor, parse_cursor
from .calls import Published
from .connections import Connection, Dropped, Ended, HTTPConnection, Refused, WebSocketConnection
from .disconnect import Disconnect
from .errors import Disconnected, SubscribeError
from .events import Event, PresencePage, Status
from .presence import read_presence
from .retry import next_attempt
from .sending import publish
from .tracker import MalformedFrame, Tracker

#: The transports, in the order tried when none is chosen.
TRANSPORTS = ("websocket", "sse", "stream", "longpoll", "poll")
#: The transports on which a connection is made once its `connected` frame came.
STREAMING = ("websocket", "sse", "stream")
TokenSource = Callable[[], "str | Awaitable[str | None] | None"]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Client:
    """Subscriptions to one hub. ``url`` is its subscribe URL (by
    convention ``http://HOST:PORT/channels``); the WebSocket URL is
    ``ws_url``, by default ``url + "/ws"`` on ``ws:``/``wss:``.

    ``token``: a subscription token, sent as ``Authorization: Bearer``;
    ``get_token()`` (plain or async) gives a fresh one when the server says
    it lapsed, and the first one when ``token`` is None. ``transport``: one
    name, a list to try in order, or None for all of :data:`TRANSPORTS`.
    ``on_status(Status)`` hears of connections made and lost.
    """

    def __init__(
        self, url: str, *, token: str | None = None, get_token: TokenSource | None = None,
        transport: str | Sequence[str] | None = None, ws_url: str | None = None,
        headers: Mapping[str, str] | None = None, on_status: Callable[[Status], None] | None = None,
        min_delay: float = 0.5, max_delay: float = 20.0, connect_timeout: float = 10.0,
        ping_leeway: float = 10.0, longpoll_timeout: float = 25.0, poll_interval: float = 2.0,
        seed: int | None = None,
    ) -> None:  # fmt: skip
        if transport is None:
            names: tuple[str, ...] = TRANSPORTS
        else:
            names = (transport,) if isinstance(transport, str) else tuple(transport)
        unknown = [t for t in names if t not in TRANSPORTS]
        if unknown or not names:
            raise ValueError(f"transports are {', '.join(TRANSPORTS)}; not {unknown or names}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the subscribe URL must be http(s)://HOST[:PORT]/PATH, not {url!r}")
        self.url = url
        base, mark, query = url.partition("?")
        self.ws_url = ws_url or "ws" + base.removeprefix("http") + "/ws" + mark + query
        self.transports = names
        self.token = token
        self.get_token = get_token
        self.headers = dict(headers or {})
        self.on_status = on_status
        self.min_delay, self.max_delay = min_delay, max_delay
        self.connect_timeout, self.ping_leeway = connect_timeout, ping_leeway
        self.longpoll_timeout, self.poll_interval = longpoll_timeout, poll_interval
        self.rng = random.Random(seed)
        self._subscriptions: set[ChannelFeed] = set()

    def subscribe(self, *channels: str, cursor: str | None = None) -> ChannelFeed:
        """A subscription to ``channels`` (the cursor's channels when none is
        named), resuming from ``cursor`` for the channels it has."""
        positions = parse_cursor(cursor or "", 1 << 16) if cursor else {}
        names = list(dict.fromkeys(check_channel(c) for c in channels)) or list(positions)
        if not names:
            raise ValueError("name a channel, or give a cursor")
        sub = ChannelFeed(self, names, {c: p for c, p in positions.items() if c in names})
        self._subscriptions.add(sub)
        return sub

    async def presence(self, channel: str, after: str | None = None, limit: int | None = None
                       ) -> PresencePage:  # fmt: skip
        """One page of ``channel``'s presence, read now: over the WebSocket of
        a subscription when one is open (the one subscribed to ``channel``
        first), else by an HTTP GET of the subscribe URL with this client's
        token and headers. ``after``: the ``next`` of the previous page (or
        of a :class:`PresenceSnapshot`); ``limit``: 1..1000 members (the
        server's default 100). Refusals raise :class:`APIError` subclasses:
        ``presence_disabled``, ``invalid_cursor``, ``invalid_limit``
        (:class:`RequestError`), ``forbidden`` and token codes
        (:class:`AuthError`); an unreachable server :class:`ConnectError`.

        ::

            page = await client.presence("room:1")
            while page.next is not None:
                page = await client.presence("room:1", after=page.next)
        """
        check_channel(channel)
        return await read_presence(self, channel, after, limit, self._open_sockets(channel))

    async def publish(self, channel: str, data: Mapping[str, Any]) -> Published:
        """Publish ``data`` (a dict) to ``channel`` as this client, with its
        token: a :class:`Published` (``channel``, ``epoch``, ``offset``;
        ``ts`` None). Over the WebSocket of a subscription when one is open
        (one subscribed to ``channel`` first), else by an HTTP ``POST`` to
        the subscribe URL with this client's token and headers. The server
        decides who may (the channel's ``publish`` option) and stamps a
        ``sender`` (``{"user", "client"}``) into the message.

        Raises ``ValueError`` before sending for a bad channel name or a
        ``data`` that is not a JSON object without reserved keys, and
        :class:`PublishError` (``code``, ``message``, ``retry``,
        ``retry_after``, ``status``) when it failed; ``connection_lost`` and
        ``network_error`` mean it may or may not have been published.

        ::

            try:
                await client.publish("room:1", {"text": "hi"})
            except PublishError as exc:
                if exc.retry:
                    ...  # after exc.retry_after (or a backoff) seconds
        """
        return await publish(self, channel, data, self._open_sockets(channel))

    def _open_sockets(self, channel: str) -> list[WebSocketConnection]:
        """The WebSockets of the subscriptions, those subscribed to ``channel`` first."""
        feeds = sorted(self._subscriptions, key=lambda f: channel not in f.tracker.channels)
        return [f._conn for f in feeds if isinstance(f._conn, WebSocketConnection)]

    async def aclose(self) -> None:
        """Close every subscription."""
        for sub in list(self._subscriptions):
            await sub.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def renew_token(self) -> None:
        """Ask ``get_token`` for a fresh token."""
        assert self.get_token is not None
        value = self.get_token()
        if inspect.isawaitable(value):
            value = await value
        if value is not None and not isinstance(value, str):
            raise TypeError(f"get_token gave {type(value).__name__}, not a string or None")
        self.token = value

    def backoff(self, failures: int) -> float:
        """Full jitter, as torchannel.js: uniform in [min, min(max, min + min * 2**n)]."""
        low = self.min_delay
        return self.rng.uniform(low, min(self.max_delay, low + low * 2 ** min(failures, 30)))

    def status(self, status: Status) -> None:
        if self.on_status is not None:
            self.on_status(status)


class ChannelFeed:
    """What :meth:`Client.subscribe` gives: an async iterator of
    :class:`Message`, :class:`Reset` and :class:`ChannelError` events;
    ``cursor`` is where it stands now. The iteration raises
    :class:`SubscribeError` when the server refuses the request itself, and
    :class:`Disconnected` when it ended the connection and said not to come
    back. (Not :class:`torchannels.Subscription`, which is what a hub's
    ``can_access`` is asked about.)"""

    def __init__(self, client: Client, channels: list[str], positions: dict[str, Position]) -> None:
        self.client = client
        self.tracker = Tracker(channels, positions, can_renew=client.get_token is not None)
        self.transport: str | None = None  #: the transport in use, once one connected
        self._conn: Connection | None = None
        self._closing = False
        self._sleep: asyncio.Future[None] | None = None
        self._gen = self._run()
        self._running = False

    @property
    def cursor(self) -> str:
        """The positions of every channel, to resume from (``subscribe(cursor=...)``)."""
        return format_cursor(self.tracker.positions)

    @property
    def positions(self) -> dict[str, Position]:
        """Each channel's position (``epoch``, ``offset``), for the channels that have one."""
        return dict(self.tracker.positions)

    @property
    def client_id(self) -> str | None:
        """The id the server gave this subscription's connection last (the
        ``client`` of its ``connected`` frame or poll answer), None before
        the first. Opaque: polls send it back so the server counts them as
        one client; a new WebSocket or stream connection gets a new one."""
        return self.tracker.client

    @property
    def channels(self) -> list[str]:
        """The channels still asked for (refused ones are dropped)."""
        return list(self.tracker.channels)

    def __aiter__(self) -> ChannelFeed:
        return self

    async def __anext__(self) -> Event:
        if self._closing:
            raise StopAsyncIteration
        self._running = True
        try:
            return await self._gen.__anext__()
        finally:
            self._running = False

    async def __aenter__(self) -> ChannelFeed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: the connection is closed when this returns (or, if another
        task is iterating, when that task's ``async for`` ends, which this
        causes at once)."""
        self._closing = True
        self.client._subscriptions.discard(self)
        if self._sleep is not None and not self._sleep.done():
            self._sleep.set_result(None)
        if self._conn is not None:
            self._conn.abort()
        if not self._running:
            await self._gen.aclose()

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, cut short by :meth:`aclose` (no task involved)."""
        loop = asyncio.get_running_loop()
        self._sleep = loop.create_future()
        handle = loop.call_later(delay, _wake, self._sleep)
        try:
            await self._sleep
        finally:
            handle.cancel()

    async def _open(self, transport: str) -> Connection:
        c, s = self.client, self.tracker
        headers = dict(c.headers)
        if c.token:
            headers["Authorization"] = f"Bearer {c.token}"
        query: dict[str, Any] = {"channel": s.channels}
        if s.positions:
            query["cursor"] = format_cursor(s.positions)
        if transport == "websocket":
            url = c.ws_url + ("&" if "?" in c.ws_url else "?") + urlencode(query, doseq=True)
            return await WebSocketConnection.open(url, headers, c.connect_timeout, s.channels)
        query = {"transport": transport, **query}
        if transport == "longpoll":
            query["timeout"] = c.longpoll_timeout
        if transport in ("poll", "longpoll") and s.client:
            query["client"] = s.client  # stay one client across requests
        url = c.url + ("&" if "?" in c.url else "?") + urlencode(query, doseq=True)
        return HTTPConnection(transport, url, headers, connect_timeout=c.connect_timeout)

    async def _run(self) -> AsyncGenerator[Event, None]:
        c, t = self.client, self.tracker
        index, worked, failures = 0, False, 0
        renew = c.token is None and c.get_token is not None
        while t.channels and not self._closing:
            transport = c.transports[index]
            if renew:
                try:
                    await c.renew_token()
                    renew = False
                except Exception as exc:  # the app's function: report, ask again later
                    failures += 1
                    await self._retry(transport, f"get_token failed: {exc!r}", c.backoff(failures))
                    continue
            t.start()
            detail = ""
            try:
                self._conn = await self._open(transport)
                timeout = c.connect_timeout  # for the first byte; then the pings'
                if transport == "longpoll":
                    timeout += c.longpoll_timeout
                while t.end is None and t.channels and not self._closing:
                    try:
                        frames = await self._conn.read(timeout)
                    except Ended:
                        t.answered()  # a poll answer (streams end with reconnect)
                        frames = []
                    if isinstance(self._conn, HTTPConnection):
                        t.identified(self._conn.client)
                    t.connected = t.connected or transport not in STREAMING  # answered
                    self._announce(transport)
                    for frame in frames:
                        events = t.apply(frame)
                        self._announce(transport)  # once the `connected` frame came
                        for event in events:
                            t.handed_out(event)  # the cursor covers what was yielded
                            yield event
                    if t.ping is not None:
                        timeout = t.ping + c.ping_leeway
            except (Dropped, MalformedFrame) as exc:
                t.end = t.end or getattr(exc, "code", "") or "dropped"
                detail = str(exc)
            except Refused as exc:
                worked = worked or t.connected
                fallback = exc.code == "unknown_transport" or transport == "websocket"
                if fallback and not worked and index + 1 < len(c.transports):
                    index += 1
                    continue
                raise SubscribeError(exc.code, exc.message) from exc
            finally:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await conn.close()
            if self._closing:
                return
            if t.disconnect is not None and not t.disconnect.reconnect:
                raise self._disconnected(transport, t.disconnect)
            if not t.channels:
                return
            worked = worked or t.connected
            delay, index, failures, renew = next_attempt(c, t, transport, index, worked, failures)
            if t.end != "answered":
                await self._retry(transport, detail or t.end or "", delay)
            elif delay > 0:
                await self._pause(delay)

    def _disconnected(self, transport: str, end: Disconnect) -> Disconnected:
        """The server said not to come back: this subscription is over."""
        self._closing = True
        self.client._subscriptions.discard(self)
        self.transport = None
        self.client.status(Status("disconnected", transport, end.reason))
        return Disconnected(end.reason, end.reconnect)

    def _announce(self, transport: str) -> None:
        """Tell ``on_status`` once that this connection delivers."""
        if self.tracker.connected and self.transport != transport:
            self.transport = transport
            self.client.status(Status("connected", transport))

    async def _retry(self, transport: str, reason: str, delay: float) -> None:
        self.client.status(Status("reconnecting", transport, reason, delay))
        self.transport = None
        if delay > 0:
            await self._pause(delay)

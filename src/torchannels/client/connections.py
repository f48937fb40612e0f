"""One connection to a hub on one transport, read frame batch by frame batch.

Each kind hands out the frames it receives through :meth:`read` and ends in
one of three ways: :class:`Ended` (the server finished on purpose, a poll
was answered), :class:`Dropped` (a network failure, a silence longer than
the read timeout, a 5xx: come back after a pause) or :class:`Refused` (a 4xx
or a WebSocket close code retrying cannot help with). :meth:`close` drops
the connection at once and waits until Tornado's own tasks for it are done,
so cancelling a subscription leaves nothing running.

Timeouts use ``asyncio.timeout``, never ``asyncio.wait_for``: on Python
3.11, ``wait_for`` swallows a cancellation that comes in the same loop turn
as the awaited result (CPython gh-86296), which would leave a cancelled
subscription running.

HTTP goes through :class:`torchannels.client.httpget.Get` (Tornado's own
HTTP/1.1 connection on a stream the client can drop), WebSocket through
Tornado's ``websocket_connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import tornado.httpclient
import tornado.iostream
import tornado.websocket

from .decode import DecodeError, NDJSONDecoder, SSEDecoder
from .disconnect import closed_frame
from .errors import plain_reason
from .httpget import CLOSE_WAIT, Get

#: WebSocket close codes after which asking again cannot help.
FATAL_CLOSES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})


class Ended(Exception):
    """The connection ended cleanly (after ``reconnect``, or a poll answer)."""


class Dropped(Exception):
    """The connection failed: come back after a pause (``code``: an HTTP
    status, a close code or an API error code, when there is one)."""

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class NotSent(Dropped):
    """A command was not sent: the socket had ended (or was ending) first."""


class Refused(Exception):
    """The server refused the request (4xx) or closed with a code that says
    not to come back as is; ``code`` is the JSON ``error``, else the status."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def error_of(status: int, body: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(body)
        return str(doc["error"]), str(doc.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return str(status), body[:200].decode(errors="replace")


def _failed(status: int, body: bytes) -> Exception:
    code, message = error_of(status, body)
    if status >= 500 or status in (408, 429) or status == 599:
        return Dropped(f"HTTP {status} {code}: {message}", code)
    return Refused(code, message, status)


class HTTPConnection:
    """A poll, long-poll, stream or sse request."""

    def __init__(
        self, transport: str, url: str, headers: Mapping[str, str], *, connect_timeout: float
    ) -> None:  # fmt: skip
        self.transport = transport
        self.streaming = transport in ("stream", "sse")
        self.status = 0
        self._decoder: SSEDecoder | NDJSONDecoder | None = None
        if self.streaming:
            self._decoder = SSEDecoder() if transport == "sse" else NDJSONDecoder()
        self._frames: list[dict[str, Any]] = []
        self.client: str | None = None  #: a poll answer's ``client`` id
        self._body = b""
        self._failure: Exception | None = None
        self._answered = False
        self._end: tuple[str | None] | None = None  # (error,) once the request ended
        self._waiter: asyncio.Future[None] | None = None
        self._get = Get(url, headers, connect_timeout, self._on_head, self._on_chunk,
                        self._on_end)  # fmt: skip

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_head(self, status: int) -> None:
        self.status = status

    def _on_end(self, error: str | None) -> None:
        self._end = (error,)
        self._wake()

    def _on_chunk(self, chunk: bytes) -> None:
        if self._decoder is None or self.status != 200:
            self._body += chunk
            return
        try:
            self._frames.extend(self._decoder.feed(chunk))
        except DecodeError as exc:
            self._failure = Dropped(f"undecodable {self.transport}: {exc}")
            self._get.abort()
        self._wake()

    async def read(self, timeout: float) -> list[dict[str, Any]]:
        """The next frames; waits at most ``timeout`` seconds for a byte."""
        while not self._frames:
            if self._failure is not None:
                raise self._failure
            if self._end is not None:
                self._finish(self._end[0])  # raises, or gives a poll answer's frames
                continue
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):  # not wait_for: see the docstring
                    await self._waiter
            except TimeoutError:
                raise Dropped(f"nothing received for {timeout:.1f} s") from None
        frames, self._frames = self._frames, []
        return frames

    def _finish(self, error: str | None) -> None:
        """The request is over: its frames (poll), or why it ended."""
        if error is not None and not (self.status and self.status != 200):
            raise Dropped(error)
        if self.status != 200:
            raise _failed(self.status, self._body)
        if self.streaming:
            raise Dropped(f"the {self.transport} response ended without a reconnect frame")
        if self._answered:
            raise Ended()
        try:
            doc = json.loads(self._body)
            frames = doc["frames"]
            if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
                raise TypeError("frames")
        except (ValueError, KeyError, TypeError) as exc:
            raise Dropped(f"a bad poll answer: {self._body[:200]!r}") from exc
        self._frames, self._answered = list(frames), True
        self.client = doc.get("client") if isinstance(doc.get("client"), str) else None

    def abort(self) -> None:
        self._get.abort()

    async def close(self) -> None:
        await self._get.close(CLOSE_WAIT)


class Asked(NamedTuple):
    """A command waiting for its answer: about ``channel``; ``ident`` the
    ``id`` its answer echoes (a publish), None for one answered in order
    (a presence read)."""

    channel: str
    ident: int | None
    answer: asyncio.Future[dict[str, Any]]


def _close_late(connecting: asyncio.Future[tornado.websocket.WebSocketClientConnection]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()


class WebSocketConnection:
    """A WebSocket; subscribes through its connect URL (``channels``).

    Besides the frames :meth:`read` hands out, it answers commands sent
    with :meth:`ask` (a presence read, a publish). One task reads the socket
    at a time, whichever is waiting (the subscription's iteration, or one
    asking), and sorts what it reads: a command's answer to its asker, the
    rest for :meth:`read`. So a command sent from inside an ``async for``
    body, while nobody iterates, is answered too.
    """

    transport = "websocket"

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection,
                 channels: Sequence[str] = ()) -> None:  # fmt: skip
        self._conn = conn
        self._closed = False  # read_message() said so: nothing more will come
        self._frames: list[dict[str, Any]] = []  # read, not yet handed out
        self._failure: Dropped | Refused | None = None  # how the socket ended
        self._reading = asyncio.Lock()
        #: the commands sent and not answered, oldest first: the server
        #: answers commands one at a time, in order; a publish's answer also
        #: echoes its ``id``
        self._asked: deque[Asked] = deque()
        self._ids = itertools.count(1)
        #: channels of the connect URL not answered yet: the first `subscribed`
        #: or `error` of each is the subscription's, never a command's answer
        #: (the server answers the connect URL before it reads a command)
        self._unanswered = set(channels)
        self._ending = False  # a `reconnect` or `disconnect` came: nothing more is answered
        self._told = False  # a `disconnect` frame came (a close 4003/4004 then adds none)

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str], connect_timeout: float,
                   channels: Sequence[str] = ()) -> WebSocketConnection:  # fmt: skip
        request = tornado.httpclient.HTTPRequest(
            url, headers=dict(headers), connect_timeout=connect_timeout
        )
        connecting = asyncio.ensure_future(tornado.websocket.websocket_connect(request))
        try:
            async with asyncio.timeout(connect_timeout + 1):
                conn = await asyncio.shield(connecting)
        except BaseException as exc:
            # Tornado's connect may go on: close what it gives, whenever it does.
            connecting.add_done_callback(_close_late)
            if isinstance(exc, tornado.httpclient.HTTPClientError):
                body = exc.response.body if exc.response is not None else b""
                raise _failed(exc.code, body or b"") from exc
            if isinstance(exc, OSError | TimeoutError | tornado.iostream.StreamClosedError
                          | tornado.websocket.WebSocketError):  # fmt: skip
                raise Dropped(plain_reason(exc)) from exc
            raise
        return cls(conn, channels)

    @property
    def usable(self) -> bool:
        """Not known to be closed: commands may be sent."""
        return self._failure is None and not self._ending and self._conn.protocol is not None

    async def read(self, timeout: float) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(timeout):
                await self._receive(lambda: bool(self._frames) or self._failure is not None)
        except TimeoutError:
            raise Dropped(f"nothing received for {timeout:.1f} s") from None
        if not self._frames:
            assert self._failure is not None
            raise self._failure
        frames, self._frames = self._frames, []
        return frames

    async def ask(self, command: dict[str, Any], channel: str, timeout: float, *,
                  by_id: bool = False) -> dict[str, Any]:  # fmt: skip
        """Send ``command`` about ``channel`` and return its answer: the
        server's next ``presence_page`` or ``error`` frame for ``channel``;
        with ``by_id``, the command gets an ``id`` and its answer is the
        ``published`` or ``publish_error`` frame that echoes it. Raises
        :class:`NotSent` if the socket had ended before it was sent,
        :class:`Dropped` (or :class:`Refused`) if it ends before the answer,
        ``TimeoutError`` after ``timeout`` seconds."""
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        asked = Asked(channel, next(self._ids) if by_id else None, answer)
        if asked.ident is not None:
            command = {**command, "id": asked.ident}
        self._asked.append(asked)
        try:
            if self._failure is not None:
                raise NotSent(f"not sent: {self._failure}")
            if self._ending:
                raise NotSent("not sent: the server asked to reconnect")
            try:
                await self._conn.write_message(json.dumps(command))
            except tornado.websocket.WebSocketClosedError as exc:
                raise NotSent("not sent: the connection closed") from exc
            async with asyncio.timeout(timeout):
                await self._receive(lambda: answer.done() or self._failure is not None)
            if not answer.done():
                assert self._failure is not None
                raise self._failure
            return answer.result()
        finally:
            answer.cancel()  # a late answer is then dropped, not handed to read()
            if asked.ident is not None and asked in self._asked:
                self._asked.remove(asked)  # its late answer matches nothing: dropped

    async def _receive(self, ready: Callable[[], bool]) -> None:
        """Read the socket until ``ready()``, or wait while another task does."""
        while not ready():
            async with self._reading:
                if not ready():
                    self._sort(await self._conn.read_message())

    def _sort(self, text: str | bytes | None) -> None:
        if text is None:
            self._closed = True
            code = self._conn.close_code
            told = None if self._told else closed_frame(code, self._conn.close_reason)
            if told is not None:  # closed 4003/4004 without the frame: as if it came
                self._frames.append(told)
            reason = f"closed {code or 1006} {self._conn.close_reason or ''}".strip()
            if code in FATAL_CLOSES:
                self._failure = Refused(str(code), reason)
            else:
                self._failure = Dropped(reason, str(code or 1006))
            return
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            self._failure = Dropped(f"undecodable websocket frame {text!r:.200}")
            return
        kind, channel = frame.get("type"), frame.get("channel")
        if kind in ("reconnect", "disconnect"):  # e.g. the broker failed: ask elsewhere
            self._ending = True
            self._told = self._told or kind == "disconnect"
            for waiting in self._asked:
                if not waiting.answer.done():
                    waiting.answer.set_exception(Dropped(f"{kind} {frame.get('reason')}"))
            self._asked.clear()
        elif kind in ("subscribed", "error") and channel in self._unanswered:
            self._unanswered.discard(channel)  # the subscription's answer
        elif kind in ("published", "publish_error"):
            self._settle(self._by_id(frame.get("id")), frame)
            return  # even when its asker gave up: it is nothing for read()
        elif (asked := self._in_order(kind, channel, frame.get("code"))) is not None:
            self._settle(asked, frame)
            return
        self._frames.append(frame)

    def _by_id(self, ident: object) -> Asked | None:
        if isinstance(ident, bool) or not isinstance(ident, int):
            return None
        return next((a for a in self._asked if a.ident == ident), None)

    def _in_order(self, kind: object, channel: object, code: object) -> Asked | None:
        """The command an ``error`` or ``presence_page`` frame answers, if any:
        the oldest presence read when it is about its channel; the oldest
        command of all for a ``bad_message`` without a channel (a server that
        knows no such command)."""
        if kind not in ("presence_page", "error") or not self._asked:
            return None
        if channel is None and code == "bad_message":
            return self._asked[0]
        read = next((a for a in self._asked if a.ident is None), None)
        return read if read is not None and read.channel == channel else None

    def _settle(self, asked: Asked | None, frame: dict[str, Any]) -> None:
        if asked is not None:
            self._asked.remove(asked)
            if not asked.answer.done():  # else its asker gave up: drop it
                asked.answer.set_result(frame)

    def abort(self) -> None:
        stream = self._conn.stream
        if stream is not None:
            stream.close()

    async def close(self) -> None:
        """Close (1000), and give the server a moment to answer before the
        TCP connection is dropped."""
        if not self._closed:
            self._conn.close(1000)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    while await self._conn.read_message() is not None:
                        pass
        self.abort()


Connection = HTTPConnection | WebSocketConnection

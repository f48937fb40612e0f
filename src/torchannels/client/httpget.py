"""One HTTP/1.1 GET whose body is handed over as it arrives, and which can be
dropped at any moment: Tornado's ``HTTP1Connection`` on a stream of our own.
The same carries the client's one-off requests (:func:`fetch`: a presence
read, a publish, which is the one POST).

Why not ``AsyncHTTPClient`` with a ``streaming_callback``: it cannot abort a
request in flight, and when the server resets the connection in the middle
of a body (a restart, a proxy), its simple client logs "Uncaught exception"
and never completes the fetch (Tornado 6.5: ``on_connection_close`` raises
the stream's error instead of failing the request). Here the connection is
ours: :meth:`Get.abort` closes it, and every ending is reported through
:meth:`Get.on_end`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import tornado.iostream
import tornado.tcpclient
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters

from .errors import ConnectError, plain_reason

#: Bytes of response headers accepted.
MAX_HEADER = 65536
#: Seconds a connection dropped on purpose is given to wind down (:meth:`Get.close`,
#: a WebSocket's close).
CLOSE_WAIT = 2.0


class Get(httputil.HTTPMessageDelegate):
    """``GET url`` (or ``method`` with ``body``): ``on_head(status)``, then
    ``on_chunk(bytes)`` per piece of body, then ``on_end(error)`` once
    (None: the body ended cleanly). The answer's headers are
    ``response_headers`` from ``on_head`` on."""

    def __init__(
        self, url: str, headers: Mapping[str, str], connect_timeout: float,
        on_head: Callable[[int], None], on_chunk: Callable[[bytes], None],
        on_end: Callable[[str | None], None], *, method: str = "GET", body: bytes | None = None,
    ) -> None:  # fmt: skip
        self.url = urlsplit(url)
        self.headers = dict(headers)
        self.connect_timeout = connect_timeout
        self.method, self.body = method, body
        self.response_headers = httputil.HTTPHeaders()
        self._on_head, self._on_chunk, self._on_end = on_head, on_chunk, on_end
        self._stream: tornado.iostream.IOStream | None = None
        self._ended = False
        self.task = asyncio.ensure_future(self._run())

    def _end(self, error: str | None) -> None:
        if not self._ended:
            self._ended = True
            self._on_end(error)

    async def _run(self) -> None:
        parts = self.url
        secure = parts.scheme in ("https", "wss")
        try:
            self._stream = await tornado.tcpclient.TCPClient().connect(
                parts.hostname or "127.0.0.1", parts.port or (443 if secure else 80),
                ssl_options=ssl.create_default_context() if secure else None,
                timeout=self.connect_timeout,
            )  # fmt: skip
            self._stream.set_nodelay(True)
            connection = HTTP1Connection(self._stream, True, HTTP1ConnectionParameters(
                no_keep_alive=True, max_header_size=MAX_HEADER, max_body_size=1 << 62,
            ))  # fmt: skip
            head = httputil.HTTPHeaders({"Host": parts.netloc, "Connection": "close"})
            for name, value in self.headers.items():
                head[name] = value
            if self.body is not None:
                head["Content-Length"] = str(len(self.body))
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            start = httputil.RequestStartLine(self.method, target, "HTTP/1.1")
            connection.write_headers(start, head, self.body)
            connection.finish()
            await connection.read_response(self)
        except Exception as exc:  # OSError, TimeoutError, StreamClosedError, HTTPInputError...
            self._end(plain_reason(exc))  # whatever it was, this request failed: say so, once
        finally:
            if self._stream is not None:
                self._stream.close()
            self._end("the connection closed")

    # -- HTTPMessageDelegate ----------------------------------------------------------

    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:  # fmt: skip
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.response_headers = headers
        self._on_head(start_line.code)

    def data_received(self, chunk: bytes) -> None:
        self._on_chunk(chunk)

    def finish(self) -> None:
        self._end(None)

    def on_connection_close(self) -> None:
        self._end("the connection closed")

    # -- control ------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection now (or cancel the connect)."""
        self._end("aborted")
        if self._stream is not None:
            self._stream.close()
        else:
            self.task.cancel()

    async def close(self, wait: float) -> None:
        """:meth:`abort`, and wait up to ``wait`` seconds for the task to end."""
        self.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.wait([self.task])  # whatever the task's outcome
        if not self.task.done():
            self.task.cancel()


async def fetch(
    url: str, headers: Mapping[str, str], timeout: float, *, method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, httputil.HTTPHeaders, bytes]:  # fmt: skip
    """One request: its status, headers and body, at most ``timeout`` seconds
    in all (:class:`ConnectError` otherwise, with the reason in plain words);
    nothing is left running when it returns."""
    ended: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    status, answer = [0], bytearray()

    def end(error: str | None) -> None:
        if not ended.done():
            ended.set_result(error)

    def head(code: int) -> None:
        status[0] = code

    request = Get(url, headers, timeout, head, answer.extend, end, method=method, body=body)
    try:
        async with asyncio.timeout(timeout):
            error = await ended
    except TimeoutError:
        error = "timed out"
    finally:
        await request.close(CLOSE_WAIT)
    if error is not None:
        raise ConnectError(f"{url}: {error}")
    return status[0], request.response_headers, bytes(answer)

"""A minimal HTTP/1.1 GET on its own connection, its body read as it arrives.

The checking subscriber needs what a general HTTP client hides: dropping
the TCP connection whenever it wants, a read timeout per chunk rather than
per request (a stream may last minutes, but a silent one is dead), and the
body bytes as they come. One request per connection (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Mapping
from urllib.parse import urlsplit


class HTTPFailure(Exception):
    """The connection failed, timed out, or broke the HTTP framing."""


class Response:
    """The status, lower-cased headers and the body of one GET."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}

    async def _head(self, timeout: float) -> None:
        line = await self._line(timeout)
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise HTTPFailure(f"bad status line {line!r}")
        self.status = int(parts[1])
        while line := await self._line(timeout):
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    async def _line(self, timeout: float) -> str:
        raw = await self._read(self._reader.readline(), timeout)
        if not raw.endswith(b"\n"):
            raise HTTPFailure("connection closed in the headers")
        return raw.decode("latin-1").rstrip("\r\n")

    async def _read(self, what: Awaitable[bytes], timeout: float) -> bytes:
        try:
            data = await asyncio.wait_for(what, timeout)
        except TimeoutError as exc:
            raise HTTPFailure(f"nothing received for {timeout} s") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise HTTPFailure(repr(exc)) from exc
        return data

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        """The body as it arrives; :class:`HTTPFailure` unless it ends cleanly
        (last chunk, full ``Content-Length``, or EOF when neither applies)."""
        reader = self._reader
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await self._read(reader.readline(), timeout)
                try:
                    size = int(size_line.split(b";")[0], 16)
                except ValueError as exc:
                    raise HTTPFailure(f"bad chunk size {size_line!r}") from exc
                if size == 0:
                    await self._read(reader.readline(), timeout)
                    return
                chunk = await self._read(reader.readexactly(size + 2), timeout)
                yield chunk[:-2]
        elif "content-length" in self.headers:
            left = int(self.headers["content-length"])
            while left > 0:
                data = await self._read(reader.read(min(left, 65536)), timeout)
                if not data:
                    raise HTTPFailure(f"connection closed {left} bytes before the end")
                left -= len(data)
                yield data
        else:
            while data := await self._read(reader.read(65536), timeout):
                yield data

    async def body(self, timeout: float) -> bytes:
        return b"".join([chunk async for chunk in self.chunks(timeout)])

    def close(self) -> None:
        """Drop the connection (no lingering FIN handshake to wait for)."""
        self._writer.transport.abort()


@contextlib.asynccontextmanager
async def get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> AsyncIterator[Response]:
    """``async with get(url) as response``: status and headers read, body not yet.
    ``timeout`` bounds the connect and every read."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if secure else None, limit=1 << 22
            ),
            timeout,
        )
    except (OSError, TimeoutError) as exc:
        raise HTTPFailure(f"cannot connect to {host}:{port}: {exc!r}") from exc
    response = Response(reader, writer)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await response._head(timeout)
        yield response
    finally:
        response.close()

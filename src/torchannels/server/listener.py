"""The server's HTTP listener: timeouts, a connection cap, file descriptors.

What keeps one process serving when clients misbehave at the connection
level (slowloris: many connections that never finish their headers):

- Tornado's header and body timeouts (``--header-timeout``, ``--body-timeout``);
- a cap on open connections (``--max-connections``): past it, a new
  connection gets a short fixed ``503`` and is closed, before the process
  runs out of file descriptors;
- a cap on open connections from one client address
  (``--max-connections-per-ip``), so one address cannot take every slot:
  counted per TCP peer at accept, and, for a peer that is a trusted
  proxy, per forwarded client once a request's headers are read
  (:func:`admit_request`);
- the soft open-file limit raised to the hard one at start;
- repeated ``accept()`` errors (``EMFILE``: too many open files) logged at
  most once per interval, with a count, instead of once per loop turn;
- headers over Tornado's ``max_header_size`` (64 KiB) answered with ``431``,
  or ``414`` when the request line alone is that long, instead of a silent
  close.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest
from tornado.iostream import IOStream, UnsatisfiableReadError

from ..forwarded import TrustedProxies, forwarded_of
from ..tornado_compat import adopt_stream, header_read_buffer, stream_socket
from .address_limit import PerAddressLimit, peer_address

log = logging.getLogger("torchannels.server")

#: Tornado's own default, named here because the 431 answer depends on it.
MAX_HEADER_SIZE = 65536
#: Bytes of a refused request read and dropped before closing, so the close
#: is a FIN after the answer rather than a reset that can destroy it.
_DRAIN_BYTES = 1 << 20


def _fixed(status: str, code: str) -> bytes:
    body = f'{{"error": "{code}"}}\n'.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status.startswith("503"):
        head += "Retry-After: 1\r\n"
    return head.encode() + b"\r\n" + body


BUSY = _fixed("503 Service Unavailable", "too_many_connections")
BUSY_PER_IP = _fixed("503 Service Unavailable", "too_many_connections_per_ip")
HEADERS_TOO_LARGE = _fixed("431 Request Header Fields Too Large", "headers_too_large")
URI_TOO_LONG = _fixed("414 URI Too Long", "uri_too_long")


def answer_and_close(sock: socket.socket, response: bytes) -> None:
    """Send a short fixed ``response`` on a non-blocking socket (it fits in
    the send buffer), drop what the client already sent, and shut down
    writing; the caller then closes the socket."""
    try:
        sock.send(response)
        dropped = 0
        while dropped < _DRAIN_BYTES:
            chunk = sock.recv(65536)
            if not chunk:
                break
            dropped += len(chunk)
    except OSError:  # BlockingIOError: nothing more to drop; or the peer is gone
        pass
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class _ServerStream(IOStream):
    """A connection's stream: tells the server when its descriptor closes,
    and answers headers over the limit before Tornado closes it.

    Tornado closes the stream itself when headers exceed ``max_header_size``
    (an :class:`UnsatisfiableReadError` from ``read_until_regex``), leaving
    no way to answer; this is the one place that sees it. The only other
    bounded read (a chunk-size line) uses ``read_until``, not a regex.
    """

    server: HubHTTPServer
    #: The client address this connection counts against, if any.
    client: str | None = None

    def close(self, exc_info: Any = False) -> None:
        if not self.closed() and isinstance(exc_info, UnsatisfiableReadError):
            buffered = header_read_buffer(self)
            if buffered is not None:
                pending = buffered.lstrip(b"\r\n")
                answer = HEADERS_TOO_LARGE if b"\n" in pending else URI_TOO_LONG
                answer_and_close(stream_socket(self), answer)
        super().close(exc_info)

    def close_fd(self) -> None:
        self.server.open_connections -= 1
        self.server.limits.release(self)
        super().close_fd()

    def on_detach(self) -> _Counted:
        """The socket leaves this stream and lives on without it (a live
        response handed over, transports/detached.py): what to call once it
        closes, so it still counts until then."""
        counted = _Counted(self.server, self.client)
        self.client = None
        return counted


class _Counted:
    """A connection that counts against the server's caps after its stream
    let its socket go; called once, when that socket closes."""

    __slots__ = ("client", "server")

    def __init__(self, server: HubHTTPServer, client: str | None) -> None:
        self.server = server
        #: The address it counts against, if any (as a stream's ``client``).
        self.client = client

    def __call__(self) -> None:
        self.server.open_connections -= 1
        self.server.limits.release(self)


def admit_request(request: HTTPServerRequest) -> bool:
    """Count a request that came through a trusted proxy against its
    forwarded client (call after :func:`~torchannels.forwarded.apply_forwarded`);
    False if that client is over its limit, and the request is to be
    refused. Connections from any other peer were counted at accept."""
    view = forwarded_of(request)
    stream = getattr(request.connection, "stream", None)
    if view is None or not isinstance(stream, _ServerStream):
        return True
    limits = stream.server.limits
    if stream.client == view.remote_ip:
        return True
    limits.release(stream)  # the previous request's client, on a kept-alive connection
    if not limits.allows(view.remote_ip):
        limits.refused(view.remote_ip)
        return False
    limits.take(stream, view.remote_ip)
    return True


class HubHTTPServer(HTTPServer):
    """Tornado's HTTP server with a cap on open connections (0: none).

    Every connection is counted until its descriptor closes, WebSockets
    and streams included; past ``max_connections`` a new one is answered
    ``503`` (:data:`BUSY`) and closed at once, and past the per-address
    cap of ``limits`` one from that address gets :data:`BUSY_PER_IP`.
    """

    max_connections = 0
    open_connections = 0
    refused_connections = 0

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        #: Connections per client address (``--max-connections-per-ip``).
        self.limits = PerAddressLimit(0, TrustedProxies(()))

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        peer = peer_address(address)
        limits = self.limits
        refusal = None
        if peer is not None and not limits.proxies.trusts(peer) and not limits.allows(peer):
            limits.refused(peer)
            refusal = BUSY_PER_IP
        elif self.max_connections and self.open_connections >= self.max_connections:
            self.refused_connections += 1
            refusal = BUSY
        if refusal is not None:
            answer_and_close(stream_socket(stream), refusal)
            stream.close()
            return
        ours = adopt_stream(stream, _ServerStream)  # not TLS: serve never wraps sockets
        if ours is not None:
            ours.server = self
            self.open_connections += 1
            if peer is not None and not limits.proxies.trusts(peer):
                limits.take(ours, peer)
        super().handle_stream(stream, address)


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the
    soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # macOS caps below an "unlimited" hard limit
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
            return soft
        log.info("open-file limit raised from %d to %d", soft, target)
        return target
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    """The connection cap: ``configured``, or with 0 nine tenths of the
    open-file limit, keeping the rest for files, Redis, the log and the
    refusals themselves.

    >>> connection_cap(0, 1024), connection_cap(500, 1024)
    (921, 500)
    """
    return configured or max(1, open_files * 9 // 10)


#: errno values of accept() failures that repeat on every loop turn.
ACCEPT_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class AcceptErrorFilter(logging.Filter):
    """Let through at most one record per ``interval`` seconds whose
    exception is a resource error of ``accept()`` (too many open files);
    the next one let through says how many were dropped.

    Installed on the ``asyncio`` logger, which reports the exception that
    Tornado's accept handler raises on each turn of the event loop.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._last = -float("inf")
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, OSError) or exc.errno not in ACCEPT_ERRORS:
            return True
        now = self.clock()
        if now - self._last < self.interval:
            self.dropped += 1
            return False
        self._last = now
        if self.dropped:
            record.msg = f"{record.getMessage()} ({self.dropped} more like it not logged)"
            record.args = None
            self.dropped = 0
        return True


def install_accept_error_filter(interval: float = 10.0) -> None:
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorFilter) for f in logger.filters):
        logger.addFilter(AcceptErrorFilter(interval))

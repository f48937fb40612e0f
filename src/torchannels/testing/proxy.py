"""A fault-injecting TCP proxy: put it between clients and a server, then cut,
delay or stall the connections that go through it.

It forwards bytes both ways unchanged (it knows nothing of HTTP or
WebSocket), so any client and any deployment can be tested through it.
Every fault is decided in code by the test that owns the proxy, and random
cuts come from a seeded RNG, so a run can be repeated.

Example::

    proxy = FaultProxy("127.0.0.1", 8090, seed=7)
    await proxy.start()                 # clients connect to proxy.port
    proxy.delay = 0.05                  # every chunk waits 50 ms
    proxy.stall()                       # bytes stop moving (connections stay open)
    proxy.resume()
    cut = proxy.cut_random(0.5)         # each open connection cut with p = 0.5
    proxy.cut_all()
    proxy.counters.cuts                 # how many connections were cut
    await proxy.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from dataclasses import dataclass

#: Bytes read from one side before they are written to the other.
CHUNK = 65536


@dataclass
class ProxyCounters:
    """What the proxy has done so far."""

    accepted: int = 0  #: client connections accepted
    refused: int = 0  #: accepted connections whose target could not be reached
    cuts: int = 0  #: connections cut on purpose (reset, not closed cleanly)
    bytes_up: int = 0  #: bytes forwarded client -> target
    bytes_down: int = 0  #: bytes forwarded target -> client


class _Link:
    """One client connection and its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.target: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.cut = False

    def abort(self) -> None:
        """Drop both TCP connections at once, with a RST where the OS allows it,
        as a crashed peer or a broken middlebox does."""
        self.cut = True
        for writer in (self.client, self.target):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # linger 0: close sends RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """A TCP proxy on a loopback port that forwards to ``target_host:target_port``.

    Faults, all effective at once on open connections and new ones:

    - :meth:`cut_all`, :meth:`cut_random`: drop connections (RST);
    - :attr:`delay`: seconds each forwarded chunk waits, both ways;
    - :meth:`stall` / :meth:`resume`: stop forwarding bytes, keeping the
      connections open (a hung network path); new connections are accepted
      but get nothing through either.

    :meth:`retarget` points new connections elsewhere, for example at a server
    restarted on another port. :attr:`counters` tells what happened.
    """

    def __init__(
        self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1",
        listen_port: int = 0, seed: int | None = 0,
    ) -> None:  # fmt: skip
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.delay = 0.0
        self.counters = ProxyCounters()
        self.rng = random.Random(seed)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port clients connect to (known once :meth:`start` returned)."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def active(self) -> int:
        """Client connections open now."""
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self.listen)

    async def stop(self) -> None:
        """Stop listening and cut every open connection, including one that
        was being accepted as this began."""
        if self._server is not None:
            self._server.close()
        for _ in range(20):  # 10 s at most: stopping never hangs a test
            for link in list(self._links):
                link.abort()
            if self._server is None:
                return
            closed = asyncio.ensure_future(self._server.wait_closed())
            done, _ = await asyncio.wait({closed}, timeout=0.5)
            if done:
                return
            closed.cancel()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def retarget(self, host: str, port: int) -> None:
        """Send new connections to ``host:port``; open ones keep their target."""
        self.target = (host, port)

    def cut_all(self) -> int:
        """Cut every open connection; return how many."""
        return self._cut(list(self._links))

    def cut_random(self, probability: float) -> int:
        """Cut each open connection with ``probability`` (from the seeded RNG)."""
        links = sorted(self._links, key=id)  # a stable order, so the seed decides
        return self._cut([link for link in links if self.rng.random() < probability])

    def stall(self) -> None:
        """Stop forwarding bytes (both ways) until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def _cut(self, links: list[_Link]) -> int:
        for link in links:
            link.abort()
            self._links.discard(link)
        self.counters.cuts += len(links)
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.accepted += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            try:
                target_reader, link.target = await asyncio.open_connection(*self.target)
            except OSError:
                self.counters.refused += 1
                link.abort()
                return
            if link.cut:  # cut while connecting
                link.abort()
                return
            link.tasks = [
                asyncio.create_task(self._pump(reader, link.target, link, up=True)),
                asyncio.create_task(self._pump(target_reader, writer, link, up=False)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            for side in (writer, link.target):
                if side is not None:
                    side.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, *,
        up: bool,
    ) -> None:  # fmt: skip
        try:
            while data := await reader.read(CHUNK):
                await self._flowing.wait()
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                if up:
                    self.counters.bytes_up += len(data)
                else:
                    self.counters.bytes_down += len(data)
            if writer.can_write_eof():  # half-close: pass the FIN on
                writer.write_eof()
        except OSError:  # one side failed: the whole link goes, as on a real path
            for side in (link.client, link.target):
                if side is not None:
                    side.transport.abort()

"""Memory per idle connection: RSS, traced bytes and objects, per transport.

Starts an embedded hub and app (``ChannelMixin`` on ``/channels`` and its
WebSocket on ``/channels/ws``, the in-memory broker) in a child process,
opens ``-n`` idle connections of one transport to it from this process,
each subscribed to the same channel and waited on until its ``connected``
and ``subscribed`` frames arrived, and reports what the child grew by,
divided by the connections:

- ``rss``: the child's resident memory (``VmRSS``), measured in a run
  without tracemalloc (which costs memory of its own);
- with ``--trace``, a second run under tracemalloc: the bytes still
  allocated per connection, the GC-tracked objects per connection, and
  the largest allocation sites (file and line).

    .venv/bin/python bench/idle_memory.py --transport sse -n 2000 --trace
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CHANNEL = "idle"
TRANSPORTS = ("sse", "stream", "websocket")
#: Connections opening at once (well under the listen backlog).
CONCURRENCY = 200


# -- the server (child) -----------------------------------------------------------


def server_tls() -> Any:
    """A TLS context with a fresh self-signed certificate for 127.0.0.1."""
    import datetime
    import ipaddress
    import ssl
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), False
        )
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
    return context


def rss_kib() -> int:
    """This process's resident set, KiB (``/proc/self/status`` ``VmRSS``)."""
    text = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    assert match is not None
    return int(match.group(1))


async def serve(frames: int, top: int, tls: bool) -> None:
    """Serve the app and answer ``base``/``measure`` lines on stdin."""
    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from torchannels import ChannelMixin, Hub, MemoryBroker

    class Handler(ChannelMixin, tornado.web.RequestHandler):
        pass

    hub = Hub(MemoryBroker())
    app = tornado.web.Application(
        [
            (r"/channels", Handler, {"hub": hub}),
            (r"/channels/ws", Handler.websocket(), {"hub": hub}),
        ]
    )
    ssl_options = None
    if tls:
        ssl_options = server_tls()
    sockets = bind_sockets(0, HOST, backlog=4096)
    server = HTTPServer(app, ssl_options=ssl_options)
    server.add_sockets(sockets)
    print(json.dumps({"port": sockets[0].getsockname()[1]}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    base: dict[str, Any] = {}
    while line := (await reader.readline()).decode().strip():
        await asyncio.sleep(0.5)  # let the last connections settle
        gc.collect()
        now: dict[str, Any] = {"rss_kib": rss_kib(), "objects": len(gc.get_objects())}
        if tracemalloc.is_tracing():
            now["snapshot"] = tracemalloc.take_snapshot()
            now["traced"] = tracemalloc.get_traced_memory()[0]
        if line == "base":
            base = now
            print(json.dumps({"ok": True}), flush=True)
            continue
        n = int(line.split()[1])
        out: dict[str, Any] = {
            "connections": len(hub.connections),
            "rss_per_conn": (now["rss_kib"] - base["rss_kib"]) * 1024 / n,
            "objects_per_conn": (now["objects"] - base["objects"]) / n,
        }
        if "snapshot" in now:
            out["traced_per_conn"] = (now["traced"] - base["traced"]) / n
            stats = now["snapshot"].compare_to(base["snapshot"], "lineno")
            out["top"] = [
                (str(s.traceback[0]), s.size_diff / n, s.count_diff / n) for s in stats[:top]
            ]
        print(json.dumps(out), flush=True)
    server.stop()


# -- the client -------------------------------------------------------------------


def request_bytes(transport: str) -> bytes:
    if transport == "websocket":
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET /channels/ws?channel={CHANNEL} HTTP/1.1\r\nHost: {HOST}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    return (
        f"GET /channels?transport={transport}&channel={CHANNEL} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    ).encode()


async def open_idle(
    port: int, transport: str, gate: asyncio.Semaphore, tls: Any
) -> asyncio.StreamWriter:
    """One connection, returned once its ``subscribed`` frame arrived."""
    async with gate:
        reader, writer = await asyncio.open_connection(HOST, port, ssl=tls)
        writer.write(request_bytes(transport))
        seen = b""
        while b"subscribed" not in seen:
            chunk = await asyncio.wait_for(reader.read(65536), 20)
            if not chunk:
                raise RuntimeError(f"closed before subscribed: {seen[:300]!r}")
            seen += chunk
        return writer


async def run(
    transport: str, n: int, trace: bool, frames: int, top: int, tls: bool
) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--serve", "--frames", str(frames), "--top", str(top)]
    if trace:
        argv.append("--trace")
    if tls:
        argv.append("--tls")
    child = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None

    async def ask(line: str) -> dict[str, Any]:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(line.encode() + b"\n")
        await child.stdin.drain()
        answer: dict[str, Any] = json.loads(await child.stdout.readline())
        return answer

    client_tls = None
    if tls:
        import ssl

        client_tls = ssl.create_default_context()
        client_tls.check_hostname = False
        client_tls.verify_mode = ssl.CERT_NONE
    writers: list[asyncio.StreamWriter] = []
    try:
        port = json.loads(await child.stdout.readline())["port"]
        gate = asyncio.Semaphore(CONCURRENCY)
        # A few first, so one-off costs (imports, the channel) fall in the base.
        writers += await asyncio.gather(
            *(open_idle(port, transport, gate, client_tls) for _ in range(20))
        )
        await ask("base")
        writers += await asyncio.gather(
            *(open_idle(port, transport, gate, client_tls) for _ in range(n))
        )
        result = await ask(f"measure {n}")
    finally:
        for writer in writers:
            writer.close()
        child.stdin.close()
        await child.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport", choices=TRANSPORTS, action="append")
    parser.add_argument("-n", type=int, default=2000, help="idle connections (default 2000)")
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc run")
    parser.add_argument("--frames", type=int, default=1, help="traceback depth traced")
    parser.add_argument("--top", type=int, default=15, help="allocation sites shown")
    parser.add_argument("--tls", action="store_true", help="over TLS (tests/tls certificate)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.trace:
            tracemalloc.start(args.frames)
        asyncio.run(serve(args.frames, args.top, args.tls))
        return
    for transport in args.transport or TRANSPORTS:
        plain = asyncio.run(run(transport, args.n, False, args.frames, args.top, args.tls))
        line = f"{transport:9} RSS {plain['rss_per_conn'] / 1024:5.1f} KiB/conn"
        line += f"  objects {plain['objects_per_conn']:5.1f}/conn"
        print(line, flush=True)
        if args.trace:
            traced = asyncio.run(run(transport, args.n, True, args.frames, args.top, args.tls))
            print(f"{'':9} traced {traced['traced_per_conn']:6.0f} B/conn")
            for where, size, count in traced["top"]:
                print(f"{'':11}{size:7.0f} B {count:5.1f} blocks  {where}")


if __name__ == "__main__":
    main()

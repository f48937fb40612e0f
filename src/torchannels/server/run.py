"""Running one server process: ``serve()`` listens, serves until SIGTERM or
SIGINT, then shuts down gracefully (as one of ``--workers`` too)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import tornado.web
from tornado.netutil import bind_sockets

from ..forwarded import TrustedProxies
from .address_limit import PerAddressLimit, per_ip_cap
from .config import ServerConfig
from .listener import (
    MAX_HEADER_SIZE,
    HubHTTPServer,
    connection_cap,
    install_accept_error_filter,
    raise_open_file_limit,
)

log = logging.getLogger("torchannels.server")

#: Younger collections between two full ones, at least (Python's default: 10).
FULL_COLLECTION_EVERY = 100
#: CPython's thresholds: collections of generation 0, 1 and 2.
PYTHON_DEFAULT = (700, 10, 10)


def tune_collector() -> None:
    """Run full collections ten times less often than Python does.

    A full collection walks every object, some 115 per idle connection: on
    the benchmark machine it took 57-296 ms at 5,000 SSE subscribers, and the
    default thresholds ran six of them while those subscribers connected
    (and again whenever thousands reconnect). With 100 younger collections
    between two full ones the same run had none, for the same memory and
    CPU per delivery: what a full pass would free is cyclic garbage of
    closed connections, and Python still requires a quarter of the
    long-lived objects to be new before one runs. The young generations
    keep Python's thresholds; thresholds someone already changed (a
    ``sitecustomize``, bench/gcprobe's ``GCTHRESH``) are left alone.
    """
    if gc.get_threshold() == PYTHON_DEFAULT:
        gc.set_threshold(PYTHON_DEFAULT[0], PYTHON_DEFAULT[1], FULL_COLLECTION_EVERY)


def loop_runner(config: ServerConfig) -> Callable[[Coroutine[Any, Any, int]], int]:
    """What runs ``serve()`` to completion on ``--event-loop``: ``asyncio.run``,
    or ``uvloop.run``. ImportError, with the fix, when uvloop is not installed
    (the CLI says it in one line before anything starts)."""
    if config.event_loop == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        raise ImportError(
            "uvloop is not installed: pip install uvloop (or --event-loop asyncio)"
        ) from None
    return uvloop.run


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def banner(
    config: ServerConfig, port: int, key_generated: bool = False, internal: int | None = None
) -> str:
    """The lines printed once the server listens: the address, the internal
    listener's (``internal``, else ``config.internal_port``), and in dev
    mode the API key with ready-to-paste publish commands."""
    text = "torchannels server listening on " + _url(config.host, port)
    internal = config.internal_port if internal is None else internal
    if internal is not None:
        where = _url(config.internal_host, internal)
        text += f"\ninternal listener (health, metrics, admin, publish API) on {where}"
    if config.dev:
        from .devmode import banner as dev_banner

        text += "\n" + dev_banner(config, port, key_generated, internal)
    return text


def cannot_listen(config: ServerConfig, exc: OSError, *, internal: bool = False) -> str:
    """The one-line error of a failed bind, with the fix for a port in use."""
    host, port = config.host, config.port
    if internal:
        host, port = config.internal_host, config.internal_port or 0
    text = f"torchannels: cannot listen on {host}:{port}: {exc}"
    if exc.errno == errno.EADDRINUSE:
        flag = "--port (or TORCHANNELS_PORT; make run PORT=8091)"
        if internal:
            flag = "--internal-port (or TORCHANNELS_INTERNAL_PORT)"
        text += f"; another process uses port {port}: stop it, or choose another port with {flag}"
    return text


def bind_internal(config: ServerConfig, port: int | None = None) -> list[socket.socket]:
    """The internal listener's sockets (``port``, else ``--internal-port``);
    with ``--workers``, every worker binds the same port (SO_REUSEPORT)."""
    return bind_sockets(
        port if port is not None else config.internal_port or 0,
        config.internal_host,
        reuse_port=config.workers > 1,
    )


def _http_server(config: ServerConfig, app: tornado.web.Application) -> HubHTTPServer:
    # The API streams bodies and answers 413 itself past max_publish_bytes;
    # Tornado's own cap only bounds how much of an oversized body is read.
    return HubHTTPServer(
        app,
        max_body_size=max(64 << 20, config.max_publish_bytes * 2),
        max_header_size=MAX_HEADER_SIZE,
        # Tornado times one interval, from "ready for a request" to "headers
        # read", with idle_connection_timeout: keep-alive idling and
        # slowloris dribbling alike.
        idle_connection_timeout=config.header_timeout,
        body_timeout=config.body_timeout,
    )


def pin_internal_port(config: ServerConfig) -> ServerConfig:
    """With ``--internal-port 0`` ("any"), a copy naming a free port, so
    that every one of ``--workers`` binds the same one; else ``config``.
    Raises OSError when nothing can be bound."""
    if config.internal_port != 0:
        return config
    probe = bind_internal(config)
    port = probe[0].getsockname()[1]
    for sock in probe:
        sock.close()
    return replace(config, internal_port=port)


async def serve(
    config: ServerConfig,
    *,
    worker: int = 0,
    sockets: list[socket.socket] | None = None,
    on_ready: Callable[[], None] | None = None,
    key_generated: bool = False,
) -> int:
    """Run the server until SIGTERM or SIGINT, then shut down gracefully.

    As one of ``--workers`` (see :mod:`.workers`) it serves ``sockets`` and
    calls ``on_ready`` instead of printing the banner; only worker 0 runs
    the demo ticker. ``key_generated``: dev mode made the API key (the banner
    says so). With ``--internal-port`` a second server, without connection
    limits, serves the internal application.
    """
    from ..redaction import install_redaction
    from .app import make_apps, make_hub
    from .demo import Ticker

    install_redaction()  # no token reaches a log line, whichever logger writes it
    install_accept_error_filter()
    open_files = raise_open_file_limit()

    hub = make_hub(config)
    await hub.broker.connect()  # an unreachable broker is said now, not at first use
    if hub.lifecycle is not None:
        hub.lifecycle.start()  # sweep and send from the start: a crashed run's events too
    await hub.control.start()  # listen for disconnects and revocations, load those in force
    if hub.outbox is not None:
        hub.outbox.start()  # publish what was committed to the outbox; hub.close() stops it
    app, internal_app = make_apps(config, hub, worker=worker)
    counts = app.settings["torchannels_counts"]
    counts.start()  # with Redis: share this process's counts with the others
    server = _http_server(config, app)
    server.max_connections = connection_cap(config.max_connections, open_files)
    per_ip = per_ip_cap(config.max_connections_per_ip, server.max_connections)
    server.limits = PerAddressLimit(per_ip, TrustedProxies.of(config.trusted_proxies))
    internal_server = None if internal_app is None else _http_server(config, internal_app)
    for each in (app, internal_app):
        if each is not None:
            each.settings["torchannels_listener"] = server  # its refusals, for /metrics
    if sockets is None:
        try:
            sockets = bind_sockets(config.port, config.host, backlog=config.listen_backlog())
        except OSError as exc:
            print(cannot_listen(config, exc), file=sys.stderr)
            return 1
    internal_port = None
    if internal_server is not None:
        try:
            internal_sockets = bind_internal(config)
        except OSError as exc:
            print(cannot_listen(config, exc, internal=True), file=sys.stderr)
            return 1
        internal_server.add_sockets(internal_sockets)
        internal_port = internal_sockets[0].getsockname()[1]
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    ticker = Ticker(hub) if config.demo and worker == 0 else None
    if ticker is not None:
        ticker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Everything made so far lives as long as the process: keep it out of
    # the collector's full passes (docs/benchmarks.md: GC is the latency tail).
    gc.freeze()
    tune_collector()
    if worker == 0:  # which loop runs, as the process sees it (--event-loop)
        level = logging.DEBUG if config.event_loop == "asyncio" else logging.INFO
        log.log(level, "event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
    if on_ready is not None:
        on_ready()
    else:
        print(banner(config, port, key_generated, internal_port), flush=True)
    if config.api_key is None and worker == 0:
        log.warning("no API key set (--api-key, or --dev to make one): the publish API is disabled")
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # A second signal changes nothing, and asyncio's handler would meet
        # a closed wakeup pipe if one arrived while the loop closes (a
        # supervisor and a process-group kill both send one to a worker).
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)

    started = time.monotonic()
    log.info("shutting down: no new connections; asking clients to reconnect")
    server.stop()
    if ticker is not None:
        ticker.stop()
    clean = await hub.shutdown(config.shutdown_timeout)
    remaining = max(0.1, config.shutdown_timeout - (time.monotonic() - started))
    try:
        await asyncio.wait_for(server.close_all_connections(), remaining)
    except TimeoutError:
        clean = False
    if internal_server is not None:  # kept till now: /health said "shutting_down"
        internal_server.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(internal_server.close_all_connections(), 1.0)
    await counts.stop()
    await hub.close()
    log.info("stopped in %.2fs (%s)", time.monotonic() - started, "clean" if clean else "forced")
    if on_ready is None:
        print("torchannels server stopped", flush=True)
    return 0

"""Pushpin (Debian's ``pushpin``, scripts/ensure-pushpin.sh) as a fan-out
contender for bench/fanout.py (``make bench-extra``).

Pushpin is a proxy: a client's request goes to an origin, which answers
with GRIP instructions. Here the origin is this launcher: every request is
answered ``Grip-Hold: stream`` on channel ``bench`` with a
``text/event-stream`` head, so each subscriber becomes a held SSE stream;
after that the origin does nothing (it is not measured). Publishing is
``POST /publish/`` on the handler's HTTP port, an ``http-stream`` item per
message (fanout_client.PushpinPublisher).

The config, run and log directories are this launcher's own, in a
temporary directory, on free loopback ports (ZeroMQ between the
processes over ipc sockets in that directory), never the system service.
The runner starts condure (the client connections), zurl (to the origin),
pushpin-proxy and pushpin-handler. Changed from Debian's defaults: the
handler's publish rate limiter (``message_rate`` 2,500/s and
``message_hwm`` 25,000, which would be what is measured) raised to a
million, and logging to warnings.

    python bench/contenders/pushpin.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from native import HOST, free_port, serve

PUSHPIN = os.environ.get("PUSHPIN", "/usr/bin/pushpin")
HOLD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nGrip-Hold: stream\r\n"
    b"Grip-Channel: bench\r\nContent-Length: 0\r\n\r\n"
)


class Origin(asyncio.Protocol):
    """Answers every request on a connection with the hold (requests
    without a body: the subscribers' GETs)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.transport.write(HOLD)


def config(workdir: Path, port: int, publish_port: int, origin: int, log_level: int) -> str:
    """pushpin.conf; the routes file goes beside it."""
    (workdir / "routes").write_text(f"* {HOST}:{origin}\n")
    for sub in ("run", "log"):
        (workdir / sub).mkdir()
    zurl = "\n".join(
        f"{key}=ipc://{{rundir}}/{{ipc_prefix}}{name}"
        for key, name in (
            ("zurl_out_specs", "zurl-in"),
            ("zurl_out_stream_specs", "zurl-in-stream"),
            ("zurl_in_specs", "zurl-out"),
        )
    )
    return f"""[global]
include={{libdir}}/internal.conf
rundir={workdir / "run"}
ipc_prefix=bench-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port={HOST}:{port}
logdir={workdir / "log"}
log_level={log_level}
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure
zurl_bin=zurl

[proxy]
routesfile={workdir / "routes"}
{zurl}
updates_check=off
sig_iss=pushpin
sig_key=bench-not-a-secret

[handler]
push_in_spec=ipc://{{rundir}}/{{ipc_prefix}}push-in
push_in_sub_specs=ipc://{{rundir}}/{{ipc_prefix}}push-in-sub
push_in_sub_connect=false
push_in_http_addr={HOST}
push_in_http_port={publish_port}
push_in_http_max_headers_size=10000
push_in_http_max_body_size=1000000
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=ipc://{{rundir}}/{{ipc_prefix}}command
message_rate=1000000
message_hwm=1000000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
"""


async def run(port: int, publish_port: int, workdir: Path, log_level: int, keep: bool) -> None:
    loop = asyncio.get_running_loop()
    origin = await loop.create_server(Origin, HOST, 0, backlog=4096)
    origin_port = origin.sockets[0].getsockname()[1]
    conf = config(workdir, port, publish_port, origin_port, log_level)
    (workdir / "pushpin.conf").write_text(conf)
    argv = [PUSHPIN, f"--config={workdir / 'pushpin.conf'}"]
    try:
        await serve(
            argv,
            {"Pushpin listening on": port, "Pushpin publish on": publish_port},
            workdir,
            log=workdir / "log" / "runner.log",
        )
    finally:
        origin.close()
        if keep:
            print(f"kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    parser.add_argument("--buffer", type=int, default=0, help="ignored (Pushpin keeps none)")
    parser.add_argument("--log-level", type=int, default=1, help="1: warnings (3: debug)")
    parser.add_argument("--keep", action="store_true", help="keep the directory (its logs)")
    args = parser.parse_args()
    if not os.path.exists(PUSHPIN):
        raise SystemExit(f"{PUSHPIN} is missing: run scripts/ensure-pushpin.sh")
    port = args.port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-pushpin-"))
    asyncio.run(run(port, free_port(), workdir, args.log_level, args.keep))


if __name__ == "__main__":
    main()

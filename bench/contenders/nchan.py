"""Nchan, the nginx module in C (Debian's ``libnginx-mod-nchan``,
scripts/ensure-nchan.sh), as a fan-out contender for bench/fanout.py.

Debian's nginx with a config and prefix of this launcher's own, in a
temporary directory, on a free loopback port: ``nginx -c CONF -p DIR -g
'daemon off;'``, one worker process, never the system service. One
channel, ``bench``:

- ``POST /api/publish``: ``nchan_publisher http``; the body is the message
  delivered; with ``Accept: application/json`` the answer counts the
  channel's buffered messages;
- ``GET /channels`` (the query is ignored): ``nchan_subscriber
  eventsource`` (SSE; Nchan wants ``Accept: text/event-stream``);
- ``GET /channels/ws``: ``nchan_subscriber websocket``.

The message buffer holds ``--buffer`` messages for an hour, more than a
run publishes, and a subscriber starts at the oldest one (each run's nginx
starts with an empty channel, so that is the first one published after
it joined). No pings, no access log; the worker may use every file
descriptor the hard limit allows (``worker_connections`` an eighth above
it, see ``config``). The rest is Nchan's and nginx's defaults (128 MiB of
shared memory for Nchan).

    python bench/contenders/nchan.py --port 0 --buffer 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

from native import HOST, free_port, open_files, serve

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
MODULE = os.environ.get("NCHAN_MODULE", "/usr/lib/nginx/modules/ngx_nchan_module.so")


def config(workdir: Path, port: int, buffer: int) -> str:
    """The whole nginx.conf."""
    files = open_files()
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root the master would hand the worker to "nobody", which cannot
    # write under this private directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    channel = (
        "nchan_channel_id bench; nchan_subscriber_first_message oldest; "
        f"nchan_message_buffer_length {buffer}; nchan_message_timeout 1h;"
    )
    return (
        f"load_module {MODULE};\n"
        f"{user}worker_processes 1;\n"
        f"worker_rlimit_nofile {files};\n"
        f"pid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} warn;\n"
        # The open files bound the connections; nginx's own count is set an
        # eighth above, because once fewer than 1/16 of its slots are free it
        # closes connections it may reuse ("worker_connections are not
        # enough, reusing connections"), Nchan's idle subscribers among them.
        f"events {{ worker_connections {files + files // 8}; }}\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp}\n"
        # One keep-alive connection carries every publish of a run.
        "    keepalive_requests 100000000;\n"
        "    keepalive_timeout 3600s;\n"
        "    client_body_buffer_size 1m;\n"
        "    server {\n"
        f"        listen {HOST}:{port} backlog=4096;\n"
        f"        location = /api/publish {{ nchan_publisher http; {channel} }}\n"
        f"        location = /channels {{ nchan_subscriber eventsource; {channel} }}\n"
        f"        location = /channels/ws {{ nchan_subscriber websocket; {channel} }}\n"
        "    }\n"
        "}\n"
    )


def finish(workdir: Path, keep: bool) -> None:
    """Pass nginx's warnings on (to the benchmark's log of this launcher),
    then remove the directory unless ``keep``."""
    log = workdir / "error.log"
    if log.exists() and log.stat().st_size:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    parser.add_argument("--buffer", type=int, default=1000, help="messages kept (1000)")
    parser.add_argument("--keep", action="store_true", help="keep the directory (its logs)")
    args = parser.parse_args()
    for path in (NGINX, MODULE):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: run scripts/ensure-nchan.sh (make bench does)")
    port = args.port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-nchan-"))
    (workdir / "temp").mkdir()
    (workdir / "nginx.conf").write_text(config(workdir, port, args.buffer))
    argv = [NGINX, "-c", str(workdir / "nginx.conf"), "-p", str(workdir), "-g", "daemon off;"]
    asyncio.run(
        serve(
            argv,
            {"Nchan listening on": port},
            workdir,
            log=workdir / "stderr.log",
            cleanup=lambda: finish(workdir, args.keep),
        )
    )


if __name__ == "__main__":
    main()

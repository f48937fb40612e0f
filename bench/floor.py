"""The fan-out floor of issue 23, part 2: bench/fanout.py with the hub on
uvloop as a contender, and py-spy over the saturation phase alone.

``torchannels-uvloop:TRANSPORT`` is ``torchannels:TRANSPORT`` started with
``serve --event-loop uvloop``; every other option is bench/fanout.py's, and
the run is one fanout.py run (same load generator, same checks, contenders
interleaved). ``--spy DIR`` attaches py-spy (raw format, 500 Hz,
non-blocking) to each server for its saturation phase only (not its start,
the subscribers' connects or the half-load phase) and prints the top of
each profile (bench/profile_summary.py reads them again with ``--under``):

    .venv/bin/python bench/floor.py --subscribers 1000,10000 --rounds 3 \\
        --contenders asyncio:sse,torchannels:sse,torchannels-uvloop:sse
    .venv/bin/python bench/floor.py --contenders torchannels:sse --subscribers 1000 \\
        --spy /tmp/prof --phase-seconds 20 --deliveries 4000000

bench/floor_loops.py is the other half: the compiled fan-out loop against
the pure-Python one. Results: docs/benchmarks.md, "Fan-out floor (issue 23,
part 2)".
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import fanout
import fanout_servers
from fanout_client import Publisher, Run
from fanout_servers import KINDS, Kind, Server
from profile_summary import load

UVLOOP = "torchannels-uvloop"
KINDS[UVLOOP] = Kind("torchannels on uvloop", ("sse", "stream", "websocket"))
_server_argv = fanout_servers.server_argv
_phase = fanout.phase


def server_argv(server: str, args: Any) -> list[str]:
    """fanout_servers.server_argv, and the hub on uvloop for ``torchannels-uvloop``."""
    if server == UVLOOP:
        return [*_server_argv("torchannels", args), "--event-loop", "uvloop"]
    return _server_argv(server, args)


async def spied_phase(
    run: Run,
    server: Server,
    publisher: Publisher,
    args: argparse.Namespace,
    messages: int,
    rate: float,
) -> dict[str, Any]:
    """fanout.phase, under py-spy when it is the saturation phase."""
    if args.spy is None or rate != args.rate:  # the half-load phase runs at a computed rate
        return await _phase(run, server, publisher, args, messages, rate)
    out = args.spy / f"{server.name}-{len(run.subscribers)}.txt"
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    argv = [spy, "record", "--pid", str(server.pid), "--rate", "500", "--format", "raw"]
    proc = subprocess.Popen(
        [*argv, "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # attached and sampling before the first publish
    try:
        return await _phase(run, server, publisher, args, messages, rate)
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        await asyncio.to_thread(proc.wait, 30)
        own, _inclusive, total = load(out, None)
        print(f"\n{out}: {total} samples, top of the stack:", file=sys.stderr)
        for frame, n in own.most_common(12):
            print(f"{n / max(total, 1):7.1%}  {frame}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--spy", type=Path, metavar="DIR")
    ours, rest = parser.parse_known_args(argv)
    fanout.server_argv = server_argv  # type: ignore[attr-defined]  # what run_contender calls
    fanout.phase = spied_phase
    args = fanout.parse_args(rest)
    args.spy = ours.spy
    if args.spy is not None:
        args.spy.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(fanout.main_async(args))
    result: int = uvloop.run(fanout.main_async(args))
    return result


if __name__ == "__main__":
    sys.exit(main())

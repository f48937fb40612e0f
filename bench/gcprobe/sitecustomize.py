"""Garbage-collector probe for the benchmark's server processes (opt-in).

Put this directory on ``PYTHONPATH`` and set ``GCPROBE`` to a directory:
each server process started by bench/fanout.py (they inherit both) then
writes ``SERVER-PID.txt`` there at exit, with the number, total and longest
duration of collections per generation. ``GCTHRESH=a,b,c`` additionally runs
the torchannels hub with ``gc.set_threshold(a, b, c)``, to see what the
collector costs::

    GCPROBE=/tmp/gc PYTHONPATH=bench/gcprobe .venv/bin/python bench/fanout.py
    GCPROBE=/tmp/gc GCTHRESH=20000,20,20 PYTHONPATH=bench/gcprobe \\
        .venv/bin/python bench/fanout.py --only torchannels --rate 200

Without ``GCPROBE`` it does nothing; the benchmark never sets it.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import time


def _server() -> str | None:
    argv = sys.orig_argv
    if "torchannels" in argv and "serve" in argv:
        return "torchannels"
    if any(arg.endswith("baseline_server.py") for arg in argv):
        return "baseline"
    return None


def _install(directory: str, name: str) -> None:
    stats = {generation: [0, 0.0, 0.0] for generation in range(3)}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        entry = stats[info["generation"]]
        entry[0] += 1
        entry[1] += took
        entry[2] = max(entry[2], took)

    def dump() -> None:
        path = os.path.join(directory, f"{name}-{os.getpid()}.txt")
        with open(path, "w") as f:
            for generation, (count, total, longest) in stats.items():
                f.write(
                    f"gen{generation}: {count} collections, {total * 1000:.0f} ms total, "
                    f"longest {longest * 1000:.1f} ms\n"
                )
            f.write(f"threshold: {gc.get_threshold()}\n")

    gc.callbacks.append(callback)
    atexit.register(dump)
    if name == "torchannels" and os.environ.get("GCTHRESH"):
        gc.set_threshold(*(int(n) for n in os.environ["GCTHRESH"].split(",")))


_directory = os.environ.get("GCPROBE")
_name = _server()
if _directory and _name:
    _install(_directory, _name)

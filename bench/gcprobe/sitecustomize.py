"""Garbage-collector probe for the benchmark's server processes.

bench/fanout.py starts every Python server with this directory on
``PYTHONPATH`` and ``GCPROBE`` set to a directory. The probe then times
every collection (``gc.callbacks``); on SIGUSR2 it writes what it saw
since the previous signal to ``GCPROBE/PID-N.json`` (N counts the
signals) and starts over, so the benchmark gets the pauses of each
measured phase::

    {"collections": [gen0, gen1, gen2], "total_s": ..., "max_s": ...,
     "full_s": ..., "pauses": [seconds of every pause of 1 ms or more]}

``GCTHRESH=a,b,c`` additionally runs the torchannels hub with
``gc.set_threshold(a, b, c)``, to see what the collector costs::

    GCTHRESH=20000,20,20 .venv/bin/python bench/fanout.py --contenders torchannels:sse

Without ``GCPROBE`` it does nothing. The cost is two ``perf_counter``
calls per collection.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from typing import Any


def _install(directory: str) -> None:
    stats: dict[str, Any] = {}
    started = [0.0]
    signals = [0]

    def reset() -> None:
        stats.update(collections=[0, 0, 0], total_s=0.0, max_s=0.0, full_s=0.0, pauses=[])

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        generation = info["generation"]
        stats["collections"][generation] += 1
        stats["total_s"] += took
        if took > stats["max_s"]:
            stats["max_s"] = took
        if generation == 2:
            stats["full_s"] += took
        if took >= 0.001:
            stats["pauses"].append(took)

    def dump(signum: int, frame: object) -> None:
        signals[0] += 1
        path = os.path.join(directory, f"{os.getpid()}-{signals[0]}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(stats, f)
        os.replace(path + ".tmp", path)  # whole once visible
        reset()

    reset()
    gc.callbacks.append(callback)
    signal.signal(signal.SIGUSR2, dump)
    argv = sys.orig_argv
    if os.environ.get("GCTHRESH") and "torchannels" in argv and "serve" in argv:
        gc.set_threshold(*(int(n) for n in os.environ["GCTHRESH"].split(",")))


_directory = os.environ.get("GCPROBE")
if _directory:
    _install(_directory)

"""The compiled fan-out loop against the pure-Python one (issue 23, part 2).

One process (the sender, pinned to CPU 0) holds N accepted loopback
sockets; a reader process (CPU 1) holds their other ends and reads them
all with epoll, as fast as it can. Per frame the sender calls one of:

- ``python``: ``socket.send(frame)`` per socket, in a Python loop
  (bench/cfanout's ``send_all_python``; the hub's direct write is this plus
  its bookkeeping);
- ``c``: ``send_all(fds, frame)``, the loop in C (bench/cfanout/cfanout.c,
  built here with gcc and this Python's headers), over a list of fds kept
  beside the sockets;
- ``c+fds``: the same, the fd list built from the sockets for every frame
  (what a hub without a kept list would pay).

Frames go in batches of ``--batch`` (a few KiB per socket, far under the
socket buffers); after each batch the sender waits, untimed, until the
reader has every byte, so no variant meets full buffers. Measured per
variant: sender CPU (user and system, getrusage) per send and sends per
second of the timed loops. Rounds interleave the variants, alternating
their order; medians are reported. At the end the reader checks that every
socket got exactly ``frames x size`` bytes.

    .venv/bin/python bench/floor_loops.py --subscribers 1000,10000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from cfanout import SendAll, build, send_all_python

HERE = Path(__file__).resolve().parent
VARIANTS = ("python", "c", "c+fds")


def reader(port: int, count: int, control_port: int) -> int:
    """The reader process: connect ``count`` sockets, then read them all
    until told to stop; answer each cumulative byte target once reached."""
    control = socket.create_connection(("127.0.0.1", control_port))
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    got = [0] * count
    total = 0
    target = -1
    poller = select.epoll()
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
    poller.register(control.fileno(), select.EPOLLIN)
    control.sendall(b"R")  # connected
    buf = bytearray(1 << 18)
    pending = b""
    while True:
        for fd, _ev in poller.poll():
            if fd == control.fileno():
                data = control.recv(4096)
                if not data:
                    return 0
                pending += data
                while len(pending) >= 8:
                    (target,) = struct.unpack("!q", pending[:8])
                    pending = pending[8:]
                    if target == -2:  # report per-socket totals and stop
                        ok = all(g == got[0] for g in got)
                        control.sendall(struct.pack("!qq", got[0], int(ok)))
                        return 0
                continue
            index = by_fd[fd]
            sock = socks[index]
            while True:
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    break
                if n == 0:
                    poller.unregister(fd)
                    break
                got[index] += n
                total += n
        if target >= 0 and total >= target:
            control.sendall(b"A")
            target = -1


def measure(
    count: int, frames: int, size: int, batch: int, rounds: int, send_all: SendAll
) -> dict[str, dict[str, float]]:
    """Run every variant ``rounds`` times over ``count`` sockets."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    control_listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    cport = control_listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--reader", str(port), str(count), str(cport)],
        preexec_fn=lambda: os.sched_setaffinity(0, {1}) if (os.cpu_count() or 1) > 1 else None,
    )
    control, _ = control_listener.accept()
    socks = []
    for _ in range(count):
        sock, _addr = listener.accept()
        sock.setblocking(False)
        socks.append(sock)
    assert control.recv(1) == b"R"
    fds = [s.fileno() for s in socks]
    frame = b"x" * (size - 1) + b"\n"
    sent_total = 0
    results: dict[str, dict[str, list[float]]] = {v: {"cpu": [], "user": [], "sys": [],
                                                      "rate": []} for v in VARIANTS}  # fmt: skip
    short_writes = 0

    def run_variant(variant: str) -> None:
        nonlocal sent_total, short_writes
        user = system = wall = 0.0
        done = 0
        while done < frames:
            n = min(batch, frames - done)
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            for _ in range(n):
                if variant == "python":
                    short = send_all_python(socks, frame)
                elif variant == "c":
                    short = send_all(fds, frame)
                else:
                    short = send_all([s.fileno() for s in socks], frame)
                if short:  # not expected: finish them blocking, and count them
                    short_writes += len(short)
                    for i, took in short:
                        socks[i].setblocking(True)
                        socks[i].sendall(frame[max(took, 0) :])
                        socks[i].setblocking(False)
            t1 = time.perf_counter()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            wall += t1 - t0
            user += r1.ru_utime - r0.ru_utime
            system += r1.ru_stime - r0.ru_stime
            done += n
            sent_total += n * size * count
            control.sendall(struct.pack("!q", sent_total))
            assert control.recv(1) == b"A"  # untimed: the reader caught up
        sends = frames * count
        res = results[variant]
        res["cpu"].append((user + system) / sends * 1e6)
        res["user"].append(user / sends * 1e6)
        res["sys"].append(system / sends * 1e6)
        res["rate"].append(sends / wall)

    for rnd in range(rounds):
        for variant in VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]:
            run_variant(variant)
    control.sendall(struct.pack("!q", -2))
    per_socket, ok = struct.unpack("!qq", control.recv(16))
    proc.wait(30)
    for sock in socks:
        sock.close()
    listener.close()
    expected = rounds * len(VARIANTS) * frames * size
    if not ok or per_socket != expected:
        raise SystemExit(f"delivery check failed: {per_socket} bytes per socket, {expected} sent")
    summary = {v: {k: statistics.median(xs) for k, xs in r.items()} for v, r in results.items()}
    summary["check"] = {"short_writes": float(short_writes), "bytes_per_socket": per_socket}
    return summary


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--reader":
        return reader(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1000,10000")
    parser.add_argument("--sends", type=int, default=400_000, help="sends per variant and round")
    parser.add_argument("--size", type=int, default=300, help="frame bytes (a ~256 B message)")
    parser.add_argument("--batch", type=int, default=8, help="frames between reader catch-ups")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    send_all = build()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for count in (int(n) for n in args.subscribers.split(",")):
        frames = max(args.batch, args.sends // count)
        s = measure(count, frames, args.size, args.batch, args.rounds, send_all)
        print(f"\n{count:,} sockets, {frames} frames of {args.size} B per variant and round, "
              f"{args.rounds} rounds (medians); short writes: {s['check']['short_writes']:.0f}; "
              f"every socket got {s['check']['bytes_per_socket']:,} B: ok")  # fmt: skip
        print("| loop | sends/s | CPU µs/send | user | system | speed-up over Python |")
        print("|---|--:|--:|--:|--:|--:|")
        base = s["python"]["rate"]
        for v in VARIANTS:
            r = s[v]
            print(f"| {v} | {r['rate']:,.0f} | {r['cpu']:.2f} | {r['user']:.2f} | "
                  f"{r['sys']:.2f} | {r['rate'] / base:.2f}x |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The memory a full in-memory history holds after live fan-out (tracemalloc).

Publishes ``--messages`` messages to one channel of a ``MemoryBroker`` whose
history keeps all of them, through a hub with one subscriber per framing a
transport caches (WebSocket, NDJSON and SSE, plain and chunked), and
reports the bytes still allocated once they are all delivered: the
history itself, and whatever framings it keeps alive.

    .venv/bin/python bench/history_memory.py --messages 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from collections.abc import Callable

from torchannels import HistoryPolicy, Hub, MemoryBroker, Position
from torchannels.frames import Frame, Publication
from torchannels.transports.sse import sse_chunk, sse_event
from torchannels.transports.stream import StreamTransport
from torchannels.transports.websocket import _encode as ws_encode

#: Every framing a transport caches on a shared frame, as live fan-out makes it.
FRAMINGS: list[Callable[[Frame], bytes]] = [
    ws_encode,
    lambda f: StreamTransport.encode(None, f),  # type: ignore[arg-type]
    lambda f: StreamTransport.encode_chunk(None, f),  # type: ignore[arg-type]
    lambda f: sse_event(f, None),
    lambda f: sse_chunk(f, None),
    lambda f: sse_event(f, {}),  # a one-channel SSE connection (the frame sets it)
    lambda f: sse_chunk(f, {}),
]


class Sink:
    """A subscriber that frames each publication as one transport would,
    and writes the bytes nowhere (a socket took them)."""

    def __init__(self, framing: Callable[[Frame], bytes]) -> None:
        self.framing = framing
        self.delivered = 0

    def on_publication(self, pub: Publication, frames: tuple[Frame]) -> bool:
        for frame in frames:
            self.framing(frame)
        self.delivered += 1
        return True

    def resync(self, channel: str, top: Position | None) -> None:
        pass


async def measure(messages: int, size: int, fan_out: bool) -> int:
    broker = MemoryBroker(HistoryPolicy(size=messages, ttl=3600))
    hub = Hub(broker)
    sinks = [Sink(f) for f in FRAMINGS] if fan_out else []
    for sink in sinks:
        await hub.attach("news", sink)
    text = "x" * size
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(messages):
        broker.publish_nowait("news", {"text": text, "n": n})
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert all(s.delivered == messages for s in sinks)
    assert (await broker.info("news")).history_length == messages
    await hub.close()
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=100, help="bytes of text per message")
    args = parser.parse_args()
    for fan_out in (False, True):
        held = asyncio.run(measure(args.messages, args.size, fan_out))
        what = f"after fan-out to {len(FRAMINGS)} framings" if fan_out else "no subscriber"
        print(
            f"{args.messages} messages of {args.size} B text, {what}: "
            f"{held / 2**20:.2f} MiB held ({held / args.messages:.0f} B/message)"
        )


if __name__ == "__main__":
    main()

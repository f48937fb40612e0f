"""A history held in memory keeps messages, not their framings.

Live fan-out frames each publication once for all recipients (``Frame``
and its ``Frame.cached`` framings); a publication holds that frame only
weakly, so once the frames are written, the memory broker's history no
longer keeps up to eight framings of every message. Real transports over
loopback sockets: WebSocket, NDJSON stream and SSE, several clients each.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Callable
from typing import Any, cast

import pytest
import tornado.websocket

from support import Server, eventually, messages
from torchannels import ChannelMixin, Hub, MemoryBroker
from torchannels.frames import MESSAGE, Frame, Publication

COUNT = 30
PER_TRANSPORT = 3


def frames_held(pub: Publication) -> list[Frame]:
    """The frames ``pub`` keeps alive (a dead weak reference keeps none)."""
    held: list[Frame] = []
    for ref in gc.get_referents(pub):
        if isinstance(ref, weakref.ref):
            continue  # holds nothing alive
        if isinstance(ref, Frame):
            held.append(ref)
        elif isinstance(ref, tuple):
            held += [f for f in ref if isinstance(f, Frame)]
    return held


async def test_history_keeps_no_framings_after_live_fan_out(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = MemoryBroker()
    hub = Hub(broker)
    handler = cast(type[ChannelMixin], type("Handler", (ChannelMixin,), {"hub": hub}))
    server = make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])
    streams = [
        server.stream(transport, channel="news")
        for transport in ("stream", "sse")
        for _ in range(PER_TRANSPORT)
    ]
    sockets = [
        await tornado.websocket.websocket_connect(
            server.url("/channels/ws", channel="news").replace("http:", "ws:")
        )
        for _ in range(PER_TRANSPORT)
    ]
    got: list[list[Any]] = [[] for _ in sockets]

    async def read(n: int) -> None:
        while (raw := await sockets[n].read_message()) is not None:
            got[n].append(json.loads(raw))

    readers = [asyncio.ensure_future(read(n)) for n in range(len(sockets))]
    await eventually(lambda: hub.local_subscribers("news") == len(streams) + len(sockets))

    built: list[int] = []
    real_init = Frame.__init__

    def counting(self: Frame, kind: str, envelope: bytes, **kwargs: Any) -> None:
        real_init(self, kind, envelope, **kwargs)
        if kind == MESSAGE:
            built.append(kwargs["position"].offset)

    monkeypatch.setattr(Frame, "__init__", counting)
    for n in range(COUNT):
        hub.channel("news").send({"n": n, "pad": "x" * 200})
    for stream in streams:
        await stream.wait_frames(lambda frames: len(messages(frames)) == COUNT)
    await eventually(lambda: all(len(messages(g)) == COUNT for g in got))
    monkeypatch.undo()
    # One frame per publication for all nine recipients: framed once.
    assert sorted(built) == list(range(1, COUNT + 1))

    history = list(broker._channels["news"].history)
    assert len(history) == COUNT
    await eventually(lambda: not any(frames_held(pub) for pub in history))
    # A catch-up read frames them again when asked, and lets go again.
    frame = history[0].frame
    assert frame.envelope == b'{"type":"message","data":' + history[0].payload + b"}"
    assert frames_held(history[0]) == []
    del frame

    for sock in sockets:
        sock.close()
    await asyncio.wait(readers, timeout=5)

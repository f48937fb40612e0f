"""The session checks the seam too: history with a hole, from a broker that
breaks the rule (here one that drops a chosen offset from what it reads),
reaches the client as a ``history_trimmed`` reset, never as a silent gap."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support import Server, receive
from torchannels import Hub, MemoryBroker, Position, ReadResult, Settings
from torchannels.errors import RESET_TRIMMED


class HoleyBroker(MemoryBroker):
    """A memory broker whose reads leave out the offsets in ``holes``."""

    def __init__(self) -> None:
        super().__init__()
        self.holes: set[int] = set()

    async def read(self, channel: str, since: Position | None) -> ReadResult:
        result = self.read_nowait(channel, since)
        kept = [p for p in result.publications if p.offset not in self.holes]
        return ReadResult(result.position, kept, result.state, result.reset)


@pytest.mark.parametrize("transport", ["poll", "stream"])
async def test_a_hole_a_broker_serves_is_a_reset(
    make_server: Callable[..., Server], transport: str
) -> None:
    broker = HoleyBroker()
    server = make_server(hub_=Hub(broker, Settings()))
    epoch = ""
    for n in range(1, 8):
        epoch = broker.publish_nowait("c", {"n": n}).epoch
    broker.holes = {4, 5, 6}
    got = await receive(
        server,
        transport,
        ["c"],
        cursor=f"c={epoch}:2",
        until=lambda fs: any(f["type"] == "message" for f in fs),
    )
    kinds = [(f["type"], f.get("reason")) for f in got.frames]
    assert kinds == [("reset", RESET_TRIMMED), ("subscribed", None), ("message", None)]
    assert got.frames[1]["offset"] == 6
    assert got.frames[2]["data"]["n"] == 7
    assert got.cursor == f"c={epoch}:7"

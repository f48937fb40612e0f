from __future__ import annotations
import asyncio
from conftest import Server

async def test_close(server: Server) -> None:
    s = server.stream("stream", channel="news")
    await s.wait_for(lambda b: b"subscribed" in b)
    assert server.hub.local_subscribers("news") == 1
    s.close()
    for _ in range(20):
        await asyncio.sleep(0.05)
    print("after close", server.hub.local_subscribers("news"))

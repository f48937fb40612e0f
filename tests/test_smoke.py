from __future__ import annotations

from support import Server


async def test_poll_delivers_published_message(server: Server) -> None:
    server.hub.channel("news").send({"text": "hello"})
    doc = await server.poll(channel="news")
    kinds = [f["type"] for f in doc["frames"]]
    assert kinds == ["subscribed", "message"]
    assert doc["frames"][1]["data"]["text"] == "hello"
    assert doc["cursor"] == f"news={server.hub.broker.epoch}:1"  # type: ignore[attr-defined]


async def test_stream_delivers_live_message(server: Server) -> None:
    stream = server.stream("stream", channel="news")
    await stream.wait_for(lambda b: b"subscribed" in b)
    server.hub.channel("news").send({"text": "live"})
    await stream.wait_for(lambda b: b"live" in b)
    assert [f["type"] for f in stream.lines()] == ["connected", "subscribed", "message"]
    stream.close()

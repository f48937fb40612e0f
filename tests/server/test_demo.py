"""The demo page, its publisher and ticker, and ``--no-demo``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from server.processes import (
    ServerProcess,
    as_json,
    fetch,
    poll,
)


async def test_demo_page_and_demo_publisher(main_server: ServerProcess, http: Any) -> None:
    page = await fetch(http, main_server.base + "/")
    assert page.code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert b'<script src="/torchannels/torchannel.js"></script>' in page.body
    script = await fetch(http, main_server.base + "/torchannels/torchannel.js")
    assert script.code == 200 and b"TorChannels" in script.body
    for other in ("torchannel.mjs", "torchannel.d.ts"):
        assert (await fetch(http, main_server.base + "/torchannels/" + other)).code == 200, other

    before = await poll(http, main_server, ["demo:chat"])
    said = await fetch(http, main_server.base + "/demo/publish", "POST",
                       urlencode({"name": "ann", "text": "hello hub"}))  # fmt: skip
    assert said.code == 200, said.body
    offset = as_json(said)["offset"]
    after = await poll(http, main_server, ["demo:chat"], cursor=before["cursor"])
    [message] = [f["data"] for f in after["frames"]]
    assert (message["name"], message["text"], message["offset"]) == ("ann", "hello hub", offset)

    for form in ({"text": ""}, {"text": "x" * 281}, {"name": "n" * 33, "text": "hi"}):
        bad = await fetch(http, main_server.base + "/demo/publish", "POST", urlencode(form))
        assert (bad.code, as_json(bad)["error"]) == (400, "bad_message"), form


async def test_demo_ticker_feeds_its_channel(main_server: ServerProcess, lives: Any) -> None:
    live = lives(main_server.url(transport="sse", channel="demo:ticker"))
    frames = await live.wait(lambda fs: any(f["type"] == "message" for f in fs), timeout=5)
    [tick, *_] = [f["data"] for f in frames if f["type"] == "message"]
    assert isinstance(tick["price"], float) and tick["price"] > 0


async def test_no_demo_removes_the_demo(bare_server: ServerProcess, http: Any) -> None:
    assert (await fetch(http, bare_server.base + "/")).code == 404
    response = await fetch(http, bare_server.base + "/demo/publish", "POST", "text=hi")
    assert response.code == 404
    # The client library is still served.
    assert (await fetch(http, bare_server.base + "/torchannels/torchannel.js")).code == 200

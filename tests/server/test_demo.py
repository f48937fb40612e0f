"""The demo page, its publisher and ticker, and ``--no-demo``."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from server.processes import (
    SECRET,
    ServerProcess,
    as_json,
    assert_error,
    fetch,
    poll,
)
from torchannels import Hub
from torchannels.channel_options import ChannelOptions
from torchannels.server.config import ServerConfig
from torchannels.server.demo import demo_routes
from torchannels.tokens import decode_token


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


async def test_dev_mode_gives_the_demo_chat_identities(spawn: Any, http: Any) -> None:
    hub = spawn("--dev", "--token-secret", SECRET)
    page = (await fetch(http, hub.base + "/")).body.decode()
    assert '"identity": true' in page

    async def ask(**form: str) -> Any:
        return await fetch(http, hub.base + "/demo/token", "POST", urlencode(form))

    answer = await ask(name=" Ann ")
    assert answer.code == 200, answer.body
    assert answer.headers["Cache-Control"] == "no-store"
    body = as_json(answer)
    claims = decode_token(body["token"], SECRET)
    assert re.fullmatch(r"demo-[0-9a-f]{12}", body["user"]), body
    assert (claims.subject, claims.raw["info"]) == (body["user"], {"name": "Ann"})
    assert claims.channels == ("demo:*",)
    assert body["name"] == "Ann"
    # A renewal keeps the user; an id this endpoint did not make is replaced.
    renewed = as_json(await ask(name="Ann B.", user=body["user"]))
    assert renewed["user"] == body["user"]
    assert decode_token(renewed["token"], SECRET).raw["info"] == {"name": "Ann B."}
    for forged in ("admin", "demo-XYZ", body["user"] + "0"):
        assert as_json(await ask(name="Eve", user=forged))["user"] not in (forged, body["user"])
    for name in ("", "   ", "n" * 33):
        assert_error(await ask(name=name), 400, "bad_name")

    # The token names its user in demo:chat, which has presence in dev mode.
    doc = await poll(http, hub, ["demo:chat"], token=body["token"])
    [subscribed] = [f for f in doc["frames"] if f["type"] == "subscribed"]
    assert subscribed["presence"]["members"] == [
        {"user": body["user"], "info": {"name": "Ann"}, "clients": 1}
    ]


def test_dev_mode_presence_on_the_chat_yields_to_the_configuration() -> None:
    def chat_options(config: ServerConfig) -> tuple[bool, bool, list[str]]:
        hub = Hub()
        paths = [route[0] for route in demo_routes(config, hub)]
        options = hub.channel_options.get("demo:chat")
        return options.presence, options.join_leave, paths

    dev = ServerConfig(dev=True, api_key="k").with_dev_key()
    assert chat_options(dev) == (True, True, ["/", "/demo/publish", "/demo/token"])
    assert chat_options(ServerConfig()) == (False, False, ["/", "/demo/publish"])
    own = replace(dev, channels=(("demo:*", ChannelOptions(history_size=5)),))
    assert chat_options(own) == (False, False, ["/", "/demo/publish", "/demo/token"])


async def test_demo_identities_are_for_dev_mode_only(main_server: ServerProcess, http: Any) -> None:
    page = (await fetch(http, main_server.base + "/")).body.decode()
    assert '"identity": false' in page
    answer = await fetch(http, main_server.base + "/demo/token", "POST", urlencode({"name": "Ann"}))
    assert answer.code == 404

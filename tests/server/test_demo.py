"""The demo page, its chat (client publish, no key on the page), its
ticker, and ``--no-demo``."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from server.processes import (
    KEY,
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


def page_config(page: str) -> dict[str, Any]:
    """The page's configuration (its ``demo-config`` script)."""
    found = re.search(r'<script type="application/json" id="demo-config">(.*?)</script>', page)
    assert found, page
    config: dict[str, Any] = json.loads(found.group(1))
    return config


async def chat_publish(http: Any, hub: ServerProcess, data: object, token: str = "") -> Any:
    """What the page's chat does over HTTP: POST to the subscribe URL."""
    query = {"token": token} if token else {}
    body = json.dumps({"channel": "demo:chat", "data": data})
    return await fetch(http, hub.url(**query), "POST", body,
                       {"Content-Type": "application/json"})  # fmt: skip


async def test_demo_page_holds_no_key_and_its_chat_follows_the_configuration(
    main_server: ServerProcess, http: Any
) -> None:
    page = await fetch(http, main_server.base + "/")
    assert page.code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert b'<script src="/torchannels/torchannel.js"></script>' in page.body
    assert KEY.encode() not in page.body
    script = await fetch(http, main_server.base + "/torchannels/torchannel.js")
    assert script.code == 200 and b"TorChannels" in script.body
    for other in ("torchannel.mjs", "torchannel.d.ts"):
        assert (await fetch(http, main_server.base + "/torchannels/" + other)).code == 200, other
    config = page_config(page.body.decode())
    assert "apiKey" not in config
    # Without dev mode and without a publish option on demo:chat, no page
    # may publish there: the page knows it, and the server refuses it.
    assert config["chatPublish"] is False
    assert_error(await chat_publish(http, main_server, {"text": "hi"}), 403, "publish_forbidden")
    # The old anonymous publisher is gone.
    gone = await fetch(http, main_server.base + "/demo/publish", "POST", "text=hi")
    assert gone.code == 404


async def test_dev_mode_chat_publishes_with_its_sender(spawn: Any, http: Any) -> None:
    hub = spawn("--dev", "--api-key", KEY, "--token-secret", SECRET)
    page = (await fetch(http, hub.base + "/")).body.decode()
    assert KEY not in page
    assert page_config(page)["chatPublish"] is True
    answer = as_json(
        await fetch(http, hub.base + "/demo/token", "POST", urlencode({"name": "Ann"}))
    )
    before = await poll(http, hub, ["demo:chat"])
    said = await chat_publish(http, hub, {"text": "hello hub"}, answer["token"])
    assert said.code == 200, said.body
    after = await poll(http, hub, ["demo:chat"], cursor=before["cursor"])
    [message] = [f["data"] for f in after["frames"] if f["type"] == "message"]
    assert message["text"] == "hello hub" and message["offset"] == as_json(said)["offset"]
    assert message["sender"]["user"] == answer["user"]
    # A name inside the message cannot pass for the sender's.
    forged = await chat_publish(http, hub, {"text": "hi", "sender": {"user": "x"}}, answer["token"])
    assert_error(forged, 400, "invalid_message")


async def test_demo_ticker_feeds_its_channel(main_server: ServerProcess, lives: Any) -> None:
    live = lives(main_server.url(transport="sse", channel="demo:ticker"))
    frames = await live.wait(lambda fs: any(f["type"] == "message" for f in fs), timeout=5)
    [tick, *_] = [f["data"] for f in frames if f["type"] == "message"]
    assert isinstance(tick["price"], float) and tick["price"] > 0


async def test_no_demo_removes_the_demo(bare_server: ServerProcess, http: Any) -> None:
    assert (await fetch(http, bare_server.base + "/")).code == 404
    response = await fetch(http, bare_server.base + "/demo/token", "POST", "name=ann")
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


def test_dev_mode_chat_options_yield_to_the_configuration() -> None:
    def chat_options(config: ServerConfig) -> tuple[bool, bool, str | None, list[str]]:
        hub = Hub()
        paths = [route[0] for route in demo_routes(config, hub)]
        options = hub.channel_options.get("demo:chat")
        return options.presence, options.join_leave, options.publish, paths

    dev = ServerConfig(dev=True, api_key="k").with_dev_key()
    assert chat_options(dev) == (True, True, "subscribers", ["/", "/demo/token"])
    assert chat_options(ServerConfig()) == (False, False, None, ["/"])
    own = replace(dev, channels=(("demo:*", ChannelOptions(history_size=5)),))
    assert chat_options(own) == (False, False, None, ["/", "/demo/token"])


async def test_demo_identities_are_for_dev_mode_only(main_server: ServerProcess, http: Any) -> None:
    page = (await fetch(http, main_server.base + "/")).body.decode()
    assert '"identity": false' in page
    answer = await fetch(http, main_server.base + "/demo/token", "POST", urlencode({"name": "Ann"}))
    assert answer.code == 404

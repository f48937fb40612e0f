"""The seed API through a real handler: get_channel().send/set_state."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web

import torchannels
from support import Server, content, messages, track_cursor
from torchannels import ChannelNameError, Hub, MessageError, TorChannelsError, torchannel
from torchannels.protocol import RESERVED_KEYS


class BaseHandler(tornado.web.RequestHandler):
    """An application's own base handler, as in the seed's ``basehandler``."""

    def initialize(self, app_name: str = "plain") -> None:
        self.app_name = app_name

    def get_current_user(self) -> str | None:
        return self.get_cookie("user")


# The seed's idiom: the mixin's initialize(**kwargs) takes hub= and hands the
# rest to the app's own initialize(app_name=...), which mypy cannot see.
class SeedHandler(torchannel.ChannelMixin, BaseHandler):  # type: ignore[misc]  # see above
    """Written as in the seed README."""

    seen: list[tuple[str, str, str | None]] = []  # noqa: RUF012 - reset per test

    def can_access(self, sub: torchannel.Subscription) -> bool:
        if not (super().can_access(sub)):
            return False
        user: str | None = self.current_user
        self.seen.append((str(sub), self.app_name, user))
        return user != "mallory"


@pytest.fixture
def handler(hub: Hub) -> type[SeedHandler]:
    cls = type("ChannelHandler", (SeedHandler,), {"hub": hub, "seen": []})
    return cls


@pytest.fixture
def app_server(make_server: Callable[..., Server], handler: type[SeedHandler]) -> Server:
    return make_server(handler)


def test_seed_module_is_the_modern_api() -> None:
    assert torchannel.ChannelMixin is torchannels.ChannelMixin
    assert torchannel.Subscription is torchannels.Subscription
    for name in torchannels.__all__:
        assert hasattr(torchannels, name), name


async def test_seed_handler_serves_its_class_hub(
    app_server: Server, handler: type[SeedHandler]
) -> None:
    handler.get_channel("news").send({"text": "hello"})
    doc = await app_server.poll(channel="news")
    assert [m["text"] for m in messages(doc["frames"])] == ["hello"]
    assert handler.seen == [("news", "plain", None)]


async def test_mallory_is_refused_by_the_seed_style_override(
    app_server: Server, handler: type[SeedHandler]
) -> None:
    handler.get_channel("news").send({"text": "secret"})
    resp = await app_server.fetch(
        app_server.url(transport="poll", channel="news"), headers={"Cookie": "user=mallory"}
    )
    frames = json.loads(resp.body)["frames"]
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["code"] == "forbidden"


async def test_route_kwargs_reach_both_initializers(
    make_server: Callable[..., Server], hub: Hub
) -> None:
    """``hub=`` goes to the mixin, the rest to the app's own initialize()."""
    cls: type[SeedHandler] = type("RouteHandler", (SeedHandler,), {"seen": []})
    server = make_server(routes=[(r"/app/channels", cls, {"hub": hub, "app_name": "demo"})])
    hub.channel("news").send({"text": "via route"})
    resp = await server.fetch(
        server.url("/app/channels", transport="poll", channel="news"),
        headers={"Cookie": "user=alice"},
    )
    assert resp.code == 200, resp.body
    assert [m["text"] for m in messages(json.loads(resp.body)["frames"])] == ["via route"]
    assert cls.seen == [("news", "demo", "alice")]


async def test_seed_app_verbatim_uses_the_process_hub(make_server: Callable[..., Server]) -> None:
    class ChannelHandler(torchannel.ChannelMixin, BaseHandler):  # type: ignore[misc]  # as SeedHandler
        def can_access(self, sub: torchannel.Subscription) -> bool:
            if not (super().can_access(sub)):  # noqa: SIM103 - as written in the seed
                return False
            return True

    name = f"seed-{uuid.uuid4().hex}"
    sent = ChannelHandler.get_channel(name).send({"text": "from the seed"})
    assert ChannelHandler.hub is torchannels.default_hub()
    server = make_server(ChannelHandler, hub_=torchannels.default_hub())
    doc = await server.poll(channel=name)
    assert messages(doc["frames"]) == [sent]


# -- send ----------------------------------------------------------------------


async def test_send_returns_a_stamped_copy(app_server: Server, handler: type[SeedHandler]) -> None:
    message = {"text": "hi", "n": 1, "tags": ["a"]}
    before = time.time()
    out = handler.get_channel("news").send(message)
    assert message == {"text": "hi", "n": 1, "tags": ["a"]}  # not mutated
    assert out is not message
    assert set(out) == {"text", "n", "tags", "channel", "ts", "epoch", "offset"}
    assert out["channel"] == "news"
    assert out["offset"] == 1
    assert isinstance(out["ts"], float)
    assert before - 1 <= out["ts"] <= time.time() + 1
    info = await handler.get_channel("news").info()
    assert out["epoch"] == info.position.epoch
    doc = await app_server.poll(channel="news")
    assert messages(doc["frames"]) == [out]  # delivered exactly as returned


async def test_changing_the_returned_copy_changes_nothing_delivered(
    app_server: Server, handler: type[SeedHandler]
) -> None:
    out = handler.get_channel("news").send({"text": "original", "tags": ["a"]})
    expected = json.loads(json.dumps(out))
    out["text"] = "changed"
    out["tags"].append("b")
    del out["ts"]
    doc = await app_server.poll(channel="news")
    assert messages(doc["frames"]) == [expected]


async def test_one_dict_to_two_channels(app_server: Server, handler: type[SeedHandler]) -> None:
    message = {"text": "everywhere"}
    to_a = handler.get_channel("a").send(message)
    to_b = handler.get_channel("b").send(message)
    again = handler.get_channel("a").send(message)
    assert message == {"text": "everywhere"}
    assert (to_a["channel"], to_a["offset"]) == ("a", 1)
    assert (to_b["channel"], to_b["offset"]) == ("b", 1)
    assert (again["channel"], again["offset"]) == ("a", 2)
    doc = await app_server.poll(channel=["a", "b"])
    assert messages(doc["frames"], "a") == [to_a, again]
    assert messages(doc["frames"], "b") == [to_b]


async def test_async_send_and_set_state(app_server: Server, handler: type[SeedHandler]) -> None:
    channel = handler.get_channel("news")
    first = await channel.asend({"n": 1})
    at = await channel.aset_state([{"s": 1}])
    second = await channel.asend({"n": 2})
    assert (first["offset"], at.offset, second["offset"]) == (1, 1, 2)
    doc = await app_server.poll(channel="news")
    subscribed = content(doc["frames"])[0]
    assert [s["s"] for s in subscribed["state"]] == [1]
    assert messages(doc["frames"]) == [second]


def test_invalid_channel_name_is_refused(handler: type[SeedHandler]) -> None:
    with pytest.raises(ChannelNameError):
        handler.get_channel("no spaces please")


async def _assert_nothing_stored(
    server: Server, handler: type[SeedHandler], name: str, top: int
) -> None:
    info = await handler.get_channel(name).info()
    assert info.position.offset == top
    assert info.history_length == top
    assert not info.has_state
    doc = await server.poll(channel=name)
    assert len(messages(doc["frames"])) == top
    assert all(f["type"] in ("subscribed", "message") for f in doc["frames"])
    assert "state" not in doc["frames"][0]


@pytest.mark.parametrize("key", sorted(RESERVED_KEYS))
async def test_reserved_keys_are_refused(
    app_server: Server, handler: type[SeedHandler], key: str
) -> None:
    handler.get_channel("news").send({"n": 1})
    message = {"text": "x", key: "mine"}
    with pytest.raises(MessageError, match=key):
        handler.get_channel("news").send(message)
    assert message == {"text": "x", key: "mine"}
    with pytest.raises(MessageError):
        handler.get_channel("news").set_state([{"ok": 1}, {key: 1}])
    await _assert_nothing_stored(app_server, handler, "news", 1)


NOT_JSON: list[tuple[str, Any]] = [
    ("object", object()),
    ("set", {1, 2}),
    ("bytes", b"raw"),
    ("nested object", {"deep": [object()]}),
    ("complex", 1j),
    ("nan", math.nan),
    ("infinity", math.inf),
    ("minus infinity", -math.inf),
]


@pytest.mark.parametrize("value", [v for _, v in NOT_JSON], ids=[n for n, _ in NOT_JSON])
async def test_non_json_values_are_refused(
    app_server: Server, handler: type[SeedHandler], value: Any
) -> None:
    with pytest.raises(MessageError):
        handler.get_channel("news").send({"value": value})
    with pytest.raises(MessageError):
        handler.get_channel("news").set_state([{"value": value}])
    await _assert_nothing_stored(app_server, handler, "news", 0)


@pytest.mark.parametrize("message", [["a"], "text", None, 42, ("k", "v")])
async def test_non_dict_messages_are_refused(
    app_server: Server, handler: type[SeedHandler], message: Any
) -> None:
    with pytest.raises(MessageError):
        handler.get_channel("news").send(message)
    await _assert_nothing_stored(app_server, handler, "news", 0)


@pytest.mark.parametrize("states", [{"s": 1}, "text", b"raw", [1, 2], [{"s": 1}, "x"]])
async def test_set_state_wants_a_list_of_dicts(
    app_server: Server, handler: type[SeedHandler], states: Any
) -> None:
    with pytest.raises(MessageError):
        handler.get_channel("news").set_state(states)
    await _assert_nothing_stored(app_server, handler, "news", 0)


def test_message_error_is_in_the_hierarchy() -> None:
    assert issubclass(MessageError, TorChannelsError)
    assert issubclass(MessageError, ValueError)


# -- set_state ------------------------------------------------------------------


async def test_late_joiner_gets_state_then_later_messages(
    app_server: Server, handler: type[SeedHandler]
) -> None:
    game = handler.get_channel("game")
    game.send({"move": 1})
    game.send({"move": 2})
    at = game.set_state([{"board": "x"}, {"board": "xo"}])
    assert at is not None  # the in-memory broker knows the position at once
    after = [game.send({"move": 3}), game.send({"move": 4})]
    doc = await app_server.poll(channel="game")
    frames = doc["frames"]
    assert [f["type"] for f in frames] == ["subscribed", "message", "message"]
    sub = frames[0]
    assert (sub["channel"], sub["epoch"], sub["offset"]) == ("game", at.epoch, 2)
    assert [s["board"] for s in sub["state"]] == ["x", "xo"]
    assert all(s["channel"] == "game" for s in sub["state"])
    assert messages(frames) == after
    assert doc["cursor"] == f"game={at.epoch}:4"


async def test_resumer_gets_the_real_missed_messages(
    app_server: Server, handler: type[SeedHandler]
) -> None:
    game = handler.get_channel("game")
    first = game.send({"move": 1})
    missed = [game.send({"move": 2})]
    game.set_state([{"board": "summary"}])
    missed.append(game.send({"move": 3}))
    doc = await app_server.poll(channel="game", cursor=f"game={first['epoch']}:1")
    assert [f["type"] for f in doc["frames"]] == ["message", "message"]
    assert messages(doc["frames"]) == missed


async def test_positions_are_per_channel(app_server: Server, handler: type[SeedHandler]) -> None:
    """The seed's TODO: joining B later never re-downloads A, and B's state
    arrives exactly once."""
    a, b = handler.get_channel("a"), handler.get_channel("b")
    a.set_state([{"a-state": 1}])
    a.send({"a": 1})
    b.send({"b": 0})
    b.set_state([{"b-state": 1}])
    first = await app_server.poll(channel="a")
    assert [f["type"] for f in first["frames"]] == ["subscribed", "message"]
    a_new = a.send({"a": 2})
    b_new = b.send({"b": 1})
    second = await app_server.poll(channel=["a", "b"], cursor=first["cursor"])
    frames = second["frames"]
    assert messages(frames, "a") == [a_new]
    subscribed = [f for f in frames if f["type"] == "subscribed"]
    assert [f["channel"] for f in subscribed] == ["b"]
    assert [s["b-state"] for s in subscribed[0]["state"]] == [1]
    assert messages(frames, "b") == [b_new]
    assert second["cursor"] == track_cursor(first["cursor"], frames)
    third = await app_server.poll(channel=["a", "b"], cursor=second["cursor"])
    assert third["frames"] == []
    assert third["cursor"] == second["cursor"]


def test_channel_handles_are_equal_and_hash_alike() -> None:
    hub, other = Hub(), Hub()
    first, again = hub.channel("news"), hub.channel("news")
    assert first == again and hash(first) == hash(again)
    assert {first: 1}[again] == 1  # the seed's users keep channels in dicts
    assert first != hub.channel("sport")
    assert first != other.channel("news")  # same name, another hub
    assert first != "news"

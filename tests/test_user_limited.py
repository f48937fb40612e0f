"""``user_limited`` channel options in embedded apps (issue 19): a
personal channel is readable by the users its name lists, on every
transport, before ``can_access`` is asked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlencode

import pytest
import tornado.web
from tornado.websocket import websocket_connect

from support import TRANSPORTS, Server, receive
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings
from torchannels.channel_options import ChannelOptionsTable
from torchannels.session import Subscription


class UserHandler(ChannelMixin, tornado.web.RequestHandler):
    """The user comes from ``?user=``; can_access allows all and records
    the channels it was asked about."""

    asked: ClassVar[list[str]] = []

    def get_current_user(self) -> str | None:
        return self.get_query_argument("user", None)

    def can_access(self, sub: Subscription) -> bool:
        UserHandler.asked.append(sub.channel)
        return True


def make(make_server: Callable[..., Server]) -> Server:
    hub = Hub(MemoryBroker(), Settings(ping_interval=0.5))
    hub.configure_channels("user:*", user_limited=True)
    hub.configure_channels("dm:*", user_limited=True, presence=True)
    handler: type[ChannelMixin] = type("Handler", (UserHandler,), {"hub": hub})
    return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])


async def outcome(
    server: Server, transport: str, channels: list[str], user: str | None
) -> list[tuple[str, str, str | None]]:
    """Sorted (type, channel, error code) of each channel's first answer."""
    query: dict[str, Any] = {} if user is None else {"user": user}
    if transport == "websocket":
        params = urlencode([("channel", c) for c in channels] + list(query.items()))
        conn = await websocket_connect(f"ws://127.0.0.1:{server.port}/channels/ws?{params}")
        frames: list[dict[str, Any]] = []
        try:
            while len([f for f in frames if f["type"] in ("subscribed", "error")]) < len(channels):
                raw = await conn.read_message()
                assert isinstance(raw, str)
                frames.append(json.loads(raw))
        finally:
            conn.close()
    else:
        got = await receive(
            server, transport, channels, timeout=0.1, **query,
            until=lambda fs: len([f for f in fs if f["type"] in ("subscribed", "error")])
            >= len(channels),
        )  # fmt: skip
        frames = got.frames
    return sorted(
        (f["type"], f["channel"], f.get("code"))
        for f in frames
        if f["type"] in ("subscribed", "error")
    )


ALL = [*TRANSPORTS, "websocket"]


@pytest.mark.parametrize("transport", ALL)
async def test_user_reads_own_channel_and_is_refused_anothers(
    make_server: Callable[..., Server], transport: str
) -> None:
    server = make(make_server)
    UserHandler.asked = []
    got = await outcome(server, transport, ["user:42", "user:57", "room:1"], "42")
    assert got == [
        ("error", "user:57", "forbidden"),
        ("subscribed", "room:1", None),
        ("subscribed", "user:42", None),
    ]
    # The refusal came before can_access: it was never asked about user:57.
    assert sorted(UserHandler.asked) == ["room:1", "user:42"]


@pytest.mark.parametrize("transport", ALL)
async def test_dm_channel_is_read_by_its_two_users_only(
    make_server: Callable[..., Server], transport: str
) -> None:
    server = make(make_server)
    for user in ("42", "57"):
        got = await outcome(server, transport, ["dm:42$57"], user)
        assert got == [("subscribed", "dm:42$57", None)], user
    got = await outcome(server, transport, ["dm:42$57"], "4257")
    assert got == [("error", "dm:42$57", "forbidden")]


@pytest.mark.parametrize("transport", ALL)
async def test_anonymous_connection_is_refused(
    make_server: Callable[..., Server], transport: str
) -> None:
    server = make(make_server)
    got = await outcome(server, transport, ["user:42", "room:1"], None)
    assert got == [("error", "user:42", "forbidden"), ("subscribed", "room:1", None)]


async def test_own_channel_delivers_messages(make_server: Callable[..., Server]) -> None:
    server = make(make_server)
    first = await server.poll_doc("poll", channel="user:42", user="42")
    server.hub.channel("user:42").send({"text": "hi"})
    again = await server.poll_doc("poll", channel="user:42", user="42", cursor=first["cursor"])
    assert [f["data"]["text"] for f in again["frames"] if f["type"] == "message"] == ["hi"]


async def test_presence_read_of_a_dm_channel_is_limited_to_its_users(
    make_server: Callable[..., Server],
) -> None:
    server = make(make_server)
    mine = await server.fetch(server.url(presence="dm:42$57", user="57"))
    assert mine.code == 200, mine.body
    other = await server.fetch(server.url(presence="dm:42$57", user="99"))
    assert (other.code, json.loads(other.body)["error"]) == (403, "forbidden")


def test_users_of_splits_the_name_after_the_prefix() -> None:
    table = ChannelOptionsTable()
    table.set("dm:*", user_limited=True)
    table.set("dm:open", presence=True)  # an exact name beats the prefix
    table.set("*", user_limited=True)
    assert table.users_of("dm:42$57") == frozenset({"42", "57"})
    assert table.users_of("dm:a@b.com$c.d") == frozenset({"a@b.com", "c.d"})
    assert table.users_of("dm:$42$$") == frozenset({"42"})  # empty parts name nobody
    assert table.users_of("dm:") == frozenset()  # readable by no one
    assert table.users_of("dm:open") is None
    assert table.users_of("ann") == frozenset({"ann"})  # "*": the whole name


@pytest.mark.parametrize(
    ("pattern", "value", "message"),
    [
        ("user:42", True, "user_limited needs a prefix pattern ending in '*'"),
        ("user:*", "yes", "user_limited must be a boolean"),
        ("user:*", 1, "user_limited must be a boolean"),
    ],
)
def test_bad_user_limited_is_a_value_error(pattern: str, value: object, message: str) -> None:
    hub_table = ChannelOptionsTable()
    with pytest.raises(ValueError, match=message):
        hub_table.set(pattern, user_limited=value)
    assert hub_table.patterns() == {}

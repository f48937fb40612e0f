"""Identity: client ids on every transport, ``client=`` for polling
clients, ``identify()`` and what ``can_access`` sees (issue 18)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import tornado.web
from tornado.websocket import websocket_connect

from support import TRANSPORTS, Server, receive
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings
from torchannels.identity import ClientIds, PageCursors, User, check_info, new_client_id
from torchannels.session import Subscription

SECRET = b"identity-test-secret"


class UserHandler(ChannelMixin, tornado.web.RequestHandler):
    """The user comes from ``?user=`` (Tornado's current_user); can_access
    lets a user read ``private:USER`` only, and records what it saw."""

    seen: ClassVar[list[tuple[str | None, Any, str | None]]] = []

    def get_current_user(self) -> str | None:
        return self.get_query_argument("user", None)

    def can_access(self, sub: Subscription) -> bool:
        UserHandler.seen.append((sub.user, sub.info, sub.client))
        return not sub.channel.startswith("private:") or sub.channel == f"private:{sub.user}"


class InfoHandler(UserHandler):
    async def identify(self) -> User | None:
        user = self.get_query_argument("user", None)
        return None if user is None else User(user, {"name": user.title()})


def make(make_server: Callable[..., Server], base: type[ChannelMixin]) -> Server:
    hub = Hub(MemoryBroker(), Settings(ping_interval=0.5, client_id_secret=SECRET))
    handler: type[ChannelMixin] = type("Handler", (base,), {"hub": hub})
    return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])


async def ws_first(server: Server, query: str) -> dict[str, Any]:
    conn = await websocket_connect(f"ws://127.0.0.1:{server.port}/channels/ws?{query}")
    try:
        raw = await conn.read_message()
        assert isinstance(raw, str)
        frame: dict[str, Any] = json.loads(raw)
        return frame
    finally:
        conn.close()


@pytest.mark.parametrize("transport", [*TRANSPORTS, "websocket"])
async def test_every_transport_shows_a_signed_client_id(
    make_server: Callable[..., Server], transport: str
) -> None:
    server = make(make_server, UserHandler)
    if transport == "websocket":
        client = (await ws_first(server, "channel=news"))["client"]
    else:
        got = await receive(server, transport, ["news"], timeout=0.1, until=bool)
        client = got.client
    assert isinstance(client, str)
    assert ClientIds(SECRET).verify(client) is not None


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
async def test_polling_client_keeps_its_id_and_a_tampered_one_gets_a_new_id(
    make_server: Callable[..., Server], transport: str
) -> None:
    server = make(make_server, UserHandler)
    first = await server.poll_doc(transport, channel="news", timeout=0.1)
    again = await server.poll_doc(transport, channel="news", timeout=0.1, client=first["client"])
    assert again["client"] == first["client"]
    ids = ClientIds(SECRET)
    opened = ids.verify(first["client"])
    assert opened is not None
    plain, since = opened
    assert abs(since - time.time()) < 60  # the signed id carries when the client began
    forged = ids.sign(plain, since)[:-2] + ("AA" if not first["client"].endswith("AA") else "BB")
    other_id = f"{plain.split('-')[0]}-zzzz.{first['client'].rpartition('.')[2]}"
    for bad in (forged, other_id, "garbage", plain):
        doc = await server.poll_doc(transport, channel="news", timeout=0.1, client=bad)
        got = ids.verify(doc["client"])
        assert got is not None and got[0] != plain, bad  # a new id, never an error


@pytest.mark.parametrize("transport", [*TRANSPORTS, "websocket"])
async def test_can_access_sees_the_user_and_client(
    make_server: Callable[..., Server], transport: str
) -> None:
    server = make(make_server, InfoHandler)
    UserHandler.seen = []
    channels = ["private:ann", "private:bob"]
    if transport == "websocket":
        conn = await websocket_connect(
            f"ws://127.0.0.1:{server.port}/channels/ws?user=ann&channels={','.join(channels)}"
        )
        frames: list[dict[str, Any]] = []
        while len([f for f in frames if f["type"] in ("subscribed", "error")]) < 2:
            raw = await conn.read_message()
            assert isinstance(raw, str)
            frames.append(json.loads(raw))
        conn.close()
        client = frames[0]["client"]
    else:
        got = await receive(
            server, transport, channels, user="ann", timeout=0.1,
            until=lambda fs: len(fs) >= 2,
        )  # fmt: skip
        frames, client = got.frames, got.client
    kinds = {(f["type"], f.get("channel")) for f in frames}
    assert ("subscribed", "private:ann") in kinds and ("error", "private:bob") in kinds
    opened = ClientIds(SECRET).verify(client)
    assert opened is not None
    assert UserHandler.seen == [("ann", {"name": "Ann"}, opened[0])] * 2


async def test_anonymous_when_no_current_user(make_server: Callable[..., Server]) -> None:
    server = make(make_server, UserHandler)
    UserHandler.seen = []
    await server.poll(channel="news")
    assert [(user, info) for user, info, _ in UserHandler.seen] == [(None, None)]


def test_client_ids_are_unique_and_signed() -> None:
    made = {new_client_id() for _ in range(1000)}
    assert len(made) == 1000
    ids = ClientIds(b"k")
    assert ClientIds(b"other").verify(ids.sign("x-1", 0.0)) is None
    # A page cursor never passes as a client id, nor the other way round.
    cursor = PageCursors(b"k").sign("x-1")
    assert ids.verify(cursor) is None and PageCursors(b"k").verify(ids.sign("x-1", 0.0)) is None


@pytest.mark.parametrize(
    ("info", "ok"),
    [
        (None, True),
        ({"name": "Ann"}, True),
        ({"x": "é" * 500}, True),  # 1000 bytes of UTF-8 + the rest: 1009 bytes
        ({"x": "é" * 510}, False),  # 1029 bytes
        ([1, 2], False),
        ("Ann", False),
        (3, False),
    ],
)
def test_info_is_a_json_object_of_at_most_1_kib(info: object, ok: bool) -> None:
    if ok:
        assert check_info(info) == info
    else:
        with pytest.raises(ValueError):
            check_info(info)

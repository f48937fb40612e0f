"""Control commands in the library: the rules that match connections, the
bounded table, the in-process bus, and an embedded app's ``hub.revoke``
through ``credential()`` (issue 19)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web
from tornado.websocket import websocket_connect

from support import Server
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings
from torchannels.brokers.control import MemoryControl
from torchannels.control import (
    DISCONNECT,
    REVOKE,
    UNSUBSCRIBE,
    Command,
    ControlTable,
    check_time,
    disconnect_command,
    revoke_command,
    unsubscribe_command,
)
from torchannels.identity import Identity, User


def ident(user: str | None, since: float, *, client: str = "p-1", issued: float | None = None,
          jti: str | None = None, transport: str = "websocket") -> Identity:  # fmt: skip
    return Identity(client, None if user is None else User(user), transport, since, issued, jti)


def test_a_disconnect_matches_its_users_connections_begun_before_it() -> None:
    command = disconnect_command(user="ann", now=100.0)
    assert command.kind == DISCONNECT and command.expires == 160.0
    assert command.matches(ident("ann", 99.0))
    assert not command.matches(ident("ann", 100.5))  # began after: a fresh connection
    assert not command.matches(ident("bob", 99.0)) and not command.matches(ident(None, 99.0))
    by_client = disconnect_command(client="p-1", now=100.0)
    assert by_client.matches(ident(None, 50.0)) and not by_client.matches(
        ident(None, 50, client="x")
    )


def test_a_user_revocation_matches_tokens_issued_before_its_time() -> None:
    command = revoke_command(user="ann", before=100.0, now=50.0)
    assert (command.kind, command.at, command.expires) == (REVOKE, 100.0, 86500.0)
    assert command.matches(ident("ann", 200.0, issued=99.0))
    assert command.matches(ident("ann", 200.0, issued=None))  # no iat: issued before any time
    assert not command.matches(ident("ann", 200.0, issued=100.0))
    assert not command.matches(ident("bob", 200.0, issued=1.0))
    one = revoke_command(jti="t-1", expires=500.0, now=50.0)
    assert one.matches(ident("x", 0.0, jti="t-1")) and not one.matches(ident("x", 0.0, jti="t-2"))


def test_commands_survive_their_encoding() -> None:
    made = [
        disconnect_command(user="ann", reconnect=True),
        unsubscribe_command("room:1", client="c-9"),
        revoke_command(jti="t", expires=time.time() + 60),
    ]
    for command in made:
        assert Command.decode(command.encode()) == command
    for junk in (b"{", b"[]", b'{"kind": "reboot"}', b'{"kind": "revoke", "x": 1}', b"\xff"):
        with pytest.raises(ValueError):
            Command.decode(junk)


@pytest.mark.parametrize(
    ("value", "hint"),
    [("1", "a number"), (True, "a number"), (float("nan"), "a number"), (-1, "negative"),
     (1.8e12, "milliseconds")],
)  # fmt: skip
def test_times_are_seconds(value: object, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        check_time("before", value)


def test_the_table_is_bounded_and_drops_the_soonest_to_expire() -> None:
    table = ControlTable(limit=3)
    now = time.time()
    made = [revoke_command(user=f"u{n}", before=now, expires=now + 100 + n) for n in range(5)]
    for command in made:
        table.add(command, now)
    assert len(table) == 3
    assert {c.user for c in table.commands()} == {"u2", "u3", "u4"}
    assert table.first(REVOKE, ident("u0", now, issued=now - 1)) is None
    assert table.first(REVOKE, ident("u4", now, issued=now - 1)) is made[4]
    assert not table.add(made[4], now)  # known already
    expired = Command("old", DISCONNECT, now - 100, now - 1, user="u9")
    assert not table.add(expired, now)


def test_an_unsubscribe_is_found_by_its_channel_only() -> None:
    table = ControlTable()
    command = unsubscribe_command("room:1", user="ann")
    table.add(command)
    early = ident("ann", command.at - 1, transport="poll")
    assert table.first(UNSUBSCRIBE, early, "room:1") is command
    assert table.first(UNSUBSCRIBE, early, "room:2") is None


async def test_the_memory_bus_delivers_to_every_listener_and_collects_replies() -> None:
    bus = MemoryControl()
    heard: list[Command] = []
    replies: set[asyncio.Task[None]] = set()

    def listener(count: int) -> Callable[[Command], None]:
        def hear(command: Command) -> None:
            heard.append(command)
            replies.add(asyncio.ensure_future(bus.reply(command.id, count)))

        return hear

    bus.listen(listener(3), lambda: None)
    bus.listen(listener(4), lambda: None)
    command = disconnect_command(user="ann")
    assert await bus.issue(command) == 2
    assert heard == []  # delivered on the next loop turn, as from another process
    assert sorted(await bus.replies(command.id, 2, timeout=5)) == [3, 4]
    assert heard == [command, command]
    assert await bus.load() == [command]


async def test_replies_that_do_not_come_end_the_wait_with_those_that_did() -> None:
    bus = MemoryControl()
    command = disconnect_command(user="ann")
    await bus.issue(command)
    started = time.monotonic()
    assert await bus.replies(command.id, 1, timeout=0.2) == []
    assert time.monotonic() - started >= 0.2


class SessionHandler(ChannelMixin, tornado.web.RequestHandler):
    """Users from ``?user=``, and a session issued at ``?issued=`` (an
    embedded app's own credential: no token)."""

    def get_current_user(self) -> str | None:
        return self.get_query_argument("user", None)

    def credential(self) -> tuple[float | None, str | None]:
        issued = self.get_query_argument("issued", None)
        return (None if issued is None else float(issued)), None


def make(make_server: Callable[..., Server]) -> Server:
    hub = Hub(MemoryBroker(), Settings(ping_interval=0.5))
    handler: type[ChannelMixin] = type("Handler", (SessionHandler,), {"hub": hub})
    return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])


async def read_until_closed(conn: Any) -> list[dict[str, Any]]:
    frames = []
    while (raw := await conn.read_message()) is not None:
        frames.append(json.loads(raw))
    return frames


async def test_an_embedded_app_revokes_sessions_issued_before_a_time(
    make_server: Callable[..., Server],
) -> None:
    server = make(make_server)
    now = time.time()
    url = f"ws://127.0.0.1:{server.port}/channels/ws?user=ann&channel=news&issued={now - 60}"
    conn = await websocket_connect(url)
    first = await conn.read_message()
    assert first is not None and json.loads(first)["type"] == "connected"
    reach = await server.hub.revoke(user="ann", before=now - 30)
    assert (reach.connections, reach.processes, reach.answered) == (1, 1, 1)
    frames = await read_until_closed(conn)
    assert frames[-1] == {"type": "disconnect", "reason": "token_revoked", "reconnect": False}
    assert conn.close_code == 4003
    old = await server.poll(channel="news", user="ann", issued=now - 60)
    assert [f.get("code") for f in old["frames"]] == ["token_revoked"]
    new = await server.poll(channel="news", user="ann", issued=now)
    assert [f["type"] for f in new["frames"]] == ["subscribed"]


def test_a_client_id_is_taken_as_the_wire_carries_it() -> None:
    signed = "5c1e0a9f-2s~mj3k2l9c.Qm9vVGhpc0lzU2ln"
    for given in (signed, "5c1e0a9f-2s.Qm9vVGhpc0lzU2ln", "5c1e0a9f-2s"):
        assert disconnect_command(client=given).client == "5c1e0a9f-2s"
        assert unsubscribe_command("room", client=given).client == "5c1e0a9f-2s"
    with pytest.raises(ValueError, match="non-empty"):
        disconnect_command(client="~x.y")

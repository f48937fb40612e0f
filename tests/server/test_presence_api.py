"""Presence through the HTTP API over loopback (issue 18): counts in ``GET
/api/channels/NAME`` and the rows of ``GET /api/channels``, ``GET
/api/channels/NAME/presence`` paged through 10,000 users, its refusals
(``presence_disabled``, ``invalid_cursor``, ``invalid_limit``, the key), the
internal port, the admin page's routes and ``torchannels presence`` run as
a command. On the in-memory broker and on Redis."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from redis_servers import shared_redis
from server.presence_hub import PresenceHub
from server.processes import (
    KEY,
    ServerProcess,
    api,
    as_json,
    assert_error,
    auth,
    clean_env,
    cli,
    fetch,
    token_for,
)
from server.test_admin import Browser

PASSWORD = "presence-admin-password"


@pytest.fixture(params=["memory", "redis"])
async def hub(request: pytest.FixtureRequest) -> AsyncIterator[PresenceHub]:
    options: dict[str, Any] = {"admin_password": PASSWORD}
    if request.param == "redis":
        options |= {"broker": shared_redis(), "redis_prefix": f"t-papi-{uuid.uuid4().hex[:8]}"}
    served = PresenceHub(**options)
    yield served
    await served.close()


async def get(http: Any, hub: PresenceHub, path: str, key: str | None = KEY, **query: Any) -> Any:
    url = hub.base + path + (f"?{urlencode(query)}" if query else "")
    return await fetch(http, url, headers=auth(key))


async def members(http: Any, hub: PresenceHub, channel: str, **query: Any) -> dict[str, Any]:
    response = await get(http, hub, f"/api/channels/{quote(channel, safe='')}/presence", **query)
    body: dict[str, Any] = as_json(response)
    assert response.code == 200, body
    assert set(body) == {"channel", "users", "next"} and body["channel"] == channel
    return body


async def test_counts_in_channel_info_and_list_rows(http: Any, hub: PresenceHub) -> None:
    await hub.add("room:a", "alice", {"name": "Alice"})
    await hub.add("room:a", "alice", {"name": "Alice"})  # a second tab: two clients
    await hub.add("room:a", "bob")
    await hub.add("room:a", None)  # anonymous: a client, never a user
    for channel in ("room:a", "room:empty", "news"):
        await hub.hub.channel(channel).asend({"n": 1})  # listed by the broker

    info = as_json(await get(http, hub, "/api/channels/room:a"))
    assert info["presence"] == {"clients": 4, "users": 2}
    assert as_json(await get(http, hub, "/api/channels/room:empty"))["presence"] == {
        "clients": 0,
        "users": 0,
    }
    assert "presence" not in as_json(await get(http, hub, "/api/channels/news"))
    rows = {r["channel"]: r for r in as_json(await get(http, hub, "/api/channels"))["channels"]}
    assert rows["room:a"]["presence"] == {"clients": 4, "users": 2}
    assert rows["room:empty"]["presence"] == {"clients": 0, "users": 0}
    assert "presence" not in rows["news"]

    page = await members(http, hub, "room:a")
    assert page == {
        "channel": "room:a",
        "users": [
            {"user": "alice", "info": {"name": "Alice"}, "clients": 2},
            {"user": "bob", "info": None, "clients": 1},
        ],
        "next": None,
    }


async def test_paging_through_10000_users(http: Any, hub: PresenceHub) -> None:
    ids = [f"u{i:05d}" for i in range(10_000)]
    for start in range(0, len(ids), 500):  # 500 adds at a time
        await asyncio.gather(*(hub.add("room:big", u) for u in ids[start : start + 500]))
    info = as_json(await get(http, hub, "/api/channels/room:big"))
    assert info["presence"] == {"clients": 10_000, "users": 10_000}

    first = await members(http, hub, "room:big")  # the default page: 100
    assert [u["user"] for u in first["users"]] == ids[:100] and first["next"]
    seen: list[str] = []
    sizes: list[int] = []
    query: dict[str, Any] = {"limit": 1000}
    while True:
        page = await members(http, hub, "room:big", **query)
        sizes.append(len(page["users"]))
        seen += [u["user"] for u in page["users"]]
        assert all(u["clients"] == 1 and u["info"] is None for u in page["users"])
        if page["next"] is None:
            break
        query["after"] = page["next"]
    assert sizes == [1000] * 10
    assert seen == ids  # sorted by user id, none skipped or repeated


async def test_tampered_cursor_is_refused(http: Any, hub: PresenceHub) -> None:
    for user in ("a", "b", "c"):
        await hub.add("room:t", user)
    cursor = (await members(http, hub, "room:t", limit=1))["next"]
    assert isinstance(cursor, str)
    second = await members(http, hub, "room:t", limit=1, after=cursor)
    assert [u["user"] for u in second["users"]] == ["b"]
    flipped = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")
    for bad in (flipped, "Yg." + cursor.rpartition(".")[2], "b", "not a cursor", cursor + "x"):
        path = "/api/channels/room:t/presence"
        assert_error(await get(http, hub, path, after=bad), 400, "invalid_cursor")


async def test_refusals(http: Any, hub: PresenceHub) -> None:
    path = "/api/channels/news/presence"
    body = assert_error(await get(http, hub, path), 400, "presence_disabled")
    assert "news" in body["message"]
    good = "/api/channels/room:r/presence"
    for limit in ("0", "1001", "x", "-1"):
        assert_error(await get(http, hub, good, limit=limit), 400, "invalid_limit")
    assert_error(await get(http, hub, "/api/channels/a%20b/presence"), 400, "invalid_channel")
    assert_error(await get(http, hub, good, key=None), 401, "unauthorized")
    assert_error(await get(http, hub, good, key="wrong"), 403, "forbidden")
    assert (await members(http, hub, "room:r", limit=1000))["users"] == []


async def test_on_the_internal_port_only_when_set(http: Any) -> None:
    hub = PresenceHub(internal_port=0)
    try:
        await hub.add("room:x", "ann")
        path = "/api/channels/room:x/presence"
        assert (await get(http, hub, path)).code == 404  # the public port has no API
        assert hub.internal_base is not None
        response = await fetch(http, hub.internal_base + path, headers=auth(KEY))
        assert response.code == 200 and as_json(response)["users"][0]["user"] == "ann"
    finally:
        await hub.close()


async def test_admin_routes_show_counts_and_members(http: Any, hub: PresenceHub) -> None:
    await hub.add("room:adm", "zoe", {"team": "z"})
    await hub.add("room:adm", "amy")
    await hub.add("room:adm", None)
    await hub.hub.channel("room:adm").asend({"n": 1})
    browser = Browser(http, hub)
    path = "/admin/api/channels/room:adm/presence"
    assert (await browser.request(path)).code == 401
    await browser.login(PASSWORD)
    page = as_json(await browser.request(path + "?limit=1"))
    assert page["presence"] == {"clients": 3, "users": 2}
    assert page["users"] == [{"user": "amy", "info": None, "clients": 1}] and page["next"]
    rest = as_json(await browser.request(path + "?" + urlencode({"after": page["next"]})))
    assert rest["users"] == [{"user": "zoe", "info": {"team": "z"}, "clients": 1}]
    assert rest["next"] is None
    rows = as_json(await browser.request("/admin/api/channels?prefix=room:adm"))["channels"]
    assert rows[0]["presence"] == {"clients": 3, "users": 2}
    refused = await browser.request("/admin/api/channels/news/presence")
    assert (refused.code, as_json(refused)["error"]) == (400, "presence_disabled")
    tampered = await browser.request(path + "?after=YQ.AAAAAAAAAAAAAAAA")
    assert (tampered.code, as_json(tampered)["error"]) == (400, "invalid_cursor")


async def command(hub: PresenceHub, *args: str, key: str | None = KEY) -> tuple[int, str, str]:
    """``torchannels presence ARGS`` as a subprocess (this loop keeps serving)."""
    env = clean_env({"TORCHANNELS_URL": hub.base, **({"TORCHANNELS_API_KEY": key} if key else {})})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "torchannels", "presence", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_prints_every_user_and_the_counts(hub: PresenceHub) -> None:
    ids = [f"p{i:04d}" for i in range(2500)]  # three pages of 1000
    for start in range(0, len(ids), 500):
        await asyncio.gather(*(hub.add("room:cli", u) for u in ids[start : start + 500]))
    await hub.add("room:cli", "p0001")
    await hub.add("room:cli", "zed", {"name": "Zed Ö"})
    await hub.add("room:cli", None)

    code, out, err = await command(hub, "room:cli")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "room:cli: 2501 users, 2503 clients"
    assert lines[1:4] == ["p0000  1 client", "p0001  2 clients", "p0002  1 client"]
    assert lines[-1] == 'zed  1 client {"name": "Zed Ö"}' and len(lines) == 2502

    code, out, err = await command(hub, "room:cli", "--json")
    assert (code, err) == (0, "")
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs[0] == {"channel": "room:cli", "clients": 2503, "users": 2501}
    assert [d["user"] for d in docs[1:]] == [*ids, "zed"]
    assert docs[2] == {"user": "p0001", "info": None, "clients": 2}
    assert docs[-1] == {"user": "zed", "info": {"name": "Zed Ö"}, "clients": 1}


async def test_cli_refusals(hub: PresenceHub) -> None:
    code, out, err = await command(hub, "news")
    assert (code, out) == (1, "")
    assert err.startswith("torchannels: 400 presence_disabled: channel 'news' has no presence")
    code, out, err = await command(hub, "room:x", key="wrong")
    assert (code, out) == (1, "") and "403 forbidden" in err
    code, out, err = await command(hub, "room:x", key=None)
    assert (code, out) == (2, "") and "API key" in err
    code, out, err = await command(hub, "a b")
    assert (code, out) == (1, "") and "invalid channel name" in err


async def test_real_connections_to_a_serve_process(
    main_server: ServerProcess, http: Any, sockets: Any
) -> None:
    """``main_server`` gives ``pres:*`` presence: users are WebSocket
    connections with tokens; read through the API and the command."""
    channel = f"pres:real-{uuid.uuid4().hex[:8]}"
    tokens = [
        token_for(channel, sub="alice", info={"name": "Alice"}),
        token_for(channel, sub="alice", info={"name": "Alice"}),  # a second tab
        token_for(channel, sub="bob"),
        token_for(channel),  # no sub: anonymous
    ]
    for token in tokens:
        sock = await sockets(main_server.ws_url(channel=channel, token=token))
        await sock.wait(lambda frames: any(f["type"] == "subscribed" for f in frames))
    info = as_json(await api(http, main_server, f"/api/channels/{channel}"))
    assert info["presence"] == {"clients": 4, "users": 2}
    page = as_json(await api(http, main_server, f"/api/channels/{channel}/presence"))
    assert page == {
        "channel": channel,
        "users": [
            {"user": "alice", "info": {"name": "Alice"}, "clients": 2},
            {"user": "bob", "info": None, "clients": 1},
        ],
        "next": None,
    }
    env = {"TORCHANNELS_URL": main_server.base, "TORCHANNELS_API_KEY": KEY}
    done = await asyncio.to_thread(cli, "presence", channel, env=env)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"{channel}: 2 users, 4 clients",
        'alice  2 clients {"name": "Alice"}',
        "bob  1 client",
    ]


async def test_two_processes_on_redis_share_counts_and_cursors(http: Any) -> None:
    """Two apps on one Redis (one prefix, one API key): users added through
    either are counted by both, and a page cursor of one is accepted by the
    other (its key derives from the API key); another key refuses it."""
    options: dict[str, Any] = {"broker": shared_redis(),
                               "redis_prefix": f"t-papi-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    one, two = PresenceHub(**options), PresenceHub(**options)
    other = PresenceHub(**options, api_key="another-key")
    try:
        for i, user in enumerate(["ann", "ben", "cat", "dan"]):
            await (one if i % 2 else two).add("room:x", user)
        for hub in (one, two):
            info = as_json(await get(http, hub, "/api/channels/room:x"))
            assert info["presence"] == {"clients": 4, "users": 4}
        first = await members(http, one, "room:x", limit=2)
        rest = await members(http, two, "room:x", limit=2, after=first["next"])
        assert [u["user"] for u in first["users"] + rest["users"]] == ["ann", "ben", "cat", "dan"]
        url = other.base + "/api/channels/room:x/presence?" + urlencode({"after": first["next"]})
        refused = await fetch(http, url, headers=auth("another-key"))
        assert_error(refused, 400, "invalid_cursor")
    finally:
        for hub in (one, two, other):
            await hub.close()

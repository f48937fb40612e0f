"""``GET /api/channels`` against real ``torchannels serve`` processes: pages,
prefix, limits, auth errors, and subscriber counts over several processes
sharing one Redis (issue 12)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import redis.asyncio

from redis_servers import shared_redis
from server.processes import (
    KEY,
    Live,
    ServerProcess,
    api,
    as_json,
    assert_error,
    cli,
    fetch,
    poll,
    until,
)

ROW_KEYS = {"channel", "epoch", "offset", "history_length", "has_state",
            "local_subscribers", "subscribers"}  # fmt: skip


async def listing(http: Any, server: ServerProcess, key: str | None = KEY, **query: Any) -> Any:
    path = "/api/channels" + (f"?{urlencode(query)}" if query else "")
    return await api(http, server, path, key=key)


async def page(http: Any, server: ServerProcess, **query: Any) -> dict[str, Any]:
    response = await listing(http, server, **query)
    body: dict[str, Any] = as_json(response)
    assert response.code == 200, body
    assert set(body) == {"channels", "next"}
    for row in body["channels"]:
        assert set(row) == ROW_KEYS, row
    return body


async def publish(http: Any, server: ServerProcess, channel: str, n: int = 0) -> dict[str, Any]:
    response = await api(http, server, "/api/publish", {"channel": channel, "data": {"n": n}})
    assert response.code == 200, response.body
    result: dict[str, Any] = as_json(response)
    return result


def names(body: dict[str, Any]) -> list[str]:
    return [row["channel"] for row in body["channels"]]


async def test_pages_cover_every_channel_once_in_order(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    server = spawn("--no-demo", "--api-key", KEY)
    assert await page(http, server) == {"channels": [], "next": None}
    names = [f"room:{i:02d}" for i in range(25)]
    for i, name in enumerate(reversed(names)):
        await publish(http, server, name, i)
    await api(http, server, "/api/state", {"channel": "room:07", "messages": [{"s": 1}]})
    seen: list[dict[str, Any]] = []
    after = None
    sizes = []
    while True:
        body = await page(http, server, limit=10, **({"after": after} if after else {}))
        sizes.append(len(body["channels"]))
        seen += body["channels"]
        if body["next"] is None:
            break
        assert body["next"] == body["channels"][-1]["channel"]
        after = body["next"]
    assert sizes == [10, 10, 5]
    assert [row["channel"] for row in seen] == names
    row = seen[7]
    assert (row["offset"], row["history_length"], row["has_state"]) == (1, 1, True)
    assert row["epoch"] == seen[0]["epoch"] and row["subscribers"] == 0
    # The default limit is 100; a limit equal to what is left has no next page.
    assert len((await page(http, server))["channels"]) == 25
    assert (await page(http, server, limit=25))["next"] is None
    assert (await page(http, server, limit=24))["next"] == "room:23"


async def test_prefix_filters_and_combines_with_after(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    server = spawn("--no-demo", "--api-key", KEY)
    for name in ("chat:a", "chat:b", "chat:c", "chatty", "chat", "news", "a#b$c"):
        await publish(http, server, name)
    assert names(await page(http, server, prefix="chat:")) == ["chat:a", "chat:b", "chat:c"]
    assert names(await page(http, server, prefix="chat")) == [
        "chat", "chat:a", "chat:b", "chat:c", "chatty"]  # fmt: skip
    body = await page(http, server, prefix="chat:", limit=2)
    assert (names(body), body["next"]) == (["chat:a", "chat:b"], "chat:b")
    body = await page(http, server, prefix="chat:", limit=2, after="chat:b")
    assert (names(body), body["next"]) == (["chat:c"], None)
    assert names(await page(http, server, prefix="a#b")) == ["a#b$c"]  # escaped in the query
    assert names(await page(http, server, prefix="zzz")) == []


async def test_subscribed_channels_are_listed_with_their_counts(
    spawn: Callable[..., ServerProcess], http: Any, lives: Callable[..., Live]
) -> None:
    server = spawn("--no-demo", "--api-key", KEY)
    first = lives(server.url(transport="sse", channel="demo:quiet"))
    second = lives(server.url(transport="stream", channel=["demo:quiet", "demo:busy"]))
    for live in (first, second):
        await live.wait(lambda fs: sum(f["type"] == "subscribed" for f in fs) >= 1)
    await publish(http, server, "demo:busy", 1)
    await second.wait(lambda fs: any(f["type"] == "message" for f in fs))

    async def counted() -> bool:
        rows = {r["channel"]: r for r in (await page(http, server))["channels"]}
        return bool(rows.get("demo:quiet", {}).get("subscribers") == 2)

    await until(counted, "demo:quiet counted")
    rows = {r["channel"]: r for r in (await page(http, server))["channels"]}
    # Nobody published to demo:quiet: listed for its subscribers, at offset 0.
    assert rows["demo:quiet"]["offset"] == 0 and rows["demo:quiet"]["local_subscribers"] == 2
    assert (rows["demo:busy"]["offset"], rows["demo:busy"]["subscribers"]) == (1, 1)


async def test_bad_limits_prefixes_and_names_are_400(main_server: ServerProcess, http: Any) -> None:
    for limit in ("0", "1001", "-1", "abc", "", "1.5", "99999999999999", "²", "1e3"):
        response = await listing(http, main_server, limit=limit)
        body = assert_error(response, 400, "invalid_limit")
        assert "1 to 1000" in body["message"]
    for query in ({"prefix": "a b"}, {"prefix": "x" * 129}, {"after": "a b"}, {"prefix": "é"}):
        assert_error(await listing(http, main_server, **query), 400, "invalid_channel")


async def test_limit_1000_is_accepted(spawn: Callable[..., ServerProcess], http: Any) -> None:
    server = spawn("--no-demo", "--api-key", KEY)
    await publish(http, server, "only")
    body = await page(http, server, limit=1000)
    assert [r["channel"] for r in body["channels"]] == ["only"] and body["next"] is None


async def test_auth_errors(
    main_server: ServerProcess, bare_server: ServerProcess, http: Any
) -> None:
    response = await listing(http, main_server, key=None)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="torchannels"'
    assert_error(await listing(http, main_server, key="wrong"), 403, "forbidden")
    # The key is checked before the query: no key learns nothing about it.
    response = await fetch(http, main_server.base + "/api/channels?limit=0")
    assert_error(response, 401, "unauthorized")
    assert_error(await listing(http, bare_server), 403, "api_disabled")
    response = await api(http, main_server, "/api/channels", {"x": 1})
    assert as_json(response)["error"] == "http_error" and response.code == 405


async def test_redis_counts_cover_every_process(
    spawn: Callable[..., ServerProcess], http: Any, lives: Callable[..., Live]
) -> None:
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    flags = ["--broker", shared_redis(), "--redis-prefix", prefix, "--history-ttl", "120",
             "--api-key", KEY, "--no-demo"]  # fmt: skip
    a, b = spawn(*flags), spawn(*flags)
    on_a = [lives(a.url(transport="sse", channel="demo:x")) for _ in range(2)]
    on_b = [lives(b.url(transport="stream", channel=["demo:x", "demo:y"]))]
    for live in on_a + on_b:
        await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    await publish(http, b, "demo:x", 1)
    await publish(http, a, "demo:y", 1)  # listed by a too (reads create no channel)
    await publish(http, a, "other", 1)

    def rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {r["channel"]: r for r in body["channels"]}

    async def both_see_all() -> bool:
        seen = [rows(await page(http, s)) for s in (a, b)]
        return all(
            r.get("demo:x", {}).get("subscribers") == 3 and r.get("demo:y", {}).get("subscribers")
            == 1 for r in seen
        )  # fmt: skip

    await until(both_see_all, "every process counted on both")
    at_a, at_b = rows(await page(http, a)), rows(await page(http, b))
    assert (at_a["demo:x"]["local_subscribers"], at_b["demo:x"]["local_subscribers"]) == (2, 1)
    assert (at_a["demo:y"]["local_subscribers"], at_b["demo:y"]["local_subscribers"]) == (0, 1)
    # Channels and positions are global: "other" was published through a.
    assert at_b["other"]["offset"] == 1 and at_a["demo:x"]["offset"] == 1
    assert sorted(at_a) == sorted(at_b) == ["demo:x", "demo:y", "other"]

    # Subscribers that leave b stop counting while b runs (b withdraws them)...
    for live in on_b:
        await live.aclose()

    async def only_a() -> bool:
        r = rows(await page(http, a))
        return bool(r["demo:x"]["subscribers"] == 2 and r["demo:y"]["subscribers"] == 0)

    await until(only_a, "b's subscribers gone")
    # ... and a process that stops takes its counts along.
    c = spawn(*flags)
    late = lives(c.url(transport="sse", channel="demo:x"))
    await late.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))

    async def counted_c() -> bool:
        return bool(rows(await page(http, a))["demo:x"]["subscribers"] == 3)

    await until(counted_c, "c's subscriber counted")
    c.close()
    await until(lambda: _not(counted_c), "c's subscriber gone with c")


async def _not(check: Callable[[], Awaitable[bool]]) -> bool:
    return not await check()


async def test_channel_info_counts_every_process_as_the_list_does(
    spawn: Callable[..., ServerProcess], http: Any, lives: Callable[..., Live]
) -> None:
    """Issue 17: ``torchannels info`` said 0 subscribers under Redis while
    ``torchannels channels`` said 1: the info answer had no ``subscribers``."""
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    flags = ["--broker", shared_redis(), "--redis-prefix", prefix, "--history-ttl", "120",
             "--api-key", KEY, "--no-demo"]  # fmt: skip
    a, b = spawn(*flags), spawn(*flags)
    live = lives(b.url(transport="sse", channel="demo:info"))
    await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    await publish(http, a, "demo:info", 1)

    async def counted() -> bool:
        info = as_json(await api(http, a, "/api/channels/demo:info"))
        return bool(info["subscribers"] == 1)

    await until(counted, "b's subscriber counted in a's info")
    info = as_json(await api(http, a, "/api/channels/demo:info"))
    assert set(info) == ROW_KEYS and info["local_subscribers"] == 0
    row = next(r for r in (await page(http, a))["channels"] if r["channel"] == "demo:info")
    assert row == info
    shown = cli("info", "demo:info", "--url", a.base, "--api-key", KEY, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["subscribers"] == 1, shown
    table = cli("info", "demo:info", "--url", a.base, "--api-key", KEY)
    assert table.stdout.splitlines()[1].split()[-1] == "1", table.stdout


async def test_redis_reads_create_no_channel_and_no_key(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    """Anonymous polls and ``GET /api/channels/NAME`` of channels nobody
    published to write nothing to Redis, so they are not listed (issue 17)."""
    url = shared_redis()
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    server = spawn("--broker", url, "--redis-prefix", prefix, "--api-key", KEY, "--no-demo",
                   "--anonymous", "pub:*")  # fmt: skip
    admin = redis.asyncio.Redis.from_url(url)

    async def keys() -> list[bytes]:
        return [k async for k in admin.scan_iter(match=f"{{{prefix}:*", count=1000)]

    try:
        await publish(http, server, "pub:real", 1)
        before = await keys()
        for i in range(10):
            doc = await poll(http, server, [f"pub:ghost{i}-{j}" for j in range(10)])
            assert sum(f["type"] == "subscribed" for f in doc["frames"]) == 10
        for i in range(10):
            info = as_json(await api(http, server, f"/api/channels/pub:info{i}"))
            assert info["offset"] == 0
        assert await keys() == before
        assert names(await page(http, server)) == ["pub:real"]
    finally:
        found = await keys()
        if found:
            await admin.delete(*found)
        await admin.aclose()

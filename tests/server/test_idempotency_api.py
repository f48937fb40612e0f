"""Idempotency keys through ``POST /api/publish`` (docs/api.md, "Idempotency
keys: retrying safely"): the ``Idempotency-Key`` header, ``idempotency_key``
per message of a batch, refusals, ``--idempotency-window``, the duplicates
counter, and two ``serve`` processes on one Redis given one key at once."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from redis_servers import shared_redis
from server.processes import (
    API_DOC,
    KEY,
    Live,
    ServerProcess,
    api,
    as_json,
    fetch,
    until,
)
from server.test_batch import batch_error, history
from server.test_metrics import parse_metrics
from support import messages

PUBLISH = "/api/publish"
FIELDS = {"channel", "epoch", "offset", "ts"}


def fresh(*parts: str) -> list[str]:
    """Channel names of one test (readable without a token on the main hub)."""
    stamp = uuid.uuid4().hex[:10]
    return [f"demo:ik{stamp}:{p}" for p in parts]


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def ok(response: Any) -> Any:
    body = as_json(response)
    assert response.code == 200, body
    return body


async def test_a_retry_with_the_header_is_answered_the_first_position(
    main_server: ServerProcess, http: Any
) -> None:
    [channel] = fresh("one")
    key = uuid.uuid4().hex
    one = {"channel": channel, "data": {"n": 1}}
    first = await ok(await api(http, main_server, PUBLISH, one, headers=keyed(key)))
    assert set(first) == FIELDS  # a first publish answers as without a key
    retry = {"channel": channel, "data": {"n": 1, "retried": True}}
    again = await ok(await api(http, main_server, PUBLISH, retry, headers=keyed(key)))
    assert again == {**first, "duplicate": True}
    other = await ok(await api(http, main_server, PUBLISH, one, headers=keyed(key + "-2")))
    plain = await ok(await api(http, main_server, PUBLISH, one))
    assert (other["offset"], plain["offset"]) == (first["offset"] + 1, first["offset"] + 2)
    assert set(plain) == FIELDS
    assert [m["offset"] for m in await history(http, main_server, channel)] == [1, 2, 3]


async def test_several_channels_take_one_key_per_channel(
    main_server: ServerProcess, http: Any
) -> None:
    a, b, c = fresh("a", "b", "c")
    key = uuid.uuid4().hex
    body = await ok(await api(http, main_server, PUBLISH, {"channels": [a, b], "data": {"x": 1}},
                              headers=keyed(key)))  # fmt: skip
    first = body["results"]
    assert [set(r) for r in first] == [FIELDS, FIELDS]
    body = await ok(await api(http, main_server, PUBLISH, {"channels": [c, a], "data": {"x": 2}},
                              headers=keyed(key)))  # fmt: skip
    new_c, dup_a = body["results"]
    assert set(new_c) == FIELDS and new_c["channel"] == c  # the key is new in c
    assert dup_a == {**first[0], "duplicate": True}
    for channel, count in ((a, 1), (b, 1), (c, 1)):
        assert len(await history(http, main_server, channel)) == count


async def test_a_batch_takes_a_key_per_message(main_server: ServerProcess, http: Any) -> None:
    a, b = fresh("a", "b")
    items = [
        {"channel": a, "data": {"n": 0}, "idempotency_key": "k1"},
        {"channel": a, "data": {"n": 1}, "idempotency_key": "k1"},  # repeats the first
        {"channel": b, "data": {"n": 2}, "idempotency_key": "k1"},  # another channel
        {"channel": a, "data": {"n": 3}},
        {"channel": a, "data": {"n": 4}, "idempotency_key": "k2"},
    ]
    results = (await ok(await api(http, main_server, PUBLISH, {"messages": items})))["results"]
    assert results[1] == {**results[0], "duplicate": True}
    assert [set(r) for r in results[2:]] == [FIELDS] * 3 and set(results[0]) == FIELDS
    assert [(r["channel"], r["offset"]) for r in results] == [
        (a, 1), (a, 1), (b, 1), (a, 2), (a, 3),
    ]  # fmt: skip
    again = (await ok(await api(http, main_server, PUBLISH, {"messages": items})))["results"]
    assert [r.get("duplicate", False) for r in again] == [True, True, True, False, True]
    assert again[4] == {**results[4], "duplicate": True}
    assert [m["n"] for m in await history(http, main_server, a)] == [0, 3, 4, 3]
    assert [m["n"] for m in await history(http, main_server, b)] == [2]


async def test_bad_keys_are_refused_and_publish_nothing(
    main_server: ServerProcess, http: Any
) -> None:
    [channel] = fresh("bad")
    one: dict[str, Any] = {"channel": channel, "data": {}}
    for header in ("", "x" * 129, "caf\u00e9"):
        response = await api(http, main_server, PUBLISH, one, headers=keyed(header))
        message = batch_error(response, 400, "invalid_idempotency_key", None)
        assert "1-128 printable ASCII characters" in message, header
    several = {"channels": [channel, "demo:other"], "data": {}}
    response = await api(http, main_server, PUBLISH, several, headers=keyed(""))
    batch_error(response, 400, "invalid_idempotency_key", None)
    in_body = {**one, "idempotency_key": "k"}  # a key the server would not use: refused
    message = batch_error(await api(http, main_server, PUBLISH, in_body), 400,
                          "invalid_idempotency_key", None)  # fmt: skip
    assert "Idempotency-Key header" in message
    batch = {"messages": [one, {**one, "idempotency_key": "x" * 200}]}
    message = batch_error(await api(http, main_server, PUBLISH, batch), 400,
                          "invalid_idempotency_key", 1)  # fmt: skip
    assert "1-128 printable ASCII characters" in message
    batch = {"messages": [one, {**one, "idempotency_key": None}]}
    batch_error(await api(http, main_server, PUBLISH, batch), 400, "invalid_idempotency_key", 1)
    response = await api(http, main_server, PUBLISH, {"messages": [one]}, headers=keyed("k"))
    message = batch_error(response, 400, "invalid_idempotency_key", None)
    assert "give each message its own idempotency_key" in message
    info = as_json(await api(http, main_server, f"/api/channels/{channel}"))
    assert info["offset"] == 0


async def test_the_window_option_and_the_duplicates_counter(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    hub = spawn("--api-key", KEY, "--no-demo", "--metrics", "--idempotency-window", "0.5")
    one = {"channel": "w", "data": {}}
    first = await ok(await api(http, hub, PUBLISH, one, headers=keyed("k")))
    again = await ok(await api(http, hub, PUBLISH, one, headers=keyed("k")))
    assert again == {**first, "duplicate": True}  # well within half a second
    stored: list[Any] = []

    async def forgotten() -> bool:
        body = await ok(await api(http, hub, PUBLISH, one, headers=keyed("k")))
        if "duplicate" not in body:
            stored.append(body)
        return bool(stored)

    await until(forgotten, "the key is forgotten after --idempotency-window")
    assert stored[0]["offset"] == first["offset"] + 1
    response = await fetch(http, hub.base + "/metrics")
    samples = parse_metrics(response.body.decode())
    duplicates = samples["torchannels_publish_duplicates_total"]
    assert duplicates >= 1
    assert samples["torchannels_published_total"] == 2  # duplicates are not published


async def test_two_servers_on_one_redis_given_one_key_at_once_store_it_once(
    spawn: Callable[..., ServerProcess], http: Any, lives: Callable[..., Live]
) -> None:
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    flags = ["--broker", shared_redis(), "--redis-prefix", prefix, "--api-key", KEY,
             "--no-demo", "--anonymous", "*"]  # fmt: skip
    a, b = spawn(*flags), spawn(*flags)
    live = lives(b.url(transport="sse", channel="orders"))
    await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    rounds = 20

    async def attempt(server: ServerProcess, n: int) -> dict[str, Any]:
        one = {"channel": "orders", "data": {"n": n}}
        body: dict[str, Any] = await ok(
            await api(http, server, PUBLISH, one, headers=keyed(f"order-{n}"))
        )
        return body

    answers = await asyncio.gather(*(attempt(s, n) for n in range(rounds) for s in (a, b, a, b)))
    for n in range(rounds):
        mine = answers[4 * n : 4 * n + 4]
        [first] = [r for r in mine if "duplicate" not in r]
        assert all(r == {**first, "duplicate": True} for r in mine if r is not first)
    marker = await ok(await api(http, a, PUBLISH, {"channel": "orders", "data": {"n": -1}}))
    frames = await live.wait(lambda fs: any(m["n"] == -1 for m in messages(fs)))
    got = messages(frames)
    assert sorted(m["n"] for m in got[:-1]) == list(range(rounds))  # each once
    assert [m["offset"] for m in got] == list(range(1, marker["offset"] + 1))


async def test_the_docs_duplicate_answer_is_the_servers(
    main_server: ServerProcess, http: Any
) -> None:
    text = API_DOC.read_text()
    section = text.split("### Idempotency keys: retrying safely", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]
    answers = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]
    documented = [doc for doc in answers if doc.get("duplicate") is True]
    assert documented, "the section shows a duplicate's answer"
    [channel] = fresh("doc")
    one = {"channel": channel, "data": {}}
    await ok(await api(http, main_server, PUBLISH, one, headers=keyed("k")))
    again = await ok(await api(http, main_server, PUBLISH, one, headers=keyed("k")))
    assert list(documented[0]) == list(again)  # the same fields, in the same order

"""Batch publish: ``POST /api/publish`` with ``{"messages": [...]}`` and
``torchannels publish --ndjson``, against real ``serve`` processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from server.processes import KEY, LIMIT, ServerProcess, api, as_json, cli, poll
from torchannels.server.api import MAX_BATCH


def names(*parts: str) -> list[str]:
    """Fresh channel names (readable without a token on the main hub)."""
    stamp = time.time_ns()
    return [f"demo:batch{stamp}:{p}" for p in parts]


async def offset(http: Any, hub: ServerProcess, channel: str) -> int:
    info = as_json(await api(http, hub, f"/api/channels/{channel}"))
    return int(info["offset"])


async def history(http: Any, hub: ServerProcess, channel: str) -> list[dict[str, Any]]:
    """Every message of ``channel``, read from its first offset."""
    epoch = as_json(await api(http, hub, f"/api/channels/{channel}"))["epoch"]
    doc = await poll(http, hub, [channel], cursor=f"{channel}={epoch}:0")
    return [f["data"] for f in doc["frames"] if f["type"] == "message"]


def batch_error(response: Any, status: int, code: str, index: int | None) -> str:
    body = as_json(response)
    assert (response.code, body["error"]) == (status, code), body
    if index is None:
        assert set(body) == {"error", "message"}, body
    else:
        assert set(body) == {"error", "message", "index"} and body["index"] == index, body
        assert body["message"].startswith(f"messages[{index}]: "), body
    return str(body["message"])


async def test_batch_keeps_order_and_answers_one_result_per_message(
    main_server: ServerProcess, http: Any
) -> None:
    a, b, c = names("a", "b", "c")
    order = [a, b, a, c, a, b, c, c]
    sent: list[dict[str, Any]] = [{"channel": ch, "data": {"n": n}} for n, ch in enumerate(order)]
    response = await api(http, main_server, "/api/publish", {"messages": sent})
    body = as_json(response)
    assert response.code == 200, body
    results = body["results"]
    assert [r["channel"] for r in results] == order
    assert all(set(r) == {"channel", "epoch", "offset", "ts"} for r in results)
    # Offsets per channel are consecutive in the order sent; ts never goes back.
    for channel in (a, b, c):
        mine = [r for r in results if r["channel"] == channel]
        assert [r["offset"] for r in mine] == list(range(1, len(mine) + 1))
    assert [r["ts"] for r in results] == sorted(r["ts"] for r in results)
    for channel in (a, b, c):
        got = await history(http, main_server, channel)
        expected = [dict(m["data"], **r) for m, r in zip(sent, results, strict=True)
                    if m["channel"] == channel]  # fmt: skip
        assert got == expected


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ({"channel": "a b", "data": {}}, "invalid_channel"),
        ({"data": {}}, "invalid_channel"),
        ({"channel": "demo:x", "data": {"offset": 1}}, "invalid_message"),
        ({"channel": "demo:x", "data": [1]}, "invalid_message"),
        ({"channel": "demo:x"}, "invalid_message"),
        ("demo:x", "bad_json"),
    ],
)
async def test_a_bad_message_is_400_naming_its_index_and_nothing_is_published(
    main_server: ServerProcess, http: Any, bad: object, code: str
) -> None:
    a, b = names("a", "b")
    good = [{"channel": a, "data": {"n": 1}}, {"channel": b, "data": {"n": 2}}]
    response = await api(http, main_server, "/api/publish",
                         {"messages": [*good, bad, *good]})  # fmt: skip
    batch_error(response, 400, code, 2)
    assert [await offset(http, main_server, c) for c in (a, b)] == [0, 0]


async def test_a_value_json_cannot_carry_is_refused_before_anything_is_published(
    main_server: ServerProcess, http: Any
) -> None:
    (a,) = names("a")
    sent = [{"channel": a, "data": {"n": 1}}, {"channel": a, "data": {"n": float("nan")}}]
    raw = json.dumps({"messages": sent}).encode()  # Python writes NaN, as some encoders do
    assert b"NaN" in raw
    response = await api(http, main_server, "/api/publish", raw=raw)
    batch_error(response, 400, "invalid_message", 1)
    assert await offset(http, main_server, a) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": {"channel": "demo:x", "data": {}}},
        {"messages": [{"channel": "demo:x", "data": {}}], "channel": "demo:x"},
        {"messages": [{"channel": "demo:x", "data": {}}], "data": {}},
    ],
)
async def test_a_batch_of_the_wrong_shape_is_bad_json(
    main_server: ServerProcess, http: Any, body: object
) -> None:
    batch_error(await api(http, main_server, "/api/publish", body), 400, "bad_json", None)


async def test_a_batch_over_the_body_limit_is_413(main_server: ServerProcess, http: Any) -> None:
    (a,) = names("a")
    sent = [{"channel": a, "data": {"pad": "x" * 100}}] * (LIMIT // 100)
    assert len(json.dumps({"messages": sent})) > LIMIT
    response = await api(http, main_server, "/api/publish", {"messages": sent})
    batch_error(response, 413, "payload_too_large", None)
    assert await offset(http, main_server, a) == 0


async def test_at_most_max_batch_messages(spawn: Callable[..., ServerProcess], http: Any) -> None:
    hub = spawn("--no-demo", "--api-key", KEY, "--max-publish-bytes", str(200 * MAX_BATCH))
    one = {"channel": "cap", "data": {}}
    full = await api(http, hub, "/api/publish", {"messages": [one] * MAX_BATCH})
    assert full.code == 200, full.body
    assert [r["offset"] for r in as_json(full)["results"]] == list(range(1, MAX_BATCH + 1))
    over = await api(http, hub, "/api/publish", {"messages": [one] * (MAX_BATCH + 1)})
    message = batch_error(over, 400, "too_many_messages", None)
    assert str(MAX_BATCH) in message
    assert await offset(http, hub, "cap") == MAX_BATCH


# -- torchannels publish --ndjson ------------------------------------------------


async def test_cli_ndjson_publishes_every_line_in_order_in_batches(
    main_server: ServerProcess, http: Any
) -> None:
    a, b = names("a", "b")
    lines: list[dict[str, Any]] = [
        {"channel": (a, b)[n % 3 == 0], "data": {"n": n}} for n in range(7)
    ]
    stdin = "\n".join(json.dumps(line) for line in lines) + "\n\n"  # a blank line is skipped
    # Two messages per request: four requests, answered in order.
    result = cli("publish", "--ndjson", "--batch", "2", "--url", main_server.base,
                 "--api-key", KEY, stdin=stdin)  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["channel"] for r in results] == [line["channel"] for line in lines]
    for channel in (a, b):
        got = await history(http, main_server, channel)
        assert [m["n"] for m in got] == [line["data"]["n"] for line in lines
                                         if line["channel"] == channel]  # fmt: skip

    # With CHANNEL, each line is the data alone; --batch-bytes cuts batches too.
    (c,) = names("c")
    stdin = "".join(json.dumps({"n": n, "pad": "x" * 50}) + "\n" for n in range(5))
    result = cli("publish", c, "--ndjson", "--batch-bytes", "200", "--url", main_server.base,
                 "--api-key", KEY, stdin=stdin)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["offset"] for line in result.stdout.splitlines()] == [1, 2, 3, 4, 5]
    assert [m["n"] for m in await history(http, main_server, c)] == [0, 1, 2, 3, 4]


async def test_cli_ndjson_refuses_a_line_that_is_not_json_before_sending(
    main_server: ServerProcess, http: Any
) -> None:
    (a,) = names("a")
    stdin = json.dumps({"channel": a, "data": {}}) + "\n{oops\n"
    result = cli("publish", "--ndjson", "--url", main_server.base, "--api-key", KEY, stdin=stdin)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("torchannels: line 2 is not JSON")
    assert await offset(http, main_server, a) == 0


async def test_cli_ndjson_stops_at_a_refused_batch(main_server: ServerProcess, http: Any) -> None:
    (a,) = names("a")
    lines = [{"channel": a, "data": {"n": 0}}, {"channel": a, "data": {"n": 1}},
             {"channel": "bad name", "data": {}}, {"channel": a, "data": {"n": 3}}]  # fmt: skip
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    result = cli("publish", "--ndjson", "--batch", "2", "--url", main_server.base,
                 "--api-key", KEY, stdin=stdin)  # fmt: skip
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 2  # the first batch's results
    assert "invalid_channel" in result.stderr and "2 of 4 messages" in result.stderr
    assert [m["n"] for m in await history(http, main_server, a)] == [0, 1]


@pytest.mark.parametrize(
    "args",
    [
        ["demo:x", "{}", "--ndjson"],  # a MESSAGE with --ndjson
        ["demo:x"],  # no MESSAGE without --ndjson
        ["--ndjson", "--batch", str(MAX_BATCH + 1)],
    ],
)
def test_cli_ndjson_usage_errors(main_server: ServerProcess, args: list[str]) -> None:
    result = cli("publish", *args, "--url", main_server.base, "--api-key", KEY, stdin="")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("torchannels: ") and "Traceback" not in result.stderr

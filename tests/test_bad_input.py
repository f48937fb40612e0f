"""Every class of bad request gets a 400 with a JSON body naming the problem,
and nobody else notices: no error logged, other subscribers still served."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from support import Server, Stream, messages
from torchannels import Hub, MemoryBroker, Settings

LIMITS = Settings(max_channels=3, max_request_bytes=400, longpoll_timeout=10, ping_interval=0.5)

E = "abc123"  # a well-formed epoch

CASES: list[tuple[str, str, dict[str, str], str]] = [
    # (id, query string, headers, expected code)
    ("transport unknown", "transport=carrier-pigeon&channel=a", {}, "unknown_transport"),
    ("transport wrong case", "transport=POLL&channel=a", {}, "unknown_transport"),
    ("cursor no position", "transport=poll&channel=a&cursor=a", {}, "malformed_cursor"),
    ("cursor no offset", f"transport=poll&channel=a&cursor=a={E}", {}, "malformed_cursor"),
    ("cursor text offset", f"transport=poll&channel=a&cursor=a={E}:x", {}, "malformed_cursor"),
    ("cursor negative", f"transport=poll&channel=a&cursor=a={E}:-1", {}, "malformed_cursor"),
    ("cursor leading zero", f"transport=poll&channel=a&cursor=a={E}:01", {}, "malformed_cursor"),
    ("cursor upper epoch", "transport=poll&channel=a&cursor=a=ABC:1", {}, "malformed_cursor"),
    (
        "cursor duplicate",
        f"transport=poll&channel=a&cursor=a={E}:1,a={E}:2",
        {},
        "malformed_cursor",
    ),
    ("cursor trailing comma", f"transport=poll&channel=a&cursor=a={E}:1,", {}, "malformed_cursor"),
    ("cursor bad name", f"transport=stream&channel=a&cursor=a%20b={E}:1", {}, "malformed_cursor"),
    (
        "cursor too long",
        "transport=poll&channel=a&cursor=" + ",".join(f"c{i}={E}:1" for i in range(4)),
        {},
        "malformed_cursor",
    ),
    (
        "cursor huge offset",
        f"transport=poll&channel=a&cursor=a={E}:{'9' * 19}",
        {},
        "malformed_cursor",
    ),
    (
        "last-event-id garbage",
        "transport=sse&channel=a",
        {"Last-Event-ID": "garbage"},
        "malformed_cursor",
    ),
    (
        "last-event-id bad offset",
        "transport=sse&channel=a",
        {"Last-Event-ID": f"a={E}:1.5"},
        "malformed_cursor",
    ),
    ("channel empty", "transport=poll&channel=", {}, "invalid_channel"),
    ("channel space", "transport=poll&channel=a%20b", {}, "invalid_channel"),
    ("channel comma", "transport=poll&channel=a,b", {}, "invalid_channel"),
    ("channel equals", "transport=poll&channel=a%3Db", {}, "invalid_channel"),
    ("channel too long", "transport=poll&channel=" + "x" * 129, {}, "invalid_channel"),
    ("channel non-ascii", "transport=sse&channel=caf%C3%A9", {}, "invalid_channel"),
    ("channels list bad", "transport=longpoll&channels=a,b%20c", {}, "invalid_channel"),
    (
        "too many channel",
        "transport=poll&channel=a&channel=b&channel=c&channel=d",
        {},
        "too_many_channels",
    ),
    ("too many channels", "transport=stream&channels=a,b,c,d", {}, "too_many_channels"),
    ("too many mixed", "transport=poll&channel=a&channel=b&channels=c,d", {}, "too_many_channels"),
    ("oversized query", "transport=poll&channel=a&pad=" + "x" * 400, {}, "request_too_large"),
    (
        "oversized last-event-id",
        "transport=sse&channel=a",
        {"Last-Event-ID": ",".join(f"channel-{i:03}={E}:1" for i in range(30))},
        "request_too_large",
    ),
    ("no channels", "transport=poll", {}, "no_channels"),
    ("no query at all", "", {}, "no_channels"),
    ("only empty channels list", "transport=stream&channels=,,", {}, "no_channels"),
    ("timeout text", "transport=longpoll&channel=a&timeout=soon", {}, "bad_parameter"),
    ("timeout empty", "transport=longpoll&channel=a&timeout=", {}, "bad_parameter"),
    ("timeout zero", "transport=longpoll&channel=a&timeout=0", {}, "bad_parameter"),
    ("timeout negative", "transport=longpoll&channel=a&timeout=-1", {}, "bad_parameter"),
    ("timeout nan", "transport=longpoll&channel=a&timeout=nan", {}, "bad_parameter"),
    ("timeout -inf", "transport=longpoll&channel=a&timeout=-inf", {}, "bad_parameter"),
    ("non-utf8 channel", "transport=poll&channel=%FF", {}, "bad_parameter"),
    ("non-utf8 channels", "transport=poll&channels=a,%C3", {}, "bad_parameter"),
    ("non-utf8 transport", "transport=%FF&channel=a", {}, "bad_parameter"),
    ("non-utf8 cursor", "transport=poll&channel=a&cursor=%FE%FF", {}, "bad_parameter"),
    ("non-utf8 timeout", "transport=longpoll&channel=a&timeout=%FF", {}, "bad_parameter"),
    ("repeated transport", "transport=poll&transport=poll&channel=a", {}, "bad_parameter"),
    (
        "repeated cursor",
        f"transport=poll&channel=a&cursor=a={E}:1&cursor=a={E}:1",
        {},
        "bad_parameter",
    ),
    ("repeated timeout", "transport=longpoll&channel=a&timeout=1&timeout=2", {}, "bad_parameter"),
    ("ping text", "transport=sse&channel=a&ping=often", {}, "bad_parameter"),
    ("ping empty", "transport=stream&channel=a&ping=", {}, "bad_parameter"),
    ("ping zero", "transport=sse&channel=a&ping=0", {}, "bad_parameter"),
    ("ping negative", "transport=stream&channel=a&ping=-5", {}, "bad_parameter"),
    ("ping nan", "transport=sse&channel=a&ping=nan", {}, "bad_parameter"),
    ("ping non-utf8", "transport=sse&channel=a&ping=%FF", {}, "bad_parameter"),
    ("repeated ping", "transport=sse&channel=a&ping=5&ping=6", {}, "bad_parameter"),
    ("ping on poll is checked too", "transport=poll&channel=a&ping=x", {}, "bad_parameter"),
]


@pytest.fixture
def limited_hub() -> Hub:
    return Hub(MemoryBroker(), LIMITS)


@pytest.fixture
async def good(
    make_server: Callable[..., Server], limited_hub: Hub
) -> AsyncIterator[tuple[Server, Stream]]:
    """A server with small limits and a well-behaved stream subscriber on it."""
    server = make_server(hub_=limited_hub)
    stream = server.stream("stream", channel="bystander")
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    yield server, stream
    stream.close()


async def assert_bystander_unharmed(server: Server, stream: Stream, n: int) -> None:
    server.hub.channel("bystander").send({"n": n})
    frames = await stream.wait_frames(lambda fs: any(m["n"] == n for m in messages(fs)))
    assert [m["n"] for m in messages(frames)][-1] == n
    assert not stream.response.done()


def assert_nothing_logged_as_error(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]
    # The capture works: Tornado logged the 400 itself, as a warning.
    assert any(r.name == "tornado.access" and "400" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("query", "headers", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_request_gets_400_with_code(
    good: tuple[Server, Stream],
    caplog: pytest.LogCaptureFixture,
    query: str,
    headers: dict[str, str],
    code: str,
) -> None:
    server, stream = good
    url = f"http://127.0.0.1:{server.port}/channels" + (f"?{query}" if query else "")
    resp = await server.fetch(url, headers=headers)
    assert resp.code == 400, resp.body
    assert resp.headers["Content-Type"].startswith("application/json")
    body = json.loads(resp.body)
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    await assert_bystander_unharmed(server, stream, 1)
    assert_nothing_logged_as_error(caplog)


@pytest.mark.parametrize(
    "query",
    [
        "transport=poll&channel=a&channel=a&channel=a&channel=a",  # repeats count once
        "transport=poll&channel=a&channel=b&channel=c",  # exactly at the limit
        f"transport=poll&cursor=a={E}:0,b={E}:0",  # channels taken from the cursor
        "transport=poll&channels=a,,b&channel=a",
        "transport=longpoll&channel=a&timeout=10",  # the limit itself is allowed
        "channel=a&timeout=0.3",  # no transport: the default long-poll
        "transport=poll&channel=a&unknown=ignored",
        "transport=poll&channel=a&ping=1",  # clamped, and unused by poll
        "transport=longpoll&channel=a&timeout=0.2&ping=1e9",
    ],
)
async def test_near_misses_are_accepted(good: tuple[Server, Stream], query: str) -> None:
    server, _ = good
    resp = await server.fetch(f"http://127.0.0.1:{server.port}/channels?{query}")
    assert resp.code == 200, resp.body
    assert set(json.loads(resp.body)) == {"cursor", "client", "frames"}


async def test_many_bad_requests_in_a_row_harm_nobody(
    good: tuple[Server, Stream], caplog: pytest.LogCaptureFixture
) -> None:
    server, stream = good
    for i, (_, query, headers, _code) in enumerate(CASES):
        url = f"http://127.0.0.1:{server.port}/channels" + (f"?{query}" if query else "")
        resp = await server.fetch(url, headers=headers)
        assert resp.code == 400
        if i % 10 == 0:
            await assert_bystander_unharmed(server, stream, 100 + i)
    await assert_bystander_unharmed(server, stream, 999)
    assert_nothing_logged_as_error(caplog)
    assert server.hub.local_subscribers("bystander") == 1

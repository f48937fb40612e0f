"""Hypothesis fuzzing of a running ``torchannels serve``: the subscribe query
string, the cursor, WebSocket commands and subscription tokens.

Whatever arrives, the server answers with a documented status and code
(never a 500), keeps WebSockets open on bad commands, and logs no
``Traceback`` and no ``Uncaught exception``. One server for the module, its
log checked after every example so that a failure shrinks to its input.
Examples are derandomized (the same inputs on every run) and bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import tornado.websocket
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from server.processes import KEY, SECRET, ServerProcess
from torchannels.testing import DeliveryChecker

FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
HISTORY = "fuzz:hist"  # 5 messages published at start
ANON = "fuzz:anon"
PRIVATE = "private:x"  # needs a token with a matching pattern
SUBSCRIBE_CODES = {
    "unknown_transport", "invalid_channel", "malformed_cursor", "too_many_channels",
    "no_channels", "request_too_large", "bad_parameter",
}  # fmt: skip
TOKEN_CODES = {
    "token_required", "token_unsupported", "token_malformed", "token_bad_algorithm",
    "token_bad_signature", "token_expired", "token_not_yet_valid", "forbidden",
}  # fmt: skip
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Hub:
    """The module's server and a watch on its log."""

    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.seen = 0
        self.epoch = ""

    def request(self, target: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        """GET ``target``: (status, content type, body); streaming bodies unread."""
        conn = http.client.HTTPConnection("127.0.0.1", self.process.port, timeout=10)
        try:
            conn.request("GET", target, headers=headers or {})
            response = conn.getresponse()
            kind = response.getheader("Content-Type", "")
            streaming = kind.startswith(("application/x-ndjson", "text/event-stream"))
            return response.status, kind, b"" if streaming else response.read()
        finally:
            conn.close()

    def assert_clean_log(self) -> None:
        text = self.process.log_path.read_bytes()[self.seen :].decode(errors="replace")
        self.seen += len(text.encode())
        for bad in ("Traceback", "Uncaught exception"):
            assert bad not in text, text[-3000:]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    process = ServerProcess(
        tmp_path_factory.mktemp("fuzz-logs"),
        ["--port", "0", "--no-demo", "--api-key", KEY, "--token-secret", SECRET,
         "--anonymous", "fuzz:*", "--longpoll-timeout", "0.05"],
        None,
    )  # fmt: skip
    try:
        for n in range(5):
            conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=10)
            body = json.dumps({"channel": HISTORY, "data": {"n": n}})
            conn.request("POST", "/api/publish", body, {"Authorization": f"Bearer {KEY}"})
            answer = json.loads(conn.getresponse().read())
            conn.close()
        watch = Hub(process)
        watch.epoch = answer["epoch"]
        yield watch
    finally:
        process.close()


# -- strategies ------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=10,
)  # fmt: skip
NAME = st.one_of(
    st.sampled_from([HISTORY, ANON, PRIVATE, "fuzz:empty", "a" * 128, "a" * 129]),
    st.from_regex(r"[A-Za-z0-9_\-.:/@#$]{1,12}", fullmatch=True),
    st.text(max_size=12),
)
#: ``REAL`` stands for the history channel's epoch, filled in per request.
EPOCH = st.one_of(st.just("REAL"), st.from_regex(r"[a-z0-9]{1,33}", fullmatch=True),
                  st.text(max_size=8))  # fmt: skip
OFFSET = st.one_of(
    st.integers(-3, 10**20).map(str),
    st.sampled_from(["", "00", "01", "1e3", "-0", "9" * 18, "9" * 19, " 1", "1.0", "0x1"]),
    st.text(max_size=4),
)
ENTRY = st.one_of(
    st.tuples(NAME, EPOCH, OFFSET).map(lambda t: f"{t[0]}={t[1]}:{t[2]}"),
    st.tuples(st.just(HISTORY), st.just("REAL"), st.integers(0, 7)).map(
        lambda t: f"{t[0]}={t[1]}:{t[2]}"
    ),
    st.text(max_size=12),
)
CURSOR = st.lists(ENTRY, max_size=4).map(",".join)
#: Raw percent escapes, invalid UTF-8 and NUL included.
ESCAPES = st.one_of(
    st.binary(min_size=1, max_size=6).map(lambda b: "".join(f"%{c:02X}" for c in b)),
    st.sampled_from(["%00", "%ff", "%C3%28", "%", "%zz", "%2C", "%3D", "+", "%74oken"]),
)
KEY_NAMES = st.sampled_from(
    ["transport", "channel", "channels", "cursor", "timeout", "token", "%74oken", "x", ""]
)
VALUES = st.one_of(
    st.sampled_from(["poll", "longpoll", "stream", "sse", "websocket", "", "POLL"]),
    NAME.map(lambda s: quote(s, safe="")),
    CURSOR.map(lambda s: quote(s, safe=":,=")),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
    st.floats().map(str),
    ESCAPES,
)
PAIRS = st.lists(st.tuples(KEY_NAMES | ESCAPES, VALUES), max_size=6)
#: Half start from a valid request on some transport, so that extra and
#: repeated parameters also reach the transports, streaming ones included.
QUERY = st.one_of(
    PAIRS,
    st.tuples(st.sampled_from(["poll", "longpoll", "stream", "sse"]), PAIRS).map(
        lambda t: [("transport", t[0]), ("channel", HISTORY), *t[1]]
    ),
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fill(text: str, hub: Hub) -> str:
    return text.replace("REAL", hub.epoch)


def header_value(text: str) -> str:
    """``text`` as an HTTP header value: UTF-8 bytes, no control characters."""
    return CONTROL.sub("", text).encode().decode("latin-1").strip()


def check_answer(status: int, kind: str, body: bytes) -> dict[str, Any] | None:
    """A documented answer to a subscribe request: the poll document, or None."""
    assert status in (200, 400), (status, body[:500])
    if status == 400:
        error = json.loads(body)
        assert error["error"] in SUBSCRIBE_CODES, error
        event(f"400 {error['error']}")
        return None
    event(f"200 {kind.partition(';')[0]}")
    if kind.startswith("application/json"):
        doc: dict[str, Any] = json.loads(body)
        assert set(doc) == {"cursor", "client", "frames"}, doc
        return doc
    return None


# -- the query string ------------------------------------------------------------------


@FUZZ
@given(query=QUERY)
@example(query="transport=poll&channel=fuzz:a&%74oken=x")
@example(query="transport=poll&channel=%00&cursor=%ff")
def test_any_subscribe_query_gets_no_500_and_no_traceback(hub: Hub, query: str) -> None:
    status, _, body = hub.request("/channels?" + fill(query, hub))
    assert status < 500, (status, body[:500])
    hub.assert_clean_log()


@FUZZ
@given(query=QUERY)
@example(query="transport=poll&channel=fuzz:hist&token=%80")
def test_any_subscribe_query_gets_a_documented_answer(hub: Hub, query: str) -> None:
    check_answer(*hub.request("/channels?" + fill(query, hub)))
    hub.assert_clean_log()


# -- the cursor ------------------------------------------------------------------------


@FUZZ
@given(cursor=CURSOR, last_event_id=st.none() | CURSOR)
@example(cursor="fuzz:hist=REAL:3", last_event_id=None)
@example(cursor="fuzz:hist=REAL:99", last_event_id="fuzz:hist=zz:1")
def test_any_cursor_is_refused_or_brought_to_the_head_without_loss(
    hub: Hub, cursor: str, last_event_id: str | None
) -> None:
    cursor = fill(cursor, hub)
    headers = {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = header_value(fill(last_event_id, hub))
    query = f"transport=poll&channel={HISTORY}&cursor={quote(cursor, safe='')}"
    doc = check_answer(*hub.request("/channels?" + query, headers))
    hub.assert_clean_log()
    if doc is None:
        return
    # Accepted: the answer must take the client from its position to the
    # head, every message once and in order, or through a reset.
    positions: dict[str, tuple[str, int]] = {}
    for source in (cursor, headers.get("Last-Event-ID", "")):
        for entry in filter(None, source.split(",")):
            name, _, position = entry.partition("=")
            epoch, _, offset = position.rpartition(":")
            positions[name] = (epoch, int(offset))
    checker = DeliveryChecker()
    if HISTORY in positions:
        held_epoch, held = positions[HISTORY]
        checker.feed(
            {"type": "subscribed", "channel": HISTORY, "epoch": held_epoch, "offset": held}
        )
    for frame in doc["frames"]:
        checker.feed(frame)
    assert not checker.violations, (cursor, headers, doc)
    assert checker.log(HISTORY).position == (hub.epoch, 5), doc
    checker.check_cursor(doc["cursor"])
    assert not checker.violations, doc


# -- WebSocket commands ----------------------------------------------------------------

COMMAND = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "publish", ""]) | st.text(max_size=8)},
    optional={"channels": st.lists(NAME, max_size=4) | JSON, "cursor": CURSOR | JSON},
)
RAW_COMMAND = st.one_of(
    COMMAND.map(json.dumps),
    JSON.map(json.dumps),
    st.text(max_size=200),
    st.integers(1, 5000).map(lambda n: "[" * n),
    st.integers(1, 2000).map(lambda n: '{"a":' * n),
)
SENTINEL = "fuzz:sentinel"


async def converse(hub: Hub, commands: list[str]) -> list[dict[str, Any]]:
    """Send ``commands`` then an ``unsubscribe`` of the sentinel; the frames
    up to its ``unsubscribed`` (commands are answered in order)."""
    url = f"ws://127.0.0.1:{hub.process.port}/channels/ws"
    conn = await asyncio.wait_for(tornado.websocket.websocket_connect(url), 10)
    frames: list[dict[str, Any]] = []
    try:
        for command in [*commands, json.dumps({"type": "unsubscribe", "channels": [SENTINEL]})]:
            await conn.write_message(fill(command, hub))
        while True:
            message = await asyncio.wait_for(conn.read_message(), 10)
            assert message is not None, f"closed {conn.close_code}: {frames}"
            frame = json.loads(message)
            frames.append(frame)
            if frame == {"type": "unsubscribed", "channel": SENTINEL}:
                return frames
    finally:
        conn.close()


@FUZZ
@given(commands=st.lists(RAW_COMMAND, min_size=1, max_size=3))
@example(commands=["[" * 3000])
@example(commands=['{"type": "subscribe", "channels": ["fuzz:hist"], "cursor": "fuzz:hist=x:"}'])
def test_any_websocket_command_is_answered_and_keeps_the_socket(
    hub: Hub, commands: list[str]
) -> None:
    frames = asyncio.run(converse(hub, commands))
    hub.assert_clean_log()
    for frame in frames:
        if frame["type"] == "error" and "channel" not in frame:
            assert frame["code"] == "bad_message", frame
        elif frame["type"] == "error":
            assert frame["code"] in SUBSCRIBE_CODES | TOKEN_CODES, frame


# -- tokens ----------------------------------------------------------------------------

#: ``NOW+N`` stands for the current time plus N seconds, filled in when signing.
TIME = st.one_of(st.sampled_from(["NOW+300", "NOW-300", "NOW+0"]), st.integers(), st.floats(), JSON)
PATTERNS = st.lists(NAME | st.sampled_from(["private:*", "*", "**", "a*b"]), max_size=3)
#: Claims of any type, and claims that mostly pass, so the later checks are reached.
CLAIMS = st.fixed_dictionaries(
    {"exp": st.sampled_from(["NOW+300", "NOW-300"]), "channels": PATTERNS},
    optional={"nbf": TIME, "iat": TIME, "sub": JSON},
) | st.fixed_dictionaries(
    {},
    optional={
        "exp": TIME, "nbf": TIME, "iat": TIME, "sub": JSON,
        "channels": PATTERNS | JSON,
    },
)  # fmt: skip
HEADER = st.fixed_dictionaries(
    {"alg": st.just("HS256") | st.sampled_from(["HS256", "none", "RS256", "hs256"]) | JSON},
    optional={"typ": JSON, "crit": JSON, "kid": JSON},
)
SEGMENT = st.one_of(
    JSON.map(lambda v: b64url(json.dumps(v).encode())),
    st.binary(max_size=48).map(b64url),
    st.text(max_size=16),
    st.sampled_from(["", "e30", "=", "+/", "..."]),
)


def now(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("NOW"):
        return time.time() + int(value[3:])
    return value


def sign(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token signed with the server's secret: the claims reach the checks."""
    claims = {k: now(v) for k, v in claims.items()}
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


TOKEN = st.one_of(
    st.builds(sign, HEADER, CLAIMS),
    st.lists(SEGMENT, min_size=1, max_size=4).map(".".join),
    st.text(max_size=60),
)


def token_request(hub: Hub, token: str, via: str) -> list[dict[str, Any]]:
    """The frames a subscribe of ``ANON`` and ``PRIVATE`` gets with ``token``
    sent ``via`` the query, an ``Authorization`` header, or a WebSocket URL."""
    query = f"channel={ANON}&channel={quote(PRIVATE, safe='')}"
    headers = {}
    if via == "header":
        headers["Authorization"] = "Bearer " + header_value(token)
    else:
        query += "&token=" + quote(token, safe="")
    if via == "websocket":
        return asyncio.run(socket_frames(hub, query))
    status, _, body = hub.request("/channels?transport=poll&" + query, headers)
    assert status == 200, (status, body[:500])
    frames: list[dict[str, Any]] = json.loads(body)["frames"]
    return frames


async def socket_frames(hub: Hub, query: str) -> list[dict[str, Any]]:
    """The frames of a WebSocket subscribed in its URL, until both channels settle."""
    url = f"ws://127.0.0.1:{hub.process.port}/channels/ws?{query}"
    conn = await asyncio.wait_for(tornado.websocket.websocket_connect(url), 10)
    frames: list[dict[str, Any]] = []
    try:
        while not {ANON, PRIVATE} <= {f.get("channel") for f in frames}:
            message = await asyncio.wait_for(conn.read_message(), 10)
            assert message is not None, f"closed {conn.close_code}: {frames}"
            frames.append(json.loads(message))
        return frames
    finally:
        conn.close()


VIA = st.sampled_from(["query", "header", "websocket"])


@FUZZ
@given(token=TOKEN, via=VIA)
@example(token=sign({"alg": "HS256"}, {"exp": "NOW+300", "channels": ["private:*"]}),
         via="websocket")  # fmt: skip
def test_any_token_leaves_anonymous_channels_served_and_others_refused_by_code(
    hub: Hub, token: str, via: str
) -> None:
    frames = token_request(hub, token, via)
    hub.assert_clean_log()
    by_channel = {f["channel"]: f for f in frames if "channel" in f}
    assert by_channel[ANON]["type"] == "subscribed", frames
    private = by_channel[PRIVATE]
    assert private["type"] == "subscribed" or private.get("code") in TOKEN_CODES, frames
    event(f"{PRIVATE}: {private.get('code', private['type'])}")


@settings(FUZZ, max_examples=40, phases=[Phase.explicit, Phase.generate])  # no shrinking while open
@given(depth=st.integers(1, 6000), opener=st.sampled_from(["[", '{"a":']),
       where=st.sampled_from(["header", "claims"]), via=VIA)  # fmt: skip
@example(depth=4000, opener="[", where="header", via="query")
def test_a_token_of_deeply_nested_json_is_malformed(
    hub: Hub, depth: int, opener: str, where: str, via: str
) -> None:
    # at most 6000 bytes: the token stays under its 8192-character limit
    nested = b64url((opener * depth)[:6000].encode())
    if where == "header":
        token = f"{nested}.e30.x"
    else:  # signed with the server's secret, so that the claims are read
        signed = b64url(b'{"alg":"HS256"}') + "." + nested
        mac = hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).digest()
        token = f"{signed}.{b64url(mac)}"
    frames = token_request(hub, token, via)
    hub.assert_clean_log()
    by_channel = {f["channel"]: f for f in frames if "channel" in f}
    assert by_channel[ANON]["type"] == "subscribed", frames
    assert by_channel[PRIVATE].get("code") == "token_malformed", frames

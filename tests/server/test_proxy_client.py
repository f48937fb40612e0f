"""The server's calls to a backend's hooks (proxy.py, proxy_hooks.py), against
a real Tornado backend on a free loopback port that checks the signature as
a Python backend would (torchannels.proxy_signature)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import tornado.httpserver
import tornado.httputil
import tornado.testing
import tornado.web

from server.processes import API_DOC, refused
from support import eventually
from torchannels.errors import AccessDenied, TorChannelsError
from torchannels.proxy_signature import SIGNATURE_HEADER, sign, verify_signature
from torchannels.server import proxy
from torchannels.server.proxy import (
    HookDenied,
    ProxyClient,
    ProxyError,
    ProxyFailure,
    ProxyUnavailable,
    proxy_clients,
)
from torchannels.server.proxy_hooks import (
    ConnectResult,
    connect_body,
    parse_answer,
    parse_connect,
    parse_publish,
    parse_subscribe,
    pick_headers,
    publish_body,
    subscribe_body,
)

SECRET = "hook-s3cret"
COOKIE_SECRET = "sessionid-that-must-never-be-logged"


@dataclass
class Received:
    headers: tornado.httputil.HTTPHeaders
    body: bytes
    signed: bool  # the signature header verifies with SECRET


class Backend:
    """A backend's hook URL, told how to answer: ``status`` and ``body``;
    while ``held`` is set, each request waits for ``release`` first."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.body: bytes = b'{"result": {}}'
        self.headers: dict[str, str] = {}
        self.held = False
        self.release = asyncio.Event()
        app = tornado.web.Application([(r"/hook", HookHandler, {"backend": self})])
        sock, self.port = tornado.testing.bind_unused_port()
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.add_sockets([sock])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, doc: Any, status: int = 200) -> None:
        self.status = status
        self.body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()

    def stop(self) -> None:
        self.release.set()
        self.server.stop()


class HookHandler(tornado.web.RequestHandler):
    def initialize(self, backend: Backend) -> None:
        self.backend = backend

    async def post(self) -> None:
        backend, request = self.backend, self.request
        signed = verify_signature(request.body, request.headers.get(SIGNATURE_HEADER), SECRET)
        backend.received.append(Received(request.headers, request.body, signed))
        if backend.held:
            await backend.release.wait()
        self.set_status(backend.status)
        for name, value in backend.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json")
        self.finish(backend.body or None)


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    backend = Backend()
    yield backend
    backend.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_client(backend: Backend) -> Iterator[Callable[..., ProxyClient]]:
    clients: list[ProxyClient] = []

    def make(**options: Any) -> ProxyClient:
        url = options.pop("url", backend.url)
        client = ProxyClient(url, SECRET, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


CONNECT = connect_body("5c1e0a9f-2s", "sse", {"sessionid": COOKIE_SECRET, "lang": "é"}, {})


# -- a call, its request ---------------------------------------------------------


async def test_a_call_posts_compact_signed_json_and_returns_the_result(
    backend: Backend, make_client: Callable[..., ProxyClient]
) -> None:
    backend.answer({"result": {"user": "42", "info": None}})
    client = make_client()
    assert await client.call(CONNECT) == {"user": "42", "info": None}
    [got] = backend.received
    assert got.headers["Content-Type"] == "application/json"
    assert got.body == compact(CONNECT)  # compact, UTF-8 (the é is two bytes)
    assert b" " not in got.body and "é".encode() in got.body
    header = got.headers[SIGNATURE_HEADER]
    assert got.signed and header == sign(got.body, SECRET)
    expected = hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert header == "sha256=" + expected
    assert not verify_signature(got.body, header, "another secret")
    assert (client.calls, client.in_flight) == (1, 0)
    assert set(client.failures.values()) == {0}
    assert client.last_latency is not None and 0 < client.last_latency < 5


@pytest.mark.parametrize(
    ("body", "fields", "parse", "result", "parsed"),
    [
        (
            connect_body("c-1", "websocket", {"session": "abc"}, {"user-agent": "ua"}),
            {"client": "c-1", "transport": "websocket", "cookies": {"session": "abc"},
             "headers": {"user-agent": "ua"}},
            parse_connect,
            {"user": "42", "info": {"name": "Ann"}, "channels": ["room:*"],
             "publish": ["room:1"], "expires": 1796000000},
            ConnectResult("42", {"name": "Ann"}, ("room:*",), ("room:1",), 1796000000.0),
        ),
        (
            subscribe_body("c-1", None, "room:1", None),
            {"client": "c-1", "user": None, "channel": "room:1", "info": None},
            parse_subscribe,
            {},
            None,
        ),
        (
            publish_body("c-1", "42", "room:1", {"text": "hi"}),
            {"client": "c-1", "user": "42", "channel": "room:1", "data": {"text": "hi"}},
            parse_publish,
            {"data": {"text": "HI"}},
            {"text": "HI"},
        ),
    ],
    ids=["connect", "subscribe", "publish"],
)  # fmt: skip
async def test_each_hook_sends_exactly_the_spec_fields_and_parses_its_result(
    backend: Backend,
    make_client: Callable[..., ProxyClient],
    body: dict[str, Any],
    fields: dict[str, Any],
    parse: Callable[[dict[str, Any]], Any],
    result: dict[str, Any],
    parsed: Any,
) -> None:
    backend.answer({"result": result})
    assert await make_client().call(body, parse) == parsed
    [got] = backend.received
    assert got.signed
    sent = json.loads(got.body)
    assert sent == fields and list(sent) == list(fields)  # nulls present, no extra field


async def test_a_body_json_cannot_carry_fails_before_any_request(
    backend: Backend, make_client: Callable[..., ProxyClient]
) -> None:
    client = make_client()
    with pytest.raises(ValueError):
        await client.call(publish_body("c-1", None, "room:1", {"x": float("nan")}))
    assert client.in_flight == 0
    await client.call(subscribe_body("c-1", None, "room:1", None))  # the next is sent
    assert len(backend.received) == 1


# -- answers -------------------------------------------------------------------------


async def test_an_error_answer_is_the_backends_own_deny(
    backend: Backend, make_client: Callable[..., ProxyClient], caplog: pytest.LogCaptureFixture
) -> None:
    backend.answer({"error": {"code": "banned", "message": "you are banned"}})
    client = make_client()
    caplog.set_level(logging.WARNING, "torchannels.proxy")
    with pytest.raises(HookDenied) as denied:
        await client.call(CONNECT)
    assert (denied.value.code, denied.value.message, denied.value.retry) == (
        "banned", "you are banned", False)  # fmt: skip
    assert isinstance(denied.value, AccessDenied) and isinstance(denied.value, TorChannelsError)
    assert client.failures["denied"] == 1 and client.in_flight == 0
    assert caplog.records == []  # a deny is an answer, not a fault


@pytest.mark.parametrize(
    "error",
    [{"code": "a" * 64, "message": "m" * 500}, {"code": "z", "message": ""},
     {"code": "too_many_rooms_2", "message": "x", "extra": 1}],
)  # fmt: skip
def test_deny_codes_and_messages_at_their_limits_pass(error: dict[str, Any]) -> None:
    with pytest.raises(HookDenied) as denied:
        parse_answer(200, json.dumps({"error": error}).encode())
    assert (denied.value.code, denied.value.message) == (error["code"], error["message"])


MALFORMED = [
    (200, b"not json", "not JSON"),
    (200, b"\xff\xfe{}", "not JSON"),
    (200, b"", "not JSON"),
    (200, b"[1, 2]", "the answer is an array, not a JSON object"),
    (200, b'"result"', "is a string, not"),
    (200, b"null", "is null, not"),
    (200, b"7.5", "is a number, not"),
    (200, b"true", "is true or false, not"),
    (200, b"{}", "neither of 'result' and 'error'"),
    (200, b'{"other": {}}', "neither"),
    (200, b'{"result": {}, "error": {"code": "x", "message": "y"}}', "both"),
    (200, b'{"result": {}, "result": {}}', "duplicate key"),
    (200, b'{"result": {"n": NaN}}', "NaN is not JSON"),
    (200, b'{"result": []}', "'result' must be a JSON object"),
    (200, b'{"result": null}', "'result' must be a JSON object"),
    (200, b'{"result": "ok"}', "'result' must be a JSON object"),
    (200, b'{"error": "banned"}', "'error' must be a JSON object"),
    (200, b'{"error": {"message": "no"}}', "'error.code'"),
    (200, b'{"error": {"code": "Banned", "message": "no"}}', "'error.code'"),
    (200, b'{"error": {"code": "9lives", "message": "no"}}', "'error.code'"),
    (200, b'{"error": {"code": "no-way", "message": "no"}}', "'error.code'"),
    (200, b'{"error": {"code": "", "message": "no"}}', "'error.code'"),
    (200, b'{"error": {"code": 403, "message": "no"}}', "'error.code'"),
    (200, json.dumps({"error": {"code": "a" * 65, "message": "no"}}).encode(), "'error.code'"),
    (200, b'{"error": {"code": "banned"}}', "'error.message'"),
    (200, b'{"error": {"code": "banned", "message": null}}', "'error.message'"),
    (200, b'{"error": {"code": "banned", "message": ["no"]}}', "'error.message'"),
    (200, json.dumps({"error": {"code": "x", "message": "m" * 501}}).encode(), "'error.message'"),
    (201, b'{"result": {}}', "HTTP status 201"),
    (204, b"", "HTTP status 204"),
    (400, b'{"result": {}}', "HTTP status 400"),
    (401, b"", "HTTP status 401"),
    (403, b'{"error": {"code": "banned", "message": "no"}}', "HTTP status 403"),
    (404, b"not found", "HTTP status 404"),
    (302, b"", "HTTP status 302"),
]


@pytest.mark.parametrize(("status", "body", "says"), MALFORMED)
async def test_a_malformed_answer_is_a_proxy_error(
    backend: Backend,
    make_client: Callable[..., ProxyClient],
    status: int,
    body: bytes,
    says: str,
) -> None:
    backend.answer(body, status)
    if status == 302:  # not followed: the hook URL is the one the operator set
        backend.headers = {"Location": backend.url}
    client = make_client()
    with pytest.raises(ProxyError) as failed:
        await client.call(CONNECT)
    assert (failed.value.code, failed.value.retry) == ("proxy_error", False)
    assert says in failed.value.message and "connect hook" in failed.value.message
    assert len(backend.received) == 1
    assert client.failures == {"unavailable": 0, "overloaded": 0, "malformed": 1, "denied": 0}
    assert client.in_flight == 0


async def test_a_malformed_result_is_a_proxy_error_counted_like_an_answer(
    backend: Backend, make_client: Callable[..., ProxyClient]
) -> None:
    backend.answer({"result": {"user": 42, "info": None}})
    client = make_client()
    with pytest.raises(ProxyError, match="'user' must be null or a string"):
        await client.call(CONNECT, parse_connect)
    assert client.failures["malformed"] == 1


# -- unavailable -----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
async def test_a_5xx_is_unavailable(
    backend: Backend, make_client: Callable[..., ProxyClient], status: int
) -> None:
    backend.answer({"result": {}}, status)
    client = make_client()
    with pytest.raises(ProxyUnavailable) as failed:
        await client.call(CONNECT)
    assert (failed.value.code, failed.value.retry) == ("proxy_unavailable", True)
    assert f"HTTP status {status}" in failed.value.message
    assert client.failures["unavailable"] == 1


async def test_a_backend_slower_than_the_timeout_is_unavailable(
    backend: Backend, make_client: Callable[..., ProxyClient]
) -> None:
    backend.held = True
    client = make_client(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ProxyUnavailable, match="did not answer"):
        await client.call(CONNECT)
    assert 0.25 < time.monotonic() - started < 3
    assert len(backend.received) == 1 and client.in_flight == 0
    assert client.failures["unavailable"] == 1


async def test_a_stopped_backend_is_unavailable(
    backend: Backend, make_client: Callable[..., ProxyClient]
) -> None:
    client = make_client()
    backend.stop()
    assert refused(backend.port)
    with pytest.raises(ProxyUnavailable, match="did not answer"):
        await client.call(CONNECT)
    assert client.failures["unavailable"] == 1 and client.in_flight == 0


async def test_an_answer_too_large_to_read_is_unavailable(
    backend: Backend, make_client: Callable[..., ProxyClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy, "MAX_ANSWER_BYTES", 1000)
    backend.answer({"result": {"padding": "x" * 1000}})
    with pytest.raises(ProxyUnavailable):
        await make_client().call(CONNECT)


async def test_past_max_in_flight_a_call_fails_at_once_without_a_request(
    backend: Backend, make_client: Callable[..., ProxyClient]
) -> None:
    # 12: more than Tornado's default of 10 connections per client, so all
    # of them reaching the backend at once shows the client allows as many.
    backend.held = True
    client = make_client(max_in_flight=12, timeout=30)
    held = [asyncio.ensure_future(client.call(CONNECT)) for _ in range(12)]
    await eventually(lambda: len(backend.received) == 12, timeout=10)
    assert client.in_flight == 12
    started = time.monotonic()
    with pytest.raises(ProxyUnavailable, match="busy: 12 calls are in flight") as failed:
        # A request would wait for the release below: wait_for would time out instead.
        await asyncio.wait_for(client.call(CONNECT), 5)
    assert failed.value.retry and time.monotonic() - started < 1
    assert client.failures["overloaded"] == 1 and client.in_flight == 12
    backend.release.set()
    assert await asyncio.gather(*held) == [{}] * 12
    assert client.in_flight == 0
    await client.call(CONNECT)  # a slot again; the refused call never reached the backend
    assert len(backend.received) == 13
    assert client.calls == 14


async def test_the_hooks_of_a_process_share_its_limit(backend: Backend) -> None:
    url = backend.url
    hooks = proxy_clients({"connect": url, "subscribe": None, "publish": url}, SECRET,
                          max_in_flight=2, timeout=30)  # fmt: skip
    try:
        assert sorted(hooks) == ["connect", "publish"]  # a hook without a URL is off
        connect, publish = hooks["connect"], hooks["publish"]
        assert (connect.name, publish.name, connect.max_in_flight) == ("connect", "publish", 2)
        backend.held = True
        held = [asyncio.ensure_future(hook.call(CONNECT)) for hook in (connect, publish)]
        await eventually(lambda: len(backend.received) == 2)
        assert (connect.in_flight, publish.in_flight, connect.limit.in_flight) == (1, 1, 2)
        for hook in (connect, publish):
            with pytest.raises(ProxyUnavailable, match="busy: 2 calls are in flight"):
                await asyncio.wait_for(hook.call(CONNECT), 5)
            assert hook.failures["overloaded"] == 1
        backend.release.set()
        await asyncio.gather(*held)
        assert connect.limit.in_flight == 0 and len(backend.received) == 2
    finally:
        for hook in hooks.values():
            hook.close()


async def test_a_cancelled_call_keeps_its_slot_until_its_request_ends(
    backend: Backend, make_client: Callable[..., ProxyClient]
) -> None:
    # The request goes on when its caller goes away: counted until it ends,
    # so the limit is the number of connections really open.
    backend.held = True
    client = make_client(max_in_flight=1)
    call = asyncio.ensure_future(client.call(CONNECT))
    await eventually(lambda: len(backend.received) == 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert client.in_flight == 1
    with pytest.raises(ProxyUnavailable, match="busy"):
        await client.call(CONNECT)
    backend.release.set()
    await eventually(lambda: client.in_flight == 0)
    started = time.monotonic()
    assert await client.call(CONNECT) == {}
    assert time.monotonic() - started < 1  # not queued behind the cancelled request
    assert len(backend.received) == 2 and client.last_latency is not None


# -- logs ------------------------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "torchannels.proxy"]


async def test_malformed_answers_are_logged_once_a_minute_per_hook(
    backend: Backend, make_client: Callable[..., ProxyClient], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    url = f"http://user:pw@127.0.0.1:{backend.port}/hook?key=url-secret"
    connect = make_client(url=url, clock=clock)
    publish = make_client(name="publish", clock=clock)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"
    backend.answer(f"{jwt} garbage {'x' * 1000}".encode())
    caplog.set_level(logging.WARNING, "torchannels.proxy")

    for _ in range(2):
        with pytest.raises(ProxyError):
            await connect.call(CONNECT)
    [warning] = warnings_of(caplog)  # two in a row: one warning
    assert warning.startswith(
        f"the connect hook (http://127.0.0.1:{backend.port}/hook) answered malformed: "
        "the answer is not JSON"
    )
    xs = 200 - len(f"{jwt} garbage ")  # the answer's first 200 characters only
    assert "x" * xs in warning and "x" * (xs + 1) not in warning
    assert jwt not in warning and "REDACTED" in warning
    for secret in ("url-secret", "pw", COOKIE_SECRET, "5c1e0a9f-2s"):
        assert secret not in warning  # never the request, nor the URL's credentials

    with pytest.raises(ProxyError):
        await publish.call(CONNECT)  # another hook: its own minute
    assert len(warnings_of(caplog)) == 2 and "the publish hook" in warnings_of(caplog)[1]

    backend.answer({"result": {}}, 503)  # another kind: its own minute
    with pytest.raises(ProxyUnavailable):
        await connect.call(CONNECT)
    assert "the connect hook" in warnings_of(caplog)[2]
    assert "is unavailable: the answer has HTTP status 503" in warnings_of(caplog)[2]

    backend.answer(b"[]")
    clock.now += 59
    with pytest.raises(ProxyError):
        await connect.call(CONNECT)
    assert len(warnings_of(caplog)) == 3
    clock.now += 2
    with pytest.raises(ProxyError):
        await connect.call(CONNECT)
    assert len(warnings_of(caplog)) == 4
    assert warnings_of(caplog)[3].endswith("(2 more since the last warning)")
    assert "an array" in warnings_of(caplog)[3]


# -- the result parsers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "parsed"),
    [
        ({"user": None, "info": None}, ConnectResult(None, None)),
        ({"user": "u" * 256, "info": {}, "expires": 1796000000.5},
         ConnectResult("u" * 256, {}, expires=1796000000.5)),
        ({"user": "42", "info": None, "channels": ["a", "b:*", "a"], "publish": ["*"],
          "expires": None, "later": "ignored"},
         ConnectResult("42", None, ("a", "b:*"), ("*",))),
        ({"user": "42", "info": {"n": "é" * 500}, "expires": 0},
         ConnectResult("42", {"n": "é" * 500}, expires=0.0)),
    ],
)  # fmt: skip
def test_connect_results_taken(result: dict[str, Any], parsed: ConnectResult) -> None:
    assert parse_connect(result) == parsed


BASE = {"user": "42", "info": None}


@pytest.mark.parametrize(
    ("result", "says"),
    [
        ({"info": None}, "has no 'user'"),
        ({"user": "42"}, "has no 'info'"),
        ({**BASE, "user": ""}, "'user' must be null or a string of 1 to 256"),
        ({**BASE, "user": 42}, "'user' must be null or a string"),
        ({**BASE, "user": ["42"]}, "'user' must be null or a string"),
        ({**BASE, "user": "u" * 257}, "'user' must be null or a string of 1 to 256"),
        ({**BASE, "info": []}, "'info': info must be a JSON object"),
        ({**BASE, "info": "Ann"}, "'info': info must be a JSON object"),
        ({**BASE, "info": {"n": "é" * 511}}, "'info': info is 1030 bytes"),
        ({**BASE, "channels": "room:*"}, "'channels' must be a list"),
        ({**BASE, "channels": None}, "'channels' must be a list"),
        ({**BASE, "channels": [5]}, "'channels': invalid channel"),
        ({**BASE, "channels": ["a b"]}, "'channels': invalid channel"),
        ({**BASE, "channels": ["a*b"]}, "'channels': invalid channel pattern"),
        ({**BASE, "publish": {"room:1": True}}, "'publish' must be a list"),
        ({**BASE, "publish": [""]}, "'publish': invalid channel"),
        ({**BASE, "expires": "soon"}, "'expires' must be null or a Unix time in seconds"),
        ({**BASE, "expires": True}, "'expires' must be null or a Unix time in seconds"),
        ({**BASE, "expires": -1}, "'expires' must be null or a Unix time in seconds"),
        ({**BASE, "expires": float("inf")}, "'expires' must be null"),
        ({**BASE, "expires": 10**400}, "'expires' must be null"),
        ({**BASE, "expires": 1796000000000}, "in milliseconds? send seconds (1796000000)"),
    ],
)  # fmt: skip
def test_connect_results_refused(result: dict[str, Any], says: str) -> None:
    with pytest.raises(ProxyError) as failed:
        parse_connect(result)
    assert says in failed.value.message and failed.value.code == "proxy_error"


def test_subscribe_result_is_nothing() -> None:
    parse_subscribe({})  # allows; refuses nothing
    parse_subscribe({"later": 1})  # keys of later versions are ignored


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        ({}, None),
        ({"data": {"text": "hi", "n": [1, {"a": None}]}}, {"text": "hi", "n": [1, {"a": None}]}),
        ({"data": {}}, {}),
        ({"data": None}, "'data' must be a JSON object"),
        ({"data": []}, "'data' must be a JSON object"),
        ({"data": "hi"}, "'data' must be a JSON object"),
        ({"data": {"sender": {"user": "admin"}}}, "reserved key(s) ['sender']"),
        ({"data": {"channel": "x", "ts": 1, "epoch": "e", "offset": 1}},
         "reserved key(s) ['channel', 'epoch', 'offset', 'ts']"),
    ],
)  # fmt: skip
def test_publish_results(result: dict[str, Any], outcome: Any) -> None:
    if isinstance(outcome, str):
        with pytest.raises(ProxyError) as failed:
            parse_publish(result)
        assert outcome in failed.value.message
    else:
        assert parse_publish(result) == outcome


def test_pick_headers_takes_the_allow_list_whatever_the_case() -> None:
    headers = tornado.httputil.HTTPHeaders()
    headers.add("User-Agent", "ua")
    headers.add("X-Forwarded-For", "1.1.1.1")
    headers.add("X-Forwarded-For", "2.2.2.2")
    headers.add("Cookie", "sessionid=s")
    allowed = ["user-agent", "X-FORWARDED-FOR", "Accept-Language", "User-Agent"]
    assert pick_headers(headers, allowed) == {
        "user-agent": "ua",
        "x-forwarded-for": "1.1.1.1,2.2.2.2",
    }
    assert pick_headers(headers, []) == {}


# -- the signature and the client's arguments ------------------------------------


BODY = b'{"client":"0a1b2c3d-1"}'
# From `printf %s BODY | openssl dgst -sha256 -hmac s3cret`.
GOOD = "sha256=fea0dceaf2a7973692fce08a6c79367028eb8fb8eedef7c75fe19454278a0dda"


@pytest.mark.parametrize(
    ("body", "header", "secret", "ok"),
    [
        (BODY, GOOD, "s3cret", True),
        (BODY, GOOD, b"s3cret", True),
        (bytearray(BODY), GOOD, "s3cret", True),
        (BODY, f" {GOOD} ", "s3cret", True),
        (BODY + b" ", GOOD, "s3cret", False),
        (b'{"client": "0a1b2c3d-1"}', GOOD, "s3cret", False),  # the same JSON, other bytes
        (BODY, GOOD, "s3cret2", False),
        (BODY, None, "s3cret", False),
        (BODY, "", "s3cret", False),
        (BODY, GOOD.removeprefix("sha256="), "s3cret", False),
        (BODY, GOOD.replace("sha256=", "sha1="), "s3cret", False),
        (BODY, GOOD.upper().replace("SHA256=", "sha256="), "s3cret", False),
        (BODY, GOOD[:-1], "s3cret", False),
        (BODY, GOOD + "é", "s3cret", False),
        (BODY, GOOD + "\udc80", "s3cret", False),
    ],
)
def test_verify_signature(body: bytes, header: str | None, secret: str | bytes, ok: bool) -> None:
    assert sign(BODY, "s3cret") == GOOD
    assert verify_signature(body, header, secret) is ok


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("ftp://127.0.0.1/hook", {}),
        ("127.0.0.1:8000/hook", {}),
        ("http:///hook", {}),
        ("http://127.0.0.1/hook", {"secret": ""}),
        ("http://127.0.0.1/hook", {"timeout": 0}),
        ("http://127.0.0.1/hook", {"max_in_flight": 0}),
    ],
)
def test_a_client_refuses_bad_arguments(url: str, options: dict[str, Any]) -> None:
    secret = options.pop("secret", SECRET)
    with pytest.raises(ValueError):
        ProxyClient(url, secret, **options)


def test_failures_carry_their_codes() -> None:
    failures: list[tuple[HookDenied | ProxyFailure, str, bool]] = [
        (ProxyUnavailable("down"), "proxy_unavailable", True),
        (ProxyError("bad"), "proxy_error", False),
        (HookDenied("banned", "no"), "banned", False),
    ]
    for exc, code, retry in failures:
        assert isinstance(exc, TorChannelsError)
        assert (exc.code, exc.retry) == (code, retry)
        assert exc.message in ("down", "bad", "no")


# -- docs/api.md, "Backend hooks (proxies)" ----------------------------------------


def hooks_section() -> str:
    text = API_DOC.read_text()
    start = text.index("\n## Backend hooks (proxies)\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_docs_hook_bodies_and_answers_are_the_codes() -> None:
    section = hooks_section()
    connect, allow, deny, subscribe, publish = (
        json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.S)
    )
    assert list(connect) == list(connect_body("c", "sse", {}, {}))
    assert list(subscribe) == list(subscribe_body("c", None, "a", None))
    assert list(publish) == list(publish_body("c", None, "a", {}))
    assert parse_connect(parse_answer(200, json.dumps(allow).encode())).user == "42"
    with pytest.raises(HookDenied):
        parse_answer(200, json.dumps(deny).encode())
    [(body, digest)] = re.findall(r"printf %s '(.*?)' \| openssl .*\n# SHA2-256\(stdin\)= (\w+)",
                                  section)  # fmt: skip
    assert sign(body.encode(), "s3cret") == "sha256=" + digest
    defaults = inspect.signature(ProxyClient).parameters
    assert f"`--proxy-timeout SECONDS` (default {defaults['timeout'].default:g})" in section
    assert f"`--proxy-max-in-flight N` (default {defaults['max_in_flight'].default})" in section
    examples = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(examples) == 3  # verify_signature, Flask, Django: valid Python at least
    for code in examples:
        compile(code, "api.md", "exec")

"""The admin page's authentication against real ``torchannels serve``
processes: off by default, login, cookie, XSRF, logout, and the admin-only
routes (issue 12). The page itself runs in Chromium: tests/e2e/test_admin_page.py."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any, Protocol
from urllib.parse import urlencode

import pytest
import tornado.httpclient
import tornado.testing
import tornado.websocket

from redis_servers import shared_redis
from server.processes import (
    KEY,
    WAIT,
    Live,
    ServerProcess,
    Socket,
    api,
    as_json,
    assert_error,
    fetch,
    poll,
    until,
)
from support import messages

PASSWORD = "admin-test-password"
COOKIE = "torchannels_admin"


class Served(Protocol):
    """A hub to browse: a ``serve`` process, or an app served in this process."""

    base: str


class Browser:
    """A cookie jar over Tornado's HTTP client: what a browser would send."""

    def __init__(self, http: Any, server: Served) -> None:
        self.http = http
        self.server = server
        self.cookies: dict[str, str] = {}

    def header(self) -> dict[str, str]:
        jar = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {"Cookie": jar} if jar else {}

    async def request(
        self, path: str, method: str = "GET", body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:  # fmt: skip
        response = await self.http.fetch(
            self.server.base + path, method=method, body=body, raise_error=False,
            headers={**self.header(), **(headers or {})}, follow_redirects=False,
            allow_nonstandard_methods=True, request_timeout=WAIT,
        )  # fmt: skip
        for line in response.headers.get_list("Set-Cookie"):
            for name, morsel in SimpleCookie(line).items():
                if not morsel.value or morsel["max-age"] == "0":  # cleared
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    async def xsrf(self) -> str:
        """The login form's XSRF token (its cookie set on the way)."""
        page = await self.request("/admin")
        match = re.search(rb'name="_xsrf" value="([^"]+)"', page.body)
        assert match, page.body
        return match.group(1).decode()

    async def login(self, password: str = PASSWORD, xsrf: str | None = None) -> Any:
        token = await self.xsrf() if xsrf is None else xsrf
        body = urlencode({"password": password, "_xsrf": token})
        return await self.request("/admin/login", "POST", body)


@pytest.fixture
def admin_server(spawn: Callable[..., ServerProcess]) -> ServerProcess:
    return spawn("--no-demo", "--api-key", KEY, "--admin-password", PASSWORD)


async def test_off_without_a_password_or_key(
    bare_server: ServerProcess, spawn: Callable[..., ServerProcess], http: Any
) -> None:
    no_admin = spawn("--no-demo", "--api-key", KEY, "--no-admin")
    for server in (bare_server, no_admin):
        for path in ("/admin", "/admin/login", "/admin/api/stats", "/admin/api/channels",
                     "/admin/channels?channel=x"):  # fmt: skip
            response = await fetch(http, server.base + path)
            assert response.code == 404, (path, response.code)
        response = await fetch(http, server.base + "/admin/login", "POST", "password=x")
        assert response.code == 404


async def test_login_sets_a_signed_httponly_strict_cookie(
    admin_server: ServerProcess, http: Any
) -> None:
    browser = Browser(http, admin_server)
    form = await browser.request("/admin")
    assert form.code == 200 and b'type="password"' in form.body and b"/admin/login" in form.body
    assert COOKIE not in browser.cookies
    for header, value in (("X-Frame-Options", "DENY"), ("Cache-Control", "no-store")):
        assert form.headers[header] == value
    assert "frame-ancestors 'none'" in form.headers["Content-Security-Policy"]
    response = await browser.login()
    assert response.code == 303 and response.headers["Location"] == "/admin"
    line = next(c for c in response.headers.get_list("Set-Cookie") if c.startswith(COOKIE))
    lowered = line.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/admin" in lowered
    assert PASSWORD not in line and "secure" not in lowered.replace("samesite", "")  # plain http
    # Behind a TLS-terminating proxy the cookie is Secure.
    proxied = Browser(browser.http, admin_server)
    token = await proxied.xsrf()
    response = await proxied.request(
        "/admin/login", "POST", urlencode({"password": PASSWORD, "_xsrf": token}),
        {"X-Forwarded-Proto": "https"},
    )  # fmt: skip
    line = next(c for c in response.headers.get_list("Set-Cookie") if c.startswith(COOKIE))
    assert "; secure" in line.lower()
    page = await browser.request("/admin")
    assert page.code == 200 and b'id="channels"' in page.body and b'id="logout"' in page.body
    assert PASSWORD.encode() not in page.body
    stats = await browser.request("/admin/api/stats")
    body = as_json(stats)
    assert stats.code == 200 and body["processes"] == 1
    assert {"connections", "subscriptions", "published", "delivered", "resets",
            "slow_dropped", "failed_publishes", "time"} <= set(body)  # fmt: skip


async def test_wrong_password_missing_xsrf_and_forged_cookies_are_refused(
    admin_server: ServerProcess, main_server: ServerProcess, http: Any
) -> None:
    browser = Browser(http, admin_server)
    response = await browser.login("wrong")
    assert response.code == 403 and b"Wrong password" in response.body
    assert COOKIE not in browser.cookies
    # With an admin password set, the API key is not it.
    assert (await browser.login(KEY)).code == 403
    # No XSRF token, or one that does not match the cookie: 403 before the password counts.
    assert (await browser.login(xsrf="")).code == 403
    assert (await browser.login(xsrf="2|00|" + "0" * 32 + "|1")).code == 403
    assert COOKIE not in browser.cookies
    for cookie in ("forged", "1700000000|" + "0" * 64):
        browser.cookies[COOKIE] = cookie
        assert (await browser.request("/admin/api/stats")).code == 401
        page = await browser.request("/admin")
        assert b'type="password"' in page.body
    # A session of one server is no session on another (its key comes from its password).
    other = Browser(http, main_server)
    assert (await other.login(KEY)).code == 303  # main_server falls back to its API key
    browser.cookies[COOKIE] = other.cookies[COOKIE]
    assert (await browser.request("/admin/api/stats")).code == 401


async def test_logout_ends_the_session(admin_server: ServerProcess, http: Any) -> None:
    browser = Browser(http, admin_server)
    await browser.login()
    assert (await browser.request("/admin/api/stats")).code == 200
    # Logging out is a POST with the XSRF token too.
    assert (await browser.request("/admin/logout", "POST", "")).code == 403
    assert COOKIE in browser.cookies
    token = browser.cookies["_xsrf"]
    response = await browser.request("/admin/logout", "POST", urlencode({"_xsrf": token}))
    assert response.code == 303 and COOKIE not in browser.cookies
    assert (await browser.request("/admin/api/stats")).code == 401
    assert b'type="password"' in (await browser.request("/admin")).body


async def test_admin_publish_needs_session_and_xsrf(admin_server: ServerProcess, http: Any) -> None:
    browser = Browser(http, admin_server)
    body = json.dumps({"channel": "ops:log", "data": {"text": "hi"}})
    assert (await browser.request("/admin/api/publish", "POST", body)).code == 401
    await browser.login()
    response = await browser.request("/admin/api/publish", "POST", body)
    assert response.code == 403 and as_json(response)["error"] == "xsrf"
    xsrf = {"X-XSRFToken": browser.cookies["_xsrf"]}
    response = await browser.request("/admin/api/publish", "POST", body, xsrf)
    assert response.code == 200 and as_json(response)["offset"] == 1
    info = as_json(await api(http, admin_server, "/api/channels/ops:log"))
    assert info["offset"] == 1
    for bad, code in (
        ("nope", "bad_json"),
        ("[" * 5000, "bad_json"),  # nests deeper than the parser goes: no 500
        (json.dumps({"channel": "a b", "data": {}}), "invalid_channel"),
        (json.dumps({"channel": "ops:log", "data": [1]}), "invalid_message"),
        (json.dumps({"channel": "ops:log", "data": {"offset": 3}}), "invalid_message"),
        ('{"channel": "ops:log", "data": {"x": NaN}}', "invalid_message"),
    ):
        response = await browser.request("/admin/api/publish", "POST", bad, xsrf)
        assert (response.code, as_json(response)["error"]) == (400, code), bad
    big = json.dumps({"channel": "ops:log", "data": {"pad": "x" * 70000}})
    error = assert_error(await browser.request("/admin/api/publish", "POST", big, xsrf), 413,
                         "payload_too_large")  # fmt: skip
    assert "65536 bytes (a fixed limit, not --max-publish-bytes)" in error["message"]
    assert as_json(await api(http, admin_server, "/api/channels/ops:log"))["offset"] == 1


async def test_admin_channels_route_lists_like_the_api(
    admin_server: ServerProcess, http: Any
) -> None:
    browser = Browser(http, admin_server)
    assert (await browser.request("/admin/api/channels")).code == 401
    await browser.login()
    await api(http, admin_server, "/api/publish", {"channel": "ops:a", "data": {}})
    mine = as_json(await browser.request("/admin/api/channels?prefix=ops:"))
    theirs = as_json(await api(http, admin_server, "/api/channels?prefix=ops:"))
    assert mine == theirs and [r["channel"] for r in mine["channels"]] == ["ops:a"]
    response = await browser.request("/admin/api/channels?limit=5000")
    assert (response.code, as_json(response)["error"]) == (400, "invalid_limit")


async def test_admin_subscribe_path_reads_any_channel_only_with_a_session(
    admin_server: ServerProcess, http: Any
) -> None:
    await api(http, admin_server, "/api/publish", {"channel": "private:x", "data": {"n": 1}})
    # The public path needs a token for private:x; the admin path a session.
    public = await poll(http, admin_server, ["private:x"])
    assert [f.get("code") for f in public["frames"] if f["type"] == "error"] == ["token_required"]
    browser = Browser(http, admin_server)
    url = "/admin/channels?" + urlencode({"transport": "poll", "channel": "private:x"})
    refused = as_json(await browser.request(url))
    assert [f.get("code") for f in refused["frames"] if f["type"] == "error"] == ["forbidden"]
    await browser.login()
    doc = as_json(await browser.request(url))
    assert [m["n"] for m in messages(doc["frames"])] == [1]


async def test_stats_cover_every_process_with_redis(
    spawn: Callable[..., ServerProcess], http: Any, lives: Callable[..., Live]
) -> None:
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    flags = ["--broker", shared_redis(), "--redis-prefix", prefix, "--history-ttl", "120",
             "--api-key", KEY, "--admin-password", PASSWORD, "--no-demo"]  # fmt: skip
    a, b = spawn(*flags), spawn(*flags)
    streams = [lives(a.url(transport="sse", channel="demo:s")),
               lives(b.url(transport="stream", channel=["demo:s", "demo:t"])),
               lives(b.url(transport="sse", channel="demo:t"))]  # fmt: skip
    for live in streams:
        await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    for server in (a, b, b):
        await api(http, server, "/api/publish", {"channel": "demo:s", "data": {}})
    # Each process salts its session key with its own random salt: a login
    # is per `serve` (its --workers share it: test_workers_accept_one_login).
    browser = Browser(http, a)
    await browser.login()
    on_b = Browser(http, b)
    on_b.cookies = dict(browser.cookies)
    assert (await on_b.request("/admin/api/stats")).code == 401
    await on_b.login()

    async def all_counted() -> bool:
        stats = [as_json(await x.request("/admin/api/stats")) for x in (browser, on_b)]
        return all(
            s["processes"] == 2 and s["connections"] == {"sse": 2, "stream": 1}
            and s["subscriptions"] == 4 and s["published"] == 3 and s["delivered"] >= 6
            for s in stats
        )  # fmt: skip

    await until(all_counted, "stats of both processes on both")


async def test_admin_websocket_needs_the_session_and_the_page_origin(
    admin_server: ServerProcess, http: Any
) -> None:
    browser = Browser(http, admin_server)
    await browser.login()
    url = admin_server.base.replace("http://", "ws://") + "/admin/channels/ws?channel=private:w"
    own = admin_server.base

    async def connect(origin: str, cookies: dict[str, str]) -> Socket:
        request = tornado.httpclient.HTTPRequest(url, headers={
            "Origin": origin, "Host": own.removeprefix("http://"),
            **({"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}),
        })  # fmt: skip
        conn = await asyncio.wait_for(tornado.websocket.websocket_connect(request), WAIT)
        return Socket(conn)

    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await connect("https://evil.example", browser.cookies)
    assert refused.value.code == 403
    anonymous = await connect(own, {})
    frames = await anonymous.wait(lambda fs: any(f["type"] == "error" for f in fs))
    assert [f.get("code") for f in frames if f["type"] == "error"] == ["forbidden"]
    await anonymous.aclose()
    admin = await connect(own, browser.cookies)
    await admin.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    await api(http, admin_server, "/api/publish", {"channel": "private:w", "data": {"n": 7}})
    frames = await admin.wait(lambda fs: len(messages(fs)) >= 1)
    assert [m["n"] for m in messages(frames)] == [7]
    await admin.aclose()


ELSEWHERE = "http://127.0.0.1:1"  # same site, another port: a SameSite=Strict cookie goes


async def test_admin_paths_are_same_origin_only_whatever_cors_allows(
    spawn: Callable[..., ServerProcess], http: Any, lives: Callable[..., Live]
) -> None:
    """Issue 17 2b.2: a listed origin with --cors-credentials could read any
    channel through the admin tail with the admin's cookie (poll and SSE)."""
    server = spawn("--no-demo", "--api-key", KEY, "--admin-password", PASSWORD,
                   "--allowed-origins", ELSEWHERE, "--cors-credentials")  # fmt: skip
    await api(http, server, "/api/publish", {"channel": "private:c", "data": {"n": 1}})
    browser = Browser(http, server)
    await browser.login()
    cookie = browser.header()
    for transport in ("poll", "longpoll", "stream", "sse"):
        query = urlencode({"transport": transport, "channel": "private:c", "cursor": ""})
        path = f"/admin/channels?{query}"
        stream = lives(server.base + path, {**cookie, "Origin": ELSEWHERE})
        await stream.ended()
        assert stream.status == 403, (transport, stream.status, stream.buffer)
        assert json.loads(stream.buffer)["error"] == "forbidden"
        assert not [h for h in stream.headers if h.startswith("access-control-")], stream.headers
        assert b'"n":1' not in stream.buffer
        # The page's own origin (or none, as a same-origin GET sends) reads it.
        for origin in ({"Origin": server.base}, {}):
            if transport in ("poll", "longpoll"):
                answer = await browser.request(path, headers=origin)
                frames = as_json(answer)["frames"]
                headers = [h.lower() for h in answer.headers]
            else:
                own = lives(server.base + path, {**cookie, **origin})
                frames = await own.wait(lambda fs: len(messages(fs)) >= 1)
                headers = list(own.headers)
                await own.aclose()
            assert [m["n"] for m in messages(frames)] == [1], transport
            assert not [h for h in headers if h.startswith("access-control-")], transport
    preflight = await browser.request("/admin/channels?channel=private:c", "OPTIONS", headers={
        "Origin": ELSEWHERE, "Access-Control-Request-Method": "GET"})  # fmt: skip
    assert "Access-Control-Allow-Origin" not in preflight.headers, preflight.code
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    for path in ("/admin/api/stats", "/admin/api/channels", "/admin"):
        answer = await browser.request(path, headers={"Origin": ELSEWHERE})
        assert answer.code == 403 and "Access-Control-Allow-Origin" not in answer.headers, path
        assert (await browser.request(path, headers={"Origin": server.base})).code == 200, path
    # The WebSocket too, though ELSEWHERE is listed in --allowed-origins.
    url = server.base.replace("http://", "ws://") + "/admin/channels/ws?channel=private:c"
    request = tornado.httpclient.HTTPRequest(url, headers={**cookie, "Origin": ELSEWHERE})
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await asyncio.wait_for(tornado.websocket.websocket_connect(request), WAIT)
    assert refused.value.code == 403
    # The public subscribe URL still honours the listed origin.
    public = lives(server.url(transport="sse", channel="private:c"), {"Origin": ELSEWHERE})
    await public.wait(lambda fs: any(f["type"] == "error" for f in fs))
    assert public.headers["access-control-allow-origin"] == ELSEWHERE
    await public.aclose()


async def test_wrong_passwords_make_the_address_wait(
    spawn: Callable[..., ServerProcess], http: Any
) -> None:
    """Issue 17 2b.5: 553 guesses a second from one client before."""
    server = spawn("--no-demo", "--api-key", KEY, "--admin-password", PASSWORD,
                   "--trusted-proxies", "127.0.0.1")  # fmt: skip
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    browser = Browser(http, server)
    token = await browser.xsrf()

    async def login(password: str, headers: dict[str, str]) -> Any:
        body = urlencode({"password": password, "_xsrf": token})
        return await browser.request("/admin/login", "POST", body, headers)

    codes = [(await login(f"guess-{n}", attacker)).code for n in range(6)]
    assert codes == [403] * 5 + [429], codes
    waiting = await login(PASSWORD, attacker)  # not even checked while it waits
    assert waiting.code == 429 and int(waiting.headers["Retry-After"]) >= 1
    assert b"Too many wrong passwords" in waiting.body and b'role="alert"' in waiting.body
    assert COOKIE not in browser.cookies
    # Another client (the address a trusted proxy forwards) is not held up.
    assert (await login(PASSWORD, {"X-Forwarded-For": "203.0.113.10"})).code == 303
    browser.cookies.pop(COOKIE)

    async def let_in() -> bool:
        answer: int = (await login(PASSWORD, attacker)).code
        return answer == 303

    await until(let_in, "the right password after the wait")
    # A success forgets the address: five more tries before any wait.
    codes = [(await login(f"again-{n}", attacker)).code for n in range(5)]
    assert codes == [403] * 5, codes


async def test_forwarded_addresses_from_untrusted_peers_are_not_believed(
    admin_server: ServerProcess, http: Any
) -> None:
    browser = Browser(http, admin_server)
    token = await browser.xsrf()
    codes = []
    for n in range(7):  # a new X-Forwarded-For each time: still one address
        body = urlencode({"password": "wrong", "_xsrf": token})
        headers = {"X-Forwarded-For": f"198.51.100.{n}"}
        codes.append((await browser.request("/admin/login", "POST", body, headers)).code)
    assert codes == [403] * 5 + [429] * 2, codes


def test_the_cookie_key_is_not_a_fast_hash_of_the_password() -> None:
    """A cookie signed with the old key (one HMAC of the password) is refused,
    and the key is scrypt with a salt of this process."""
    import hashlib
    import hmac

    import tornado.web

    from torchannels.server.admin import AdminAuth, session_key, session_salt

    old = hmac.new(PASSWORD.encode(), b"torchannels admin session", hashlib.sha256).hexdigest()
    forged = tornado.web.create_signed_value(old, COOKIE, "2000000000")
    auth = AdminAuth(PASSWORD)
    assert auth.expires(forged, now=2000000001) is None
    assert auth.expires(auth.cookie(now=2000000000), now=2000000001) is not None
    salt = b"torchannels admin session" + session_salt()
    assert auth.secret == hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1).hex()
    assert session_key(PASSWORD, b"another salt") != auth.secret


async def test_workers_accept_one_login(spawn: Callable[..., ServerProcess], http: Any) -> None:
    """The salt is made before --workers fork: every worker accepts the
    session cookie whichever worker made it."""
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    server = spawn("--no-demo", "--api-key", KEY, "--admin-password", PASSWORD, "--workers",
                   "2", "--broker", shared_redis(), "--redis-prefix", prefix)  # fmt: skip
    browser = Browser(http, server)
    assert (await browser.login()).code == 303
    workers_seen: set[int] = set()
    for n in range(80):  # each request on a new connection: the kernel spreads them
        answer = await browser.request("/admin/api/stats", headers={"Connection": "close"})
        assert answer.code == 200, answer.body
        health = await fetch(http, server.base + "/health", headers={"Connection": "close"})
        workers_seen.add(as_json(health)["worker"])
        if workers_seen == {0, 1} and n >= 20:
            break
    assert workers_seen == {0, 1}


async def test_stats_show_the_webhooks_health(
    spawn: Callable[..., ServerProcess], http: Any, lives: Callable[..., Live]
) -> None:
    sock, port = tornado.testing.bind_unused_port()
    sock.close()  # nobody listens there: every POST is refused
    server = spawn("--no-demo", "--api-key", KEY, "--admin-password", PASSWORD,
                   "--webhook-url", f"http://127.0.0.1:{port}/hook", "--webhook-secret", "s",
                   "--webhook-events", "channel_occupied")  # fmt: skip
    browser = Browser(http, server)
    await browser.login()
    assert b'id="webhooks"' in (await browser.request("/admin")).body
    live = lives(server.url(transport="sse", channel="demo:w"))
    await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))

    async def failing() -> bool:
        hooks = as_json(await browser.request("/admin/api/stats"))["webhooks"]
        return (
            hooks["queue"] == 1 and hooks["queued"] == 1 and hooks["retries"] >= 1
            and hooks["last_error"] is not None and hooks["last_success"] is None
            and hooks["sent"] == 0 and hooks["sending"] is True
        )  # fmt: skip

    await until(failing, "the refused webhook shown")
    error = as_json(await browser.request("/admin/api/stats"))["webhooks"]["last_error"]
    assert "refused" in error["error"].lower(), error


async def test_stats_without_webhooks_say_null(admin_server: ServerProcess, http: Any) -> None:
    browser = Browser(http, admin_server)
    await browser.login()
    assert as_json(await browser.request("/admin/api/stats"))["webhooks"] is None

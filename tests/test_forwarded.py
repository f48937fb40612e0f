"""Trusted proxies: which forwarding headers are believed, and what they give.

Tables of headers -> (client address, scheme, host) for the parser, then the
embedded library over real sockets: a WebSocket whose Origin names the
proxy's host is accepted only when the proxy is trusted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import tornado.web
from tornado.httputil import HTTPHeaders

from support import Server, upgrade
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings, forwarded
from torchannels.forwarded import Forwarded, TrustedProxies, parse_forwarded, resolve

PROXIES = TrustedProxies.of(("127.0.0.1", "10.0.0.0/8", "fd00::/8"))

# (name, peer, headers, expected (remote_ip, protocol, host) or None)
Expected = tuple[str, str | None, str | None] | None
CASES: list[tuple[str, str, dict[str, str | list[str]], Expected]] = [
    ("untrusted peer: headers ignored", "198.51.100.1",
     {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "evil.example"}, None),
    ("trusted peer, no headers", "127.0.0.1", {}, ("127.0.0.1", None, None)),
    ("one hop", "127.0.0.1",
     {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
      "X-Forwarded-Host": "app.example:8443"},
     ("203.0.113.7", "https", "app.example:8443")),
    ("client-sent spoof left of the real client", "127.0.0.1",
     {"X-Forwarded-For": "1.1.1.1, 203.0.113.7"}, ("203.0.113.7", None, None)),
    ("trusted hops are skipped", "10.0.0.2",
     {"X-Forwarded-For": "203.0.113.7, 10.9.9.9, 127.0.0.1"}, ("203.0.113.7", None, None)),
    ("all hops trusted: the leftmost", "127.0.0.1",
     {"X-Forwarded-For": "10.1.1.1, 10.2.2.2"}, ("10.1.1.1", None, None)),
    ("repeated header lines join", "127.0.0.1",
     {"X-Forwarded-For": ["203.0.113.7", "10.0.0.5"]}, ("203.0.113.7", None, None)),
    ("garbage hop stops the walk", "127.0.0.1",
     {"X-Forwarded-For": "203.0.113.7, garbage, 10.0.0.5"}, ("10.0.0.5", None, None)),
    ("hops with ports", "127.0.0.1",
     {"X-Forwarded-For": "[2001:db8::1]:4711, 10.0.0.5:80"}, ("2001:db8::1", None, None)),
    ("ipv6 client", "127.0.0.1",
     {"X-Forwarded-For": "2001:db8::1"}, ("2001:db8::1", None, None)),
    ("ipv4-mapped peer is trusted", "::ffff:127.0.0.1",
     {"X-Forwarded-For": "203.0.113.7"}, ("203.0.113.7", None, None)),
    ("last proto and host win", "127.0.0.1",
     {"X-Forwarded-Proto": "http, https", "X-Forwarded-Host": "a.example, b.example"},
     ("127.0.0.1", "https", "b.example")),
    ("bad proto and host ignored", "127.0.0.1",
     {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "a b/c"}, ("127.0.0.1", None, None)),
    ("ipv6 host", "127.0.0.1",
     {"X-Forwarded-Host": "[2001:db8::1]:8080"}, ("127.0.0.1", None, "[2001:db8::1]:8080")),
    ("Forwarded, one element", "127.0.0.1",
     {"Forwarded": 'for=203.0.113.7;proto=https;host="app.example"'},
     ("203.0.113.7", "https", "app.example")),
    ("Forwarded wins over X-Forwarded-*", "127.0.0.1",
     {"Forwarded": "for=203.0.113.7", "X-Forwarded-For": "1.1.1.1",
      "X-Forwarded-Host": "x.example"}, ("203.0.113.7", None, None)),
    ("Forwarded chain: outermost trusted element's host", "127.0.0.1",
     {"Forwarded": 'for=203.0.113.7;host=outer.example;proto=https, '
                   'for=10.0.0.3;host=inner.example;proto=http'},
     ("203.0.113.7", "https", "outer.example")),
    ("Forwarded ipv6 with port, quoted", "127.0.0.1",
     {"Forwarded": 'for="[2001:db8::17]:4711"'}, ("2001:db8::17", None, None)),
    ("Forwarded ipv4 with port", "127.0.0.1",
     {"Forwarded": 'for="203.0.113.7:5000"'}, ("203.0.113.7", None, None)),
    ("Forwarded unknown node stops the walk", "127.0.0.1",
     {"Forwarded": "for=203.0.113.7, for=unknown;host=h.example"},
     ("127.0.0.1", None, "h.example")),
    ("Forwarded spoofed element left of an untrusted one", "127.0.0.1",
     {"Forwarded": "for=1.1.1.1;host=evil.example, for=203.0.113.7;host=good.example"},
     ("203.0.113.7", None, "good.example")),
    ("Forwarded malformed: everything ignored", "127.0.0.1",
     {"Forwarded": "for=203.0.113.7 junk", "X-Forwarded-For": "1.1.1.1"},
     ("127.0.0.1", None, None)),
    ("Forwarded repeated parameter is malformed", "127.0.0.1",
     {"Forwarded": "for=203.0.113.7;for=1.1.1.1"}, ("127.0.0.1", None, None)),
]  # fmt: skip


def _headers(raw: dict[str, str | list[str]]) -> HTTPHeaders:
    headers = HTTPHeaders()
    for name, value in raw.items():
        for item in [value] if isinstance(value, str) else value:
            headers.add(name, item)
    return headers


@pytest.mark.parametrize(
    ("peer", "raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_resolve(
    peer: str, raw: dict[str, str | list[str]], expected: tuple[str, str | None, str | None] | None
) -> None:
    view = resolve(peer, _headers(raw), PROXIES)
    assert view == (Forwarded(*expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("value", "elements"),
    [
        ("for=a", [{"for": "a"}]),
        ('For="x;y,z"', [{"for": "x;y,z"}]),
        (r'host="a\"b"', [{"host": 'a"b'}]),
        ("for=a;;proto=http , for=b", [{"for": "a", "proto": "http"}, {"for": "b"}]),
        (",for=a,", [{"for": "a"}]),
        ("for", None),
        ("for=a b", None),
        ('for="unterminated', None),
        ("=a", None),
    ],
)
def test_parse_forwarded(value: str, elements: list[dict[str, str]] | None) -> None:
    assert parse_forwarded(value) == elements


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "example.com", "", "1.2.3.4/33"])
def test_settings_refuse_what_is_not_a_network(bad: str) -> None:
    with pytest.raises(ValueError, match="trusted proxy"):
        Settings(trusted_proxies=(bad,))


def test_settings_refuse_a_bare_string() -> None:
    with pytest.raises(ValueError, match="tuple"):
        Settings(trusted_proxies="10.0.0.0/8")  # type: ignore[arg-type]


def test_no_trusted_proxies_believes_no_one() -> None:
    headers = _headers({"X-Forwarded-For": "203.0.113.7"})
    assert resolve("127.0.0.1", headers, Settings().proxies) is None


# -- the embedded library over real sockets ------------------------------------------


class Handler(ChannelMixin, tornado.web.RequestHandler):
    pass


def ws_server(make_server: Callable[..., Server], trusted: tuple[str, ...]) -> Server:
    hub = Hub(MemoryBroker(), Settings(trusted_proxies=trusted))
    handler: type[ChannelMixin] = type("H", (Handler,), {"hub": hub})
    return make_server(handler, hub_=hub, routes=[(r"/channels/ws", handler.websocket())])


async def handshake(port: int, headers: dict[str, str]) -> int:
    status, _, writer = await upgrade(port, "/channels/ws?channel=c", headers)
    writer.close()
    return status


@pytest.mark.parametrize(
    ("trusted", "forwarded_host", "status"),
    [
        ((), "public.example:8080", 403),  # the reported defect: no way to say
        (("127.0.0.1",), "public.example:8080", 101),
        (("10.0.0.0/8",), "public.example:8080", 403),  # the peer is not trusted
        (("127.0.0.1",), "other.example", 403),  # forwarded host is not the origin's
        (("127.0.0.1",), None, 403),
    ],
)
async def test_origin_checked_against_the_forwarded_host(
    make_server: Callable[..., Server],
    trusted: tuple[str, ...],
    forwarded_host: str | None,
    status: int,
) -> None:
    server = ws_server(make_server, trusted)
    headers = {"Host": f"127.0.0.1:{server.port}", "Origin": "http://public.example:8080"}
    if forwarded_host is not None:
        headers["X-Forwarded-Host"] = forwarded_host
    assert await handshake(server.port, headers) == status


async def test_forwarded_address_reaches_the_handler(make_server: Callable[..., Server]) -> None:
    seen: list[tuple[str | None, str, str]] = []

    class Seeing(Handler):
        def can_access(self, sub: object) -> bool:
            request = self.request
            seen.append((request.remote_ip, request.protocol, request.host))
            return True

    hub = Hub(MemoryBroker(), Settings(trusted_proxies=("127.0.0.0/8",)))
    server = make_server(type("S", (Seeing,), {"hub": hub}), hub_=hub)
    headers = {"Forwarded": 'for=203.0.113.7;proto=https;host="app.example"'}
    response = await server.fetch(server.url(transport="poll", channel="c"), headers=headers)
    assert response.code == 200
    assert seen == [("203.0.113.7", "https", "app.example")]


@pytest.mark.parametrize(
    ("trusted", "headers", "hint"),
    [
        ((), {}, "proxy_set_header Host $http_host"),
        (("10.0.0.0/8",), {"X-Forwarded-Host": "public.example:8080"}, "not a trusted proxy"),
    ],
)
async def test_refused_origin_is_explained_once_in_the_log(
    make_server: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    trusted: tuple[str, ...],
    headers: dict[str, str],
    hint: str,
) -> None:
    monkeypatch.setattr(forwarded, "_explained", set())
    server = ws_server(make_server, trusted)
    sent = {"Host": f"127.0.0.1:{server.port}", "Origin": "http://public.example:8080", **headers}
    for _ in range(3):
        assert await handshake(server.port, sent) == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "torchannels.origin"]
    assert len(lines) == 1, lines
    assert "'http://public.example:8080'" in lines[0] and f"'127.0.0.1:{server.port}'" in lines[0]
    assert hint in lines[0] and "docs/deployment.md" in lines[0]

"""CORS on the subscribe URL and the publish API, from ``--allowed-origins``:
the headers of every HTTP transport and of the API, preflights, credentials
only when configured, ``Vary: Origin``; the same for an embedded app through
``Settings``. (tests/e2e/test_cors_e2e.py runs a real browser across origins.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web

from server.processes import KEY, ServerProcess, api, as_json, fetch, poll
from torchannels import ChannelMixin, Hub, MemoryBroker, Settings

PAGE = "https://app.example.com"
OTHER = "https://evil.example.com"


@pytest.fixture(scope="module")
def cors_hub(log_dir: Path) -> Iterator[ServerProcess]:
    hub = ServerProcess(
        log_dir,
        ["--port", "0", "--api-key", KEY, "--allowed-origins", f"{PAGE}/,http://localhost:1"],
        None,
    )
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def credentials_hub(log_dir: Path) -> Iterator[ServerProcess]:
    hub = ServerProcess(
        log_dir, ["--port", "0", "--no-demo", "--api-key", KEY, "--cors-credentials"],
        {"TORCHANNELS_ALLOWED_ORIGINS": PAGE},
    )  # fmt: skip
    yield hub
    hub.close()


def cors_of(headers: Any) -> dict[str, str]:
    """The CORS-related headers of an answer, lower-cased names."""
    names = ("access-control-allow-origin", "access-control-allow-credentials",
             "access-control-allow-methods", "access-control-allow-headers",
             "access-control-max-age", "vary")  # fmt: skip
    return {n: headers[n] for n in names if headers.get(n) is not None}


@pytest.mark.parametrize("transport", ["poll", "longpoll"])
async def test_polls_answer_a_listed_origin_only(
    cors_hub: ServerProcess, http: Any, transport: str
) -> None:
    query = {"timeout": "0.2"} if transport == "longpoll" else {}
    for origin, expected in [
        (PAGE, {"access-control-allow-origin": PAGE, "vary": "Origin"}),
        ("HTTPS://App.Example.com", {"access-control-allow-origin": "HTTPS://App.Example.com",
                                     "vary": "Origin"}),
        (OTHER, {"vary": "Origin"}),
        (None, {"vary": "Origin"}),
    ]:  # fmt: skip
        headers = {} if origin is None else {"Origin": origin}
        url = cors_hub.url(transport=transport, channel="demo:cors", **query)
        response = await fetch(http, url, headers=headers)
        assert response.code == 200, response.body
        assert cors_of(response.headers) == expected, origin


@pytest.mark.parametrize("transport", ["stream", "sse"])
async def test_streams_answer_a_listed_origin(
    cors_hub: ServerProcess, lives: Any, transport: str
) -> None:
    live = lives(cors_hub.url(transport=transport, channel="demo:cors"), {"Origin": PAGE})
    await live.wait(lambda frames: any(f["type"] == "subscribed" for f in frames))
    assert live.status == 200
    assert cors_of(live.headers) == {"access-control-allow-origin": PAGE, "vary": "Origin"}
    other = lives(cors_hub.url(transport=transport, channel="demo:cors"), {"Origin": OTHER})
    await other.wait(lambda frames: any(f["type"] == "subscribed" for f in frames))
    assert cors_of(other.headers) == {"vary": "Origin"}


async def test_refusals_carry_cors_headers_so_the_page_can_read_them(
    cors_hub: ServerProcess, http: Any
) -> None:
    bad = await fetch(
        http, cors_hub.url(transport="nope", channel="demo:x"), headers={"Origin": PAGE}
    )
    assert bad.code == 400 and as_json(bad)["error"] == "unknown_transport"
    assert bad.headers["Access-Control-Allow-Origin"] == PAGE
    no_key = await fetch(http, cors_hub.base + "/api/publish", "POST", b"{}", {"Origin": PAGE})
    assert no_key.code == 401
    assert cors_of(no_key.headers) == {"access-control-allow-origin": PAGE, "vary": "Origin"}
    wrong_method = await fetch(
        http,
        cors_hub.base + "/api/publish",
        headers={"Origin": PAGE, "Authorization": f"Bearer {KEY}"},
    )
    assert wrong_method.code == 405
    assert wrong_method.headers["Access-Control-Allow-Origin"] == PAGE


async def test_preflight_of_the_subscribe_url(cors_hub: ServerProcess, http: Any) -> None:
    asks = {"Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,last-event-id"}  # fmt: skip
    response = await fetch(http, cors_hub.url(), "OPTIONS", headers={"Origin": PAGE, **asks})
    assert response.code == 204, response.body
    assert response.body == b""
    assert cors_of(response.headers) == {
        "access-control-allow-origin": PAGE,
        "access-control-allow-methods": "GET, POST",  # POST: a client's publish
        "access-control-allow-headers": "Authorization, Last-Event-ID, Content-Type",
        "access-control-max-age": "600",
        "vary": "Origin",
    }
    # Another origin learns nothing: the browser refuses the real request.
    refused = await fetch(http, cors_hub.url(), "OPTIONS", headers={"Origin": OTHER, **asks})
    assert refused.code == 204
    assert cors_of(refused.headers) == {"vary": "Origin"}
    # A method the URL does not have is not offered.
    put = {**asks, "Access-Control-Request-Method": "PUT"}
    response = await fetch(http, cors_hub.url(), "OPTIONS", headers={"Origin": PAGE, **put})
    assert "access-control-allow-methods" not in cors_of(response.headers)


async def test_preflight_and_cross_origin_publish_through_the_api(
    cors_hub: ServerProcess, http: Any
) -> None:
    asks = {"Origin": PAGE, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
    # A preflight carries no API key: it must not be refused for that.
    response = await fetch(http, cors_hub.base + "/api/publish", "OPTIONS", headers=asks)
    assert response.code == 204, response.body
    assert cors_of(response.headers) == {
        "access-control-allow-origin": PAGE,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "Authorization, X-API-Key, Content-Type, Idempotency-Key",
        "access-control-max-age": "600",
        "vary": "Origin",
    }
    info = await fetch(http, cors_hub.base + "/api/channels/demo%3Ax", "OPTIONS",
                       headers={**asks, "Access-Control-Request-Method": "GET"})  # fmt: skip
    assert info.code == 204 and info.headers["Access-Control-Allow-Origin"] == PAGE

    before = await poll(http, cors_hub, ["demo:cors-api"])
    body = b'{"channel": "demo:cors-api", "data": {"n": 1}}'
    headers = {"Origin": PAGE, "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    published = await fetch(http, cors_hub.base + "/api/publish", "POST", body, headers)
    assert published.code == 200, published.body
    assert cors_of(published.headers) == {"access-control-allow-origin": PAGE, "vary": "Origin"}
    after = await poll(http, cors_hub, ["demo:cors-api"], cursor=before["cursor"])
    assert [f["data"]["n"] for f in after["frames"] if f["type"] == "message"] == [1]


async def test_credentials_only_when_configured(
    credentials_hub: ServerProcess, cors_hub: ServerProcess, http: Any
) -> None:
    for hub, expected in [(credentials_hub, "true"), (cors_hub, None)]:
        response = await fetch(http, hub.url(transport="poll", channel="demo:c"),
                               headers={"Origin": PAGE})  # fmt: skip
        assert response.headers["Access-Control-Allow-Origin"] == PAGE
        assert response.headers.get("Access-Control-Allow-Credentials") == expected
        published = await api(http, hub, "/api/publish", {"channel": "demo:c", "data": {}})
        assert published.code == 200
        preflight = await fetch(http, hub.base + "/api/publish", "OPTIONS", headers={
            "Origin": PAGE, "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert preflight.headers.get("Access-Control-Allow-Credentials") == expected


async def test_without_allowed_origins_nothing_changes(
    main_server: ServerProcess, http: Any
) -> None:
    response = await fetch(http, main_server.url(transport="poll", channel="demo:c"),
                           headers={"Origin": PAGE})  # fmt: skip
    assert response.code == 200
    assert cors_of(response.headers) == {}
    published = await fetch(http, main_server.base + "/api/publish", "POST", b"{}",
                            {"Origin": PAGE})  # fmt: skip
    assert cors_of(published.headers) == {}
    # A preflight is answered (204, not 405), without permission.
    preflight = await fetch(http, main_server.url(), "OPTIONS", headers={
        "Origin": PAGE, "Access-Control-Request-Method": "GET"})  # fmt: skip
    assert (preflight.code, cors_of(preflight.headers)) == (204, {})


# -- an app embedding torchannels: the same, from Settings ------------------------------


class EmbeddedHandler(ChannelMixin, tornado.web.RequestHandler):
    pass


@pytest.fixture
async def embedded() -> AsyncIterator[str]:
    """An app whose route passes ``hub=`` with ``Settings.allowed_origins``."""
    hub = Hub(MemoryBroker(), Settings(allowed_origins=(PAGE,), cors_credentials=True))
    app = tornado.web.Application([(r"/channels", EmbeddedHandler, {"hub": hub})])
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    yield f"http://127.0.0.1:{port}/channels"
    server.stop()
    await asyncio.wait_for(server.close_all_connections(), 5)
    await hub.close()


async def test_an_embedded_app_gets_cors_from_its_settings(embedded: str, http: Any) -> None:
    response = await fetch(http, embedded + "?transport=poll&channel=x", headers={"Origin": PAGE})
    assert response.code == 200, response.body
    assert cors_of(response.headers) == {
        "access-control-allow-origin": PAGE,
        "access-control-allow-credentials": "true",
        "vary": "Origin",
    }
    preflight = await fetch(http, embedded, "OPTIONS", headers={
        "Origin": PAGE, "Access-Control-Request-Method": "GET"})  # fmt: skip
    assert preflight.code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST"
    other = await fetch(http, embedded + "?transport=poll&channel=x", headers={"Origin": OTHER})
    assert cors_of(other.headers) == {"vary": "Origin"}

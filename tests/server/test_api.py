"""The publish API of a running hub: keys, bodies, limits, channel info."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import pytest

from server.processes import (
    KEY,
    LIMIT,
    ServerProcess,
    api,
    as_json,
    assert_error,
    auth,
    fetch,
    poll,
    until,
)


async def test_publish_one_channel(main_server: ServerProcess, http: Any) -> None:
    before = await api(http, main_server, "/api/channels/demo:one")
    offset = as_json(before)["offset"]
    response = await api(http, main_server, "/api/publish",
                         {"channel": "demo:one", "data": {"text": "hi", "n": [1, 2]}})  # fmt: skip
    body = as_json(response)
    assert response.code == 200, body
    assert response.headers["Cache-Control"] == "no-store"
    assert set(body) == {"channel", "epoch", "offset", "ts"}
    assert body["channel"] == "demo:one" and body["offset"] == offset + 1
    assert abs(body["ts"] - time.time()) < 30
    doc = await poll(http, main_server, ["demo:one"],
                     cursor=f"demo:one={body['epoch']}:{offset}")  # fmt: skip
    assert [f["data"] for f in doc["frames"]] == [{"text": "hi", "n": [1, 2], **body}]


async def test_publish_many_channels(main_server: ServerProcess, http: Any) -> None:
    response = await api(
        http,
        main_server,
        "/api/publish",
        {"channels": ["demo:m1", "demo:m2", "demo:m1"], "data": {"x": 1}},
    )
    body = as_json(response)
    assert response.code == 200, body
    results = body["results"]
    assert [r["channel"] for r in results] == ["demo:m1", "demo:m2"]  # repeats count once
    for result in results:
        assert set(result) == {"channel", "epoch", "offset", "ts"}
        doc = await poll(http, main_server, [result["channel"]])
        assert [f["data"] for f in doc["frames"] if f["type"] == "message"][-1] == {
            "x": 1, **result,
        }  # fmt: skip


async def test_api_key_in_x_api_key_or_any_case_bearer(
    main_server: ServerProcess, http: Any
) -> None:
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"bearer {KEY}"},
                    {"Authorization": f"BEARER   {KEY}  "}):  # fmt: skip
        response = await fetch(http, main_server.base + "/api/channels/x", headers=headers)
        assert response.code == 200, (headers, response.body)


async def test_set_state_and_channel_info(
    main_server: ServerProcess, http: Any, lives: Any
) -> None:
    response = await api(http, main_server, "/api/state",
                         {"channel": "demo:state", "messages": [{"v": 1}, {"v": 2}]})  # fmt: skip
    position = as_json(response)
    assert response.code == 200, position
    assert set(position) == {"channel", "epoch", "offset"}
    assert position["channel"] == "demo:state"

    live = lives(main_server.url(transport="sse", channel="demo:state"))
    frames = await live.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    subscribed = frames[0]
    assert subscribed["offset"] == position["offset"]
    assert [{"v": m["v"]} for m in subscribed["state"]] == [{"v": 1}, {"v": 2}]

    info = as_json(await api(http, main_server, "/api/channels/demo:state"))
    assert info == {
        "channel": "demo:state", "epoch": position["epoch"], "offset": position["offset"],
        "history_length": 0, "has_state": True, "local_subscribers": 1, "subscribers": 1,
    }  # fmt: skip
    await live.aclose()

    async def left() -> bool:
        info = as_json(await api(http, main_server, "/api/channels/demo:state"))
        return bool(info["local_subscribers"] == 0)

    await until(left, "the hub never noticed the client left")


async def test_channel_info_of_names_needing_escapes(main_server: ServerProcess, http: Any) -> None:
    for name in ("room/1", "tag#x", "a@b$c"):
        published = as_json(await api(http, main_server, "/api/publish",
                                      {"channel": name, "data": {}}))  # fmt: skip
        response = await api(http, main_server, "/api/channels/" + quote(name, safe=""))
        info = as_json(response)
        assert response.code == 200, info
        assert (info["channel"], info["offset"]) == (name, published["offset"])


async def test_missing_key_is_401_with_www_authenticate(
    main_server: ServerProcess, http: Any
) -> None:
    for path, body in (("/api/publish", {"channel": "a", "data": {}}),
                       ("/api/state", {"channel": "a", "messages": []}),
                       ("/api/channels/a", None)):  # fmt: skip
        for key in (None, ""):
            response = await api(http, main_server, path, body, key=key)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="torchannels"'


async def test_wrong_key_is_403(main_server: ServerProcess, http: Any) -> None:
    for key in ("wrong", KEY + "x", KEY[:-1], KEY.upper()):
        response = await api(
            http, main_server, "/api/publish", {"channel": "a", "data": {}}, key=key
        )
        assert_error(response, 403, "forbidden")
        assert "WWW-Authenticate" not in response.headers


async def test_no_key_configured_is_403_api_disabled(bare_server: ServerProcess, http: Any) -> None:
    for path, body in (("/api/publish", {"channel": "a", "data": {}}),
                       ("/api/state", {"channel": "a", "messages": []}),
                       ("/api/channels/a", None)):  # fmt: skip
        for key in (None, KEY):
            answer = await api(http, bare_server, path, body, key=key)
            error = assert_error(answer, 403, "api_disabled")
            assert "start it with --api-key (or TORCHANNELS_API_KEY)" in error["message"]


BAD_BODIES = [
    pytest.param("/api/publish", b"{not json", "bad_json", id="syntax"),
    pytest.param("/api/publish", b"\xff\xfe", "bad_json", id="not-utf8"),
    pytest.param("/api/publish", b"", "bad_json", id="empty"),
    pytest.param("/api/publish", b"[1, 2]", "bad_json", id="array"),
    pytest.param("/api/publish", b'{"channels": [], "data": {}}', "bad_json", id="no-channels"),
    pytest.param("/api/publish", b'{"channels": "a", "data": {}}', "bad_json", id="channels-str"),
    pytest.param("/api/state", b'{"channel": "a", "messages": {}}', "bad_json", id="state-dict"),
    pytest.param("/api/state", b'{"channel": "a"}', "bad_json", id="state-missing"),
    pytest.param("/api/publish", b'{"data": {}}', "invalid_channel", id="no-channel"),
    pytest.param("/api/publish", b'{"channel": "", "data": {}}', "invalid_channel",
                 id="empty-name"),
    pytest.param("/api/publish", b'{"channel": "a b", "data": {}}', "invalid_channel", id="space"),
    pytest.param("/api/publish", b'{"channel": 7, "data": {}}', "invalid_channel", id="number"),
    pytest.param("/api/publish", json.dumps({"channel": "x" * 129, "data": {}}).encode(),
                 "invalid_channel", id="too-long"),
    pytest.param("/api/publish", b'{"channels": ["ok", "no way"], "data": {}}', "invalid_channel",
                 id="one-of-many"),
    pytest.param("/api/state", b'{"channel": "a,b", "messages": []}', "invalid_channel",
                 id="state-channel"),
    pytest.param("/api/publish", b'{"channel": "a"}', "invalid_message", id="no-data"),
    pytest.param("/api/publish", b'{"channel": "a", "data": [1]}', "invalid_message", id="list"),
    pytest.param("/api/publish", b'{"channel": "a", "data": "hi"}', "invalid_message", id="str"),
    pytest.param("/api/publish", b'{"channel": "a", "data": {"offset": 1}}', "invalid_message",
                 id="reserved-offset"),
    pytest.param("/api/publish", b'{"channel": "a", "data": {"channel": "b"}}', "invalid_message",
                 id="reserved-channel"),
    pytest.param("/api/publish", b'{"channels": ["a", "b"], "data": {"ts": 1}}', "invalid_message",
                 id="reserved-many"),
    pytest.param("/api/publish", b'{"channel": "a", "data": {"x": NaN}}', "invalid_message",
                 id="nan"),
    pytest.param("/api/state", b'{"channel": "a", "messages": [{"epoch": "e"}]}',
                 "invalid_message", id="state-reserved"),
    pytest.param("/api/state", b'{"channel": "a", "messages": [1]}', "invalid_message",
                 id="state-not-object"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "raw", "code"), BAD_BODIES)
async def test_bad_bodies_are_400_and_publish_nothing(
    main_server: ServerProcess, http: Any, path: str, raw: bytes, code: str
) -> None:
    async def offsets() -> list[int]:
        infos = [
            as_json(await api(http, main_server, f"/api/channels/{c}")) for c in ("a", "b", "ok")
        ]
        return [i["offset"] for i in infos]

    before = await offsets()
    assert_error(await api(http, main_server, path, raw=raw), 400, code)
    assert await offsets() == before


async def test_body_size_limit_is_exact(main_server: ServerProcess, http: Any) -> None:
    def body(size: int) -> bytes:
        raw = json.dumps({"channel": "big", "data": {"pad": ""}}).encode()
        out = raw.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(raw)) + b'"')
        assert len(out) == size
        return out

    ok = await api(http, main_server, "/api/publish", raw=body(LIMIT))
    assert ok.code == 200, ok.body
    too_big = await api(http, main_server, "/api/publish", raw=body(LIMIT + 1))
    error = assert_error(too_big, 413, "payload_too_large")
    assert str(LIMIT) in error["message"] and "--max-publish-bytes" in error["message"]
    # The key is checked first: an unauthenticated big body is a 401.
    assert_error(await api(http, main_server, "/api/publish", raw=body(LIMIT + 1), key=None),
                 401, "unauthorized")  # fmt: skip


@pytest.mark.parametrize("factor", [10, 100])
async def test_any_oversized_body_gets_the_documented_413(
    main_server: ServerProcess, http: Any, factor: int
) -> None:
    """openapi.json and docs/api.md promise 413 ``payload_too_large`` for a
    body over ``max_publish_bytes``, whatever its size (the API streams the
    body and never holds more than the limit)."""
    raw = json.dumps({"channel": "big", "data": {"pad": "x" * (LIMIT * factor)}}).encode()
    assert_error(await api(http, main_server, "/api/publish", raw=raw), 413, "payload_too_large")


async def test_other_methods_are_405_json(main_server: ServerProcess, http: Any) -> None:
    for method, path in (("GET", "/api/publish"), ("PUT", "/api/state"),
                         ("POST", "/api/channels/a"), ("DELETE", "/api/channels/a")):  # fmt: skip
        response = await fetch(http, main_server.base + path, method,
                               b"{}" if method in ("PUT", "POST") else None, auth())  # fmt: skip
        assert_error(response, 405, "http_error")


async def test_lone_surrogates_are_refused_cleanly_everywhere(
    spawn: Any, http: Any, sockets: Any
) -> None:
    """Issue 17 2b.3: a lone surrogate is not valid Unicode; wherever a
    client can send one (a JSON body, a query parameter, a WebSocket
    command) it gets a 4xx or an error frame, never a traceback."""
    server = spawn("--no-demo", "--api-key", KEY)
    for path, raw, code in (
        ("/api/publish", b'{"channel": "\\ud800", "data": {}}', "invalid_channel"),
        ("/api/publish", b'{"channel": "a", "data": {"t": "\\udfff"}}', "invalid_message"),
        ("/api/publish", b'{"messages": [{"channel": "\\ud800", "data": {}}]}', "invalid_channel"),
        ("/api/state", b'{"channel": "\\ud800", "messages": []}', "invalid_channel"),
    ):
        answer = await api(http, server, path, raw=raw)
        error = as_json(answer)
        assert (answer.code, error["error"]) == (400, code), error
        assert "\\ud800" in error["message"] or "surrogate" in error["message"], error
    assert (await api(http, server, "/api/channels/%ED%A0%80")).code == 400
    answer = await fetch(http, server.url(transport="poll") + "&channel=%ED%A0%80")
    assert_error(answer, 400, "bad_parameter")
    sock = await sockets(server.ws_url())
    await sock.conn.write_message('{"type": "subscribe", "channels": ["\\ud800"]}')
    frames = await sock.wait(lambda fs: any(f["type"] == "error" for f in fs))
    assert [f["channel"] for f in frames if f["type"] == "error"] == ["\ud800"]
    await sock.conn.write_message('{"type": "subscribe", "channels": ["demo:after"]}')
    await sock.wait(lambda fs: any(f["type"] == "subscribed" for f in fs))
    log = server.log()
    assert "Traceback" not in log and "UnicodeEncodeError" not in log, log

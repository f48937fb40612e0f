"""The client's pure parts, by tables: frame decoders, the position tracker,
error mapping and the retry rule."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, cast

import pytest

from torchannels.client import (
    APIError,
    AuthError,
    ChannelError,
    ChannelFeed,
    Client,
    ClientError,
    ControlResult,
    Disconnected,
    Message,
    PayloadTooLarge,
    Published,
    RequestError,
    Reset,
    ServerError,
    SubscribeError,
    UnavailableError,
    calls,
)
from torchannels.client.decode import DecodeError, NDJSONDecoder, SSEDecoder
from torchannels.client.disconnect import Disconnect
from torchannels.client.errors import CODES, ConnectError
from torchannels.client.tracker import MalformedFrame, Tracker
from torchannels.protocol import Position

API_DOC = Path(__file__).parents[2] / "docs" / "api.md"


@pytest.mark.parametrize(("chunks", "frames"), [
    ([b'{"type":"ping"}\n'], [{"type": "ping"}]),
    ([b'{"type":', b'"ping"}\n{"a"', b':1}\n'], [{"type": "ping"}, {"a": 1}]),
    ([b'{"type":"ping"}'], []),  # not terminated yet
    ([b"\n\n"], []),
])  # fmt: skip
def test_ndjson(chunks: list[bytes], frames: list[dict[str, Any]]) -> None:
    decoder = NDJSONDecoder()
    assert [f for c in chunks for f in decoder.feed(c)] == frames


@pytest.mark.parametrize(("chunks", "frames"), [
    ([b'retry: 1000\nevent: connected\ndata: {"type":"connected","ping":15}\n\n'],
     [{"type": "connected", "ping": 15}]),
    ([b'data: {"text":"hi","offset":1}\nid: c=e:1\n\n'],
     [{"type": "message", "data": {"text": "hi", "offset": 1}}]),
    ([b'event: channel_error\r\ndata: {"type":"error","channel":"c"}\r\nid: \r\n\r\n'],
     [{"type": "error", "channel": "c"}]),
    ([b'data: {"a":\n', b"data: 1}\n", b"\n"], [{"type": "message", "data": {"a": 1}}]),
    ([b": a comment\n\n", b"event: ping\n\n"], []),  # no data: no event
    ([b'event: message\ndata: {"a":2}\n\n'], [{"type": "message", "data": {"a": 2}}]),
])  # fmt: skip
def test_sse(chunks: list[bytes], frames: list[dict[str, Any]]) -> None:
    decoder = SSEDecoder()
    assert [f for c in chunks for f in decoder.feed(c)] == frames


@pytest.mark.parametrize("bad", [b"nope\n", b"[1]\n"])
def test_undecodable(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        NDJSONDecoder().feed(bad)
    with pytest.raises(DecodeError):
        SSEDecoder().feed(b"data: " + bad + b"\n")


def msg(channel: str, offset: int, epoch: str = "e1") -> dict[str, Any]:
    return {"type": "message", "data": {"channel": channel, "epoch": epoch, "offset": offset,
                                        "ts": 1.0}}  # fmt: skip


def test_the_tracker_moves_positions_as_the_protocol_says() -> None:
    t = Tracker(["a", "b"], {"a": Position("e1", 3)}, can_renew=False)
    assert t.apply({"type": "connected", "ping": 2}) == [] and t.connected and t.ping == 2.0
    stamped = {"s": 1, "channel": "b", "epoch": "e1", "offset": 7, "ts": 2.0}
    state = {"type": "subscribed", "channel": "b", "epoch": "e1", "offset": 7, "state": [stamped]}
    [event] = t.apply(state)
    assert isinstance(event, Message) and event.state and event.data["s"] == 1
    assert "b" not in t.positions  # a state moves the position as its last message goes out
    t.handed_out(event)
    assert [e.offset for e in t.apply(msg("a", 4)) if isinstance(e, Message)] == [4]
    assert t.apply(msg("zzz", 1)) == []  # not ours: dropped
    assert t.positions == {"a": Position("e1", 4), "b": Position("e1", 7)}
    assert t.apply({"type": "reset", "channel": "a", "reason": "epoch_changed"}) == [
        Reset("a", "epoch_changed")
    ]
    assert t.positions == {"b": Position("e1", 7)}
    refused = t.apply({"type": "error", "channel": "b", "code": "forbidden", "message": "no"})
    assert refused == [ChannelError("b", "forbidden", "no")]
    assert t.channels == ["a"] and t.positions == {}
    assert t.apply({"type": "reconnect", "reason": "byte_limit"}) == [] and t.end == "byte_limit"
    t.start()
    assert t.end is None and not t.connected and not t.delivered
    assert t.apply({"type": "whatever-comes-next", "x": 1}) == []


def test_a_lapsed_token_keeps_the_position_when_it_can_be_renewed() -> None:
    frame = {"type": "error", "channel": "a", "code": "token_expired", "message": "late"}
    renewing = Tracker(["a"], {"a": Position("e1", 3)}, can_renew=True)
    assert renewing.apply(frame) == [] and renewing.end == "token_expired"
    assert renewing.positions == {"a": Position("e1", 3)} and renewing.channels == ["a"]
    plain = Tracker(["a"], {"a": Position("e1", 3)}, can_renew=False)
    assert plain.apply(frame) == [ChannelError("a", "token_expired", "late")]
    assert plain.channels == [] and plain.positions == {}


def test_bad_frames() -> None:
    t = Tracker(["a"], {}, can_renew=False)
    with pytest.raises(MalformedFrame):
        t.apply({"type": "message", "data": {"channel": "a"}})
    with pytest.raises(SubscribeError) as info:
        t.apply({"type": "error", "code": "bad_message", "message": "?"})
    assert info.value.code == "bad_message"


def test_every_code_of_the_api_doc_has_its_class() -> None:
    rows = re.findall(r"^\| (\d{3}) \| `(\w+)`", API_DOC.read_text(), re.MULTILINE)
    documented = {code: int(status) for status, code in rows}
    assert {"bad_json", "unauthorized", "internal", "channel_limit"} <= set(documented)
    expected = {400: RequestError, 401: AuthError, 403: AuthError, 405: RequestError,
                413: PayloadTooLarge, 500: ServerError, 503: UnavailableError}  # fmt: skip
    for code, status in documented.items():
        if status in expected:  # the API's codes (the subscribe ones are SubscribeError)
            assert CODES.get(code) is expected[status] or code in ("too_many_connections",), code


@pytest.mark.parametrize(("status", "body", "head", "cls", "code", "index", "after"), [
    (500, b'{"error":"internal","message":"bug"}', {}, ServerError, "internal", None, None),
    (400, b'{"error":"invalid_channel","message":"m","index":2}', {}, RequestError,
     "invalid_channel", 2, None),
    (503, b'{"error":"too_many_connections"}', {"Retry-After": "1"}, UnavailableError,
     "too_many_connections", None, 1.0),
    (502, b"<html>bad gateway</html>", {}, ServerError, "", None, None),
    (404, b"", {}, RequestError, "", None, None),
    (401, b"{}", {}, AuthError, "", None, None),
])  # fmt: skip
def test_answers_become_typed_errors(status: int, body: bytes, head: dict[str, str],
                                     cls: type[APIError], code: str, index: int | None,
                                     after: float | None) -> None:  # fmt: skip
    with pytest.raises(APIError) as info:
        calls.answer(status, head, body)
    error = info.value
    assert (type(error), error.status, error.code, error.index, error.retry_after) == (
        cls, status, code, index, after,
    )  # fmt: skip


def test_a_200_answer_is_its_json() -> None:
    assert calls.answer(200, {}, b'{"a": 1}') == {"a": 1}


def _unavailable(code: str, after: float | None = None) -> APIError:
    return UnavailableError(503, code, "m", None, after)


#: A call that is not idempotent: sent twice, it could end connections made after the first.
_DISCONNECT = calls.disconnect(user="42")


@pytest.mark.parametrize(("call", "error", "refused", "retried"), [
    # A publish carries its keys: every failure it may have been stored before is retried.
    (calls.publish("x", {}), _unavailable("broker_unavailable"), False, True),
    (calls.publish_many(["x", "y"], {}), _unavailable("broker_unavailable"), False, True),
    (calls.publish_batch([("x", {})]), _unavailable("broker_unavailable"), False, True),
    (calls.publish("x", {}), _unavailable("channel_limit"), False, True),
    (calls.publish("x", {}), _unavailable("too_many_connections"), False, True),
    (calls.publish("x", {}), _unavailable("shutting_down"), False, True),
    (calls.publish("x", {}), ConnectError("refused"), True, True),
    (calls.publish("x", {}), ConnectError("reset or timed out"), False, True),
    (calls.publish_batch([("x", {})]), ConnectError("reset"), False, True),
    # Never a 4xx or another 5xx.
    (calls.publish("x", {}), ServerError(500, "internal", "m"), False, False),
    (calls.publish("x", {}), ServerError(502, "", "m"), False, False),
    (calls.publish("x", {}), ServerError(504, "", "m"), False, False),
    (calls.publish("x", {}), RequestError(400, "invalid_channel", "m"), False, False),
    (calls.publish("x", {}), UnavailableError(429, "", "m"), False, False),
    (calls.set_state("x", []), _unavailable("broker_unavailable"), False, True),
    (calls.channel_info("x"), _unavailable("broker_unavailable"), False, True),
    (calls.list_channels("p"), _unavailable("channel_limit"), False, True),
    (calls.channel_info("x"), ServerError(500, "internal", "m"), False, False),
    (calls.channel_info("x"), RequestError(400, "bad_json", "m"), False, False),
    (calls.channel_info("x"), ConnectError("reset"), False, True),
    # Not idempotent: only what the server surely did not act on.
    (_DISCONNECT, ConnectError("refused"), True, True),
    (_DISCONNECT, _unavailable("shutting_down"), False, True),
    (_DISCONNECT, _unavailable("broker_unavailable"), False, False),
    (_DISCONNECT, ConnectError("reset"), False, False),
])  # fmt: skip
def test_the_retry_rule(call: calls.Call, error: Exception, refused: bool, retried: bool) -> None:
    delay = calls.retry_delay(call, error, 1, refused, random.Random(1))
    assert (delay is not None) == retried
    if delay is not None:
        assert 0 <= delay <= 0.4


def test_retry_after_is_honoured() -> None:
    delay = calls.retry_delay(calls.publish("x", {}), _unavailable("too_many_connections", 2.0),
                              1, False, random.Random(1))  # fmt: skip
    assert delay == 2.0
    late = calls.retry_delay(calls.publish("x", {}), _unavailable("broker_unavailable", 3600.0),
                             1, False, random.Random(1))  # fmt: skip
    assert late == 30.0


def test_the_backoff_is_full_jitter_and_bounded() -> None:
    """Uniform in [0, min(5, 0.2 * 2**n)] after the n-th failure: spread over
    the whole range (so clients that failed together do not come back
    together), never over its ceiling, never over 5 s."""
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(5.0, 0.2 * 2**attempt)
        delays = [calls.retry_delay(calls.publish("x", {}), ConnectError("reset"), attempt,
                                    False, rng) for _ in range(400)]  # fmt: skip
        assert all(d is not None and 0 <= d <= ceiling for d in delays), attempt
        seen = [d for d in delays if d is not None]
        assert min(seen) < ceiling * 0.1 and max(seen) > ceiling * 0.9, attempt


def test_calls_are_built_once_for_both_forms() -> None:
    assert calls.channel_info("room/42#a").path == "/api/channels/room%2F42%23a"
    assert calls.list_channels("chat:", 10, "chat:b").path == (
        "/api/channels?prefix=chat%3A&limit=10&after=chat%3Ab"
    )
    assert calls.list_channels().path == "/api/channels"
    batch = calls.publish_batch([("a", {"n": 1}), {"channel": "b", "data": {}}])
    sent = json.loads(batch.body or b"")
    keys = [m.pop("idempotency_key") for m in sent["messages"]]
    assert sent == {"messages": [{"channel": "a", "data": {"n": 1}}, {"channel": "b", "data": {}}]}
    assert batch.idempotency_key is None and "Idempotency-Key" not in calls.headers("k", batch)
    assert all(re.fullmatch("[0-9a-f]{32}", k) for k in keys) and keys[0] != keys[1]
    with pytest.raises(ValueError):
        calls.publish("x", {"bad": float("nan")})


def test_every_publish_carries_a_key() -> None:
    """One per call (a header) unless given; one per message of a batch (its
    ``idempotency_key``) unless given; a new one for every call."""
    one, again = calls.publish("x", {}), calls.publish("x", {})
    assert one.idempotency_key and again.idempotency_key
    assert re.fullmatch("[0-9a-f]{32}", one.idempotency_key)
    assert one.idempotency_key != again.idempotency_key and one.idempotent
    assert calls.headers("k", one)["Idempotency-Key"] == one.idempotency_key
    given = calls.publish_many(["x", "y"], {}, "order-17:shipped")
    assert given.idempotency_key == "order-17:shipped"
    assert calls.headers("k", given)["Idempotency-Key"] == "order-17:shipped"
    batch = calls.publish_batch(
        [
            {"channel": "a", "data": {}, "idempotency_key": "a-1"},
            {"channel": "a", "data": {}, "idempotency_key": None},
        ]
    )
    first, second = json.loads(batch.body or b"")["messages"]
    assert first["idempotency_key"] == "a-1" and len(second["idempotency_key"]) == 32
    assert calls.headers("k", calls.set_state("x", [])).get("Idempotency-Key") is None


@pytest.mark.parametrize("key", ["", "x" * 129, "caf\u00e9", "a\r\nX-Evil: 1", "tab\t", 17])
def test_a_bad_key_is_refused_before_sending(key: Any) -> None:
    with pytest.raises(ValueError, match="idempotency key must be 1-128 printable ASCII"):
        calls.publish("x", {}, key)
    with pytest.raises(ValueError, match="idempotency key must be 1-128 printable ASCII"):
        calls.publish_batch([{"channel": "x", "data": {}, "idempotency_key": key}])
    assert calls.checked_key(" ~" + "x" * 126) == " ~" + "x" * 126  # the bounds themselves


def test_a_duplicate_answer_is_surfaced() -> None:
    doc = {"channel": "x", "epoch": "e", "offset": 3, "ts": 1.5}
    assert calls.published(doc) == Published("x", "e", 3, 1.5, False)
    assert calls.published({**doc, "duplicate": True}).duplicate is True


def test_client_urls_and_backoff() -> None:
    client = Client("https://hub.example/channels?app=1", seed=3)
    assert client.ws_url == "wss://hub.example/channels/ws?app=1"
    assert Client("http://h/channels").ws_url == "ws://h/channels/ws"
    for bad in ("not-a-url", "ftp://h/channels", "http:///channels"):
        with pytest.raises(ValueError):
            Client(bad)
    delays = [client.backoff(n) for n in range(1, 12)]
    assert all(0.5 <= d <= 20.0 for d in delays) and max(delays) > 5
    assert all(d <= 0.5 + 0.5 * 2**n for n, d in enumerate(delays, 1))


def test_the_client_iterator_is_a_channel_feed_and_the_old_name_warns() -> None:
    """``torchannels.Subscription`` is what ``can_access`` is asked about; the
    client's iterator is ``ChannelFeed``, and its old name still imports."""
    import torchannels.client as client

    with pytest.warns(DeprecationWarning, match="now torchannels.client.ChannelFeed"):
        old = client.Subscription
    assert old is ChannelFeed is type(Client("http://h/channels").subscribe("a"))
    assert "Subscription" not in client.__all__ and "ChannelFeed" in client.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        client.Nothing  # noqa: B018


def test_the_tracker_takes_a_disconnect_and_the_control_codes() -> None:
    t = Tracker(["a", "b"], {"a": Position("e1", 3)}, can_renew=False)
    t.identified("c1")
    assert t.apply({"type": "disconnect", "reason": "token_revoked", "reconnect": False}) == []
    assert t.disconnect == Disconnect("token_revoked", False) and t.end == "token_revoked"
    assert t.client == "c1" and t.positions == {"a": Position("e1", 3)}
    t.start()
    assert t.disconnect is None and t.end is None
    t.apply({"type": "disconnect", "reconnect": True})  # no reason: the server's own
    assert t.disconnect == Disconnect("disconnected_by_server", True)
    assert t.client is None  # a new client id: the server ends polls carrying the old one
    t.start()
    assert t.apply({"type": "disconnect", "reason": "x", "reconnect": "yes"}) == []
    assert t.disconnect == Disconnect("x", False)  # anything but true: do not come back
    gone = t.apply({"type": "error", "channel": "b", "code": "unsubscribed", "message": "m"})
    assert gone == [ChannelError("b", "unsubscribed", "m")] and t.channels == ["a"]
    renewing = Tracker(["a"], {"a": Position("e1", 3)}, can_renew=True)
    frame = {"type": "error", "channel": "a", "code": "token_revoked", "message": "m"}
    assert renewing.apply(frame) == [] and renewing.end == "token_revoked"
    assert renewing.channels == ["a"] and renewing.positions == {"a": Position("e1", 3)}
    assert Tracker(["a"], {}, can_renew=False).apply(frame) == [
        ChannelError("a", "token_revoked", "m")
    ]


def test_a_revoked_token_is_renewed_once_until_the_channel_is_served() -> None:
    revoked = {"type": "error", "channel": "a", "code": "token_revoked", "message": "m"}
    lapsed = {**revoked, "code": "token_expired"}
    t = Tracker(["a", "b"], {}, can_renew=True)
    assert t.apply(revoked) == [] and t.end == "token_revoked"
    t.start()
    assert t.apply(lapsed) == [] and t.end == "token_expired"  # not counted: lapsed, not revoked
    t.start()
    t.apply({"type": "subscribed", "channel": "a", "epoch": "e", "offset": 1})  # served
    assert t.apply(revoked) == [] and t.end == "token_revoked"  # so renewed once more
    t.start()
    assert t.apply(revoked) == [ChannelError("a", "token_revoked", "m")]  # again at once: no
    assert t.channels == ["b"]
    polled = Tracker(["a"], {}, can_renew=True)
    assert polled.apply(revoked) == []
    polled.start()
    polled.answered()  # a poll answered without refusing it: served
    assert polled.end == "answered"
    polled.start()
    assert polled.apply(revoked) == [] and polled.channels == ["a"]


def test_disconnected_is_a_client_error_with_its_reason() -> None:
    error = Disconnected("token_revoked")
    assert isinstance(error, ClientError) and error.reason == "token_revoked"
    assert error.reconnect is False and str(error) == "disconnected by the server: token_revoked"


@pytest.mark.parametrize(("call", "path", "body"), [
    (calls.disconnect(user="42"), "/api/disconnect", {"user": "42"}),
    (calls.disconnect(client="5c1e0a9f-2s", reconnect=True), "/api/disconnect",
     {"client": "5c1e0a9f-2s", "reconnect": True}),
    (calls.unsubscribe("room:1", user="42"), "/api/unsubscribe",
     {"user": "42", "channel": "room:1"}),
    (calls.unsubscribe("room:1", client="c"), "/api/unsubscribe",
     {"client": "c", "channel": "room:1"}),
    (calls.disconnect(client="5c1e0a9f-2s~mfx3k2a1.Qm9vVGhpc0lzU2ln"), "/api/disconnect",
     {"client": "5c1e0a9f-2s"}),  # as a subscriber got it: the id is the part before "~"
    (calls.revoke(user="42", before=1796000000), "/api/revoke",
     {"user": "42", "before": 1796000000}),
    (calls.revoke(user="42", before=1796000000.5, expires=1796086400), "/api/revoke",
     {"user": "42", "before": 1796000000.5, "expires": 1796086400}),
    (calls.revoke(jti="abc", expires=1796003600), "/api/revoke",
     {"jti": "abc", "expires": 1796003600}),
])  # fmt: skip
def test_control_calls(call: calls.Call, path: str, body: dict[str, Any]) -> None:
    assert (call.method, call.path, json.loads(call.body or b"")) == ("POST", path, body)
    assert call.idempotent == (path == "/api/revoke")  # ending connections twice is not


@pytest.mark.parametrize(("build", "message"), [
    (lambda: calls.disconnect(), "exactly one of user or client, not 0"),
    (lambda: calls.disconnect(user="1", client="2"), "exactly one of user or client, not 2"),
    (lambda: calls.disconnect(user=""), "user must be a non-empty string"),
    (lambda: calls.disconnect(user="x" * 257), "at most 256 characters"),
    (lambda: calls.disconnect(user=cast(Any, 42)), "user must be a non-empty string"),
    (lambda: calls.disconnect(user="1", reconnect=cast(Any, "yes")), "reconnect must be True"),
    (lambda: calls.unsubscribe("bad channel", user="1"), "invalid channel name"),
    (lambda: calls.unsubscribe("room", client=""), "client must be a non-empty string"),
    (lambda: calls.unsubscribe("room", client="~x.y"), "client must be a non-empty string"),
    (lambda: calls.revoke(before=1), "exactly one of user or jti, not 0"),
    (lambda: calls.revoke(user="1", jti="j", before=1), "exactly one of user or jti, not 2"),
    (lambda: calls.revoke(user="1"), "needs before"),
    (lambda: calls.revoke(user="1", before=1796000000000), "looks like milliseconds"),
    (lambda: calls.revoke(user="1", before=cast(Any, "17")), "before must be a Unix time in"),
    (lambda: calls.revoke(user="1", before=True), "before must be a Unix time in seconds"),
    (lambda: calls.revoke(user="1", before=float("nan")), "before must be a Unix time in seconds"),
    (lambda: calls.revoke(user="1", before=1, expires=1796000000000), "expires 1796000000000 lo"),
    (lambda: calls.revoke(user="1", before=-1), "not negative"),
    (lambda: calls.revoke(jti="j"), "needs expires"),
    (lambda: calls.revoke(jti="j", before=1, expires=2), "before goes with user"),
])  # fmt: skip
def test_control_calls_are_checked_before_anything_is_sent(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_a_control_answer() -> None:
    doc = {"connections": 3, "processes": 2, "answered": 1}
    assert ControlResult.from_json(doc) == ControlResult(3, 2, 1, None)
    assert ControlResult.from_json({**doc, "expires": 1796086400}).expires == 1796086400.0

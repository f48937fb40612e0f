"""Subscription tokens through a running hub, on every transport (also
expiring mid-subscription)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.processes import (
    SECRET,
    TRANSPORTS,
    WAIT,
    ServerProcess,
    api,
    first_answer,
    jwt,
    outline,
    poll,
    token_for,
)
from test_token_keys import KEYS, JwksServer, jwk, pem
from torchannels.server.cli import main
from torchannels.token_keys import public_key
from torchannels.tokens import decode_token, encode_token, token_header

TOKEN_CASES = [
    pytest.param(lambda: token_for("chat:*"), "subscribed", id="valid"),
    pytest.param(lambda: token_for("chat:*", ttl=-5), "token_expired", id="expired"),
    pytest.param(lambda: token_for("news", "chat:lobby2"), "forbidden", id="other-channel"),
    pytest.param(lambda: jwt({"exp": time.time() + 300, "channels": ["chat:*"]}, "not-the-secret"),
                 "token_bad_signature", id="bad-signature"),
    pytest.param(lambda: None, "token_required", id="no-token"),
]  # fmt: skip


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("make_token", "outcome"), TOKEN_CASES)
async def test_tokens_on_every_transport(
    main_server: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str,
    make_token: Callable[[], str | None], outcome: str,
) -> None:  # fmt: skip
    token = make_token()
    query: dict[str, Any] = {} if token is None else {"token": token}
    frames = await first_answer(
        http, lives, sockets, main_server, transport, ["chat:lobby"], **query
    )
    if outcome == "subscribed":
        assert outline(frames) == [("subscribed", "chat:lobby")]
    else:
        assert outline(frames) == [("error", "chat:lobby", outcome)], frames
        assert frames[0]["message"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_anonymous_demo_channels_need_no_token(
    main_server: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    frames = await first_answer(http, lives, sockets, main_server, transport,
                                ["demo:anything", "private"])  # fmt: skip
    assert outline(frames) == [("subscribed", "demo:anything"),
                               ("error", "private", "token_required")]  # fmt: skip


async def test_token_errors_and_patterns(main_server: ServerProcess, http: Any) -> None:
    now = time.time()
    cases: list[tuple[str | None, dict[str, str], list[str], list[tuple[str, ...]]]] = [
        (None, {"Authorization": f"Bearer {token_for('chat:*')}"}, ["chat:x"],
         [("subscribed", "chat:x")]),
        ("not.a.jwt", {}, ["chat:x"], [("error", "chat:x", "token_malformed")]),
        ("abc", {}, ["chat:x"], [("error", "chat:x", "token_malformed")]),
        (jwt({"channels": ["chat:*"]}), {}, ["chat:x"], [("error", "chat:x", "token_malformed")]),
        (jwt({"exp": now + 60, "channels": ["chat:*"]}, alg="none"), {}, ["chat:x"],
         [("error", "chat:x", "token_bad_algorithm")]),
        (jwt({"exp": now + 60, "nbf": now + 30, "channels": ["chat:*"]}), {}, ["chat:x"],
         [("error", "chat:x", "token_not_yet_valid")]),
        (token_for("chat:*"), {}, ["chat:", "chat:a:b", "chatty", "chat"],
         [("subscribed", "chat:"), ("subscribed", "chat:a:b"), ("error", "chatty", "forbidden"),
          ("error", "chat", "forbidden")]),
        (token_for("news"), {}, ["news", "news2"],
         [("subscribed", "news"), ("error", "news2", "forbidden")]),
        (token_for("*"), {}, ["anything", "at/all"],
         [("subscribed", "anything"), ("subscribed", "at/all")]),
        (token_for(), {}, ["news"], [("error", "news", "forbidden")]),
        # A bad token does not stop anonymous channels.
        ("garbage", {}, ["demo:x", "chat:x"],
         [("subscribed", "demo:x"), ("error", "chat:x", "token_malformed")]),
    ]  # fmt: skip
    for token, headers, channels, expected in cases:
        query: dict[str, Any] = {} if token is None else {"token": token}
        doc = await poll(http, main_server, channels, headers=headers, **query)
        assert outline(doc["frames"]) == expected, (token, channels, doc)


async def test_a_hub_without_secret_refuses_tokens(bare_server: ServerProcess, http: Any) -> None:
    doc = await poll(http, bare_server, ["chat:x", "demo:x"], token=token_for("chat:*"))
    assert outline(doc["frames"]) == [("error", "chat:x", "token_unsupported"),
                                      ("subscribed", "demo:x")]  # fmt: skip


async def test_token_expiring_during_subscriptions_ends_them(
    main_server: ServerProcess, http: Any, lives: Any, sockets: Any
) -> None:
    expires = time.time() + 2.0
    token = jwt({"exp": expires, "channels": ["chat:*"], "sub": "bob"})
    first = await poll(http, main_server, ["chat:expiry"], token=token)
    cursor = first["cursor"]
    sse = lives(main_server.url(transport="sse", channel="chat:expiry", token=token))
    stream = lives(main_server.url(transport="stream", channel="chat:expiry"),
                   {"Authorization": f"Bearer {token}"})  # fmt: skip
    ws = await sockets(main_server.ws_url(channel="chat:expiry", token=token))
    held = asyncio.ensure_future(poll(http, main_server, ["chat:expiry"], transport="longpoll",
                                      cursor=cursor, token=token, timeout=20))  # fmt: skip
    for live in (sse, stream):
        await live.wait(lambda fs: bool(fs))
        assert outline(live.content()) == [("subscribed", "chat:expiry")]
    await ws.wait(lambda fs: bool(fs))
    assert time.time() < expires, "setup too slow for a 2 s token"

    # Still live before expiry: a message goes through.
    await api(http, main_server, "/api/publish", {"channel": "chat:expiry", "data": {"n": 1}})
    answer = await asyncio.wait_for(held, WAIT)
    assert outline(answer["frames"]) == [("message", "chat:expiry")]
    held = asyncio.ensure_future(
        poll(
            http,
            main_server,
            ["chat:expiry"],
            transport="longpoll",
            cursor=answer["cursor"],
            token=token,
            timeout=20,
        )
    )

    for live in (sse, stream):
        frames = await live.wait(lambda fs: fs[-1]["type"] == "reconnect", timeout=WAIT)
        assert time.time() >= expires - 0.05
        assert outline(frames) == [("subscribed", "chat:expiry"), ("message", "chat:expiry"),
                                   ("reconnect", "token_expired")]  # fmt: skip
        await live.ended()
        assert live.complete, "the response must end cleanly after reconnect"
    await ws.until_closed()
    assert outline(ws.content()) == [("subscribed", "chat:expiry"), ("message", "chat:expiry"),
                                     ("reconnect", "token_expired")]  # fmt: skip
    assert (ws.conn.close_code, ws.conn.close_reason) == (4002, "token_expired")
    # The held long-poll is answered at expiry, not after its 20 s.
    answer = await asyncio.wait_for(held, 3)
    assert outline(answer["frames"]) == [("reconnect", "token_expired")]
    assert time.time() < expires + 3
    # Coming back with the same token is refused; a fresh token works again.
    again = await poll(http, main_server, ["chat:expiry"], cursor=answer["cursor"], token=token)
    assert outline(again["frames"]) == [("error", "chat:expiry", "token_expired")]
    fresh = await poll(http, main_server, ["chat:expiry"], cursor=answer["cursor"],
                       token=token_for("chat:*"))  # fmt: skip
    assert fresh["frames"] == [] and fresh["cursor"] == answer["cursor"]


async def test_websocket_in_band_subscribe_uses_the_connect_token(
    main_server: ServerProcess, sockets: Any
) -> None:
    ws = await sockets(main_server.ws_url(token=token_for("chat:*")))
    await ws.conn.write_message(
        json.dumps({"type": "subscribe", "channels": ["chat:a", "admin", "demo:x"]})
    )
    frames = await ws.wait(lambda fs: len(fs) >= 3)
    assert outline(frames) == [("subscribed", "chat:a"), ("error", "admin", "forbidden"),
                               ("subscribed", "demo:x")]  # fmt: skip


async def test_public_key_jwks_and_audience_through_a_hub(
    spawn: Callable[..., ServerProcess], http: Any, tmp_path: Path
) -> None:
    signer, rotated = KEYS["EdDSA"](), KEYS["ES256"]()
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(pem(signer))
    jwks = JwksServer()
    try:
        jwks.document = {"keys": [jwk(rotated, "k1")]}
        hub = spawn("--token-public-key", str(key_file), "--token-jwks-url", jwks.url,
                    "--token-audience", "hub", "--token-issuer", "https://app")  # fmt: skip
        claims = {"exp": time.time() + 300, "channels": ["chat:*"], "aud": "hub",
                  "iss": "https://app"}  # fmt: skip
        cases = [
            (encode_token(claims, signer), "subscribed"),
            (encode_token(claims, rotated, kid="k1"), "subscribed"),
            (encode_token(claims, KEYS["ES256"](), kid="k2"), "token_unknown_key"),
            (encode_token({**claims, "aud": "other"}, signer), "token_bad_audience"),
            (encode_token({**claims, "iss": "https://evil"}, signer), "token_bad_issuer"),
            (encode_token(claims, SECRET), "token_bad_algorithm"),
            (jwt(claims, pem(signer).decode()), "token_bad_algorithm"),  # HS/EdDSA confusion
            (jwt(claims, alg="none"), "token_bad_algorithm"),
        ]
        for token, outcome in cases:
            doc = await poll(http, hub, ["chat:x"], token=token)
            expected = ("subscribed", "chat:x") if outcome == "subscribed" else (
                "error", "chat:x", outcome)  # fmt: skip
            assert outline(doc["frames"]) == [expected], (outcome, doc)
        assert jwks.fetches >= 1
    finally:
        await jwks.stop()


def test_token_command_signs_with_a_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    key_file = tmp_path / "private.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    argv = ["token", "--channel", "chat:*", "--sub", "u1", "--private-key", str(key_file)]
    assert main([*argv, "--kid", "k9"], {}) == 0
    token = capsys.readouterr().out.strip()
    assert token_header(token) == {"alg": "ES384", "kid": "k9", "typ": "JWT"}
    claims = decode_token(token, public_key(pem(private)))
    assert (claims.subject, claims.channels) == ("u1", ("chat:*",))
    assert main(["token", "--channel", "chat:*", "--private-key", str(tmp_path / "no")], {}) == 2
    assert "--private-key" in capsys.readouterr().err
    assert main(["token", "--channel", "chat:*", "--private-key", str(tmp_path)], {}) == 2


def test_serve_refuses_a_bad_public_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    assert main(["serve", "--token-public-key", str(bad)], {}) == 2
    assert "token_public_key" in capsys.readouterr().err
    assert main(["serve", "--token-jwks-url", "ftp://x/jwks"], {}) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
    assert main(["serve"], {"TORCHANNELS_TOKEN_SECRET": pem(KEYS["EdDSA"]()).decode()}) == 2
    assert "token_secret: not a key for HS256" in capsys.readouterr().err

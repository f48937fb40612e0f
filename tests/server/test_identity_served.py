"""The token's ``info`` claim in the standalone server, and client ids in
its answers (issue 18)."""

from __future__ import annotations

from typing import Any

import pytest

from server.processes import (
    TRANSPORTS,
    ServerProcess,
    as_json,
    cli,
    fetch,
    first_answer,
    jwt_claims,
    outline,
    token_for,
)
from torchannels.server.config import ServerConfig

BAD_INFO = [
    pytest.param(["not", "an", "object"], id="list"),
    pytest.param("Ann", id="string"),
    pytest.param({"bio": "x" * 1100}, id="too-big"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("info", BAD_INFO)
async def test_bad_info_claim_is_refused_with_invalid_info(
    main_server: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str, info: Any
) -> None:
    token = token_for("chat:*", sub="ann", info=info)
    frames = await first_answer(
        http, lives, sockets, main_server, transport, ["chat:lobby"], token=token
    )
    assert outline(frames) == [("error", "chat:lobby", "invalid_info")], frames
    assert "info" in frames[0]["message"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_good_info_claim_subscribes(
    main_server: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    token = token_for("chat:*", sub="ann", info={"name": "Ann", "bio": "é" * 400})
    frames = await first_answer(
        http, lives, sockets, main_server, transport, ["chat:lobby"], token=token
    )
    assert outline(frames) == [("subscribed", "chat:lobby")]


async def _poll(http: Any, server: ServerProcess, **query: Any) -> dict[str, Any]:
    response = await fetch(http, server.url(transport="poll", channel=["demo:x"], **query))
    assert response.code == 200
    doc: dict[str, Any] = as_json(response)
    return doc


async def test_poll_answers_carry_client_and_keep_it(main_server: ServerProcess, http: Any) -> None:
    first = await _poll(http, main_server)
    again = await _poll(http, main_server, client=first["client"])
    assert again["client"] == first["client"]
    forged = first["client"][:-1] + ("A" if first["client"][-1] != "A" else "B")
    other = await _poll(http, main_server, client=forged)
    assert other["client"] not in (first["client"], forged)


def test_client_id_secret_is_derived_from_the_token_secret_or_api_key() -> None:
    by_token = ServerConfig(token_secret="s", api_key="k").client_id_secret()
    assert by_token == ServerConfig(token_secret="s").client_id_secret()
    assert by_token != ServerConfig(api_key="k").client_id_secret()
    assert by_token not in (b"s", b"k")  # derived, never the secret itself
    # Without either: one random key per serve (shared by its --workers).
    assert ServerConfig().client_id_secret() == ServerConfig().client_id_secret()
    assert "client_id_secret" not in repr(ServerConfig(token_secret="s").settings())


def test_token_command_puts_info_in_the_token() -> None:
    made = cli("token", "--channel", "a", "--sub", "ann", "--info", '{"name": "Ann"}',
               "--secret", "s")  # fmt: skip
    assert made.returncode == 0, made.stderr
    claims = jwt_claims(made.stdout.strip())
    assert (claims["sub"], claims["info"]) == ("ann", {"name": "Ann"})
    for bad in ("[1]", "{", '{"x": "' + "y" * 1100 + '"}'):
        refused = cli("token", "--channel", "a", "--info", bad, "--secret", "s")
        assert refused.returncode == 2 and "--info" in refused.stderr, bad

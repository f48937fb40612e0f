"""``torchannels disconnect``, ``unsubscribe`` and ``revoke`` as subprocesses:
the JSON answer against a real hub, a subscription they end, and the exit
codes (docs/api.md, "torchannels disconnect, unsubscribe, revoke")."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from server.processes import KEY, SECRET, ServerProcess, cli, free_ports
from torchannels.client import Client, Disconnected
from torchannels.tokens import encode_token

ANSWER = {"connections", "processes", "answered"}


async def test_disconnect_ends_a_subscription_and_prints_the_answer(
    main_server: ServerProcess,
) -> None:
    user, channel = "cli-ann", "cli:gone"
    tok = encode_token({"sub": user, "exp": time.time() + 300, "channels": ["cli:*"]}, SECRET)
    async with Client(f"{main_server.base}/channels", token=tok, transport="websocket") as client:
        feed = client.subscribe(channel)
        first = asyncio.ensure_future(anext(feed))  # the connection, then nothing: it waits
        deadline = time.monotonic() + 10
        while feed.transport is None:  # connected (the socket subscribes as it opens)
            assert time.monotonic() < deadline and not first.done()
            await asyncio.sleep(0.02)
        env = {"TORCHANNELS_URL": main_server.base, "TORCHANNELS_API_KEY": KEY}
        done = await asyncio.to_thread(cli, "disconnect", "--user", user, env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"connections": 1, "processes": 1, "answered": 1}
        with pytest.raises(Disconnected) as info:
            async with asyncio.timeout(10):
                await first
        assert info.value.reason == "disconnected_by_server"


async def test_unsubscribe_and_revoke_print_the_answer(main_server: ServerProcess) -> None:
    base = ["--url", main_server.base, "--api-key", KEY]
    gone = await asyncio.to_thread(cli, "unsubscribe", "--client", "no-such", "--channel",
                                   "cli:x", *base)  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout) == {"connections": 0, "processes": 1, "answered": 1}
    before = int(time.time()) - 10
    user = await asyncio.to_thread(cli, "revoke", "--user", "cli-nobody", "--before",
                                   str(before), *base)  # fmt: skip
    assert user.returncode == 0, user.stderr
    assert json.loads(user.stdout) == {"connections": 0, "processes": 1, "answered": 1,
                                       "expires": before + 86400}  # fmt: skip
    until = int(time.time()) + 600
    one = await asyncio.to_thread(cli, "revoke", "--jti", "cli-j", "--expires", str(until), *base)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["expires"] == until
    reconnect = await asyncio.to_thread(cli, "disconnect", "--client", "x", "--reconnect", *base)
    assert set(json.loads(reconnect.stdout)) == ANSWER


@pytest.mark.parametrize(("args", "code", "message"), [
    (["disconnect", "--user", "1", "--api-key", "wrong"], 1, "403 forbidden"),
    (["revoke", "--jti", "j", "--expires", "1000"], 1, "400 invalid_field: expires 1000"),
    (["disconnect"], 2, "one of the arguments --user --client is required"),
    (["disconnect", "--user", "1", "--client", "2"], 2, "not allowed with argument"),
    (["unsubscribe", "--user", "1"], 2, "the following arguments are required: --channel"),
    (["unsubscribe", "--user", "1", "--channel", "bad channel"], 2, "invalid channel name"),
    (["revoke", "--user", "1"], 2, "needs before"),
    (["revoke", "--user", "1", "--before", "1796000000000"], 2, "looks like milliseconds"),
    (["revoke", "--user", "1", "--before", "soon"], 2, "'soon' is not a Unix time"),
    (["revoke", "--jti", "j"], 2, "needs expires"),
    (["revoke", "--jti", "j", "--before", "1", "--expires", "2"], 2, "before goes with user"),
    (["disconnect", "--user", ""], 2, "user must be a non-empty string"),
])  # fmt: skip
def test_refusals_and_their_exit_codes(main_server: ServerProcess, args: list[str], code: int,
                                       message: str) -> None:  # fmt: skip
    key = [] if "--api-key" in args else ["--api-key", KEY]
    result = cli(*args, "--url", main_server.base, *key)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == "" and message in result.stderr and "Traceback" not in result.stderr


def test_without_an_api_key_or_a_server() -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    none = cli("disconnect", "--user", "1", "--url", url)
    assert none.returncode == 2 and "give the API key" in none.stderr
    down = cli("disconnect", "--user", "1", "--url", url, "--api-key", KEY)
    assert down.returncode == 1 and down.stderr.startswith(f"torchannels: cannot reach {url}")
    assert "Traceback" not in down.stderr


def test_help_names_the_commands_and_their_options() -> None:
    top = cli("--help")
    for command in ("disconnect", "unsubscribe", "revoke"):
        assert command in top.stdout
    text = " ".join(cli("revoke", "--help").stdout.split())
    for word in ("--user ID", "--jti ID", "--before UNIX", "--expires UNIX", "--url", "--api-key"):
        assert word in text, word
    assert "--reconnect" in cli("disconnect", "--help").stdout
    assert "--channel" in cli("unsubscribe", "--help").stdout

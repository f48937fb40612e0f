"""``user_limited`` channels in the standalone server (issue 19): a user
reads the channels that name them without the token listing them, and
nobody else reads them, whatever their token lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from server.processes import (
    KEY,
    SECRET,
    TRANSPORTS,
    ServerProcess,
    api,
    as_json,
    assert_error,
    fetch,
    first_answer,
    outline,
    token_for,
)
from server.test_admin import PASSWORD, Browser
from support import messages

CONFIG = """
[channels."user:*"]
user_limited = true
[channels."dm:*"]
user_limited = true
presence = true
"""


@pytest.fixture(scope="module")
def personal_server(log_dir: Path) -> Iterator[ServerProcess]:
    """A token secret, ``user:*`` and ``dm:*`` user_limited, and ``user:*``
    also anonymous (which user_limited overrides)."""
    path = log_dir / "user-limited.toml"
    path.write_text(CONFIG)
    hub = ServerProcess(
        log_dir,
        ["--port", "0", "--no-demo", "--token-secret", SECRET, "--config", str(path),
         "--anonymous", "user:*"],
        None,
    )  # fmt: skip
    yield hub
    hub.close()


async def _answer(
    http: Any, lives: Any, sockets: Any, hub: ServerProcess, transport: str,
    channels: list[str], token: str | None,
) -> list[tuple[str, ...]]:  # fmt: skip
    query: dict[str, Any] = {} if token is None else {"token": token}
    frames = await first_answer(http, lives, sockets, hub, transport, channels, **query)
    return sorted(outline(frames))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_user_reads_own_channel_not_anothers(
    personal_server: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    # The token lists no channel at all: user_limited alone gives access.
    token = token_for(sub="42")
    got = await _answer(
        http, lives, sockets, personal_server, transport, ["user:42", "user:57"], token
    )
    assert got == [("error", "user:57", "forbidden"), ("subscribed", "user:42")]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_dm_channel_is_read_by_its_two_users_only(
    personal_server: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    for user in ("42", "57"):
        got = await _answer(
            http, lives, sockets, personal_server, transport, ["dm:42$57"], token_for(sub=user)
        )
        assert got == [("subscribed", "dm:42$57")], user
    # A third user is refused even when the token lists the channel.
    listed = token_for("dm:*", "user:*", sub="99")
    got = await _answer(
        http, lives, sockets, personal_server, transport, ["dm:42$57", "user:42"], listed
    )
    assert got == [("error", "dm:42$57", "forbidden"), ("error", "user:42", "forbidden")]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_anonymous_connections_are_refused(
    personal_server: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    # No token (although --anonymous matches user:*): the token is named as missing.
    got = await _answer(http, lives, sockets, personal_server, transport, ["user:42"], None)
    assert got == [("error", "user:42", "token_required")]
    # A valid token without sub: an anonymous connection.
    got = await _answer(
        http, lives, sockets, personal_server, transport, ["user:42"], token_for("user:*")
    )
    assert got == [("error", "user:42", "forbidden")]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_expired_token_is_named_on_own_channel(
    personal_server: ServerProcess, http: Any, lives: Any, sockets: Any, transport: str
) -> None:
    token = token_for(sub="42", ttl=-10)
    got = await _answer(http, lives, sockets, personal_server, transport, ["user:42"], token)
    assert got == [("error", "user:42", "token_expired")]


async def test_refusal_message_says_why(
    personal_server: ServerProcess, http: Any, lives: Any, sockets: Any
) -> None:
    frames = await first_answer(
        http, lives, sockets, personal_server, "poll", ["user:57"], token=token_for(sub="42")
    )
    assert "personal channel" in frames[0]["message"], frames


async def test_presence_read_of_a_personal_channel(
    personal_server: ServerProcess, http: Any
) -> None:
    def url(token: str) -> str:
        return personal_server.url(presence="dm:42$57", token=token)

    mine = await fetch(http, url(token_for(sub="57")))
    assert mine.code == 200, mine.body
    assert_error(await fetch(http, url(token_for("dm:*", sub="99"))), 403, "forbidden")


async def test_admin_tail_reads_personal_channels(
    spawn: Callable[..., ServerProcess], http: Any, log_dir: Path
) -> None:
    path = log_dir / "user-limited-admin.toml"
    path.write_text(CONFIG)
    hub = spawn("--no-demo", "--api-key", KEY, "--admin-password", PASSWORD,
                "--config", str(path))  # fmt: skip
    await api(http, hub, "/api/publish", {"channel": "user:42", "data": {"n": 1}})
    browser = Browser(http, hub)
    await browser.login()
    url = "/admin/channels?" + urlencode({"transport": "poll", "channel": "user:42"})
    doc = as_json(await browser.request(url))
    assert [m["n"] for m in messages(doc["frames"])] == [1], doc

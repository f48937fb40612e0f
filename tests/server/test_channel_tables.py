"""``[channels."PATTERN"]`` tables of the TOML file (issue 18)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.processes import ServerProcess, as_json, cli, fetch, poll
from torchannels.server.app import make_hub
from torchannels.server.config import ConfigError, load_config

GOOD = """
history_size = 50
[channels."room:*"]
presence = true
join_leave = true
history_size = 3
history_ttl = 600
[channels."room:lobby"]
presence = true
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return load_config(None, {"TORCHANNELS_CONFIG": str(path)})


async def test_channel_tables_configure_the_hub(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD)
    hub = make_hub(config)  # type: ignore[arg-type]
    try:
        room = hub.channel_options.get("room:1")
        assert (room.presence, room.join_leave, room.history_size) == (True, True, 3)
        lobby = hub.channel_options.get("room:lobby")
        assert (lobby.presence, lobby.join_leave) == (True, False)
        assert not hub.channel_options.get("news").presence
        assert hub.broker.policy_for("room:1").size == 3
        assert hub.broker.policy_for("room:1").ttl == 600
        assert hub.broker.policy_for("news").size == 50
        for n in range(5):
            hub.channel("room:1").send({"n": n})
        read = await hub.read("room:1", None)
        assert [p.data["n"] for p in read.publications] == [2, 3, 4]
    finally:
        await hub.close()


BAD_TABLES = [
    ('[channels."room:*"]\npresense = true\n', 'channels."room:*".presense: unknown option'),
    ('[channels."room:*"]\npresence = "yes"\n', 'channels."room:*".presence: presence must be'),
    ('[channels."room:*"]\njoin_leave = true\n', 'channels."room:*".join_leave: join_leave needs'),
    ('[channels."room:*"]\nhistory_size = -2\n', 'channels."room:*".history_size: history_size'),
    ('[channels."room:*"]\nhistory_ttl = "1h"\n', 'channels."room:*".history_ttl: history_ttl'),
    ('[channels."a*b"]\npresence = true\n', 'channels."a*b": pattern'),
    ('[channels."user:*"]\nuser_limited = "yes"\n', 'channels."user:*".user_limited: user_'),
    ('[channels."user:*"]\nuser_limited = 1\n', 'channels."user:*".user_limited: user_limited'),
    ('[channels."user:42"]\nuser_limited = true\n', '"user:42".user_limited: user_limited needs'),
    ("channels = 3\n", "channels: must be tables"),
    ('[channels]\n"room:*" = 1\n', 'channels."room:*": must be a table'),
]


@pytest.mark.parametrize(("toml", "message"), BAD_TABLES)
def test_bad_channel_table_is_a_config_error(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, toml)
    assert message in str(raised.value)


def test_bad_channel_table_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[channels."room:*"]\npresence = true\nhistory_sise = 5\n')
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert 'channels."room:*".history_sise: unknown option' in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_help_lists_every_channel_option() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert '[channels."room:*"]' in result.stdout
    for key in ("presence", "join_leave", "history_size", "history_ttl", "history_meta_ttl"):
        assert f"\n  {key} " in result.stdout, key
    for flag in ("--presence-grace", "--presence-ttl"):
        assert flag in result.stdout


async def test_served_channel_table_turns_presence_on(
    spawn: Callable[..., ServerProcess], http: Any, tmp_path: Path
) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[channels."demo:room:*"]\npresence = true\njoin_leave = true\n')
    hub = spawn("--config", str(path))
    doc = await poll(http, hub, ["demo:room:1", "demo:other"])
    first, other = doc["frames"]
    assert first["presence"]["clients"] == 1 and first["presence"]["users"] == 0  # anonymous
    assert "presence" not in other
    response = await fetch(http, hub.url(presence="demo:other"))
    assert (response.code, as_json(response)["error"]) == (400, "presence_disabled")

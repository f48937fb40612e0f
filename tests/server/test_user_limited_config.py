"""The ``user_limited`` key of ``[channels."PATTERN"]`` tables (issue 19)."""

from __future__ import annotations

from pathlib import Path

from server.processes import cli
from torchannels.server.app import make_hub
from torchannels.server.config import ServerConfig, load_config


def _load(tmp_path: Path, text: str) -> ServerConfig:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return load_config(None, {"TORCHANNELS_CONFIG": str(path)})


async def test_user_limited_table_configures_the_hub(tmp_path: Path) -> None:
    config = _load(tmp_path, '[channels."user:*"]\nuser_limited = true\n')
    hub = make_hub(config)
    try:
        assert hub.channel_options.get("user:42").user_limited
        assert hub.channel_options.users_of("user:42") == frozenset({"42"})
        assert hub.channel_options.users_of("room:1") is None
    finally:
        await hub.close()


def test_serve_help_lists_user_limited() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if "user_limited" in row)
    assert "dm:42$57" in line

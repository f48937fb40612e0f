"""The ``torchannels`` command: help, version, bad configuration, ``publish`` and ``token``."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from server.processes import (
    KEY,
    SECRET,
    ServerProcess,
    b64json,
    clean_env,
    cli,
    free_ports,
    jwt_claims,
    outline,
    poll,
)
from torchannels import __version__
from torchannels.server.config import CONFIG_ENV, ServerConfig, env_name


def test_serve_help_documents_every_option() -> None:
    result = cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # undo argparse's wrapping
    assert "--config PATH" in text and f"[env {CONFIG_ENV}]" in text
    for f in dataclasses.fields(ServerConfig):
        if f.metadata["kind"] == "channels":
            continue  # TOML tables, listed in the epilog below
        flag = "--" + f.name.replace("_", "-")
        assert re.search(rf"{flag}\b", text), flag
        assert f"[env {env_name(f.name)};" in text, f.name
        if f.metadata["kind"] == "bool":
            assert f"--no-{flag[2:]}" in text, flag
    # The defaults the issue asks for are shown and sensible.
    for shown in ("default: 127.0.0.1]", "default: 8090]", "default: 1000]", "default: demo:*]"):
        assert shown in text, shown


def test_top_level_help_and_subcommand_help() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for command in ("serve", "publish", "token"):
        assert command in top.stdout
    publish = cli("publish", "--help")
    assert publish.returncode == 0
    for word in ("--url", "--api-key", "TORCHANNELS_URL", "TORCHANNELS_API_KEY", "stdin"):
        assert word in publish.stdout, word
    token = cli("token", "--help")
    assert token.returncode == 0
    for word in ("--channel", "--ttl", "--sub", "--secret", "TORCHANNELS_TOKEN_SECRET"):
        assert word in token.stdout, word


def test_version_from_module_and_console_script() -> None:
    result = cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"torchannels {__version__}")
    script = Path(sys.executable).with_name("torchannels")
    assert script.exists(), "the torchannels console script is not installed"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=30, check=False,
        env=clean_env(),
    )  # fmt: skip
    assert (result.returncode, result.stdout.strip()) == (0, f"torchannels {__version__}")


def test_no_command_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert "usage: torchannels" in result.stderr


BAD_CONFIGS = [
    pytest.param(["--port", "99999"], {}, None, "--port: '99999' must be between 0 and 65535",
                 id="port-range"),
    pytest.param(["--port", "http"], {}, None, "--port: 'http' is not an integer", id="port-nan"),
    pytest.param([], {"TORCHANNELS_PORT": "abc"}, None, "TORCHANNELS_PORT: 'abc' is not an integer",
                 id="env-port"),
    pytest.param(["--log-level", "loud"], {}, None, "--log-level: 'loud' must be one of",
                 id="log-level"),
    pytest.param(["--history-ttl", "0"], {}, None, "--history-ttl: '0' must be > 0", id="ttl"),
    pytest.param(["--anonymous", "a*b"], {}, None, "--anonymous: invalid channel pattern 'a*b'",
                 id="pattern"),
    pytest.param([], {"TORCHANNELS_DEMO": "maybe"}, None,
                 "TORCHANNELS_DEMO: 'maybe' must be a boolean", id="env-bool"),
    pytest.param([], {}, 'port = "8090', "is not TOML", id="toml-syntax"),
    pytest.param([], {}, "prot = 8090\n", "unknown key 'prot'; did you mean 'port'?",
                 id="toml-key"),
    pytest.param([], {}, 'port = "8090"\n', "key 'port': '8090' must be an integer",
                 id="toml-type"),
    pytest.param(["--config", "/nonexistent/hub.toml"], {}, None, "No such file or directory",
                 id="no-file"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "env", "toml", "message"), BAD_CONFIGS)
def test_bad_configuration_exits_2_with_a_clear_message(
    tmp_path: Path, flags: list[str], env: dict[str, str], toml: str | None, message: str
) -> None:
    if toml is not None:
        path = tmp_path / "hub.toml"
        path.write_text(toml)
        flags = [*flags, "--config", str(path)]
    result = cli("serve", *flags, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("torchannels: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


def test_port_in_use_exits_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port), "--no-demo")
    assert result.returncode == 1
    assert result.stderr.startswith(f"torchannels: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


async def test_cli_publish_succeeds_and_prints_the_position(
    main_server: ServerProcess, http: Any
) -> None:
    result = cli("publish", "demo:cli", '{"text": "from the shell"}', "--url", main_server.base,
                 "--api-key", KEY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    position = json.loads(result.stdout)
    assert set(position) == {"channel", "epoch", "offset", "ts"}
    assert position["channel"] == "demo:cli"
    doc = await poll(http, main_server, ["demo:cli"])
    sent = [f["data"] for f in doc["frames"] if f["type"] == "message"]
    assert sent[-1] == {"text": "from the shell", **position}

    # From stdin, with the URL and key from the environment (trailing slash ok).
    env = {"TORCHANNELS_URL": main_server.base + "/", "TORCHANNELS_API_KEY": KEY}
    again = cli("publish", "demo:cli", "-", stdin='{"n": 2}', env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["offset"] == position["offset"] + 1


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        pytest.param(["demo:cli", "{}", "--api-key", "nope"], {}, 1, "403", id="wrong-key"),
        pytest.param(["demo:cli", "{oops", "--api-key", KEY], {}, 2, "the message is not JSON",
                     id="bad-json"),
        pytest.param(["demo:cli", "[1, 2]", "--api-key", KEY], {}, 2,
                     "the message must be a JSON object, like '{\"text\": \"hi\"}', not a list",
                     id="not-an-object"),
        # The user typed no "data" field: the error must not talk about one.
        pytest.param(["news", '"hi"', "--api-key", KEY], {}, 2,
                     "the message must be a JSON object, like '{\"text\": \"hi\"}', "
                     "not a string (\"hi\")", id="a-string"),
        pytest.param(["bad channel", "{}", "--api-key", KEY], {}, 1, "invalid_channel",
                     id="bad-channel"),
        pytest.param(["demo:cli", "{}"], {}, 2, "give the API key", id="no-key"),
        pytest.param(['{"a":1}', "demo:chat", "--api-key", KEY], {}, 2,
                     "the arguments look swapped: '{\"a\":1}' is the message and 'demo:chat' "
                     "the channel; CHANNEL comes first: torchannels publish demo:chat "
                     "'{\"a\":1}'", id="swapped"),
    ],
)  # fmt: skip
def test_cli_publish_fails_cleanly(
    main_server: ServerProcess, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    result = cli("publish", *args, "--url", main_server.base, env=env)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    argparse_error = "error: argument --ttl" in result.stderr
    assert result.stderr.startswith("torchannels: ") or argparse_error
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_publish_to_an_unreachable_hub_fails_cleanly() -> None:
    (port,) = free_ports(1)
    result = cli("publish", "news", "{}", "--url", f"http://127.0.0.1:{port}", "--api-key", KEY)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"torchannels: cannot reach http://127.0.0.1:{port}/api/publish"
    )
    assert "Traceback" not in result.stderr


async def test_cli_token_is_accepted_by_the_hub(main_server: ServerProcess, http: Any) -> None:
    before = time.time()
    result = cli("token", "--channel", "chat:*", "--channel", "news", "--sub", "alice",
                 "--ttl", "120", "--secret", SECRET)  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert b64json(token.split(".")[0]) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt_claims(token)
    assert claims["channels"] == ["chat:*", "news"] and claims["sub"] == "alice"
    assert before + 118 <= claims["exp"] <= time.time() + 121
    doc = await poll(http, main_server, ["chat:lobby", "news", "admin"], token=token)
    assert outline(doc["frames"]) == [
        ("subscribed", "chat:lobby"), ("subscribed", "news"), ("error", "admin", "forbidden"),
    ]  # fmt: skip

    from_env = cli("token", "--channel", "news", env={"TORCHANNELS_TOKEN_SECRET": SECRET})
    assert from_env.returncode == 0
    doc = await poll(http, main_server, ["news"], token=from_env.stdout.strip())
    assert outline(doc["frames"]) == [("subscribed", "news")]


@pytest.mark.parametrize(
    ("args", "message"),
    [pytest.param(["--channel", "news"], "give the secret", id="no-secret"),
     pytest.param(["--channel", "a*b", "--secret", SECRET], "invalid channel pattern 'a*b'",
                  id="bad-pattern"),
     # --ttl is checked by argparse: a usage line and "error: argument --ttl".
     pytest.param(["--channel", "news", "--secret", SECRET, "--ttl", "nan"], "ttl", id="ttl-nan"),
     pytest.param(["--channel", "news", "--secret", SECRET, "--ttl", "inf"], "ttl", id="ttl-inf")],
)  # fmt: skip
def test_cli_token_fails_cleanly(args: list[str], message: str) -> None:
    result = cli("token", *args)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    argparse_error = "error: argument --ttl" in result.stderr
    assert result.stderr.startswith("torchannels: ") or argparse_error
    assert message in result.stderr and "Traceback" not in result.stderr

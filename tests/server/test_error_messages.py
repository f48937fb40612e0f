"""Error messages that say what to do: a missing channel, a hub without a
token secret, a mistyped option, a port in use, tooling scripts."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.processes import (
    KEY,
    ServerProcess,
    api,
    as_json,
    cli,
    outline,
    poll,
    token_for,
)

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("path", "body", "start"),
    [
        ("/api/publish", {"data": {"text": "hi"}}, ""),
        ("/api/publish", {"channel": None, "data": {"text": "hi"}}, ""),
        ("/api/state", {"messages": []}, ""),
        ("/api/publish", {"messages": [{"channel": "demo:a", "data": {}}, {"data": {}}]},
         "messages[1]: "),
    ],
)  # fmt: skip
async def test_a_missing_channel_is_called_missing(
    main_server: ServerProcess, http: Any, path: str, body: dict[str, Any], start: str
) -> None:
    response = await api(http, main_server, path, body)
    error = as_json(response)
    assert (response.code, error["error"]) == (400, "invalid_channel"), error
    assert error["message"] == start + 'the "channel" field is missing: name the channel'
    assert "None" not in error["message"]


async def test_a_hub_without_token_secret_says_what_to_configure(
    bare_server: ServerProcess, main_server: ServerProcess, http: Any
) -> None:
    doc = await poll(http, bare_server, ["chat:x"])
    [error] = [f for f in doc["frames"] if f["type"] == "error"]
    assert error["code"] == "token_required"
    assert "--token-secret" in error["message"] and "TORCHANNELS_TOKEN_SECRET" in error["message"]
    assert "--anonymous" in error["message"]

    doc = await poll(http, bare_server, ["chat:x"], token=token_for("chat:*"))
    [error] = [f for f in doc["frames"] if f["type"] == "error"]
    assert error["code"] == "token_unsupported"
    assert "--token-secret" in error["message"] and "TORCHANNELS_TOKEN_SECRET" in error["message"]

    # A hub with a secret only asks for the token.
    doc = await poll(http, main_server, ["chat:x"])
    assert outline(doc["frames"]) == [("error", "chat:x", "token_required")]
    [error] = [f for f in doc["frames"] if f["type"] == "error"]
    assert "--token-secret" not in error["message"] and "token" in error["message"]


@pytest.mark.parametrize(
    ("args", "usage", "hint"),
    [
        (["serve", "--prot", "9000"], "usage: torchannels serve ", "--prot: did you mean --port"),
        (["serve", "--api-kye=x"], "usage: torchannels serve ",
         "--api-kye: did you mean --api-key"),
        (["publish", "news", "{}", "--api-kye", KEY], "usage: torchannels publish ",
         "--api-kye: did you mean --api-key"),
        (["token", "--chanel", "a"], "usage: torchannels token ",
         "--chanel: did you mean --channel"),
        (["--verison"], "usage: torchannels ", "--verison: did you mean --version"),
    ],
)  # fmt: skip
def test_a_mistyped_option_gets_did_you_mean(args: list[str], usage: str, hint: str) -> None:
    result = cli(*args)
    assert result.returncode == 2, result
    assert result.stderr.startswith(usage), result.stderr
    assert "unrecognized arguments: " in result.stderr
    assert hint + "?" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_option_without_a_close_one_gets_no_hint() -> None:
    result = cli("serve", "--zzzzzz")
    assert result.returncode == 2
    assert "unrecognized arguments: --zzzzzz" in result.stderr
    assert "did you mean" not in result.stderr


def test_port_in_use_says_how_to_choose_another() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port), "--no-demo")
        workers = cli("serve", "--port", str(port), "--workers", "2", "--broker",
                      "redis://127.0.0.1:1/0")  # fmt: skip
    for done in (result, workers):
        assert done.returncode == 1, done
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith(f"torchannels: cannot listen on 127.0.0.1:{port}: ")
        assert "Address already in use" in line
        assert "--port" in line and "make run PORT=" in line, line


def test_ensure_chromium_waits_for_the_apt_lock(tmp_path: Path) -> None:
    """Every apt-get call waits for another apt process's lock (a fake
    apt-get records its arguments; a fake id says root)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    browser = tmp_path / "chromium"
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        f'case "$*" in *install*) printf "#!/bin/sh\\n" > {browser}; chmod +x {browser};; esac\n'
    )
    for tool in ("id", "apt-get"):
        os.chmod(bin_dir / tool, 0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CHROMIUM": str(browser)}
    done = subprocess.run([str(ROOT / "scripts" / "ensure-chromium.sh")], env=env,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and "update" in lines[0] and "install" in lines[1], lines
    assert all("-o DPkg::Lock::Timeout=300" in line for line in lines), lines


def test_js_tests_report_compactly_with_totals(tmp_path: Path) -> None:
    """scripts/test-js.sh (make test-js): dots, the failures, one totals line."""
    (tmp_path / "some.test.js").write_text(
        "const test = require('node:test'); const assert = require('node:assert');\n"
        + "".join(f"test('ok {i}', () => {{}});\n" for i in range(30))
        + "test('broken', () => { assert.strictEqual(1, 2); });\n"
    )
    tap = tmp_path / "out.tap"
    done = subprocess.run(
        [str(ROOT / "scripts" / "test-js.sh"), str(tmp_path / "some.test.js")],
        env={**os.environ, "TEST_JS_TAP": str(tap)}, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done
    out = done.stdout
    assert "." * 30 in out.replace("\n", "") and "broken" in out
    assert "js tests: tests 31, pass 30, fail 1, cancelled 0, skipped 0, todo 0;" in out
    assert len(out.splitlines()) < 40, out  # not one TAP block per test
    assert "ok 30 - ok 29" in tap.read_text()  # the full report is kept

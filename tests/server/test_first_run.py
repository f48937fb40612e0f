"""The first five minutes: ``serve --dev`` (what ``make run`` starts) gives a
working publish at once, the demo page shows the same commands, a favicon
is served, and ``make run`` installs only the runtime and reuses its venv."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import uuid
from pathlib import Path
from typing import Any

from redis_servers import shared_redis
from server.processes import (
    KEY,
    ServerProcess,
    as_json,
    clean_env,
    fetch,
    poll,
)
from torchannels.server.config import ServerConfig
from torchannels.server.devmode import ENV_KEY, ORIGIN, program, publish_commands
from torchannels.server.run import banner

ROOT = Path(__file__).parents[2]


def dev_banner(hub: ServerProcess) -> str:
    """The lines dev mode prints after the "listening" line, up to the last command."""
    lines: list[str] = []
    while not lines or " publish demo:chat " not in lines[-1]:
        lines.append(hub._read_line(10).decode())
    return "".join(lines)


def commands_of(banner: str) -> list[str]:
    """The curl and ``torchannels publish`` commands of a banner, as printed."""
    curl = re.search(r"^curl .*?/api/publish$", banner, re.M | re.S)
    cli = re.search(r"^TORCHANNELS_API_KEY=\S+ .* publish demo:chat .*$", banner, re.M)
    assert curl and cli, banner
    return [curl.group(0), cli.group(0)]


def shell(command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a pasted command as a user's shell would, from the hub's directory."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                          env=clean_env(env), timeout=30, check=False)  # fmt: skip


async def chat_texts(http: Any, hub: ServerProcess) -> list[str]:
    doc = await poll(http, hub, ["demo:chat"])
    return [f["data"]["name"] + ": " + f["data"]["text"] for f in doc["frames"]
            if f["type"] == "message"]  # fmt: skip


async def test_dev_mode_prints_a_key_and_commands_that_work(spawn: Any, http: Any) -> None:
    hub = spawn("--dev")
    banner = dev_banner(hub)
    key = re.search(r"^API key \(generated for this run\): (\S+)$", banner, re.M)
    assert key, banner
    assert len(key.group(1)) >= 20
    assert "never use --dev in production" in banner
    curl, cli = commands_of(banner)
    assert curl == publish_commands(hub.base, key.group(1), program())[0]
    assert f"{hub.base}/api/publish" in curl and key.group(1) in curl

    for command in (curl, cli):
        done = shell(command)
        assert done.returncode == 0, (command, done.stderr)
        assert '"offset": ' in done.stdout or '"offset":' in done.stdout, done.stdout
    assert await chat_texts(http, hub) == ["curl: hello", "cli: hello"]


async def test_dev_mode_uses_the_configured_key(spawn: Any, http: Any) -> None:
    hub = spawn("--dev", env={"TORCHANNELS_API_KEY": KEY})
    banner = dev_banner(hub)
    assert f"API key (from --api-key/TORCHANNELS_API_KEY): {KEY}" in banner
    done = shell(commands_of(banner)[0])
    assert done.returncode == 0, done.stderr
    assert (
        as_json(
            await fetch(
                http,
                hub.base + "/api/channels/demo:chat",
                headers={"Authorization": f"Bearer {KEY}"},
            )
        )["offset"]
        == 1
    )


def test_dev_mode_warns_when_reachable_from_other_machines() -> None:
    config = ServerConfig(dev=True, api_key="k3y", host="0.0.0.0")
    text = banner(config, 8090, key_generated=False)
    assert "warning: --host 0.0.0.0: the demo page and its chat tokens" in text
    # The commands reach a wildcard address on the loopback.
    assert commands_of(text)[0].endswith("http://127.0.0.1:8090/api/publish")
    assert "warning" not in banner(ServerConfig(dev=True, api_key="k3y"), 8090, True)
    assert banner(ServerConfig(api_key="k3y"), 8090) == (
        "torchannels server listening on http://127.0.0.1:8090/"
    )


def without_key(command: str, key: str) -> str:
    """A banner's command as the demo page shows it: the key left to the shell."""
    command = command.replace(f"TORCHANNELS_API_KEY={key} ", "")
    return command.replace(f"'Authorization: Bearer {key}'", f'"Authorization: Bearer {ENV_KEY}"')


async def test_the_demo_page_shows_the_commands_without_the_key_in_dev_mode(
    spawn: Any, http: Any
) -> None:
    hub = spawn("--dev")
    banner = dev_banner(hub)
    page = (await fetch(http, hub.base + "/")).body.decode()
    config = re.search(r'<script type="application/json" id="demo-config">(.*?)</script>', page)
    assert config, page
    shown = json.loads(config.group(1))
    key = re.search(r"^API key .*: (\S+)$", banner, re.M)
    assert key is not None
    assert key.group(1) not in page and "apiKey" not in shown
    # The page puts its own origin where ORIGIN is: then they are the
    # banner's, with $TORCHANNELS_API_KEY for the key.
    commands = [c.replace(ORIGIN, hub.base) for c in shown["commands"]]
    assert commands == [without_key(c, key.group(1)) for c in commands_of(banner)]
    assert ENV_KEY in commands[0]  # the CLI reads it from the environment
    # As pasted into a terminal that holds the key, they publish.
    for command in commands:
        done = shell(command, {"TORCHANNELS_API_KEY": key.group(1)})
        assert done.returncode == 0 and '"offset"' in done.stdout, (command, done)
    assert await chat_texts(http, hub) == ["curl: hello", "cli: hello"]


async def test_the_demo_page_without_dev_mode(
    main_server: ServerProcess, spawn: Any, http: Any
) -> None:
    page = (await fetch(http, main_server.base + "/")).body.decode()
    assert KEY not in page  # the key is never on the page
    assert '"Authorization: Bearer $TORCHANNELS_API_KEY"' in page.replace("\\", "")
    assert 'id="publish-key"' not in page  # nor does the page ask for it
    keyless = spawn()
    page = (await fetch(http, keyless.base + "/")).body.decode()
    assert "The publish API is off: this hub was started without an API key" in page
    assert "make run" in page and 'id="publish"' not in page


def ico_size(data: bytes) -> tuple[int, int]:
    """Width and height of the first image of an ICO file (0 means 256)."""
    reserved, kind, count = struct.unpack_from("<HHH", data)
    assert (reserved, kind) == (0, 1) and count >= 1
    width, height = data[6], data[7]
    return width or 256, height or 256


async def test_favicon_is_served(main_server: ServerProcess, bare_server: ServerProcess,
                                 http: Any) -> None:  # fmt: skip
    for hub in (main_server, bare_server):  # with and without the demo
        response = await fetch(http, hub.base + "/favicon.ico")
        assert response.code == 200
        assert response.headers["Content-Type"] == "image/x-icon"
        assert ico_size(response.body) == (32, 32)
    page = (await fetch(http, main_server.base + "/")).body.decode()
    assert '<link rel="icon" href="/favicon.ico">' in page


# -- make run: the runtime only, in a venv reused when nothing changed -----------------


def make_dry_run(venv: Path, *targets: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={venv}", *targets],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.replace(str(venv), "VENV")


def test_make_run_installs_the_runtime_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    plan = make_dry_run(venv, "run")
    assert "-m venv VENV\n" in plan
    # Pinned, hashed versions from the runtime lock; the package without deps.
    assert "--require-hashes -r requirements/run.txt" in plan
    assert "--no-deps --no-build-isolation -e ." in plan
    for dev_tool in ("dev.txt", "playwright", "mypy", "ruff", "hypothesis", "pytest"):
        assert dev_tool not in plan, dev_tool
    assert re.search(r"bin/torchannels serve --dev --host 127\.0\.0\.1 --port 8090$", plan, re.M)
    # make test's setup adds the dev tools on top.
    assert "--require-hashes -r requirements/dev.txt" in make_dry_run(venv, "setup")


def test_make_reuses_the_venv_when_nothing_changed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    inputs = ("pyproject.toml", "requirements/run.txt", "requirements/dev.txt")
    later = max((ROOT / name).stat().st_mtime for name in inputs) + 60
    for stamp in (".installed-run", ".installed-dev"):
        (venv / stamp).touch()
        os.utime(venv / stamp, (later, later))
    plan = make_dry_run(venv, "run")
    assert "pip" not in plan and "-m venv" not in plan, plan
    assert "serve --dev" in plan
    assert "pip" not in make_dry_run(venv, "setup")
    # pyproject.toml or the lock changed since: reinstall into the same venv.
    earlier = later - 3600
    os.utime(venv / ".installed-run", (earlier, earlier))
    plan = make_dry_run(venv, "run")
    assert "-r requirements/run.txt" in plan and "-m venv" not in plan, plan


def test_docs_name_the_make_targets_and_variables() -> None:
    """The README names the Makefile's HOST and PORT as they are; the seed
    example's docstring names the target that runs it."""
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    host = re.search(r"^HOST\s*\?=\s*(\S+)$", makefile, re.M)
    port = re.search(r"^PORT\s*\?=\s*(\S+)$", makefile, re.M)
    assert host and port
    assert f"`HOST` and `PORT` say (default\n`{host.group(1)}` and `{port.group(1)}`)" in readme
    assert "`make run PORT=8091`" in readme
    assert re.search(r"^example: .*\n\t.*examples/seed_app\.py", makefile, re.M)
    doc = (ROOT / "examples" / "seed_app.py").read_text().split('"""')[1]
    assert "``make example``" in doc and "make run" not in doc


async def test_dev_mode_with_workers_shares_one_generated_key(spawn: Any, http: Any) -> None:
    """The key is made before the workers fork: every process takes it (the
    banner's command works on each), and no demo page shows it."""
    prefix = f"tc-test-{uuid.uuid4().hex[:12]}"
    hub = spawn("--dev", "--workers", "2", "--broker", shared_redis(), "--redis-prefix", prefix)
    banner = dev_banner(hub)
    key = re.search(r"^API key \(generated for this run\): (\S+)$", banner, re.M)
    assert key, banner
    workers_seen: set[int] = set()
    # The kernel spreads new connections over the workers: 20 publishes
    # all reach the same one with a chance of 2**-19.
    for _ in range(20):
        page = await fetch(http, hub.base + "/", headers={"Connection": "close"})
        assert page.code == 200 and key.group(1) not in page.body.decode()
        health = await fetch(http, hub.base + "/health", headers={"Connection": "close"})
        workers_seen.add(as_json(health)["worker"])
        done = shell(commands_of(banner)[0])
        assert done.returncode == 0 and '"offset"' in done.stdout, done
    assert workers_seen == {0, 1}


async def test_the_banner_and_the_demo_page_point_to_the_admin_page(spawn: Any, http: Any) -> None:
    """Issue 17: neither said that /admin exists, nor what its password is."""
    text = banner(ServerConfig(dev=True, api_key="k3y"), 8090, key_generated=False)
    assert "admin page (live connections, channels, a tail of any channel): " \
           "http://127.0.0.1:8090/admin\nits password is the API key" in text  # fmt: skip
    own = banner(ServerConfig(dev=True, api_key="k3y", admin_password="pw"), 8090)
    assert "its password is the --admin-password (TORCHANNELS_ADMIN_PASSWORD)" in own
    assert "/admin" not in banner(ServerConfig(dev=True, api_key="k3y", admin=False), 8090)
    # With an internal listener the admin page is there, not on the public port.
    inside = banner(ServerConfig(dev=True, api_key="k3y", internal_port=9000), 8090, internal=9000)
    assert "a tail of any channel): http://127.0.0.1:9000/admin\n" in inside, inside
    cases = [(["--dev"], "its password is the API key"),
             (["--admin-password", "pw"], "its password is the --admin-password"),
             (["--dev", "--no-admin"], None),
             (["--dev", "--internal-port", "0"], "on this hub's internal listener")]  # fmt: skip
    for flags, hint in cases:
        page = (await fetch(http, spawn(*flags).base + "/")).body.decode()
        if hint is None:
            assert 'id="admin-link"' not in page
        else:
            assert hint in page and ('href="/admin"' in page) == ("--internal-port" not in flags)

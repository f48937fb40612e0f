"""Development mode (``torchannels serve --dev``, what ``make run`` starts):
a working publish on the first try.

Without an API key the publish API is off, so a newcomer's first curl would
get ``403 api_disabled``. In dev mode the server makes a random key when none
is configured (``ServerConfig.with_dev_key``) and prints it with two
ready-to-paste publish commands, for curl and the command line only: the
demo page shows the same commands with ``$TORCHANNELS_API_KEY`` in place of
the key, and its chat publishes as a client with a chat token. Dev mode
prints the key and hands out chat tokens for any name, so it is for a
developer's machine only.

>>> print(publish_commands("http://127.0.0.1:8090", "k3y", "torchannels")[0])
curl -H 'Authorization: Bearer k3y' -H 'Content-Type: application/json' \\
     -d '{"channel": "demo:chat", "data": {"name": "curl", "text": "hello"}}' \\
     http://127.0.0.1:8090/api/publish
"""

from __future__ import annotations

import os
import shlex
import sys

from .config import ServerConfig

CHAT_EXAMPLE = '{"channel": "demo:chat", "data": {"name": "curl", "text": "hello"}}'
CLI_EXAMPLE = '{"name": "cli", "text": "hello"}'
#: Stands for the page's own origin in the commands the demo page shows.
ORIGIN = "__ORIGIN__"
ENV_KEY = "$TORCHANNELS_API_KEY"


def program(argv0: str | None = None, cwd: str | None = None) -> str:
    """How to run this ``torchannels`` command again from the current directory:
    ``.venv/bin/torchannels`` under ``make run``, else ``torchannels`` when that
    is what runs, else ``python -m torchannels``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    cwd = os.getcwd() if cwd is None else cwd
    if os.path.basename(argv0) == "torchannels":
        return argv0 if os.sep not in argv0 else _from(cwd, argv0)
    return f"{_from(cwd, sys.executable)} -m torchannels"


def _from(cwd: str, path: str) -> str:
    """``path`` for a shell in ``cwd``: relative below it, else absolute."""
    path = os.path.abspath(path)
    relative = os.path.relpath(path, cwd)
    if relative.startswith(".."):
        return shlex.quote(path)
    return shlex.quote(relative if os.sep in relative else os.path.join(".", relative))


def publish_commands(base: str, key: str | None, prog: str) -> list[str]:
    """A curl command and a ``torchannels publish`` command that publish to
    ``demo:chat`` at ``base`` with ``key`` (None: ``$TORCHANNELS_API_KEY``)."""
    header = "Authorization: Bearer "
    auth = f'"{header}{ENV_KEY}"' if key is None else shlex.quote(header + key)
    curl = (
        f"curl -H {auth} -H 'Content-Type: application/json' \\\n"
        f"     -d {shlex.quote(CHAT_EXAMPLE)} \\\n"
        f"     {base}/api/publish"
    )
    env = "" if key is None else f"TORCHANNELS_API_KEY={shlex.quote(key)} "
    cli = f"{env}{prog} publish demo:chat {shlex.quote(CLI_EXAMPLE)} --url {base}"
    return [curl, cli]


def local_base(host: str, port: int) -> str:
    """The base URL to reach a server listening on ``host``:``port`` from
    this machine (a wildcard address is reached on the loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def banner(config: ServerConfig, port: int, generated: bool, api_port: int | None = None) -> str:
    """What dev mode prints after the "listening" line; the publish
    commands go to ``api_port`` on the internal host when given."""
    assert config.api_key is not None
    base = local_base(config.host, port)
    api = base if api_port is None else local_base(config.internal_host, api_port)
    where = "generated for this run" if generated else "from --api-key/TORCHANNELS_API_KEY"
    lines = [
        f"dev mode (--dev): open {base}/ for the demo page; this terminal shows the API key "
        "and the page gives chat tokens to anyone, so never use --dev in production",
        f"API key ({where}): {config.api_key}",
        "publish from another terminal with either:",
        "",
        *(c for command in publish_commands(api, config.api_key, program()) for c in (command, "")),
    ]
    admin = admin_hint(config)
    if admin is not None:
        lines += [f"admin page (live connections, channels, a tail of any channel): {api}/admin",
                  admin, ""]  # fmt: skip
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(
            f"warning: --host {config.host}: the demo page and its chat tokens "
            "(POST /demo/token) can be reached from other machines"
        )
    return "\n".join(lines)


def admin_hint(config: ServerConfig) -> str | None:
    """How to log in to ``/admin``, as the banner and the demo page say it;
    None when the admin page is off.

    >>> admin_hint(ServerConfig(api_key="k"))
    'its password is the API key (give it one of its own with --admin-password)'
    """
    if config.admin_secret() is None:
        return None
    if config.admin_password:
        return "its password is the --admin-password (TORCHANNELS_ADMIN_PASSWORD) it started with"
    return "its password is the API key (give it one of its own with --admin-password)"

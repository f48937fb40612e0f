"""``torchannels disconnect``, ``unsubscribe`` and ``revoke``: the control
API from a terminal.

::

    torchannels disconnect --user 42                  # end every connection of user 42
    torchannels disconnect --client ID --reconnect    # one connection; back with a fresh token
    torchannels unsubscribe --user 42 --channel room:1
    torchannels revoke --user 42 --before "$(date +%s)"
    torchannels revoke --jti abc --expires 1796003600

Each sends one request through :class:`torchannels.client.Publisher` (the
URL and API key as ``torchannels publish``) and prints the server's JSON
answer, ``{"connections":3,"processes":3,"answered":3}``. Exits 0 when
answered, 1 when the server refuses or cannot be reached, 2 for arguments
the server would refuse and without an API key.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

from ..client import ClientError, calls
from .api_target import api_publisher

COMMANDS = ("disconnect", "unsubscribe", "revoke")


def _unix(text: str) -> float:
    """A Unix time in seconds: ``1796000000`` (kept an integer) or ``1796000000.5``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Unix time in seconds")
    return value


def add_commands(commands: Any, default_url: str) -> None:
    """Add ``disconnect``, ``unsubscribe`` and ``revoke`` to the ``torchannels`` subparsers."""
    helps = {
        "disconnect": "end the connections of a user or of one client",
        "unsubscribe": "stop delivering a channel to a user's or a client's connections",
        "revoke": "refuse a user's tokens issued before a time, or one token by its jti",
    }
    descriptions = {
        "disconnect": "End every connection of a user, or one connection by its client id, "
        "through POST /api/disconnect. The clients are told not to come back, or with "
        "--reconnect to come back at once (with a fresh token).",
        "unsubscribe": "Stop delivering a channel to the connections of a user or of one "
        "client, through POST /api/unsubscribe; their other channels go on.",
        "revoke": "Refuse tokens through POST /api/revoke: a user's tokens issued before "
        "--before (Unix seconds), or the one token whose jti claim is --jti until --expires "
        "(its exp). The connections they authorised end.",
    }
    for name in COMMANDS:
        cmd = commands.add_parser(name, help=helps[name], description=descriptions[name])
        who = cmd.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", metavar="ID", help="the user id (a token's sub)")
        if name == "revoke":
            who.add_argument("--jti", metavar="ID", help="the token's jti claim")
            cmd.add_argument("--before", type=_unix, metavar="UNIX",
                             help="with --user: refuse the tokens issued (iat) before this "
                             "Unix time, in seconds")  # fmt: skip
            cmd.add_argument("--expires", type=_unix, metavar="UNIX",
                             help="when the revocation is forgotten, in Unix seconds: with "
                             "--jti required (the token's exp); with --user by default "
                             "--before + 1 day")  # fmt: skip
        else:
            who.add_argument("--client", metavar="ID", help="one connection's client id")
        if name == "disconnect":
            cmd.add_argument("--reconnect", action="store_true",
                             help="tell the clients to come back at once (with a fresh "
                             "token), not to stay away")  # fmt: skip
        if name == "unsubscribe":
            cmd.add_argument("--channel", required=True, help="the channel to stop")
        cmd.add_argument(
            "--url", help=f"the server's base URL (env TORCHANNELS_URL; default {default_url})"
        )
        cmd.add_argument("--api-key", help="the server's API key (env TORCHANNELS_API_KEY)")


def _call(args: argparse.Namespace) -> calls.Call:
    if args.command == "disconnect":
        return calls.disconnect(args.user, args.client, args.reconnect)
    if args.command == "unsubscribe":
        return calls.unsubscribe(args.channel, args.user, args.client)
    return calls.revoke(args.user, args.before, args.jti, args.expires)


def run(args: argparse.Namespace, env: Mapping[str, str], default_url: str) -> int:
    try:
        call = _call(args)  # the checks the server would make, before anything is sent
    except ValueError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 2
    hub = api_publisher(args, env, default_url)
    if hub is None:
        return 2
    try:
        answer = hub.request(call)
    except ClientError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, separators=(",", ":")))
    return 0

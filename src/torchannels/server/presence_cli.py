"""``torchannels presence``: who is in a channel, from a terminal.

::

    torchannels presence room:1            # the counts, then one user a line
    torchannels presence room:1 --json     # the same as JSON lines, for jq

It reads every page of ``GET /api/channels/NAME/presence`` through
:class:`torchannels.client.Publisher` (the API key, as ``torchannels
publish``) and the counts from ``GET /api/channels/NAME``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from collections.abc import Mapping
from typing import Any

from ..client import ClientError, Member
from .api_target import api_publisher

#: Users read per request: the API's largest page.
PAGE = 1000


def add_command(commands: Any, default_url: str) -> None:
    """Add ``presence`` to the ``torchannels`` subparsers."""
    text = "list the users present in a channel, with the counts"
    cmd = commands.add_parser(
        "presence",
        help=text,
        description="List every user present in a channel with presence (all pages, sorted "
        "by user id) and the channel's counts of clients and users.",
    )
    cmd.add_argument("channel", help="the channel")
    cmd.add_argument(
        "--url", help=f"the hub's base URL (env TORCHANNELS_URL; default {default_url})"
    )
    cmd.add_argument("--api-key", help="the server's API key (env TORCHANNELS_API_KEY)")
    cmd.add_argument(
        "--json",
        action="store_true",
        help='JSON lines: first {"channel", "clients", "users"}, then one '
        '{"user", "info", "clients"} per user',
    )


def run(args: argparse.Namespace, env: Mapping[str, str], default_url: str) -> int:
    hub = api_publisher(args, env, default_url)
    if hub is None:
        return 2
    try:
        users = hub.presence_all(args.channel, PAGE)
        first = list(itertools.islice(users, 1))  # presence_disabled before any output
        counts = hub.channel(args.channel).presence
        head = {"channel": args.channel, "clients": counts.clients if counts else 0,
                "users": counts.users if counts else 0}  # fmt: skip
        if args.json:
            print(_json_line(head))
        else:
            print(f"{args.channel}: {_plural(head['users'], 'user')}, "
                  f"{_plural(head['clients'], 'client')}")  # fmt: skip
        for user in itertools.chain(first, users):
            print(_json_line(dataclasses.asdict(user)) if args.json else _readable(user))
    except (ClientError, ValueError) as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 1
    return 0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _json_line(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _readable(user: Member) -> str:
    """``USER  N clients  {info}`` (the info only when there is one)."""
    info = "" if user.info is None else " " + json.dumps(user.info, ensure_ascii=False)
    return f"{user.user}  {_plural(user.clients, 'client')}{info}"

"""``torchannels subscribe``, ``channels`` and ``info``: watch a hub from a terminal.

::

    torchannels subscribe demo:chat                      # readable lines until Ctrl-C
    torchannels subscribe news chat --json | jq .        # one JSON message a line
    torchannels subscribe --cursor 'news=3f9a0c12:17'    # resume where a run stopped
    torchannels channels --prefix chat:                  # channels, positions, counts
    torchannels info news

``subscribe`` is a :class:`torchannels.client.Client`; the other two use the
publish API (its key, as ``torchannels publish``). docs/python-client.md has
the output formats and exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from ..client import (
    TRANSPORTS,
    ChannelError,
    ChannelInfo,
    Client,
    ClientError,
    Disconnected,
    Member,
    Message,
    PresenceDiff,
    PresenceSnapshot,
    Publisher,
    Reset,
    Status,
    SubscribeError,
)
from ..errors import TorChannelsError
from ..protocol import RESERVED_KEYS

COMMANDS = ("subscribe", "channels", "info")
#: Exit codes of ``subscribe`` stopped by a signal (128 + its number, as shells say).
SIGNAL_EXITS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def add_commands(commands: Any, default_url: str) -> None:
    """Add the three commands to the ``torchannels`` subparsers."""
    url_help = f"the hub's base URL (env TORCHANNELS_URL; default {default_url})"
    sub = commands.add_parser(
        "subscribe",
        help="print the messages of channels as they arrive",
        description="Subscribe to channels and print their messages until Ctrl-C, which "
        "prints the cursor to resume from (on stderr). Presence channels also print who is "
        "there when joined, and who joins and leaves. Resets, refusals and reconnects go "
        "to stderr.",
    )
    sub.add_argument("channel", nargs="*", help="channels (default: those of --cursor)")
    sub.add_argument("--url", help=url_help)
    sub.add_argument("--cursor", help="resume from this cursor (printed by an earlier run)")
    sub.add_argument("--token", help="a subscription token (env TORCHANNELS_TOKEN)")
    sub.add_argument("--json", action="store_true",
                     help="one JSON message (or presence snapshot or diff) a line")  # fmt: skip
    sub.add_argument("--transport", choices=TRANSPORTS, help="use only this transport")
    for name, text in (
        ("channels", "list the channels with their positions and subscriber counts"),
        ("info", "show one channel's position, history and subscribers"),
    ):
        cmd = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name == "info":
            cmd.add_argument("channel", help="the channel")
        else:
            cmd.add_argument("--prefix", help="only channels whose names start with this")
        cmd.add_argument("--url", help=url_help)
        cmd.add_argument("--api-key", help="the server's API key (env TORCHANNELS_API_KEY)")
        cmd.add_argument("--json", action="store_true", help="JSON output, one object a line")


def run(args: argparse.Namespace, env: Mapping[str, str], default_url: str) -> int:
    base = (args.url or env.get("TORCHANNELS_URL") or default_url).rstrip("/")
    if args.command == "subscribe":
        try:
            client = Client(
                base + "/channels", token=args.token or env.get("TORCHANNELS_TOKEN") or None,
                transport=args.transport, on_status=StatusLines(base + "/channels"),
            )  # fmt: skip
            subscription = client.subscribe(*args.channel, cursor=args.cursor)
        except (TorChannelsError, ValueError) as exc:
            print(f"torchannels: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(_subscribe(client, subscription, args.json, sys.stdout))
    key = args.api_key or env.get("TORCHANNELS_API_KEY")
    if not key:
        print("torchannels: give the API key (--api-key or TORCHANNELS_API_KEY)", file=sys.stderr)
        return 2
    hub = Publisher(base, key)
    try:
        if args.command == "info":
            infos = [hub.channel(args.channel)]
        else:
            infos = list(hub.iter_channels(args.prefix))
    except (ClientError, ValueError) as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 1
    # asdict, not __dict__: a channel's ``presence`` is a dataclass too.
    lines = (_json_line(dataclasses.asdict(i)) for i in infos) if args.json else _table(infos, args)
    for line in lines:
        print(line)
    return 0


async def _subscribe(client: Client, sub: Any, as_json: bool, out: TextIO) -> int:
    task = asyncio.current_task()
    assert task is not None
    caught: list[int] = []

    def stop(sig: int) -> None:
        caught.append(sig)
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in SIGNAL_EXITS:
        loop.add_signal_handler(sig, stop, sig)
    code = 1  # the subscription ended by itself: every channel was refused
    try:
        async for event in sub:
            if isinstance(event, Message):
                out.write((_json_line(event.data) if as_json else _readable(event)) + "\n")
                out.flush()
            elif isinstance(event, PresenceSnapshot | PresenceDiff):
                out.write((_json_line(_presence_doc(event)) if as_json
                           else _readable_presence(event)) + "\n")  # fmt: skip
                out.flush()
            elif isinstance(event, Reset):
                _say(f"reset {event.channel}: {event.reason}")
            elif isinstance(event, ChannelError):
                _say(f"{event.channel} refused: {event.code}: {event.message}")
    except asyncio.CancelledError:
        if not caught:
            raise
        task.uncancel()
        code = SIGNAL_EXITS[signal.Signals(caught[0])]
    except SubscribeError as exc:
        _say(f"the server refused the subscription: {exc}")
    except Disconnected:
        code = 1  # the server said not to come back (StatusLines said why)
    finally:
        for sig in SIGNAL_EXITS:
            loop.remove_signal_handler(sig)
        await client.aclose()
        _say(f"cursor {sub.cursor}")
    return code


def _say(text: str) -> None:
    print(f"torchannels: {text}", file=sys.stderr, flush=True)


class StatusLines:
    """``on_status`` for the terminal: one line when a connection delivers,
    one when it is lost, and one per retry while none can be made. The
    transports tried one after the other without a pause share that line,
    which says "could not connect", not "disconnected": there was nothing
    to lose."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connected = False
        self.failed: dict[str, list[str]] = {}  # reason -> the transports it stopped

    def __call__(self, status: Status) -> None:
        if status.state == "connected":
            failed = f", after {self._failures()}" if self.failed else ""
            self.connected, self.failed = True, {}
            _say(f"connected ({status.transport}{failed})")
        elif status.state == "disconnected":  # for good: the iteration ends next
            self.connected = False
            _say(f"disconnected by the server ({status.transport}: {status.reason}); "
                 "not reconnecting")  # fmt: skip
        elif self.connected:
            self.connected = False
            _say(f"disconnected ({status.transport}: {status.reason}); "
                 f"reconnecting in {status.delay:.1f} s")  # fmt: skip
        else:
            self.failed.setdefault(status.reason, []).append(status.transport)
            if status.delay > 0:  # the round is over: the client pauses now
                _say(f"could not connect to {self.url} ({self._failures()}); "
                     f"retrying in {status.delay:.1f} s")  # fmt: skip
                self.failed = {}

    def _failures(self) -> str:
        return "; ".join(f"{', '.join(t)}: {r}" for r, t in self.failed.items())


def _json_line(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _readable(message: Message) -> str:
    """``HH:MM:SS CHANNEL EPOCH:OFFSET [state] {published keys}``."""
    data = {k: v for k, v in message.data.items() if k not in RESERVED_KEYS}
    clock = time.strftime("%H:%M:%S", time.localtime(message.ts))
    state = " state" if message.state else ""
    text = json.dumps(data, ensure_ascii=False)
    return f"{clock} {message.channel} {message.epoch}:{message.offset}{state} {text}"


def _member_doc(member: Member, clients: bool = True) -> dict[str, Any]:
    doc = {"user": member.user, "info": member.info}
    return doc | {"clients": member.clients} if clients else doc


def _presence_doc(event: PresenceSnapshot | PresenceDiff) -> dict[str, Any]:
    """The ``--json`` line of a presence event: a snapshot as the
    ``subscribed`` frame's ``presence`` with ``"type": "presence_snapshot"``,
    a diff as the ``presence`` frame. (Message lines always have ``offset``;
    these never do.)"""
    if isinstance(event, PresenceDiff):
        return {"type": "presence", "channel": event.channel,
                "joins": [_member_doc(m, clients=False) for m in event.joins],
                "leaves": [{"user": u} for u in event.leaves]}  # fmt: skip
    return {"type": "presence_snapshot", "channel": event.channel,
            "members": [_member_doc(m) for m in event.members],
            "clients": event.clients, "users": event.users, "next": event.next}  # fmt: skip


def _readable_presence(event: PresenceSnapshot | PresenceDiff) -> str:
    """``HH:MM:SS CHANNEL present N users, M clients: ann (2), bob[, ...]``
    ("1 user", "1 client" in the singular)
    (``...`` when more users than the snapshot's page) or ``HH:MM:SS
    CHANNEL joined ann, bob; left cy``; the clock is the time of receipt."""
    clock = time.strftime("%H:%M:%S")
    if isinstance(event, PresenceDiff):
        parts = [
            f"{word} {', '.join(names)}"
            for word, names in (
                ("joined", [m.user for m in event.joins]),
                ("left", list(event.leaves)),
            )
            if names
        ]
        return f"{clock} {event.channel} {'; '.join(parts) or 'no change'}"  # fmt: skip
    names = [m.user + (f" ({m.clients})" if m.clients > 1 else "") for m in event.members]
    if event.next is not None:
        names.append("...")
    listed = f": {', '.join(names)}" if names else ""
    counts = f"{_count(event.users, 'user')}, {_count(event.clients, 'client')}"
    return f"{clock} {event.channel} present {counts}{listed}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _table(infos: list[ChannelInfo], args: argparse.Namespace) -> list[str]:
    rows = [("CHANNEL", "POSITION", "HISTORY", "STATE", "SUBSCRIBERS")]
    for i in infos:
        count = str(i.local_subscribers if i.subscribers is None else i.subscribers)
        rows.append((i.channel, f"{i.epoch}:{i.offset}", str(i.history_length),
                     "yes" if i.has_state else "no", count))  # fmt: skip
    if args.command == "channels" and len(rows) == 1:
        return [f"no channels{f' starting with {args.prefix!r}' if args.prefix else ''}"]
    widths = [max(len(r[n]) for r in rows) for n in range(len(rows[0]))]
    return [" ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]

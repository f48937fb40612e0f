"""The ``torchannels`` command: ``serve``, ``publish``, ``token``, the
commands that watch a hub (``subscribe``, ``channels``, ``info``, ``presence``),
those that control its connections (``disconnect``, ``unsubscribe``, ``revoke``)
and ``outbox init``.

::

    torchannels serve --api-key s3cret           # a server on http://127.0.0.1:8090/
    torchannels publish news '{"text": "hi"}'    # publish through its API
    torchannels publish --ndjson < messages.ndjson   # many, in batches
    torchannels token --channel 'chat:*'         # a subscription token for testing
    torchannels presence room:1                  # who is in a channel
    torchannels disconnect --user 42             # end a user's connections
    torchannels outbox init --dsn postgresql://app@db/app   # the outbox's tables
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import __version__
from ..client import APIError, ConnectError, Publisher, calls
from ..client.errors import plain_reason
from . import control_cli, outbox_cli, presence_cli, watch
from .api_target import api_publisher
from .cliparser import SuggestingParser
from .config import ConfigError, add_arguments, channels_epilog, load_config
from .run import loop_runner, serve

DEFAULT_URL = "http://127.0.0.1:8090"
#: The server's limits by default: messages per batch, bytes per request body.
BATCH_MESSAGES = 1000
BATCH_BYTES = 65536


MAX_TTL = 10 * 365 * 86400.0


def _ttl(text: str) -> float:
    """A token lifetime: a finite number of seconds, more than 0, at most ten years."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_TTL:  # also refuses NaN and infinities
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most {MAX_TTL:.0f}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(
        prog="torchannels", description="Real-time channels for Tornado: a standalone server."
    )
    parser.add_argument("--version", action="version", version=f"torchannels {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the standalone server (subscriptions, publish API, demo page)",
        description="Run the standalone server. Every option can also come from an environment "
        "variable or a TOML file; flags win over the environment, which wins over the file.",
        epilog=channels_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(serve)

    publish = commands.add_parser(
        "publish",
        help="publish JSON messages through a server's API",
        description="Publish one message to one channel through a running server's HTTP API, "
        "or, with --ndjson, every line of stdin, in batches.",
    )
    publish.add_argument("channel", nargs="?", help="the channel to publish to")
    publish.add_argument(
        "message", nargs="?", help="the message: a JSON object, or - to read stdin"
    )
    publish.add_argument(
        "--ndjson",
        action="store_true",
        help='read stdin as NDJSON, one message a line: {"channel": ..., "data": {...}}, or '
        "the data alone when CHANNEL is given; sent in batches, in order",
    )
    publish.add_argument(
        "--batch",
        type=int,
        default=BATCH_MESSAGES,
        metavar="N",
        help=f"with --ndjson: messages per request, 1-{BATCH_MESSAGES} ({BATCH_MESSAGES})",
    )
    publish.add_argument(
        "--batch-bytes",
        type=int,
        default=BATCH_BYTES,
        metavar="BYTES",
        help="with --ndjson: request body size to stay under, the server's "
        f"--max-publish-bytes ({BATCH_BYTES})",
    )
    publish.add_argument(
        "--url", help=f"the server's base URL (env TORCHANNELS_URL; default {DEFAULT_URL})"
    )
    publish.add_argument("--api-key", help="the server's API key (env TORCHANNELS_API_KEY)")
    publish.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the message's idempotency key, 1-128 printable ASCII characters (default: a new "
        "one); the same key again within the server's --idempotency-window stores nothing "
        'and prints the first\'s position with "duplicate": true',
    )

    token = commands.add_parser(
        "token",
        help="print a signed subscription token (JWT, HS256)",
        description="Print a subscription token, as an app backend would issue one.",
    )
    token.add_argument(
        "--channel",
        action="append",
        required=True,
        help="a channel or prefix pattern ending in * the token allows; repeat for more",
    )
    token.add_argument("--ttl", type=_ttl, default=3600.0, help="lifetime in seconds (3600)")
    token.add_argument("--sub", help="the subject (user id) to put in the token")
    token.add_argument(
        "--info", metavar="JSON", help="the user's info: a JSON object of at most 1024 bytes"
    )
    token.add_argument("--secret", help="the shared secret (env TORCHANNELS_TOKEN_SECRET)")
    token.add_argument(
        "--private-key",
        metavar="FILE",
        help="sign with this PEM private key instead (RSA: RS256, EC: ES256/384/512, "
        "Ed25519: EdDSA), for testing --token-public-key or --token-jwks-url",
    )
    token.add_argument("--kid", help="the key id to name in the token's header")
    watch.add_commands(commands, DEFAULT_URL)  # subscribe, channels, info (watch.py)
    presence_cli.add_command(commands, DEFAULT_URL)
    control_cli.add_commands(commands, DEFAULT_URL)  # disconnect, unsubscribe, revoke
    outbox_cli.add_command(commands)  # outbox init
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            loaded = load_config(args, env)
            config = loaded.with_dev_key()  # dev mode: a working API key at once
            key_generated = config.api_key != loaded.api_key
            from .admin import session_salt

            session_salt()  # made before --workers fork: every worker accepts a login
            config.token_verifier()  # a bad --token-public-key fails now, in one line
            if config.metrics:
                try:
                    from . import metrics  # noqa: F401 - fail now, not at the first scrape
                except ImportError as exc:
                    print(f"torchannels: {exc}", file=sys.stderr)
                    return 2
            if config.broker != "memory":
                from ..brokers.redis_errors import redis_py

                try:
                    redis_py()  # fail now, in one line, not in a traceback per worker
                except ImportError as exc:
                    print(f"torchannels: --broker: {exc}", file=sys.stderr)
                    return 2
            if config.outbox is not None:
                from ..outbox.driver import connect_options

                try:
                    connect_options(config.outbox)  # psycopg installed, the DSN readable
                except (ImportError, ValueError) as exc:
                    print(f"torchannels: --outbox: {exc}", file=sys.stderr)
                    return 2
            try:
                run_loop = loop_runner(config)
            except ImportError as exc:
                print(f"torchannels: --event-loop: {exc}", file=sys.stderr)
                return 2
            logging.basicConfig(
                level=config.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            config.check_serving()
            if config.workers > 1:
                if config.broker == "memory":
                    print(
                        f"torchannels: --workers {config.workers} needs a shared broker "
                        "(--broker redis://HOST:PORT): with the in-memory broker each process "
                        "would hold its own channels, and a subscriber would only see what "
                        "was published to its own process",
                        file=sys.stderr,
                    )
                    return 2
                from .workers import run_workers

                return run_workers(config, key_generated)
            return run_loop(serve(config, key_generated=key_generated))
        if args.command == "publish":
            return publish(args, env)
        if args.command in watch.COMMANDS:
            return watch.run(args, env, DEFAULT_URL)
        if args.command == "presence":
            return presence_cli.run(args, env, DEFAULT_URL)
        if args.command in control_cli.COMMANDS:
            return control_cli.run(args, env, DEFAULT_URL)
        if args.command in outbox_cli.COMMANDS:
            return outbox_cli.run(args, env)
        return token(args, env)
    except ConfigError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 2


def publish(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.ndjson:
        return publish_ndjson(args, env)
    if args.channel is None or args.message is None:
        print("torchannels: give CHANNEL and MESSAGE, or --ndjson", file=sys.stderr)
        return 2
    text = sys.stdin.read() if args.message == "-" else args.message
    try:
        data = json.loads(text)
    except ValueError as exc:
        print(f"torchannels: {_not_json(args.channel, text, exc)}", file=sys.stderr)
        return 2
    if not isinstance(data, dict):
        print(f"torchannels: the message must be a JSON object, like {EXAMPLE}, not "
              f"{_kind(data)}", file=sys.stderr)  # fmt: skip
        return 2
    try:
        call = calls.publish(args.channel, data, args.idempotency_key)
    except ValueError as exc:
        print(f"torchannels: --idempotency-key: {exc}", file=sys.stderr)
        return 2
    hub = api_publisher(args, env, DEFAULT_URL)
    if hub is None:
        return 2
    answer = _post(hub, call)
    if answer is None:
        return 1
    print(json.dumps(answer, separators=(",", ":")))
    return 0


EXAMPLE = """'{"text": "hi"}'"""


def _not_json(channel: str, text: str, exc: ValueError) -> str:
    """Why MESSAGE is refused; a JSON object given as CHANNEL means the
    two arguments were swapped (``publish '{"a":1}' demo:chat``)."""
    try:
        swapped = isinstance(json.loads(channel), dict)
    except ValueError:
        swapped = False
    if swapped:
        return (
            f"the arguments look swapped: {channel!r} is the message and {text!r} the "
            f"channel; CHANNEL comes first: torchannels publish {shlex.quote(text)} "
            f"{shlex.quote(channel)}"
        )
    return f"the message is not JSON: {exc}"


def _kind(value: object) -> str:
    """What a JSON value is, for an error message: ``a string ("hi")``."""
    names = {str: "a string", list: "a list", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}  # fmt: skip
    shown = json.dumps(value)
    return names.get(type(value), "a value") + (f" ({shown})" if len(shown) <= 40 else "")


def publish_ndjson(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``publish --ndjson``: every line of stdin, checked first, then sent in
    batches of at most ``--batch`` messages and ``--batch-bytes`` bytes, each
    message with its own idempotency key (its line's, else a new one)."""
    if args.message is not None:
        print("torchannels: --ndjson reads the messages from stdin: no MESSAGE", file=sys.stderr)
        return 2
    if args.idempotency_key is not None:
        print('torchannels: --idempotency-key is for one message; with --ndjson give each line '
              'its own "idempotency_key" (a line without one gets a new one)',
              file=sys.stderr)  # fmt: skip
        return 2
    if not 1 <= args.batch <= BATCH_MESSAGES or args.batch_bytes < 1:
        print(f"torchannels: --batch must be 1-{BATCH_MESSAGES}, --batch-bytes >= 1",
              file=sys.stderr)  # fmt: skip
        return 2
    items: list[bytes] = []
    for number, line in enumerate(sys.stdin.buffer, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            print(f"torchannels: line {number} is not JSON: {exc}", file=sys.stderr)
            return 2
        if args.channel is not None:
            if not isinstance(value, dict):
                print(f"torchannels: line {number} must be a JSON object, like {EXAMPLE}, not "
                      f"{_kind(value)}", file=sys.stderr)  # fmt: skip
                return 2
            value = {"channel": args.channel, "data": value}
        # (A line that is not an object gets no key: the server refuses it.)
        if isinstance(value, dict) and value.get("idempotency_key") is None:
            value["idempotency_key"] = calls.checked_key()
        items.append(json.dumps(value, separators=(",", ":")).encode())
    hub = api_publisher(args, env, DEFAULT_URL)
    if hub is None:
        return 2
    sent = 0
    for batch in _batches(items, args.batch, args.batch_bytes):
        body = b'{"messages":[' + b",".join(batch) + b"]}"
        answer = _post(hub, calls.Call("POST", "/api/publish", body, True))
        if answer is None:
            print(f"torchannels: {sent} of {len(items)} messages were published before "
                  "this failure", file=sys.stderr)  # fmt: skip
            return 1
        for result in answer["results"]:
            print(json.dumps(result, separators=(",", ":")))
        sent += len(batch)
    return 0


def _batches(items: list[bytes], count: int, size: int) -> list[list[bytes]]:
    """``items`` cut in order into lists of at most ``count`` items whose
    request body stays within ``size`` bytes (an item too large goes alone)."""
    overhead = len(b'{"messages":[]}')
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    used = overhead
    for item in items:
        if current and (len(current) == count or used + 1 + len(item) > size):
            batches.append(current)
            current, used = [], overhead
        used += len(item) + (1 if current else 0)
        current.append(item)
    if current:
        batches.append(current)
    return batches


def _post(hub: Publisher, call: calls.Call) -> Any:
    """The JSON answer to ``call`` (sent again with the same keys while the
    failure is safe to retry, as :class:`Publisher` does), or None after
    saying on stderr why it failed."""
    try:
        return hub.request(call)
    except APIError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
    except ConnectError as exc:
        reason = plain_reason(exc.__cause__) if exc.__cause__ is not None else str(exc)
        print(f"torchannels: cannot reach {hub.base_url}{call.path}: {reason}", file=sys.stderr)
    return None


def token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ..errors import ChannelNameError
    from ..patterns import check_pattern
    from ..tokens import encode_token

    key = _signing_key(args, env)
    if key is None:
        return 2
    try:
        channels = [check_pattern(c) for c in args.channel]
    except ChannelNameError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 2
    claims: dict[str, object] = {"exp": int(time.time() + args.ttl), "channels": channels}
    if args.sub:
        claims["sub"] = args.sub
    if args.info is not None:
        from ..identity import check_info

        try:
            claims["info"] = check_info(json.loads(args.info))
        except ValueError as exc:  # json.JSONDecodeError is one too
            print(f"torchannels: --info: {exc}", file=sys.stderr)
            return 2
    print(encode_token(claims, key, kid=args.kid))
    return 0


def _signing_key(args: argparse.Namespace, env: Mapping[str, str]) -> object | None:
    """The secret or private key ``token`` signs with; None after saying why not."""
    if args.private_key is None:
        secret = args.secret or env.get("TORCHANNELS_TOKEN_SECRET")
        if not secret:
            print(
                "torchannels: give the secret (--secret or TORCHANNELS_TOKEN_SECRET) "
                "or --private-key",
                file=sys.stderr,
            )
        return secret or None
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from ..token_keys import algorithm_for

    try:
        with open(args.private_key, "rb") as f:
            key = load_pem_private_key(f.read(), password=None)
        algorithm_for(key)
    except OSError as exc:
        print(f"torchannels: --private-key {args.private_key}: {exc.strerror}", file=sys.stderr)
        return None
    except (ValueError, TypeError) as exc:
        print(f"torchannels: --private-key {args.private_key}: {exc}", file=sys.stderr)
        return None
    return key


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``torchannels`` command: ``serve``, ``publish`` and ``token``.

::

    torchannels serve --api-key s3cret           # a server on http://127.0.0.1:8090/
    torchannels publish news '{"text": "hi"}'    # publish through its API
    torchannels token --channel 'chat:*'         # a subscription token for testing
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from .. import __version__
from .config import ConfigError, add_arguments, load_config
from .run import serve

DEFAULT_URL = "http://127.0.0.1:8090"


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
    parser = argparse.ArgumentParser(
        prog="torchannels", description="Real-time channels for Tornado: a standalone server."
    )
    parser.add_argument("--version", action="version", version=f"torchannels {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the standalone server (subscriptions, publish API, demo page)",
        description="Run the standalone server. Every option can also come from an environment "
        "variable or a TOML file; flags win over the environment, which wins over the file.",
    )
    add_arguments(serve)

    publish = commands.add_parser(
        "publish",
        help="publish a JSON message through a server's API",
        description="Publish one message to one channel through a running server's HTTP API.",
    )
    publish.add_argument("channel", help="the channel to publish to")
    publish.add_argument("message", help="the message: a JSON object, or - to read stdin")
    publish.add_argument(
        "--url", help=f"the server's base URL (env TORCHANNELS_URL; default {DEFAULT_URL})"
    )
    publish.add_argument("--api-key", help="the server's API key (env TORCHANNELS_API_KEY)")

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
    token.add_argument("--secret", help="the shared secret (env TORCHANNELS_TOKEN_SECRET)")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(args, env)
            if config.metrics:
                try:
                    from . import metrics  # noqa: F401 - fail now, not at the first scrape
                except ImportError as exc:
                    print(f"torchannels: {exc}", file=sys.stderr)
                    return 2
            logging.basicConfig(
                level=config.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
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

                return run_workers(config)
            return asyncio.run(serve(config))  # from .run
        if args.command == "publish":
            return publish(args, env)
        return token(args, env)
    except ConfigError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 2


def publish(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    text = sys.stdin.read() if args.message == "-" else args.message
    try:
        data = json.loads(text)
    except ValueError as exc:
        print(f"torchannels: the message is not JSON: {exc}", file=sys.stderr)
        return 2
    url = (args.url or env.get("TORCHANNELS_URL") or DEFAULT_URL).rstrip("/") + "/api/publish"
    key = args.api_key or env.get("TORCHANNELS_API_KEY")
    if not key:
        print("torchannels: give the API key (--api-key or TORCHANNELS_API_KEY)", file=sys.stderr)
        return 2
    body = json.dumps({"channel": args.channel, "data": data}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        print(f"torchannels: {exc.code} {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"torchannels: cannot reach {url}: {exc}", file=sys.stderr)
        return 1


def token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ..errors import ChannelNameError
    from ..tokens import check_pattern, encode_token

    secret = args.secret or env.get("TORCHANNELS_TOKEN_SECRET")
    if not secret:
        print(
            "torchannels: give the secret (--secret or TORCHANNELS_TOKEN_SECRET)", file=sys.stderr
        )
        return 2
    try:
        channels = [check_pattern(c) for c in args.channel]
    except ChannelNameError as exc:
        print(f"torchannels: {exc}", file=sys.stderr)
        return 2
    claims: dict[str, object] = {"exp": int(time.time() + args.ttl), "channels": channels}
    if args.sub:
        claims["sub"] = args.sub
    print(encode_token(claims, secret))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Where the command-line tools find the server's API: ``--url`` (or
``TORCHANNELS_URL``) and ``--api-key`` (or ``TORCHANNELS_API_KEY``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from ..client.publisher import Publisher


def api_target(
    args: argparse.Namespace, env: Mapping[str, str], default_url: str
) -> tuple[str, str] | None:
    """The server's base URL and the API key, or None (said on stderr) without a key."""
    key = args.api_key or env.get("TORCHANNELS_API_KEY")
    if not key:
        print("torchannels: give the API key (--api-key or TORCHANNELS_API_KEY)", file=sys.stderr)
        return None
    return (args.url or env.get("TORCHANNELS_URL") or default_url).rstrip("/"), key


def api_publisher(
    args: argparse.Namespace, env: Mapping[str, str], default_url: str
) -> Publisher | None:
    """A :class:`Publisher` of the server's API, or None (said) without a key."""
    target = api_target(args, env, default_url)
    return None if target is None else Publisher(*target)

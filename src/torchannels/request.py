"""Parsing a subscriber's request: transport, channels, cursor, timeout, ping.

Every problem becomes a :class:`~torchannels.errors.BadRequest` with a code
from errors.py; the handler answers it with HTTP 400 and a JSON body.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .errors import (
    BAD_PARAMETER,
    INVALID_CHANNEL,
    NO_CHANNELS,
    REQUEST_TOO_LARGE,
    TOO_MANY_CHANNELS,
    UNKNOWN_TRANSPORT,
    BadRequest,
    ChannelNameError,
)
from .protocol import Position, check_channel, parse_cursor
from .settings import Settings

DEFAULT_TRANSPORT = "longpoll"


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    transport: str
    channels: list[str]
    cursor: dict[str, Position]
    timeout: float | None
    #: Keep-alive period the client asked for, clamped to ``ping_bounds``;
    #: None: the server's ``ping_interval``.
    ping: float | None = None
    #: SSE only: write ``id:`` lines (``ids=0``: none; the client keeps its cursor).
    ids: bool = True
    #: Poll and long-poll: the signed client id of an earlier answer (unchecked).
    client: str | None = None


def _one(args: Mapping[str, list[bytes]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(BAD_PARAMETER, f"parameter {name!r} given {len(values)} times")
    return _text(values[0], name)


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(BAD_PARAMETER, f"parameter {name!r} is not UTF-8") from None


def _seconds(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0:  # also refuses NaN
        raise BadRequest(BAD_PARAMETER, f"{name} must be a positive number of seconds")
    return value


def parse_ping(raw: str | None, settings: Settings) -> float | None:
    """The ``ping`` parameter: a positive number of seconds, clamped to
    ``settings.ping_bounds``; None when absent (the server's interval).

    >>> parse_ping("1", Settings()), parse_ping("20", Settings()), parse_ping(None, Settings())
    (5.0, 20.0, None)
    """
    if raw is None:
        return None
    low, high = settings.ping_bounds
    return min(max(_seconds(raw, "ping"), low), high)


def check_channels(names: list[object], limit: int) -> list[str]:
    """Validate channel names, drop repeats, and enforce ``limit``.

    The names are interned: every connection to a channel keys its state
    with the one string, not a copy of its own per connection."""
    channels: list[str] = []
    for name in names:
        try:
            check_channel(name)
        except ChannelNameError as exc:
            raise BadRequest(INVALID_CHANNEL, str(exc)) from None
        assert isinstance(name, str)
        if name not in channels:
            channels.append(sys.intern(name))
        if len(channels) > limit:
            raise BadRequest(TOO_MANY_CHANNELS, f"more than {limit} channels in one request")
    return channels


def query_names(args: Mapping[str, list[bytes]]) -> list[str]:
    """The names given by ``channel`` and ``channels`` query parameters, unchecked."""
    names = [_text(v, "channel") for v in args.get("channel", [])]
    for value in args.get("channels", []):
        names.extend(n for n in _text(value, "channels").split(",") if n)
    return names


def query_channels(args: Mapping[str, list[bytes]], limit: int) -> list[str]:
    """The channels named by ``channel`` and ``channels`` query parameters."""
    return check_channels(list(query_names(args)), limit)


def parse_request(
    args: Mapping[str, list[bytes]],
    query_size: int,
    last_event_id: str | None,
    settings: Settings,
    transports: Collection[str],
) -> SubscribeRequest:
    """Validate a subscribe request given as query arguments (see protocol.md)."""
    size = query_size + len(last_event_id or "")
    if size > settings.max_request_bytes:
        raise BadRequest(
            REQUEST_TOO_LARGE,
            f"request carries {size} bytes, more than {settings.max_request_bytes}",
        )
    # Interned: the connection's identity keeps the name, one string for all.
    transport = sys.intern(_one(args, "transport") or DEFAULT_TRANSPORT)
    if transport not in transports:
        raise BadRequest(
            UNKNOWN_TRANSPORT,
            f"unknown transport {transport!r}; use one of {', '.join(sorted(transports))}",
        )
    channels = query_channels(args, settings.max_channels)
    cursor = parse_cursor(_one(args, "cursor") or "", settings.max_channels)
    if last_event_id:
        # The browser's Last-Event-ID is newer than the cursor in the URL it
        # reconnects to; its entries win.
        cursor.update(parse_cursor(last_event_id, settings.max_channels))
    if not channels:
        channels = check_channels(list(cursor), settings.max_channels)
    if not channels:
        raise BadRequest(NO_CHANNELS, "name at least one channel (channel=NAME)")
    timeout: float | None = None
    raw_timeout = _one(args, "timeout")
    if raw_timeout is not None:
        # Longer than the server allows is capped, not refused: a client
        # cannot know the server's maximum.
        timeout = min(_seconds(raw_timeout, "timeout"), settings.longpoll_timeout)
    ping = parse_ping(_one(args, "ping"), settings)
    ids = _one(args, "ids")
    if ids not in (None, "0", "1"):
        raise BadRequest(BAD_PARAMETER, "ids must be 0 or 1")
    client = _one(args, "client")
    for name, values in args.items():  # the app's own parameters (``token``) too
        for raw in values:
            _text(raw, name)
    return SubscribeRequest(
        transport, channels, cursor, timeout, ping, ids=ids != "0", client=client
    )

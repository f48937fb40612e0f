"""Channel options by pattern: presence, join/leave frames and history.

A pattern is an exact channel name or a prefix ending in ``*``
(``"room:*"``). A channel takes the options of its most specific pattern:
an exact name beats every prefix, and the longest prefix beats shorter
ones. Options are not merged across patterns: the winner's table is the
whole answer, the other keys keep their defaults.

>>> table = ChannelOptionsTable()
>>> table.set("room:*", presence=True, join_leave=True)
>>> table.set("room:lobby", presence=True)
>>> table.get("room:1").join_leave, table.get("room:lobby").join_leave
(True, False)
>>> table.get("news").presence
False

Options are configuration, read by every process from the same source (the
TOML file, or code at start-up); they are not stored with the channel. Two
processes that disagree serve the channel each by their own options: one
may announce joins that the other never shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ChannelNameError
from .protocol import check_channel

#: The keys of a channel table, with what each means (``serve --help``).
OPTION_HELP: dict[str, str] = {
    "presence": "true: track who is in the channel (counts, members, subscribed snapshot)",
    "join_leave": "true: send presence frames of joins and leaves (needs presence = true)",
    "history_size": "messages of history kept (0: none); default --history-size",
    "history_ttl": "seconds history is kept; default --history-ttl",
    "history_meta_ttl": "seconds an idle channel's position is kept; default --history-meta-ttl",
    "user_limited": "true: only the users named after the prefix may read (dm:42$57: 42 and 57)",
}

#: Separates the user ids in a ``user_limited`` channel's name (``dm:42$57``).
#: Not ``,``: cursors use it, so names never hold it.
USER_SEPARATOR = "$"


#: The values of the ``publish`` option (docs/api.md#channel-options-by-pattern).
PUBLISH_POLICIES = ("subscribers", "token", "proxy")


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """The options of one channel (all off or default unless configured)."""

    presence: bool = False
    #: Implies presence: ``join_leave=True`` with ``presence=False`` is an error.
    join_leave: bool = False
    #: None: the broker's default history policy.
    history_size: int | None = None
    history_ttl: float | None = None
    history_meta_ttl: float | None = None
    #: Only the users the name lists after the pattern's prefix may read.
    user_limited: bool = False
    #: Who may publish from a client: ``"subscribers"``, ``"token"``,
    #: ``"proxy"``, or None (nobody).
    publish: str | None = None

    def __post_init__(self) -> None:
        for name in ("presence", "join_leave", "user_limited"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean (true or false)")
        if self.publish is not None and self.publish not in PUBLISH_POLICIES:
            raise ValueError(f"publish must be one of {', '.join(PUBLISH_POLICIES)}")
        if self.join_leave and not self.presence:
            raise ValueError("join_leave needs presence = true")
        size = self.history_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError("history_size must be an integer >= 0")
        for name in ("history_ttl", "history_meta_ttl"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            low_ok = value > 0 if name == "history_ttl" else value >= 0
            if not math.isfinite(value) or not low_ok:
                raise ValueError(f"{name} must be {'> 0' if name == 'history_ttl' else '>= 0'}")

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> ChannelOptions:
        """Options from a mapping; ValueError naming an unknown key or bad value."""
        known = {f.name for f in fields(cls)}
        for key in options:
            if key not in known:
                raise ValueError(f"{key}: unknown option (known: {', '.join(sorted(known))})")
        values = dict(options)
        for key in ("history_ttl", "history_meta_ttl"):
            if isinstance(values.get(key), int) and not isinstance(values[key], bool):
                values[key] = float(values[key])
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(str(exc)) from None


def check_pattern(pattern: object) -> str:
    """``pattern`` if it is a channel name, a prefix ending in ``*``, or
    ``*`` (every channel); ValueError otherwise."""
    if pattern == "*":
        return "*"
    body = pattern[:-1] if isinstance(pattern, str) and pattern.endswith("*") else pattern
    try:
        check_channel(body)
    except ChannelNameError:
        raise ValueError(
            f"pattern {pattern!r} is not a channel name or a prefix ending in '*'"
        ) from None
    assert isinstance(pattern, str)
    return pattern


def check_user_limited(pattern: str, options: ChannelOptions) -> None:
    """ValueError if ``options`` limit an exact name to users: the users are
    named after a prefix, so ``user_limited`` needs a pattern ending in ``*``."""
    if options.user_limited and not pattern.endswith("*"):
        raise ValueError(
            f"user_limited needs a prefix pattern ending in '*' (like 'user:*'), not {pattern!r}"
        )


class ChannelOptionsTable:
    """Options by pattern; :meth:`get` answers the most specific match."""

    __slots__ = ("_exact", "_prefixes")

    def __init__(self) -> None:
        self._exact: dict[str, ChannelOptions] = {}
        #: (prefix, options), longest prefix first.
        self._prefixes: list[tuple[str, ChannelOptions]] = []

    def set(self, pattern: str, **options: Any) -> None:
        """Give channels matching ``pattern`` these options (replacing that
        pattern's earlier ones). ValueError names a bad pattern, key or value."""
        check_pattern(pattern)
        made = ChannelOptions.of(options)
        check_user_limited(pattern, made)
        if not pattern.endswith("*"):
            self._exact[pattern] = made
            return
        prefix = pattern[:-1]
        rows = [row for row in self._prefixes if row[0] != prefix]
        rows.append((prefix, made))
        rows.sort(key=lambda row: len(row[0]), reverse=True)
        self._prefixes = rows

    def get(self, channel: str) -> ChannelOptions:
        """The options of ``channel``: its exact entry, else the longest
        matching prefix's, else the defaults."""
        exact = self._exact.get(channel)
        if exact is not None:
            return exact
        for prefix, options in self._prefixes:
            if channel.startswith(prefix):
                return options
        return _DEFAULT

    def users_of(self, channel: str) -> frozenset[str] | None:
        """The users who alone may read ``channel`` if its options are
        ``user_limited`` (the name after the matching prefix, split on
        :data:`USER_SEPARATOR`, empty parts dropped), else None.

        >>> table = ChannelOptionsTable()
        >>> table.set("dm:*", user_limited=True)
        >>> sorted(table.users_of("dm:42$57")), table.users_of("room:1")
        (['42', '57'], None)
        """
        if channel in self._exact:
            return None  # exact patterns never limit to users (see set)
        for prefix, options in self._prefixes:
            if channel.startswith(prefix):
                if not options.user_limited:
                    return None
                parts = channel[len(prefix) :].split(USER_SEPARATOR)
                return frozenset(part for part in parts if part)
        return None

    def any_presence(self) -> bool:
        """True if some pattern turns presence on."""
        return any(o.presence for o in self._exact.values()) or any(
            o.presence for _, o in self._prefixes
        )

    def patterns(self) -> dict[str, ChannelOptions]:
        """Every configured pattern and its options."""
        out = dict(self._exact)
        out.update((prefix + "*", options) for prefix, options in self._prefixes)
        return out


_DEFAULT = ChannelOptions()

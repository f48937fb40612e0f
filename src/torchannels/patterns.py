"""Channel patterns: an exact channel name, or a prefix followed by ``*``.

``"chat:*"`` matches every channel starting with ``chat:``; ``"*"`` matches
all. Tokens' ``channels`` claims and the server's anonymous channels use
them (:class:`ChannelPatterns`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import ChannelNameError
from .protocol import CHANNEL_RE, MAX_CHANNEL_LENGTH, check_channel

__all__ = ["ChannelPatterns", "check_pattern"]


def check_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid channel pattern, else raise
    :class:`ChannelNameError`.

    >>> check_pattern("chat:*")
    'chat:*'
    """
    if isinstance(pattern, str) and "*" in pattern[:-1]:
        raise ChannelNameError(f"invalid channel pattern {pattern!r}: '*' may only end it")
    if isinstance(pattern, str) and pattern.endswith("*"):
        prefix = pattern[:-1]
        if prefix == "" or CHANNEL_RE.fullmatch(prefix) is not None:
            return pattern
        raise ChannelNameError(
            f"invalid channel pattern {pattern!r}: before the final '*' use up to "
            f"{MAX_CHANNEL_LENGTH} characters from A-Z a-z 0-9 _ - . : / @ # $"
        )
    try:
        return check_channel(pattern)
    except ChannelNameError as exc:
        raise ChannelNameError(f"{exc} (or a prefix ending in '*')") from None


class ChannelPatterns:
    """A set of channel patterns: exact names and ``prefix*`` wildcards.

    >>> anonymous = ChannelPatterns(["demo:*", "news"])
    >>> anonymous.matches("demo:chat"), anonymous.matches("news"), anonymous.matches("newsy")
    (True, True, False)
    """

    __slots__ = ("_exact", "_prefixes", "patterns")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        if isinstance(patterns, str):  # a lone string would be read as characters
            raise TypeError("ChannelPatterns takes an iterable of patterns, not a string")
        checked = tuple(dict.fromkeys(check_pattern(p) for p in patterns))
        #: The patterns, validated, in their first order, without duplicates.
        self.patterns: tuple[str, ...] = checked
        self._exact = frozenset(p for p in checked if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in checked if p.endswith("*"))

    def matches(self, channel: str) -> bool:
        """Whether some pattern covers ``channel`` (checked by the caller)."""
        return channel in self._exact or channel.startswith(self._prefixes)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __iter__(self) -> Iterator[str]:
        return iter(self.patterns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChannelPatterns):
            return NotImplemented
        return set(self.patterns) == set(other.patterns)

    def __hash__(self) -> int:
        return hash(frozenset(self.patterns))

    def __repr__(self) -> str:
        return f"ChannelPatterns({list(self.patterns)!r})"

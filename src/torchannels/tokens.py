"""Signed subscription tokens: JWT (RFC 7519) with HS256 only, standard library only.

An app backend that shares a secret with the hub issues a token naming the
channels a subscriber may read; the hub checks it without calling back::

    {"sub": "user-42", "exp": 1767225600, "channels": ["chat:*", "news"]}

A channel *pattern* is an exact channel name, or a prefix followed by ``*``
(``"chat:*"`` matches every channel starting with ``chat:``; ``"*"`` matches
all). The same syntax configures the hub's anonymous channels
(:class:`ChannelPatterns`).

Only HS256 is accepted: the algorithm is fixed by the hub, never chosen by the
token, so ``alg: none`` and algorithm-confusion tokens fail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ChannelNameError, TorChannelsError
from .identity import check_info
from .protocol import CHANNEL_RE, MAX_CHANNEL_LENGTH, check_channel

# Codes of TokenError; mirrored in docs/protocol.md and the JS client.
TOKEN_MALFORMED = "token_malformed"
TOKEN_BAD_SIGNATURE = "token_bad_signature"
TOKEN_EXPIRED = "token_expired"
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
TOKEN_BAD_ALGORITHM = "token_bad_algorithm"
#: The ``info`` claim is not a JSON object of at most 1 KiB (compact JSON).
INVALID_INFO = "invalid_info"

#: Longest token accepted, in characters; bounds the work an anonymous
#: request can cause before the signature is checked.
MAX_TOKEN_LENGTH = 8192

_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]*")
_HEADER = {"alg": "HS256", "typ": "JWT"}


class TokenError(TorChannelsError):
    """A token was refused; ``code`` is one of the ``TOKEN_*`` constants.

    >>> TokenError(TOKEN_EXPIRED, "token expired").code
    'token_expired'
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


@dataclass(frozen=True)
class Claims:
    """The verified content of a token.

    >>> claims = Claims(subject="u1", expires=2e9, channels=("chat:*",))
    >>> claims.allows("chat:lobby"), claims.allows("admin")
    (True, False)
    """

    #: ``sub``: who the subscriber is, as the issuing backend names them.
    subject: str | None
    #: ``exp``: Unix time at which the token (and subscriptions made with it) end.
    expires: float
    #: ``channels``: patterns of the channels the token grants (none if absent).
    channels: tuple[str, ...] = ()
    #: Every claim as decoded, including ones torchannels does not interpret.
    raw: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)
    _patterns: ChannelPatterns = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_patterns", ChannelPatterns(self.channels))

    @property
    def info(self) -> Mapping[str, Any] | None:
        """``info``: the user's info object (checked by :func:`decode_token`)."""
        info = self.raw.get("info")
        return info if isinstance(info, dict) else None

    def allows(self, channel: str) -> bool:
        """Whether the token grants reading ``channel``."""
        return self._patterns.matches(channel)


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(key, bytes):
        raise TypeError(f"the secret must be str or bytes, not {type(secret).__name__}")
    if not key:
        raise ValueError("the token secret is empty")
    return key


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(signing_input: str, key: bytes) -> str:
    return _b64encode(hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest())


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; refusing them avoids the ambiguity.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise TokenError(TOKEN_MALFORMED, f"token {what} is not base64url JSON: {exc}") from None
    except RecursionError:  # "[[[[..." within the length limit: refused, not a 500
        raise TokenError(TOKEN_MALFORMED, f"token {what} nests too deeply") from None
    if not isinstance(value, dict):
        raise TokenError(TOKEN_MALFORMED, f"token {what} is not a JSON object")
    return value


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise TokenError(TOKEN_MALFORMED, f"claim {name!r} must be a finite number of seconds")


def encode_token(claims: Mapping[str, Any], secret: str | bytes) -> str:
    """Sign ``claims`` with HS256 and return a compact JWT.

    Claims are not checked here (tests sign broken ones on purpose), but the
    result must stay under :data:`MAX_TOKEN_LENGTH` and be JSON.

    >>> token = encode_token({"sub": "u1", "exp": 2e9, "channels": ["chat:*"]}, "s3cret")
    >>> decode_token(token, "s3cret", now=1e9).channels
    ('chat:*',)
    """
    header = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = json.dumps(dict(claims), separators=(",", ":"), allow_nan=False)
    signing_input = f"{header}.{_b64encode(body.encode())}"
    token = f"{signing_input}.{_sign(signing_input, _key(secret))}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"token is {len(token)} characters, more than {MAX_TOKEN_LENGTH}")
    return token


def decode_token(
    token: str, secret: str | bytes, *, now: float | None = None, leeway: float = 0
) -> Claims:
    """Verify ``token`` and return its :class:`Claims`, or raise :class:`TokenError`.

    Checks, in order: size and shape, ``alg`` (HS256 only), the signature
    (in constant time), then the claims: ``exp`` is required, ``nbf`` and
    ``iat`` are checked when present, all with ``leeway`` seconds of clock skew.

    >>> token = encode_token({"exp": 100}, "s3cret")
    >>> decode_token(token, "s3cret", now=99).expires
    100.0
    >>> decode_token(token, "s3cret", now=100)
    Traceback (most recent call last):
    ...
    torchannels.tokens.TokenError: token expired at 100.0
    """
    key = _key(secret)
    if not math.isfinite(leeway) or leeway < 0:
        raise ValueError("leeway must be a finite number >= 0")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(TOKEN_MALFORMED, f"token must be a string of at most {MAX_TOKEN_LENGTH}")
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT_RE.fullmatch(part) for part in parts):
        raise TokenError(TOKEN_MALFORMED, "token is not three base64url segments joined by '.'")
    header = _decode_segment(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenError(TOKEN_MALFORMED, "token header has no 'alg'")
    if alg != "HS256":
        raise TokenError(TOKEN_BAD_ALGORITHM, f"token algorithm {alg!r} refused: only HS256")
    if "crit" in header:  # RFC 7515 4.1.11: refuse extensions we do not understand
        raise TokenError(TOKEN_MALFORMED, "token header has unsupported 'crit' extensions")
    signing_input = f"{parts[0]}.{parts[1]}"
    # Compare the canonical text, not decoded bytes, so no second spelling of
    # the same signature (unused trailing base64 bits) is accepted.
    if not hmac.compare_digest(_sign(signing_input, key), parts[2]):
        raise TokenError(TOKEN_BAD_SIGNATURE, "token signature does not match")
    claims = _decode_segment(parts[1], "payload")
    return _check_claims(claims, time.time() if now is None else now, leeway)


def _check_claims(claims: dict[str, Any], now: float, leeway: float) -> Claims:
    expires = _number(claims, "exp")
    if expires is None:
        raise TokenError(TOKEN_MALFORMED, "token has no 'exp' claim")
    not_before = _number(claims, "nbf")
    issued = _number(claims, "iat")
    subject = claims.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise TokenError(TOKEN_MALFORMED, "claim 'sub' must be a string")
    channels = claims.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise TokenError(TOKEN_MALFORMED, "claim 'channels' must be a list of strings")
    try:
        patterns = ChannelPatterns(channels).patterns
    except ChannelNameError as exc:
        raise TokenError(TOKEN_MALFORMED, f"claim 'channels': {exc}") from None
    try:
        check_info(claims.get("info"))
    except ValueError as exc:
        raise TokenError(INVALID_INFO, f"claim 'info': {exc}") from None
    if now >= expires + leeway:
        raise TokenError(TOKEN_EXPIRED, f"token expired at {expires}")
    if not_before is not None and now < not_before - leeway:
        raise TokenError(TOKEN_NOT_YET_VALID, f"token not valid before {not_before}")
    if issued is not None and issued > now + leeway:
        raise TokenError(TOKEN_NOT_YET_VALID, f"token issued in the future ({issued})")
    return Claims(subject=subject, expires=expires, channels=patterns, raw=claims)

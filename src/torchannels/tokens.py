"""Signed subscription tokens: JWT (RFC 7519), verified with PyJWT.

An app backend issues a token naming the channels a subscriber may read,
signed with a secret it shares with the hub (HS256) or a private key whose
public key the hub has (RS256, ES256/384/512, EdDSA: see
:mod:`torchannels.token_keys`); the hub checks it without calling back::

    {"sub": "user-42", "exp": 1767225600, "channels": ["chat:*", "news"]}

A channel *pattern* is an exact channel name, or a prefix followed by ``*``
(``"chat:*"`` matches every channel starting with ``chat:``; ``"*"`` matches
all). The same syntax configures the hub's anonymous channels
(:class:`ChannelPatterns`).

The algorithms are fixed by the hub's keys, never chosen by the token, so
``alg: none`` and algorithm-confusion tokens fail. PyJWT checks the
signature; the shape of the token, strict JSON and the claims are checked here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from .errors import ChannelNameError, TorChannelsError
from .identity import check_info
from .patterns import ChannelPatterns as ChannelPatterns  # also importable from here
from .patterns import check_pattern as check_pattern
from .strict_json import strict_loads
from .token_keys import JwksKeys, VerifyKey, algorithm_for, secret_key

# Codes of TokenError; mirrored in docs/protocol.md and the JS client.
TOKEN_MALFORMED = "token_malformed"
TOKEN_BAD_SIGNATURE = "token_bad_signature"
TOKEN_EXPIRED = "token_expired"
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
TOKEN_BAD_ALGORITHM = "token_bad_algorithm"
#: The token's ``kid`` names no key the hub has (or the JWKS keys are out of reach).
TOKEN_UNKNOWN_KEY = "token_unknown_key"
#: ``aud`` does not name the hub's audience, or ``iss`` is not its issuer.
TOKEN_BAD_AUDIENCE = "token_bad_audience"
TOKEN_BAD_ISSUER = "token_bad_issuer"
#: The ``info`` claim is not a JSON object of at most 1 KiB (compact JSON).
INVALID_INFO = "invalid_info"

#: Longest token accepted, in characters; bounds the work an anonymous
#: request can cause before the signature is checked.
MAX_TOKEN_LENGTH = 8192

_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(TorChannelsError):
    """A token was refused; ``code`` is one of the ``TOKEN_*`` constants.

    >>> TokenError(TOKEN_EXPIRED, "token expired").code
    'token_expired'
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
    #: ``publish``: patterns of the channels the token may publish to from a
    #: client, on channels whose ``publish`` option is ``"token"``.
    publish: tuple[str, ...] = ()
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

    @property
    def issued(self) -> float | None:
        """``iat``: when the token was issued (checked to be a number)."""
        issued = self.raw.get("iat")
        return float(issued) if isinstance(issued, int | float) else None

    @property
    def token_id(self) -> str | None:
        """``jti``: the token's own id, if it is a string."""
        jti = self.raw.get("jti")
        return jti if isinstance(jti, str) and jti else None

    def allows(self, channel: str) -> bool:
        """Whether the token grants reading ``channel``."""
        return self._patterns.matches(channel)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _decode_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        data = _b64decode(segment)
        value = strict_loads(data)
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


def encode_token(claims: Mapping[str, Any], key: Any, *, kid: str | None = None) -> str:
    """Sign ``claims`` and return a compact JWT: HS256 with a str or bytes
    secret, else with a cryptography private key in its algorithm
    (:func:`~torchannels.token_keys.algorithm_for`), naming ``kid`` if given.

    Claims are not checked here (tests sign broken ones on purpose), but the
    result must stay under :data:`MAX_TOKEN_LENGTH` and be JSON.

    >>> token = encode_token({"sub": "u1", "exp": 2e9, "channels": ["chat:*"]}, "s3cret")
    >>> decode_token(token, "s3cret", now=1e9).channels
    ('chat:*',)
    """
    if isinstance(key, str | bytes):
        signing_key: Any = secret_key(key).key
        algorithm = "HS256"
    else:
        signing_key, algorithm = key, algorithm_for(key)
    body = json.dumps(dict(claims), separators=(",", ":"), allow_nan=False).encode()
    headers = None if kid is None else {"kid": kid}
    with warnings.catch_warnings():
        # The secret's length is the operator's choice (SECURITY.md advises
        # 32+ bytes); tests sign with short ones.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        token = jwt.PyJWS().encode(body, signing_key, algorithm, headers=headers)
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"token is {len(token)} characters, more than {MAX_TOKEN_LENGTH}")
    return token


def token_header(token: object) -> dict[str, Any]:
    """The header of ``token`` after the checks of its size and shape, or
    :class:`TokenError` (``token_malformed``)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(TOKEN_MALFORMED, f"token must be a string of at most {MAX_TOKEN_LENGTH}")
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT_RE.fullmatch(part) for part in parts):
        raise TokenError(TOKEN_MALFORMED, "token is not three base64url segments joined by '.'")
    header = _decode_segment(parts[0], "header")
    if not isinstance(header.get("alg"), str):
        raise TokenError(TOKEN_MALFORMED, "token header has no 'alg'")
    if "crit" in header:  # RFC 7515 4.1.11: refuse extensions we do not understand
        raise TokenError(TOKEN_MALFORMED, "token header has unsupported 'crit' extensions")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenError(TOKEN_MALFORMED, "token header 'kid' must be a string")
    return header


@dataclass(frozen=True)
class TokenVerifier:
    """What the hub checks tokens with: keys without a ``kid`` (an HS256
    secret, a public key), the keys of a JWKS URL (chosen by the token's
    ``kid``), and the ``aud``/``iss`` every token must name.

    >>> verifier = TokenVerifier([secret_key("s3cret")], audience="hub")
    >>> verifier.verify(encode_token({"exp": 2e9, "aud": "hub"}, "s3cret"), now=1e9).expires
    2000000000.0
    """

    keys: Sequence[VerifyKey] = ()
    jwks: JwksKeys | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.leeway) or self.leeway < 0:
            raise ValueError("leeway must be a finite number >= 0")
        if not self.keys and self.jwks is None:
            raise ValueError("a token verifier needs a key or a JWKS URL")

    async def prepare(self, token: str) -> None:
        """Fetch the JWKS keys if ``token`` names a ``kid`` not cached yet
        (at most once per interval); a bad token is left to :meth:`verify`."""
        if self.jwks is not None:
            try:
                kid = token_header(token).get("kid")
            except TokenError:
                return
            await self.jwks.refresh_for(kid)

    def key_for(self, header: Mapping[str, Any]) -> VerifyKey:
        """The key that must have signed a token with ``header``: the JWKS
        key its ``kid`` names, else the configured key of its ``alg``."""
        alg, kid = header["alg"], header.get("kid")
        jwks = {} if self.jwks is None else self.jwks.current()
        if kid is not None and kid in jwks:
            key = jwks[kid]
            if key.algorithm != alg:
                raise TokenError(
                    TOKEN_BAD_ALGORITHM, f"key {kid!r} is for {key.algorithm}, not {alg!r}"
                )
            return key
        for key in self.keys:
            if key.algorithm == alg:
                return key
        if self.jwks is not None and (alg[:2] in ("RS", "PS", "ES") or alg == "EdDSA"):
            if not jwks:
                reason = self.jwks.error or "keys older than the stale bound"
                raise TokenError(TOKEN_UNKNOWN_KEY, f"the token keys are unavailable ({reason})")
            raise TokenError(TOKEN_UNKNOWN_KEY, f"no token key has kid {kid!r}")
        allowed = sorted({k.algorithm for k in self.keys} | {k.algorithm for k in jwks.values()})
        raise TokenError(
            TOKEN_BAD_ALGORITHM, f"token algorithm {alg!r} refused: only {', '.join(allowed)}"
        )

    def verify(self, token: str, now: float | None = None) -> Claims:
        """The token's :class:`Claims`, or :class:`TokenError`."""
        header = token_header(token)
        key = self.key_for(header)
        signing_input, _, signature = token.rpartition(".")
        try:
            signed = _b64decode(signature)
        except binascii.Error:
            signed = None
        # One spelling per signature: unused trailing base64 bits are refused.
        if signed is None or _b64encode(signed) != signature:
            raise TokenError(TOKEN_BAD_SIGNATURE, "token signature does not match")
        if not key.verify(signing_input.encode("ascii"), signed):
            raise TokenError(TOKEN_BAD_SIGNATURE, "token signature does not match")
        claims = _decode_segment(token.split(".")[1], "payload")
        result = _check_claims(claims, time.time() if now is None else now, self.leeway)
        self._check_audience(claims)
        return result

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        if self.audience is not None:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud
            if not isinstance(auds, list) or self.audience not in auds:
                raise TokenError(TOKEN_BAD_AUDIENCE, f"token 'aud' does not name {self.audience!r}")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise TokenError(TOKEN_BAD_ISSUER, f"token 'iss' is not {self.issuer!r}")


def decode_token(
    token: str,
    key: str | bytes | VerifyKey,
    *,
    now: float | None = None,
    leeway: float = 0,
    audience: str | None = None,
    issuer: str | None = None,
) -> Claims:
    """Verify ``token`` with one key (a str or bytes HS256 secret, or a
    :class:`~torchannels.token_keys.VerifyKey`) and return its :class:`Claims`,
    or raise :class:`TokenError`.

    Checks, in order: size and shape, ``alg`` (the key's only), the
    signature, then the claims: ``exp`` is required, ``nbf`` and ``iat`` are
    checked when present, all with ``leeway`` seconds of clock skew; then
    ``aud`` and ``iss`` when ``audience`` or ``issuer`` is given.

    >>> token = encode_token({"exp": 100}, "s3cret")
    >>> decode_token(token, "s3cret", now=99).expires
    100.0
    >>> decode_token(token, "s3cret", now=100)
    Traceback (most recent call last):
    ...
    torchannels.tokens.TokenError: token expired at 100.0
    """
    verify_key = key if isinstance(key, VerifyKey) else secret_key(key)
    verifier = TokenVerifier([verify_key], audience=audience, issuer=issuer, leeway=leeway)
    return verifier.verify(token, now)


def _patterns_claim(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    """The channel patterns of claim ``name`` (none if absent), checked."""
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise TokenError(TOKEN_MALFORMED, f"claim {name!r} must be a list of strings")
    try:
        return ChannelPatterns(value).patterns
    except ChannelNameError as exc:
        raise TokenError(TOKEN_MALFORMED, f"claim {name!r}: {exc}") from None


def _check_claims(claims: dict[str, Any], now: float, leeway: float) -> Claims:
    expires = _number(claims, "exp")
    if expires is None:
        raise TokenError(TOKEN_MALFORMED, "token has no 'exp' claim")
    not_before = _number(claims, "nbf")
    issued = _number(claims, "iat")
    subject = claims.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise TokenError(TOKEN_MALFORMED, "claim 'sub' must be a string")
    patterns = _patterns_claim(claims, "channels")
    publish = _patterns_claim(claims, "publish")
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
    return Claims(subject=subject, expires=expires, channels=patterns, publish=publish, raw=claims)

"""Keys that verify subscription tokens, each with its one algorithm.

The algorithm of a key is fixed by the key, never by a token: an HS256
secret, a PEM public key (RSA: RS256; EC: ES256, ES384 or ES512 by curve;
Ed25519: EdDSA), or the keys of a JWKS document (:class:`JwksKeys`), whose
algorithm comes from their ``alg``, else their ``kty``/``crv``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import get_default_algorithms
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

log = logging.getLogger("torchannels.tokens")

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
#: Largest JWKS document accepted, in bytes.
MAX_JWKS_BYTES = 1 << 20
#: PyJWT's implementations, by JWS name (HS256, RS256, ES256, EdDSA, ...).
_PYJWT = get_default_algorithms()


@dataclass(frozen=True)
class VerifyKey:
    """A key and the one algorithm tokens it checks must be signed with."""

    algorithm: str
    key: Any  # bytes for HS256, else a cryptography public key
    kid: str | None = None
    _prepared: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            prepared = _PYJWT[self.algorithm].prepare_key(self.key)
        except (KeyError, jwt.PyJWTError) as exc:
            raise ValueError(f"not a key for {self.algorithm}: {exc}") from None
        object.__setattr__(self, "_prepared", prepared)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` signs ``signing_input`` (PyJWT's check, in
        constant time for HS256)."""
        return bool(_PYJWT[self.algorithm].verify(signing_input, self._prepared, signature))


def algorithm_for(key: object) -> str:
    """The JWS algorithm a cryptography key (public or private) signs with.

    >>> from cryptography.hazmat.primitives.asymmetric import ed25519
    >>> algorithm_for(ed25519.Ed25519PrivateKey.generate())
    'EdDSA'
    """
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        try:
            return _EC_ALGORITHMS[key.curve.name]
        except KeyError:
            raise ValueError(f"EC curve {key.curve.name} is not supported") from None
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(f"unsupported key type {type(key).__name__}: use RSA, EC or Ed25519")


def secret_key(secret: str | bytes) -> VerifyKey:
    """An HS256 key from a shared secret (str as UTF-8)."""
    key = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(key, bytes):
        raise TypeError(f"the secret must be str or bytes, not {type(secret).__name__}")
    if not key:
        raise ValueError("the token secret is empty")
    return VerifyKey("HS256", key)


def public_key(pem: bytes, kid: str | None = None) -> VerifyKey:
    """A key from a PEM public key (``-----BEGIN PUBLIC KEY-----``); ValueError
    if it is not one of the supported kinds."""
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    return VerifyKey(algorithm_for(key), key, kid)


def jwks_keys(document: object) -> dict[str, VerifyKey]:
    """The signing keys of a JWKS document, by ``kid``; symmetric (``oct``)
    keys, keys for encryption and keys without a ``kid`` are left out."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS document is a JSON object with a 'keys' list")
    keys: dict[str, VerifyKey] = {}
    for data in document["keys"]:
        if not isinstance(data, Mapping) or data.get("kty") == "oct":
            continue
        if data.get("use", "sig") != "sig" or not isinstance(data.get("kid"), str):
            continue
        try:
            jwk = jwt.PyJWK.from_dict(dict(data))
        except jwt.PyJWTError as exc:
            log.warning("JWKS key %r left out: %s", data.get("kid"), exc)
            continue
        algorithm = jwk.algorithm_name
        if algorithm.startswith("HS") or algorithm == "none":
            continue
        keys[data["kid"]] = VerifyKey(algorithm, jwk.key, data["kid"])
    return keys


class JwksKeys:
    """The keys of a JWKS URL, fetched with a timeout and cached.

    :meth:`refresh_for` fetches again when the cache is empty, older than
    ``max_age``, or lacks the ``kid`` a token names, at most once per
    ``min_interval`` seconds. When fetching fails, the last keys stay in use
    for ``max_stale`` seconds after they were fetched; then none are.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        min_interval: float = 30.0,
        max_age: float = 300.0,
        max_stale: float = 3600.0,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.min_interval = min_interval
        self.max_age = max_age
        self.max_stale = max_stale
        self.keys: dict[str, VerifyKey] = {}
        self.fetched: float | None = None  # monotonic time of the last success
        self.attempted: float | None = None
        self.error: str | None = "not fetched yet"
        self._fetching: asyncio.Future[None] | None = None

    def usable(self) -> bool:
        """Whether the cached keys are within ``max_stale`` of their fetch."""
        return self.fetched is not None and time.monotonic() - self.fetched <= self.max_stale

    def current(self) -> Mapping[str, VerifyKey]:
        return self.keys if self.usable() else {}

    def _due(self, kid: str | None) -> bool:
        now = time.monotonic()
        if self.attempted is not None and now - self.attempted < self.min_interval:
            return False
        if self.fetched is None or now - self.fetched > self.max_age:
            return True
        return kid is not None and kid not in self.keys

    async def refresh_for(self, kid: str | None) -> None:
        """Fetch the keys if due for a token naming ``kid``; never raises."""
        if self._fetching is None and self._due(kid):
            self._fetching = asyncio.ensure_future(self._fetch())
        if self._fetching is not None:
            fetching = self._fetching
            await asyncio.shield(fetching)

    async def _fetch(self) -> None:
        self.attempted = time.monotonic()
        try:
            request = HTTPRequest(
                self.url, connect_timeout=self.timeout, request_timeout=self.timeout
            )
            client = AsyncHTTPClient(force_instance=True, max_body_size=MAX_JWKS_BYTES)
            try:
                response = await client.fetch(request)
            finally:
                client.close()
            keys = jwks_keys(json.loads(response.body))
        except Exception as exc:  # any failure: keep the last keys, within max_stale
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("fetching token keys from %s failed: %s", self.url, self.error)
        else:
            self.keys, self.fetched, self.error = keys, time.monotonic(), None
        finally:
            self._fetching = None

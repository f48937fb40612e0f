"""Tokens signed with asymmetric keys and JWKS: real keys from `cryptography`,
a JWKS document served by a Tornado server on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from torchannels.token_keys import (
    MAX_JWKS_BYTES,
    JwksKeys,
    algorithm_for,
    jwks_keys,
    public_key,
    secret_key,
)
from torchannels.tokens import (
    TOKEN_BAD_ALGORITHM,
    TOKEN_BAD_AUDIENCE,
    TOKEN_BAD_ISSUER,
    TOKEN_BAD_SIGNATURE,
    TOKEN_UNKNOWN_KEY,
    TokenError,
    TokenVerifier,
    decode_token,
    encode_token,
)

NOW = 1_700_000_000.0
CLAIMS = {"sub": "u1", "exp": NOW + 60, "channels": ["chat:*"]}


def pem(private: Any) -> bytes:
    return private.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token, now=NOW)
    return info.value.code


KEYS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ES512": lambda: ec.generate_private_key(ec.SECP521R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("algorithm", sorted(KEYS))
def test_public_keys_verify_their_algorithm_only(algorithm: str) -> None:
    private = KEYS[algorithm]()
    key = public_key(pem(private))
    assert key.algorithm == algorithm == algorithm_for(private)
    verifier = TokenVerifier([key])
    claims = verifier.verify(encode_token(CLAIMS, private), now=NOW)
    assert (claims.subject, claims.channels) == ("u1", ("chat:*",))
    assert decode_token(encode_token(CLAIMS, private), key, now=NOW).raw == CLAIMS
    # Another key of the same kind: bad signature.
    assert refused(verifier, encode_token(CLAIMS, KEYS[algorithm]())) == TOKEN_BAD_SIGNATURE
    # The algorithm is the key's, whatever the token says.
    assert refused(verifier, encode_token(CLAIMS, "a secret of 32 bytes or more....")) == (
        TOKEN_BAD_ALGORITHM
    )
    none = b64(b'{"alg":"none"}') + "." + b64(json.dumps(CLAIMS).encode()) + "."
    assert refused(verifier, none) == TOKEN_BAD_ALGORITHM


def test_hs256_signed_with_the_public_key_pem_is_refused() -> None:
    private = KEYS["RS256"]()
    verifier = TokenVerifier([public_key(pem(private))])
    confused = hs256_forged({"alg": "HS256", "typ": "JWT"}, CLAIMS, pem(private))
    assert refused(verifier, confused) == TOKEN_BAD_ALGORITHM
    # Also when the hub has a secret too: the PEM is not that secret.
    both = TokenVerifier([secret_key("the-real-secret"), public_key(pem(private))])
    assert refused(both, confused) == TOKEN_BAD_SIGNATURE
    assert both.verify(encode_token(CLAIMS, private), now=NOW).subject == "u1"
    assert both.verify(encode_token(CLAIMS, "the-real-secret"), now=NOW).subject == "u1"


def test_a_p384_key_refuses_es256() -> None:
    verifier = TokenVerifier([public_key(pem(KEYS["ES384"]()))])
    assert refused(verifier, encode_token(CLAIMS, KEYS["ES256"]())) == TOKEN_BAD_ALGORITHM


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pem", "not a PEM public key"),
        (pem(ec.generate_private_key(ec.SECP256K1())), "curve secp256k1 is not supported"),
    ],
)
def test_bad_public_keys(content: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        public_key(content)


def test_audience_and_issuer() -> None:
    verifier = TokenVerifier([secret_key("s")], audience="hub", issuer="https://app")
    good = {**CLAIMS, "aud": ["other", "hub"], "iss": "https://app"}
    assert verifier.verify(encode_token(good, "s"), now=NOW).subject == "u1"
    assert verifier.verify(encode_token({**good, "aud": "hub"}, "s"), now=NOW).subject == "u1"
    for aud in ("other", ["other"], None, 5):
        assert refused(verifier, encode_token({**good, "aud": aud}, "s")) == TOKEN_BAD_AUDIENCE
    for iss in ("https://evil", None):
        assert refused(verifier, encode_token({**good, "iss": iss}, "s")) == TOKEN_BAD_ISSUER


def test_leeway_of_the_verifier() -> None:
    token = encode_token({**CLAIMS, "exp": NOW - 5}, "s")
    assert TokenVerifier([secret_key("s")], leeway=10).verify(token, now=NOW).expires == NOW - 5
    assert refused(TokenVerifier([secret_key("s")]), token) == "token_expired"


# -- JWKS ----------------------------------------------------------------------


def jwk(private: Any, kid: str) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid}


class JwksServer:
    """A JWKS document on loopback; ``document`` is what it serves."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        server = self

        class Handler(tornado.web.RequestHandler):
            def get(self) -> None:
                server.fetches += 1
                self.finish(server.document)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/jwks.json"
        self.http = tornado.httpserver.HTTPServer(
            tornado.web.Application([(r"/jwks.json", Handler)])
        )
        self.http.add_sockets([sock])

    async def stop(self) -> None:
        self.http.stop()
        await self.http.close_all_connections()


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    yield server
    await server.stop()


async def verified(verifier: TokenVerifier, token: str) -> str:
    """The token's subject, or its refusal code, after fetching keys as the hub does."""
    await verifier.prepare(token)
    try:
        return verifier.verify(token, now=NOW).subject or ""
    except TokenError as exc:
        return exc.code


async def test_jwks_rotation_and_outage(jwks_server: JwksServer) -> None:
    k1, k2, k3 = KEYS["RS256"](), KEYS["ES256"](), KEYS["EdDSA"]()
    jwks_server.document = {"keys": [{**jwk(k1, "k1"), "alg": "RS256", "use": "sig"}]}
    jwks = JwksKeys(jwks_server.url, min_interval=0, max_stale=3600)
    verifier = TokenVerifier(jwks=jwks)
    assert await verified(verifier, encode_token(CLAIMS, k1, kid="k1")) == "u1"
    assert jwks_server.fetches == 1
    # A known kid is served from the cache.
    assert await verified(verifier, encode_token(CLAIMS, k1, kid="k1")) == "u1"
    assert jwks_server.fetches == 1

    # Rotation: k2 replaces k1; a token naming k2 makes the hub fetch again.
    jwks_server.document = {"keys": [jwk(k2, "k2")]}
    assert await verified(verifier, encode_token(CLAIMS, k2, kid="k2")) == "u1"
    assert jwks_server.fetches == 2
    assert await verified(verifier, encode_token(CLAIMS, k1, kid="k1")) == TOKEN_UNKNOWN_KEY
    # The key's kty/crv fix its algorithm: k2's kid on an RS256 token is refused.
    assert await verified(verifier, encode_token(CLAIMS, k1, kid="k2")) == TOKEN_BAD_ALGORITHM
    # No HS256 through the JWKS: its public key as a secret, or a symmetric key.
    confused = hs256_forged({"alg": "HS256", "kid": "k2"}, CLAIMS, pem(k2))
    assert await verified(verifier, confused) == TOKEN_BAD_ALGORITHM

    # The JWKS server goes down: the cached keys still verify (within the
    # stale bound), even when the cache is due for a refresh.
    await jwks_server.stop()
    fetches = jwks_server.fetches
    jwks.max_age = 0
    assert await verified(verifier, encode_token(CLAIMS, k2, kid="k2")) == "u1"
    assert jwks.error is not None and jwks_server.fetches == fetches
    # An unknown kid then is refused (the fetch it causes fails).
    assert await verified(verifier, encode_token(CLAIMS, k3, kid="k3")) == TOKEN_UNKNOWN_KEY
    # Past the stale bound the keys are no longer used.
    assert jwks.fetched is not None
    jwks.fetched -= 3601
    assert await verified(verifier, encode_token(CLAIMS, k2, kid="k2")) == TOKEN_UNKNOWN_KEY


async def test_jwks_refetch_at_most_once_per_interval(jwks_server: JwksServer) -> None:
    k1, k2 = KEYS["EdDSA"](), KEYS["EdDSA"]()
    jwks_server.document = {"keys": [jwk(k1, "k1")]}
    verifier = TokenVerifier(jwks=JwksKeys(jwks_server.url, min_interval=3600))
    assert await verified(verifier, encode_token(CLAIMS, k1, kid="k1")) == "u1"
    jwks_server.document = {"keys": [jwk(k1, "k1"), jwk(k2, "k2")]}
    for _ in range(3):  # unknown kids cannot make the hub hammer the JWKS URL
        assert await verified(verifier, encode_token(CLAIMS, k2, kid="k2")) == TOKEN_UNKNOWN_KEY
    assert jwks_server.fetches == 1


def test_jwks_documents_keep_signing_keys_only() -> None:
    sig, enc = KEYS["ES256"](), KEYS["ES256"]()
    document = {
        "keys": [
            jwk(sig, "sig"),
            {**jwk(enc, "enc"), "use": "enc"},
            {"kty": "oct", "k": b64(b"0123456789abcdef0123456789abcdef"), "kid": "oct"},
            {k: v for k, v in jwk(sig, "x").items() if k != "kid"},
            {"kty": "RSA", "kid": "broken"},
            "not a key",
        ]
    }
    keys = jwks_keys(document)
    assert {kid: key.algorithm for kid, key in keys.items()} == {"sig": "ES256"}
    bad: object
    for bad in ([], {"keys": {}}, {"nokeys": []}):
        with pytest.raises(ValueError, match="JWKS"):
            jwks_keys(bad)


def test_a_pem_key_is_no_hs256_secret() -> None:
    with pytest.raises(ValueError, match="not a key for HS256"):
        secret_key(pem(KEYS["RS256"]()).decode())


async def test_an_oversized_jwks_keeps_the_last_keys(jwks_server: JwksServer) -> None:
    k1 = KEYS["EdDSA"]()
    jwks_server.document = {"keys": [jwk(k1, "k1")]}
    jwks = JwksKeys(jwks_server.url, min_interval=0)
    verifier = TokenVerifier(jwks=jwks)
    assert await verified(verifier, encode_token(CLAIMS, k1, kid="k1")) == "u1"
    jwks_server.document = {"keys": [jwk(k1, "k1")], "pad": "x" * MAX_JWKS_BYTES}
    assert await verified(verifier, encode_token(CLAIMS, k1, kid="k2")) == TOKEN_UNKNOWN_KEY
    assert jwks_server.fetches == 2 and jwks.error is not None, jwks.error
    assert await verified(verifier, encode_token(CLAIMS, k1, kid="k1")) == "u1"

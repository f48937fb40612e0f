"""Signed subscription tokens (JWT HS256) and channel patterns: tables and properties."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchannels import TorChannelsError
from torchannels.errors import ChannelNameError
from torchannels.tokens import (
    MAX_TOKEN_LENGTH,
    TOKEN_BAD_ALGORITHM,
    TOKEN_BAD_SIGNATURE,
    TOKEN_EXPIRED,
    TOKEN_MALFORMED,
    TOKEN_NOT_YET_VALID,
    ChannelPatterns,
    Claims,
    TokenError,
    check_pattern,
    decode_token,
    encode_token,
)

SECRET = "test-secret"
NOW = 1_700_000_000.0
HS256 = {"alg": "HS256", "typ": "JWT"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: object) -> str:
    """base64url of ``value``: bytes as they are, anything else as JSON."""
    return b64(value if isinstance(value, bytes) else json.dumps(value).encode())


def forge(header: object, payload: object, secret: str = SECRET, digest: Any = "sha256") -> str:
    """A token signed like HS256 (or another HMAC) whatever its header says."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(mac)}"


def refused(token: object, **kwargs: Any) -> str:
    kwargs.setdefault("now", NOW)
    with pytest.raises(TokenError) as info:
        decode_token(token, SECRET, **kwargs)  # type: ignore[arg-type]  # non-str tokens too
    return info.value.code


# -- exact vectors from the standards ------------------------------------------


def test_jwt_io_vector_is_encoded_byte_for_byte() -> None:
    claims = {"sub": "1234567890", "name": "John Doe", "iat": 1516239022}
    assert encode_token(claims, "your-256-bit-secret") == (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
        ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    )


def test_rfc7515_appendix_a1_verifies() -> None:
    key = base64.urlsafe_b64decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow=="
    )
    token = (
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    )
    claims = decode_token(token, key, now=1300819379)
    assert claims.raw == {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True}
    assert (claims.subject, claims.expires, claims.channels) == (None, 1300819380.0, ())
    with pytest.raises(TokenError) as info:
        decode_token(token, key, now=1300819380)
    assert info.value.code == TOKEN_EXPIRED


# -- valid tokens --------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "kwargs", "expected"),
    [
        ({"exp": NOW + 1}, {}, (None, NOW + 1, ())),
        ({"exp": int(NOW) + 60, "sub": "u1"}, {}, ("u1", NOW + 60, ())),
        ({"exp": NOW + 1, "channels": ["chat:*", "news"]}, {}, (None, NOW + 1, ("chat:*", "news"))),
        ({"exp": NOW + 1, "channels": ["a", "a", "*"]}, {}, (None, NOW + 1, ("a", "*"))),
        ({"exp": NOW + 1, "channels": []}, {}, (None, NOW + 1, ())),
        ({"exp": NOW + 1, "nbf": NOW, "iat": NOW}, {}, (None, NOW + 1, ())),
        ({"exp": NOW - 5}, {"leeway": 10}, (None, NOW - 5, ())),
        ({"exp": NOW + 60, "nbf": NOW + 5}, {"leeway": 5}, (None, NOW + 60, ())),
        ({"exp": NOW + 60, "iat": NOW + 5}, {"leeway": 5}, (None, NOW + 60, ())),
        ({"exp": NOW + 1, "sub": "x", "aud": ["ignored"]}, {}, ("x", NOW + 1, ())),
    ],
)
def test_valid_tokens(
    claims: dict[str, Any], kwargs: dict[str, Any], expected: tuple[object, ...]
) -> None:
    got = decode_token(encode_token(claims, SECRET), SECRET, now=NOW, **kwargs)
    assert (got.subject, got.expires, got.channels) == expected
    assert got.raw == claims


def test_bytes_and_str_secrets_are_the_same_key() -> None:
    token = encode_token({"exp": NOW + 1}, "sécret")
    assert decode_token(token, "sécret".encode(), now=NOW).expires == NOW + 1


def test_now_defaults_to_the_clock() -> None:
    assert refused(encode_token({"exp": 1}, SECRET), now=None) == TOKEN_EXPIRED
    decode_token(encode_token({"exp": 4e9}, SECRET), SECRET)


# -- refused tokens ------------------------------------------------------------

GOOD_SIG = forge(HS256, {"exp": NOW + 60}).split(".")[2]


def _noncanonical(signature: str) -> str:
    # The last of 43 characters carries 4 bits; its 2 low bits are padding, so
    # flipping one decodes to the same 32 bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(signature[-1]) ^ 1]
    assert base64.urlsafe_b64decode(signature[:-1] + last + "=") == base64.urlsafe_b64decode(
        signature + "="
    )
    return signature[:-1] + last


def _resigned(token: str) -> str:
    head, body, _ = token.split(".")
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


OVERSIZED = forge(HS256, {"exp": NOW + 60, "pad": "x" * MAX_TOKEN_LENGTH})


@pytest.mark.parametrize(
    ("token", "code"),
    [
        # time
        (forge(HS256, {"exp": NOW - 1}), TOKEN_EXPIRED),
        (forge(HS256, {"exp": NOW}), TOKEN_EXPIRED),
        (forge(HS256, {"exp": NOW + 60, "nbf": NOW + 1}), TOKEN_NOT_YET_VALID),
        (forge(HS256, {"exp": NOW + 60, "iat": NOW + 1}), TOKEN_NOT_YET_VALID),
        # signature
        (forge(HS256, {"exp": NOW + 60}, secret="other"), TOKEN_BAD_SIGNATURE),
        (forge(HS256, {"exp": NOW + 60}).rsplit(".", 1)[0] + ".", TOKEN_BAD_SIGNATURE),
        (forge(HS256, {"exp": NOW + 60})[:-1], TOKEN_BAD_SIGNATURE),
        (
            forge(HS256, {"exp": NOW + 60}).rsplit(".", 1)[0] + "." + _noncanonical(GOOD_SIG),
            TOKEN_BAD_SIGNATURE,
        ),
        (forge(HS256, {"exp": NOW + 60}, digest="sha512"), TOKEN_BAD_SIGNATURE),
        # algorithm: refused whatever the signature, even one correct for that alg
        (f"{segment({'alg': 'none'})}.{segment({'exp': NOW + 60})}.", TOKEN_BAD_ALGORITHM),
        (forge({"alg": "none"}, {"exp": NOW + 60}), TOKEN_BAD_ALGORITHM),
        (forge({"alg": "HS512"}, {"exp": NOW + 60}, digest="sha512"), TOKEN_BAD_ALGORITHM),
        (forge({"alg": "HS384"}, {"exp": NOW + 60}, digest="sha384"), TOKEN_BAD_ALGORITHM),
        (forge({"alg": "RS256"}, {"exp": NOW + 60}), TOKEN_BAD_ALGORITHM),
        (forge({"alg": "hs256"}, {"exp": NOW + 60}), TOKEN_BAD_ALGORITHM),
        (forge({"typ": "JWT"}, {"exp": NOW + 60}), TOKEN_MALFORMED),
        (forge({"alg": ["HS256"]}, {"exp": NOW + 60}), TOKEN_MALFORMED),
        (forge({"alg": "HS256", "crit": ["exp"]}, {"exp": NOW + 60}), TOKEN_MALFORMED),
        # shape
        ("", TOKEN_MALFORMED),
        ("..", TOKEN_MALFORMED),
        ("abc", TOKEN_MALFORMED),
        ("a.b", TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60}) + ".", TOKEN_MALFORMED),
        (" " + forge(HS256, {"exp": NOW + 60}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60}) + "\n", TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60}).replace(".", "=.", 1), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60}).replace("e", "é", 1), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60})[:-1] + "+", TOKEN_MALFORMED),  # standard alphabet
        (forge(HS256, {"exp": NOW + 60})[:-1] + "/", TOKEN_MALFORMED),
        (b"not.a.str", TOKEN_MALFORMED),
        (None, TOKEN_MALFORMED),
        (OVERSIZED, TOKEN_MALFORMED),
        # garbage base64 and JSON
        (f"a.{segment({'exp': NOW + 60})}.{GOOD_SIG}", TOKEN_MALFORMED),
        (_resigned(f"{segment(HS256)}.a.x"), TOKEN_MALFORMED),
        (forge(b"not json", {"exp": NOW + 60}), TOKEN_MALFORMED),
        (forge(b"", {"exp": NOW + 60}), TOKEN_MALFORMED),
        (forge(HS256, b"{exp: 1}"), TOKEN_MALFORMED),
        (forge(HS256, b'{"exp": NaN}'), TOKEN_MALFORMED),
        (forge(HS256, b'{"exp": Infinity}'), TOKEN_MALFORMED),
        (forge(HS256, b'{"exp": 4e9, "extra": [-Infinity]}'), TOKEN_MALFORMED),
        (forge(HS256, b'{"exp": 1e400}'), TOKEN_MALFORMED),
        (forge(HS256, b'{"exp": 1' + b"0" * 400 + b"}"), TOKEN_MALFORMED),
        (forge(HS256, b'{"exp": 1, "exp": 4e9}'), TOKEN_MALFORMED),
        (forge(HS256, b'{"exp": 4e9, "sub": "\xff"}'), TOKEN_MALFORMED),
        (forge(HS256, b'\xef\xbb\xbf{"exp": 4e9}'), TOKEN_MALFORMED),
        (forge(["HS256"], {"exp": NOW + 60}), TOKEN_MALFORMED),
        (forge(HS256, [{"exp": NOW + 60}]), TOKEN_MALFORMED),
        (forge(HS256, "exp"), TOKEN_MALFORMED),
        (forge(HS256, 4e9), TOKEN_MALFORMED),
        (forge(HS256, None), TOKEN_MALFORMED),
        # claims of the wrong type
        (forge(HS256, {}), TOKEN_MALFORMED),
        (forge(HS256, {"sub": "u1"}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": None}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": str(NOW + 60)}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": True}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": [NOW + 60]}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "nbf": "0"}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "nbf": None}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "iat": False}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "sub": 42}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "sub": ["u1"]}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": "chat:*"}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": None}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": {"chat": 1}}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": [1]}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": ["ok", None]}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": ["a*b"]}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": ["**"]}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": [""]}), TOKEN_MALFORMED),
        (forge(HS256, {"exp": NOW + 60, "channels": ["has space"]}), TOKEN_MALFORMED),
    ],
)
def test_refused_tokens(token: object, code: str) -> None:
    assert refused(token) == code


def test_respelled_signature_is_a_bad_signature() -> None:
    head, body, sig = forge(HS256, {"exp": NOW + 60}).split(".")
    assert decode_token(f"{head}.{body}.{sig}", SECRET, now=NOW).expires == NOW + 60
    assert refused(f"{head}.{body}.{_noncanonical(sig)}") == TOKEN_BAD_SIGNATURE


def test_length_limit_is_inclusive() -> None:
    pad = next(n for n in range(MAX_TOKEN_LENGTH) if len(_padded(n)) >= MAX_TOKEN_LENGTH)
    assert len(_padded(pad)) == MAX_TOKEN_LENGTH
    assert decode_token(_padded(pad), SECRET, now=NOW).raw["pad"] == "x" * pad
    assert refused(_padded(pad + 1)) == TOKEN_MALFORMED
    with pytest.raises(ValueError, match="more than"):
        encode_token({"exp": NOW + 60, "pad": "x" * MAX_TOKEN_LENGTH}, SECRET)


def _padded(n: int) -> str:
    return forge(HS256, {"exp": NOW + 60, "pad": "x" * n})


@pytest.mark.parametrize(
    ("claims", "kwargs", "code"),
    [
        ({"exp": NOW - 5}, {"leeway": 5}, TOKEN_EXPIRED),
        ({"exp": NOW - 5}, {"leeway": 4.9}, TOKEN_EXPIRED),
        ({"exp": NOW + 60, "nbf": NOW + 5}, {"leeway": 4}, TOKEN_NOT_YET_VALID),
        ({"exp": NOW + 60, "iat": NOW + 5}, {"leeway": 4}, TOKEN_NOT_YET_VALID),
        ({"exp": NOW + 60}, {"now": NOW + 60}, TOKEN_EXPIRED),
    ],
)
def test_leeway_bounds(claims: dict[str, Any], kwargs: dict[str, float], code: str) -> None:
    assert refused(encode_token(claims, SECRET), **kwargs) == code


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: decode_token("a.b.c", ""), ValueError),
        (lambda: decode_token("a.b.c", b""), ValueError),
        (lambda: decode_token("a.b.c", 42), TypeError),  # type: ignore[arg-type]  # on purpose
        (lambda: decode_token("a.b.c", SECRET, leeway=-1), ValueError),
        (lambda: decode_token("a.b.c", SECRET, leeway=float("inf")), ValueError),
        (lambda: encode_token({"exp": 1}, ""), ValueError),
        (lambda: encode_token({"exp": float("nan")}, SECRET), ValueError),
        (lambda: encode_token({"exp": object()}, SECRET), TypeError),
    ],
)
def test_misuse_is_a_programming_error(call: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        call()
    assert not isinstance(info.value, TokenError)


def test_token_error_is_a_torchannels_error_with_a_message() -> None:
    with pytest.raises(TorChannelsError) as info:
        decode_token(forge({"alg": "none"}, {"exp": 1}), SECRET)
    assert isinstance(info.value, TokenError)
    assert info.value.message == str(info.value) == "token algorithm 'none' refused: only HS256"


# -- patterns ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "channel", "expected"),
    [
        (["*"], "anything:at/all", True),
        (["chat:*"], "chat:lobby", True),
        (["chat:*"], "chat:", True),
        (["chat:*"], "chat", False),
        (["chat:*"], "chatroom", False),
        (["chat:*"], "xchat:lobby", False),
        (["news"], "news", True),
        (["news"], "news:1", False),
        (["news"], "new", False),
        (["news"], "NEWS", False),
        ([], "news", False),
        (["a*", "news"], "abc", True),
        (["a*", "news"], "news", True),
        (["a*", "news"], "b", False),
        (["user:42:*", "user:42"], "user:42", True),
        (["user:42:*"], "user:421", False),
        (["$*"], "$sys", True),
    ],
)
def test_pattern_matching(patterns: list[str], channel: str, expected: bool) -> None:
    assert ChannelPatterns(patterns).matches(channel) is expected
    claims = Claims(subject=None, expires=NOW, channels=tuple(patterns))
    assert claims.allows(channel) is expected


@pytest.mark.parametrize("pattern", ["*", "a*", "chat:*", "news", "x" * 128, "x" * 128 + "*"])
def test_valid_patterns(pattern: str) -> None:
    assert check_pattern(pattern) == pattern


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "**",
        "a*b",
        "*a",
        "a**",
        "has space*",
        "ä*",
        "a\n*",
        "a*\n",
        "x" * 129,
        "x" * 129 + "*",
        None,
        5,
        b"a*",
        ["a*"],
    ],
)
def test_invalid_patterns(pattern: object) -> None:
    with pytest.raises(ChannelNameError, match="invalid channel"):
        check_pattern(pattern)
    with pytest.raises(ChannelNameError):
        ChannelPatterns([pattern])  # type: ignore[list-item]  # non-str patterns too


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a*b", "invalid channel pattern 'a*b': '*' may only end it"),
        ("**", "invalid channel pattern '**': '*' may only end it"),
        ("a b*", "invalid channel pattern 'a b*': before the final '*' use up to 128 characters"),
        ("a b", "invalid channel name 'a b': use 1-128 characters"),
    ],
)
def test_invalid_pattern_messages(pattern: str, message: str) -> None:
    with pytest.raises(ChannelNameError) as info:
        check_pattern(pattern)
    assert str(info.value).startswith(message)


def test_channel_patterns_value_semantics() -> None:
    patterns = ChannelPatterns(["b*", "a", "b*"])
    assert patterns.patterns == ("b*", "a") == tuple(patterns)
    assert patterns == ChannelPatterns(["a", "b*"])
    assert patterns != ChannelPatterns(["a"])
    assert hash(patterns) == hash(ChannelPatterns(["a", "b*"]))
    assert repr(patterns) == "ChannelPatterns(['b*', 'a'])"
    assert patterns and not ChannelPatterns()
    with pytest.raises(TypeError):
        ChannelPatterns("demo:*")


def test_claims_validate_their_channels() -> None:
    with pytest.raises(ChannelNameError):
        Claims(subject=None, expires=NOW, channels=("a*b",))
    claims = Claims(subject="u", expires=NOW, channels=("a*",), raw={"x": [1]})
    assert claims == Claims(subject="u", expires=NOW, channels=("a*",), raw={"x": [1]})
    assert hash(claims) == hash(Claims(subject="u", expires=NOW, channels=("a*",)))


# -- properties ----------------------------------------------------------------

CHANNEL_CHARS = r"[A-Za-z0-9_\-.:/@#$]"
channels = st.from_regex(rf"{CHANNEL_CHARS}{{1,16}}", fullmatch=True)
patterns = st.one_of(channels, channels.map(lambda c: c + "*"), st.just("*"))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
RESERVED = {"exp", "nbf", "iat", "sub", "channels", "info", "publish"}  # claims read, and checked


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    claims: dict[str, Any] = draw(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in RESERVED), json_values, max_size=4
        )
    )
    claims["exp"] = draw(st.floats(NOW + 0.001, 1e12) | st.integers(int(NOW) + 1, 2**53))
    for name in ("nbf", "iat"):
        if draw(st.booleans()):
            claims[name] = draw(st.floats(0, NOW) | st.integers(0, int(NOW)))
    if draw(st.booleans()):
        claims["sub"] = draw(st.text(max_size=16))
    if draw(st.booleans()):
        claims["channels"] = draw(st.lists(patterns, max_size=5))
    return claims


secrets = st.text(min_size=1, max_size=32) | st.binary(min_size=1, max_size=64)


@given(claims=claim_sets(), secret=secrets)
def test_encode_decode_round_trips(claims: dict[str, Any], secret: str | bytes) -> None:
    decoded = decode_token(encode_token(claims, secret), secret, now=NOW)
    assert decoded.raw == claims
    assert decoded.expires == claims["exp"]
    assert decoded.subject == claims.get("sub")
    assert decoded.channels == tuple(dict.fromkeys(claims.get("channels", [])))


@given(claims=claim_sets(), data=st.data())
def test_any_single_character_change_is_refused(
    claims: dict[str, Any], data: st.DataObject
) -> None:
    token = encode_token(claims, SECRET)
    signed = len(token.rsplit(".", 1)[0])
    # Mostly the signed part (header.payload), sometimes the signature.
    index = data.draw(st.integers(0, signed - 1) | st.integers(0, len(token) - 1))
    char = data.draw(st.characters().filter(lambda c: c != token[index]))
    with pytest.raises(TokenError):
        decode_token(token[:index] + char + token[index + 1 :], SECRET, now=NOW)


@given(
    header=json_values | st.fixed_dictionaries({"alg": st.just("HS256")}),
    payload=json_values
    | claim_sets()
    | st.dictionaries(st.sampled_from(sorted(RESERVED)), json_values),
)
def test_signed_garbage_is_refused_only_with_token_error(header: object, payload: object) -> None:
    token = forge(header, payload)
    try:
        claims = decode_token(token, SECRET, now=NOW)
    except TokenError:
        return
    assert claims.raw == payload


@given(st.text(max_size=200) | st.from_regex(r"[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*"))
def test_arbitrary_text_is_refused_with_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        decode_token(text, SECRET, now=NOW)

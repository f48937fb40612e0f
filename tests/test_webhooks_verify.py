"""torchannels.webhooks: what a receiver's verify() accepts and refuses, and
that the module stands alone (standard library only, nothing else of
torchannels), as a receiver's deployment needs."""

from __future__ import annotations

import email.message
import hashlib
import hmac
import json
import subprocess
import sys
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders

from test_layout import PACKAGE, runtime_imports
from torchannels import proxy_signature
from torchannels.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TOLERANCE,
    WebhookVerificationError,
    sign,
    verify,
)

SECRET = "whsec-0123456789"
STAMP = 1764139201
EVENTS = [
    {"id": "1764139200123-0", "type": "user_online", "time": 1764139200.123, "user": "ann"},
    {"id": "1764139200123-1", "type": "channel_occupied", "time": 1764139200.123, "channel": "r"},
]
BODY = json.dumps(EVENTS, separators=(",", ":")).encode()


def signed(body: bytes = BODY, secret: str = SECRET, stamp: int = STAMP) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(body, secret, stamp)}


def refusal(body: bytes | str, headers: Any, *, now: float = STAMP + 1, **kw: Any) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        verify(body, headers, SECRET, now=now, **kw)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


def test_a_signed_call_gives_its_events() -> None:
    assert verify(BODY, signed(), SECRET, now=STAMP + 5) == EVENTS
    assert verify(BODY.decode(), signed(), SECRET.encode(), now=STAMP) == EVENTS


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    mac = hmac.new(SECRET.encode(), f"{STAMP}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, STAMP) == f"sha256={mac}"
    assert SIGNATURE_HEADER == proxy_signature.SIGNATURE_HEADER == "X-Torchannels-Signature"
    assert TIMESTAMP_HEADER == "X-Torchannels-Timestamp"
    assert TOLERANCE == 300


def test_a_forged_body_or_another_secret_is_refused() -> None:
    forged = BODY.replace(b"ann", b"eve")
    assert refusal(forged, signed()).startswith("bad signature")
    assert refusal(BODY, signed(secret="not-the-secret")).startswith("bad signature")
    assert refusal(BODY, signed(body=forged)).startswith("bad signature")


def test_a_replay_with_a_fresh_timestamp_is_refused() -> None:
    """The timestamp is signed: moving it forward breaks the signature."""
    headers = {**signed(), TIMESTAMP_HEADER: str(STAMP + 1000)}
    assert refusal(BODY, headers, now=STAMP + 1000).startswith("bad signature")


def test_stale_and_future_timestamps_are_refused_past_the_tolerance() -> None:
    assert verify(BODY, signed(), SECRET, now=STAMP + 300) == EVENTS
    assert verify(BODY, signed(), SECRET, now=STAMP - 300) == EVENTS
    assert refusal(BODY, signed(), now=STAMP + 301) == (
        "stale timestamp: signed 301 s ago, more than the 300 s tolerance"
    )
    assert refusal(BODY, signed(), now=STAMP - 301) == (
        "future timestamp: 301 s ahead, more than the 300 s tolerance"
    )
    assert refusal(BODY, signed(), now=STAMP + 31, tolerance=30).startswith("stale timestamp")
    assert verify(BODY, signed(), SECRET, now=STAMP + 31, tolerance=60) == EVENTS


def test_the_clock_judges_when_no_now_is_given() -> None:
    with pytest.raises(WebhookVerificationError, match="stale timestamp"):
        verify(BODY, signed(), SECRET)  # STAMP is in 2025


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_a_missing_header_is_named(missing: str) -> None:
    headers = {k: v for k, v in signed().items() if k != missing}
    assert refusal(BODY, headers) == f"missing header {missing}"


@pytest.mark.parametrize("stamp", ["", "1.5", "abc", "-5", "1e9", "12345678901234567890"])
def test_a_timestamp_that_is_no_integer_is_refused(stamp: str) -> None:
    headers = {**signed(), TIMESTAMP_HEADER: stamp}
    assert refusal(BODY, headers).startswith(f"{TIMESTAMP_HEADER} is not an integer")


def test_headers_are_found_whatever_their_case() -> None:
    lower = {k.lower(): v for k, v in signed().items()}
    upper = {k.upper(): v for k, v in signed().items()}
    assert verify(BODY, lower, SECRET, now=STAMP) == EVENTS
    assert verify(BODY, upper, SECRET, now=STAMP) == EVENTS
    tornado_headers = HTTPHeaders()
    for name, value in signed().items():
        tornado_headers.add(name.lower(), value)
    assert verify(BODY, tornado_headers, SECRET, now=STAMP) == EVENTS
    message = email.message.Message()  # http.server's self.headers
    for name, value in signed().items():
        message[name.upper()] = value
    assert verify(BODY, message, SECRET, now=STAMP) == EVENTS
    raw = {k.lower().encode(): v.encode() for k, v in signed().items()}  # bytes keys: not found
    assert refusal(BODY, raw) == f"missing header {TIMESTAMP_HEADER}"
    as_bytes = {k: v.encode() for k, v in signed().items()}  # bytes values: decoded
    assert verify(BODY, as_bytes, SECRET, now=STAMP) == EVENTS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"id":"1-0"}', "the body is not JSON"),
        (b"\xff\xfe[]", "the body is not JSON"),
        (b'{"id":"1-0"}', "the body is not a JSON array of objects"),
        (b'[{"id":"1-0"},2]', "the body is not a JSON array of objects"),
        (b'"[]"', "the body is not a JSON array of objects"),
    ],
)
def test_a_signed_body_that_is_no_array_of_objects_is_refused(body: bytes, message: str) -> None:
    assert refusal(body, signed(body=body)) == message


def test_the_module_stands_alone() -> None:
    """It imports only the standard library: a receiver can vendor the file."""
    path = PACKAGE / "webhooks.py"
    assert runtime_imports(path) == set()
    check = (
        "import importlib.util, sys\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('alone', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in new if m.split('.')[0] not in sys.stdlib_module_names))\n"
        "print(module.verify.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "verify"]

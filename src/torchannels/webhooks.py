"""Checking the server's webhook calls in a receiver (Python).

With ``--webhook-url URL --webhook-secret S`` the standalone server POSTs
batches of lifecycle events (a JSON array) to ``URL``, each attempt with
two headers:

- ``X-Torchannels-Timestamp: T``, the unix time in whole seconds when the
  attempt was signed (each retry is signed anew);
- ``X-Torchannels-Signature: sha256=HEX``, HEX the lowercase hex of
  HMAC-SHA256 keyed with ``S`` (UTF-8) over ``T``, a dot, and the raw body
  bytes.

A receiver calls :func:`verify` with the raw body, the request's headers
and the secret before trusting anything: it raises
:class:`WebhookVerificationError` (a ``ValueError``) for a call that is not
the server's, or that is older (or newer) than ``tolerance`` seconds, and
returns the events. Events may come more than once: dedupe by ``id``.
docs/api.md#webhooks has the event catalogue and a full receiver.

This module needs nothing but the standard library, and imports nothing
else of torchannels.

>>> body = b'[{"id":"1764139200123-0","type":"user_online","time":1764139200.123,"user":"ann"}]'
>>> headers = {
...     "X-Torchannels-Timestamp": "1764139201",
...     "X-Torchannels-Signature": sign(body, "s3cret", 1764139201),
... }
>>> headers["X-Torchannels-Signature"]
'sha256=56994512d9565a6a4549db637b72e119fc85da5f68cf043262134cc0f0722e1b'
>>> verify(body, headers, "s3cret", now=1764139230)
[{'id': '1764139200123-0', 'type': 'user_online', 'time': 1764139200.123, 'user': 'ann'}]
>>> def check(body: bytes, now: float) -> None:
...     try:
...         verify(body, headers, "s3cret", now=now)
...     except WebhookVerificationError as exc:
...         print(exc)
>>> check(body.replace(b"ann", b"bob"), now=1764139230)
bad signature: the body, the timestamp or the secret differs
>>> check(body, now=1764139201 + 301)
stale timestamp: signed 301 s ago, more than the 300 s tolerance
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any, Protocol

__all__ = [
    "SIGNATURE_HEADER",
    "SIGNATURE_PREFIX",
    "TIMESTAMP_HEADER",
    "TOLERANCE",
    "WebhookVerificationError",
    "sign",
    "verify",
]

#: The header carrying the unix time (whole seconds) the attempt was signed at.
TIMESTAMP_HEADER = "X-Torchannels-Timestamp"
#: The header carrying the signature (the backend hooks' header name too).
SIGNATURE_HEADER = "X-Torchannels-Signature"
#: What the signature's value starts with (the algorithm).
SIGNATURE_PREFIX = "sha256="
#: Seconds a signed call stays acceptable, either way from the receiver's clock.
TOLERANCE = 300

_INTEGER = re.compile(r"[0-9]{1,15}")


class WebhookVerificationError(ValueError):
    """The call is not the server's, or not now's: answer it 4xx and ignore it."""


class _Headers(Protocol):
    def get(self, key: str, /) -> Any: ...


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def sign(body: bytes, secret: str | bytes, timestamp: int) -> str:
    """The :data:`SIGNATURE_HEADER` value of ``body`` signed at ``timestamp``:
    ``sha256=`` and the lowercase hex of HMAC-SHA256(key=``secret`` (UTF-8),
    msg=``str(timestamp) + "." + body``)."""
    message = str(int(timestamp)).encode() + b"." + bytes(body)
    return SIGNATURE_PREFIX + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def _header(headers: _Headers, name: str) -> str:
    """``name``'s value, whatever its case in ``headers``."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    items = getattr(headers, "items", None)
    if value is None and callable(items):
        wanted = name.lower()
        value = next((v for k, v in items() if isinstance(k, str) and k.lower() == wanted), None)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value is None:
        raise WebhookVerificationError(f"missing header {name}")
    if not isinstance(value, str):
        raise WebhookVerificationError(f"header {name} is not a string")
    return value.strip()


def verify(
    body: bytes | str,
    headers: _Headers,
    secret: str | bytes,
    *,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """The events of a webhook call, once it is shown to be the server's.

    ``body`` is the raw request body as received (a ``str`` is taken as
    its UTF-8 bytes), never a re-encoding of its JSON; ``headers`` the
    request's headers, any mapping or object with ``.get`` (a dict,
    Tornado's ``HTTPHeaders``, Flask's or Django's ``request.headers``),
    looked up whatever their case; ``secret`` the server's
    ``--webhook-secret``; ``now`` the unix time to judge the timestamp by
    (default: this clock). Raises :class:`WebhookVerificationError`, saying
    what was wrong, when a header is missing, the timestamp is not an
    integer or is more than ``tolerance`` seconds from ``now``, the
    signature does not match (compared in constant time), or the body is
    not a JSON array of objects.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    stamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not _INTEGER.fullmatch(stamp):
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not an integer: {stamp[:20]!r}")
    timestamp = int(stamp)
    expected = sign(raw, secret, timestamp).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        raise WebhookVerificationError(
            "bad signature: the body, the timestamp or the secret differs"
        )
    age = (time.time() if now is None else now) - timestamp
    if age > tolerance:
        raise WebhookVerificationError(
            f"stale timestamp: signed {age:.0f} s ago, more than the {tolerance:g} s tolerance"
        )
    if age < -tolerance:
        raise WebhookVerificationError(
            f"future timestamp: {-age:.0f} s ahead, more than the {tolerance:g} s tolerance"
        )
    try:
        events = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise WebhookVerificationError("the body is not a JSON array of objects")
    return events

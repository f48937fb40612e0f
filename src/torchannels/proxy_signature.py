"""Signing the server's calls to a backend's hooks, and checking them there.

The standalone server (``torchannels serve --proxy-connect URL ...``) POSTs
JSON to your backend with the header ``X-Torchannels-Signature:
sha256=HEX``: HEX is HMAC-SHA256 of the raw body bytes keyed with the proxy
secret (``--proxy-secret``), in lowercase hex. A backend written in Python
checks it with :func:`verify_signature` before trusting the body::

    from torchannels.proxy_signature import SIGNATURE_HEADER, verify_signature

    if not verify_signature(request.body, request.headers.get(SIGNATURE_HEADER), SECRET):
        return 403

This module needs nothing but the standard library, and imports nothing of
the server.

>>> header = sign(b'{"client":"0a1b2c3d-1"}', "s3cret")
>>> header
'sha256=fea0dceaf2a7973692fce08a6c79367028eb8fb8eedef7c75fe19454278a0dda'
>>> verify_signature(b'{"client":"0a1b2c3d-1"}', header, "s3cret")
True
>>> verify_signature(b'{"client":"0a1b2c3d-2"}', header, "s3cret")
False
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SIGNATURE_HEADER", "SIGNATURE_PREFIX", "sign", "verify_signature"]

#: The request header carrying the signature.
SIGNATURE_HEADER = "X-Torchannels-Signature"
#: What the header's value starts with (the algorithm).
SIGNATURE_PREFIX = "sha256="


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(body: bytes, secret: str | bytes) -> str:
    """The header value for ``body``: ``sha256=`` and the lowercase hex of
    HMAC-SHA256(key=``secret`` (UTF-8), msg=``body``)."""
    return SIGNATURE_PREFIX + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str | bytes) -> bool:
    """Whether ``header`` (the :data:`SIGNATURE_HEADER` value as received,
    or None when absent) signs exactly ``body`` (the raw request body, not
    a re-encoding of its JSON) with ``secret``. Compared in constant time;
    anything malformed is False."""
    if not isinstance(header, str) or not isinstance(body, bytes | bytearray):
        return False
    expected = sign(bytes(body), secret).encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))

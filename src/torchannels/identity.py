"""Who a connection is: its client id, and its user (if any).

Every connection has a client id, made by the server and unique across
processes; it may also have a user (with an optional info object).
Anonymous connections (no user) count as clients, never as users.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    """A user: a non-empty id and an optional info object (a JSON object of
    at most 1 KiB, compact JSON in UTF-8)."""

    id: str
    info: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """One connection: its server-made ``client`` id, its ``user`` (None:
    anonymous), its transport and the unix time it began (a polling
    client's first request). ``issued`` and ``token_id`` are the ``iat``
    and ``jti`` of the token that authorised it, if any: what a revocation
    (``hub.revoke``) is matched against."""

    client: str
    user: User | None
    transport: str  # "poll" | "longpoll" | "stream" | "sse" | "websocket"
    since: float
    issued: float | None = None
    token_id: str | None = None


def anonymous(transport: str) -> Identity:
    """A new anonymous identity with a new client id, beginning now."""
    return Identity(new_client_id(), None, transport, time.time())


#: Transports that re-subscribe on every request: they may carry ``client=``
#: (one client across requests).
POLLING = frozenset({"poll", "longpoll"})

#: Most bytes a user's info may take, encoded as compact JSON in UTF-8.
MAX_INFO_BYTES = 1024

_PROCESS = secrets.token_hex(4)
_counter = itertools.count(1)


def new_client_id() -> str:
    """A client id unique across processes: 8 random hex digits of this
    process, ``-``, and a base-36 counter.

    >>> a, b = new_client_id(), new_client_id()
    >>> a != b and a.split("-")[0] == b.split("-")[0]
    True
    """
    return f"{_PROCESS}-{_base36(next(_counter))}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, rest = divmod(n, 36)
        out = digits[rest] + out
        if n == 0:
            return out


def check_info(info: object) -> Mapping[str, Any] | None:
    """``info`` if it is None or a JSON object of at most
    :data:`MAX_INFO_BYTES` (compact JSON, UTF-8); ValueError otherwise.

    >>> check_info({"name": "Ann"})
    {'name': 'Ann'}
    """
    if info is None:
        return None
    if not isinstance(info, Mapping):
        raise ValueError(f"info must be a JSON object, not {type(info).__name__}")
    try:
        size = len(json.dumps(info, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"info is not JSON: {exc}") from None
    if size > MAX_INFO_BYTES:
        raise ValueError(f"info is {size} bytes of JSON, more than {MAX_INFO_BYTES}")
    return info


def derive_secret(key: bytes, label: str) -> bytes:
    """A key for ``label`` made from ``key`` (HMAC-SHA256), so one secret
    serves several purposes without one signature standing for another."""
    return hmac.new(key, b"torchannels " + label.encode(), hashlib.sha256).digest()


class _Signer:
    __slots__ = ("_key",)

    def __init__(self, secret: bytes, label: str) -> None:
        self._key = derive_secret(secret, label)

    def _sig(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:12]).decode()  # 16 characters

    def _open(self, signed: object) -> str | None:
        if not isinstance(signed, str) or len(signed) > 512:
            return None
        text, dot, sig = signed.rpartition(".")
        if not dot or not text or not hmac.compare_digest(sig, self._sig(text)):
            return None
        return text


class ClientIds(_Signer):
    """Signs and verifies client ids for polling clients (``client=``), so
    a client cannot take another's id. The signed id carries the time the
    client began (whole milliseconds), so a disconnect reaches a polling
    client that began before it, and not one that began after.

    >>> ids = ClientIds(b"secret")
    >>> signed = ids.sign("0a1b2c3d-1", 1796000000.5)
    >>> ids.verify(signed), ids.verify(signed[:-1] + "x"), ids.verify("junk")
    (('0a1b2c3d-1', 1796000000.5), None, None)
    """

    __slots__ = ()

    def __init__(self, secret: bytes) -> None:
        super().__init__(secret, "client id")

    def sign(self, client: str, since: float) -> str:
        """``CLIENT~SINCE.SIG`` (SINCE in base-36 milliseconds, rounded up,
        so a time just after a command never reads as before it): what the
        wire carries."""
        text = f"{client}~{_base36(max(0, math.ceil(since * 1000)))}"
        return f"{text}.{self._sig(text)}"

    def verify(self, signed: str) -> tuple[str, float] | None:
        """The client id of ``signed`` and the time it began, or None if it
        was tampered with or is malformed. (An id signed before ids carried
        a time counts as begun at 0.)"""
        text = self._open(signed)
        if text is None:
            return None
        client, tilde, since = text.partition("~")
        if not tilde:
            return client, 0.0
        try:
            return client, int(since, 36) / 1000
        except ValueError:
            return None


class PageCursors(_Signer):
    """Opaque, signed cursors of presence pages: ``base64url(user) + "." +
    SIG``.

    >>> cursors = PageCursors(b"secret")
    >>> cursors.verify(cursors.sign("ann")), cursors.verify("YW5u.x")
    ('ann', None)
    """

    __slots__ = ()

    def __init__(self, secret: bytes) -> None:
        super().__init__(secret, "presence cursor")

    def sign(self, user: str) -> str:
        text = base64.urlsafe_b64encode(user.encode("utf-8", "surrogatepass")).decode()
        text = text.rstrip("=")
        return f"{text}.{self._sig(text)}"

    def verify(self, cursor: str) -> str | None:
        """The user id a cursor stands after, or None if it does not verify."""
        text = self._open(cursor)
        if text is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return raw.decode("utf-8", "surrogatepass")
        except (ValueError, UnicodeDecodeError):
            return None

"""What authorizes a subscribe or publish request on the standalone server:
a token's claims, or a connect hook's answer for a request without a token
(docs/api.md#backend-hooks-proxies). Both say the same things: who the
user is, which channels they may read and publish to, and until when."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..patterns import ChannelPatterns
from ..tokens import Claims
from .proxy_hooks import ConnectResult


@dataclass(frozen=True, slots=True)
class Grant:
    """``user`` None: anonymous; ``expires`` None: no end; ``issued`` and
    ``token_id``: what revocations match."""

    user: str | None
    info: Mapping[str, Any] | None
    channels: ChannelPatterns
    publish: ChannelPatterns
    expires: float | None
    issued: float | None = None
    token_id: str | None = None

    @classmethod
    def of_claims(cls, claims: Claims) -> Grant:
        return cls(claims.subject or None, claims.info, ChannelPatterns(claims.channels),
                   ChannelPatterns(claims.publish), claims.expires, claims.issued,
                   claims.token_id)  # fmt: skip

    @classmethod
    def of_connect(cls, result: ConnectResult, now: float) -> Grant:
        """The connect hook's answer, issued ``now`` (a user revocation with a
        later ``before`` refuses it; the next connect is asked again)."""
        return cls(result.user, result.info, ChannelPatterns(result.channels),
                   ChannelPatterns(result.publish), result.expires, now)  # fmt: skip

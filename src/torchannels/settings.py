"""Limits and timings of the subscriber side, with their documented defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from .forwarded import TrustedProxies


@dataclass(frozen=True, slots=True)
class Settings:
    """Every limit a subscriber request is held to (docs/protocol.md, "Limits").

    >>> Settings(longpoll_timeout=10).max_channels
    64
    """

    #: Channels one request may name.
    max_channels: int = 64
    #: Bytes of query string plus Last-Event-ID one request may carry.
    max_request_bytes: int = 16384
    #: Longest a long-poll is held before an empty answer (a client may ask less).
    longpoll_timeout: float = 25.0
    #: Seconds between keep-alive pings on streaming responses and WebSockets.
    ping_interval: float = 15.0
    #: The range a client's ``ping`` request parameter is clamped to (seconds).
    ping_bounds: tuple[float, float] = (5.0, 60.0)
    #: Bytes after which a stream or SSE response ends with ``reconnect``.
    stream_max_bytes: int = 1 << 20
    #: Bytes a streaming or WebSocket client may fall behind before it is
    #: dropped (it then resumes from its positions; nothing is lost while
    #: history lasts). Everything framed for the client counts; catch-up is
    #: framed a slice at a time as the client takes it.
    max_pending_bytes: int = 1 << 20
    #: Seconds a write to a streaming or WebSocket client may go without
    #: completing before the client is dropped as not reading (``reconnect``
    #: slow_consumer, WebSocket close 4001).
    write_timeout: float = 30.0
    #: Reconnect delay SSE asks of ``EventSource`` (``retry:`` field), ms.
    sse_retry_ms: int = 1000
    #: Origins (``scheme://host[:port]``) besides the page's own allowed to
    #: open WebSockets and to read the HTTP transports (CORS, torchannels.cors);
    #: same-origin only by default.
    allowed_origins: tuple[str, ...] = ()
    #: Let those origins send credentials (cookies) to the HTTP transports:
    #: ``Access-Control-Allow-Credentials: true`` (the client's
    #: ``withCredentials``). Off by default.
    cors_credentials: bool = False
    #: Reverse proxies (IP addresses or CIDR networks, ``10.0.0.0/8``) whose
    #: ``X-Forwarded-For``/``-Proto``/``-Host`` and ``Forwarded`` headers are
    #: believed: for client addresses, and for the WebSocket origin check
    #: (Origin against the forwarded host). Empty: believe no one.
    trusted_proxies: tuple[str, ...] = ()
    #: Seconds the hub keeps a channel's broker subscription after its last
    #: local subscriber left (long-polls come back at once).
    unsubscribe_grace: float = 2.0
    #: Seconds between checks of each served channel's position against the
    #: broker's (0: off); a subscriber behind re-reads what it missed.
    position_check_interval: float = 5.0
    #: Seconds a user stays present in a presence channel after their last
    #: connection went (a reconnect within it makes no leave and no join);
    #: a polling client stays present this long after each request.
    presence_grace: float = 5.0
    #: Seconds a presence entry lives without a heartbeat; heartbeats run
    #: every third of it. A killed process's users leave within this (+1 s).
    presence_ttl: float = 30.0
    #: Seconds over which join/leave ``presence`` frames of one channel are
    #: gathered into one frame (at most one frame per channel per interval).
    presence_coalesce: float = 0.2
    #: Most bytes a client's publish may carry (its data as compact JSON, UTF-8).
    max_client_publish_bytes: int = 16384
    #: Publishes a second one client may make (a token bucket: a burst of as many).
    client_publish_rate: float = 10.0
    #: Key of the HMAC that signs client ids and presence page cursors
    #: (None: random per process, so a polling client moving to another
    #: process gets a new id).
    client_id_secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.client_publish_rate <= 0:
            raise ValueError("client_publish_rate must be positive")
        sizes = ("max_channels", "max_request_bytes", "stream_max_bytes", "max_pending_bytes",
                 "max_client_publish_bytes")  # fmt: skip
        for name in sizes:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.unsubscribe_grace < 0 or self.position_check_interval < 0:
            raise ValueError("unsubscribe_grace and position_check_interval must be >= 0")
        if self.presence_grace < 0 or self.presence_coalesce < 0 or self.presence_ttl <= 0:
            raise ValueError("presence_grace and presence_coalesce must be >= 0, presence_ttl > 0")
        if (
            min(self.longpoll_timeout, self.ping_interval, self.write_timeout) <= 0
            or self.sse_retry_ms < 0
        ):
            raise ValueError("timeouts and intervals must be positive")
        low, high = self.ping_bounds
        if not 0 < low <= high:
            raise ValueError("ping_bounds must be (low, high) with 0 < low <= high")
        if isinstance(self.trusted_proxies, str):
            raise ValueError("trusted_proxies must be a tuple of networks, not one string")
        TrustedProxies.of(tuple(self.trusted_proxies))  # ValueError names a bad one

    @property
    def proxies(self) -> TrustedProxies:
        """``trusted_proxies``, parsed (cached per distinct tuple)."""
        return TrustedProxies.of(tuple(self.trusted_proxies))

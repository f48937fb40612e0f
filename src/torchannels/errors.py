"""The one exception root of torchannels, and the error codes put on the wire.

Every code here is also written in docs/protocol.md (the publish API's
``invalid_idempotency_key`` in docs/api.md); clients switch on the code,
humans read the message.
"""

from __future__ import annotations


class TorChannelsError(Exception):
    """Root of every exception torchannels raises on purpose."""


class MessageError(TorChannelsError, ValueError):
    """A message given to ``send``/``set_state`` cannot be published.

    Raised before anything is stored, so a refused message has no effect.
    """


class ChannelNameError(TorChannelsError, ValueError):
    """A channel name breaks the rules in docs/protocol.md."""


class AccessDenied(TorChannelsError):
    """Raise from ``can_access`` to deny a channel with a specific code.

    >>> AccessDenied(TOKEN_EXPIRED, "token expired").code
    'token_expired'
    """

    def __init__(self, code: str = "forbidden", message: str = "access denied") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BrokerError(TorChannelsError):
    """The broker could not store or read: it is unreachable or failed.

    Nothing is lost that the caller was told was stored: a publish that
    raises this may or may not have been stored (a network broker may fail
    after storing), and a subscriber resumes from its positions.
    """


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached right now (for example Redis is down)."""


class ChannelLimitError(TorChannelsError):
    """A publish would create a channel beyond the broker's ``channel_limit``."""


class BadRequest(TorChannelsError):
    """A subscriber's request is malformed; answered with HTTP 400.

    ``code`` is one of the ``BAD_*`` constants below.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Codes of 400 answers (``{"error": code, "message": text}``).
UNKNOWN_TRANSPORT = "unknown_transport"
MALFORMED_CURSOR = "malformed_cursor"
INVALID_CHANNEL = "invalid_channel"
TOO_MANY_CHANNELS = "too_many_channels"
NO_CHANNELS = "no_channels"
REQUEST_TOO_LARGE = "request_too_large"
BAD_PARAMETER = "bad_parameter"
BAD_MESSAGE = "bad_message"  # WebSocket: a client frame that is not a valid command
#: A publish's idempotency key is not 1-128 printable ASCII characters (docs/api.md).
INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"

# Codes of presence reads (400; on WebSocket an ``error`` frame with the channel).
PRESENCE_DISABLED = "presence_disabled"  # the channel has no presence
INVALID_CURSOR = "invalid_cursor"  # a page cursor that does not verify
INVALID_LIMIT = "invalid_limit"  # limit is not an integer 1-1000

# Code of the 503 answer to subscribe requests while the hub shuts down.
SHUTTING_DOWN = "shutting_down"

# Codes of in-band ``error`` frames, which concern one channel only.
FORBIDDEN = "forbidden"
TOKEN_EXPIRED = "token_expired"
TOKEN_REVOKED = "token_revoked"  # the token was revoked (``/api/revoke``)
UNSUBSCRIBED = "unsubscribed"  # the server unsubscribed the connection (``/api/unsubscribe``)

# Codes of a refused client publish (``publish_error`` frames, HTTP answers).
PUBLISH_FORBIDDEN = "publish_forbidden"  # the channel's publish policy says no
PUBLISH_TOO_LARGE = "publish_too_large"  # over max_client_publish_bytes
RATE_LIMITED = "rate_limited"  # over client_publish_rate: retry after retry_after
PROXY_UNAVAILABLE = "proxy_unavailable"  # the app's backend hook did not answer: retry
PROXY_ERROR = "proxy_error"  # the app's backend hook answered nonsense

# Reasons of ``disconnect`` frames: the server ends the connection on
# purpose, and the frame says whether the client may come back.
DISCONNECTED_BY_SERVER = "disconnected_by_server"  # ``/api/disconnect``
# (and TOKEN_REVOKED: the token behind the connection was revoked)

# Reasons of in-band ``reset`` frames.
RESET_EPOCH = "epoch_changed"
RESET_TRIMMED = "history_trimmed"
RESET_INVALID = "position_ahead"

# Reasons of ``reconnect`` frames: the server ends the response on purpose
# and the client should come back at once with its positions.
RECONNECT_BYTE_LIMIT = "byte_limit"
RECONNECT_SLOW = "slow_consumer"
RECONNECT_SHUTDOWN = "shutdown"
RECONNECT_EXPIRED = "token_expired"  # the authorization behind the connection lapsed
RECONNECT_BROKER = "broker_unavailable"  # history could not be read: resume shortly

# WebSocket close codes (RFC 6455 ones, and 4000-4999 for the application).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutting down: reconnect
CLOSE_TOO_BIG = 1009  # a client frame over max_request_bytes
CLOSE_SLOW = 4001  # slow consumer: reconnect at once with positions
CLOSE_TRY_AGAIN = 1013  # the broker failed: reconnect after a pause
CLOSE_EXPIRED = 4002  # authorization lapsed: refresh the token, then reconnect
CLOSE_DISCONNECTED = 4003  # ``disconnect`` with ``reconnect: false``: do not come back
CLOSE_DISCONNECTED_RECONNECT = 4004  # ``disconnect`` with ``reconnect: true``: come back at once

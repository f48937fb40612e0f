"""The client's exceptions: one root, one subclass per kind of answer.

Publishing (:mod:`torchannels.client.publisher`) raises :class:`APIError`
subclasses chosen by the API's JSON ``error`` code (docs/api.md); switch on
the class for what to do, on ``code`` for the detail. Subscribing raises
:class:`SubscribeError` when retrying cannot help, :class:`Disconnected`
when the server ended it and said not to come back. A publish by a
subscriber (:meth:`Client.publish`) raises :class:`PublishError`.
"""

from __future__ import annotations

import os
import socket
import ssl

from ..errors import TorChannelsError


class ClientError(TorChannelsError):
    """Root of everything :mod:`torchannels.client` raises on purpose."""


def plain_reason(exc: BaseException) -> str:
    """Why a connection failed, in the words a person reads: the system's
    message for its errno, not the repr of whatever wrapped it.

    >>> plain_reason(ConnectionRefusedError(111, "Connection refused"))
    'connection refused'
    >>> import tornado.iostream
    >>> plain_reason(tornado.iostream.StreamClosedError(real_error=ConnectionResetError(104, "x")))
    'connection reset by peer'
    >>> plain_reason(TimeoutError())
    'timed out'
    """
    real = getattr(exc, "real_error", None)  # Tornado's StreamClosedError says why in it
    if isinstance(real, BaseException):
        return plain_reason(real)
    if type(exc).__name__ == "StreamClosedError":
        return "the connection closed"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError) and not exc.errno:
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ConnectError(ClientError):
    """The server could not be reached, or the connection broke before an answer."""


class APIError(ClientError):
    """The publish API refused a request: ``status``, ``code``, ``message``,
    ``index`` (the refused message of a batch, else None) and ``retry_after``
    (seconds from a ``Retry-After`` header, else None)."""

    def __init__(
        self, status: int, code: str, message: str, index: int | None = None,
        retry_after: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(f"{status} {code}: {message}" if code else f"HTTP {status}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.retry_after = retry_after


class AuthError(APIError):
    """``unauthorized``, ``forbidden``, ``api_disabled``: fix the key or the server."""


class RequestError(APIError):
    """The request itself is wrong (``bad_json``, ``invalid_channel``,
    ``invalid_message``, ``invalid_idempotency_key``, ``too_many_messages``,
    ``presence_disabled``, ``invalid_cursor``, ``unknown_field``,
    ``invalid_field``, ``http_error``, ...):
    sending it again cannot succeed."""


class PayloadTooLarge(RequestError):
    """``payload_too_large``: the body is over the server's ``--max-publish-bytes``."""


class UnavailableError(APIError):
    """``broker_unavailable``, ``channel_limit``, ``shutting_down``,
    ``too_many_connections``: the server cannot do it now; maybe later."""


class ServerError(APIError):
    """``internal`` or another 5xx: a bug or a broken proxy."""


class SubscribeError(ClientError):
    """A subscription cannot go on: the server refused the request itself
    (``code``: ``invalid_channel``, ``too_many_channels``, an HTTP status, a
    WebSocket close code such as ``1009``), and asking again cannot help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PublishError(ClientError):
    """A publish by this client (:meth:`Client.publish`) failed. ``code``:
    the server's (``publish_forbidden``, ``rate_limited``, a token code, ...)
    or the client's own (``connection_lost``, ``network_error``,
    ``bad_answer``); ``message``; ``retry``: True when the same publish may
    succeed after a pause (then, for ``connection_lost`` and
    ``network_error``, it may also have been published already);
    ``retry_after``: seconds to wait, when the server said (else None);
    ``status``: the HTTP status, 0 over WebSocket or without an answer."""

    def __init__(
        self, code: str, message: str, retry: bool = False, retry_after: float | None = None,
        status: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry = retry
        self.retry_after = retry_after
        self.status = status


class Disconnected(ClientError):
    """The server ended the subscription on purpose and said not to come
    back (a ``disconnect`` frame with ``reconnect: false``, or a WebSocket
    closed with 4003): ``reason`` is ``disconnected_by_server`` or
    ``token_revoked``; ``reconnect`` is the frame's (False: one that says
    True is reconnected, never raised)."""

    def __init__(self, reason: str, reconnect: bool = False) -> None:
        super().__init__(f"disconnected by the server: {reason}")
        self.reason = reason
        self.reconnect = reconnect


#: Channel refusals after which a fresh token may help: with ``get_token``
#: the client renews it and asks again, as when a connection's token lapsed.
RENEWABLE = frozenset({"token_expired", "token_revoked"})

#: The class of each code of docs/api.md (and of the server's connection limits).
CODES: dict[str, type[APIError]] = {
    "unauthorized": AuthError,
    "forbidden": AuthError,
    "api_disabled": AuthError,
    "bad_json": RequestError,
    "unknown_field": RequestError,
    "invalid_field": RequestError,
    "invalid_channel": RequestError,
    "invalid_message": RequestError,
    "invalid_idempotency_key": RequestError,
    "too_many_messages": RequestError,
    "invalid_limit": RequestError,
    "invalid_cursor": RequestError,
    "presence_disabled": RequestError,
    "http_error": RequestError,
    "headers_too_large": RequestError,
    "uri_too_long": RequestError,
    "payload_too_large": PayloadTooLarge,
    "broker_unavailable": UnavailableError,
    "channel_limit": UnavailableError,
    "shutting_down": UnavailableError,
    "too_many_connections": UnavailableError,
    "internal": ServerError,
}


def error_class(status: int, code: str) -> type[APIError]:
    """The exception class for an answer: by ``code``, else by ``status``.

    >>> error_class(400, "invalid_channel").__name__
    'RequestError'
    >>> error_class(502, "").__name__
    'ServerError'
    """
    if code in CODES:
        return CODES[code]
    if status in (401, 403):
        return AuthError
    if status == 413:
        return PayloadTooLarge
    if status in (429, 503):
        return UnavailableError
    return ServerError if status >= 500 else RequestError

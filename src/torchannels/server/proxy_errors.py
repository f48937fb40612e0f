"""What a call to a backend hook raises when it returns no result.

A deny is the backend's own answer; the two failures are the backend's
fault, and each carries the code the client gets.

>>> HookDenied("banned", "you are banned").code, ProxyUnavailable("down").code
('banned', 'proxy_unavailable')
"""

from __future__ import annotations

from ..errors import AccessDenied, TorChannelsError

__all__ = ["PROXY_ERROR", "PROXY_UNAVAILABLE", "HookDenied", "ProxyError", "ProxyFailure",
           "ProxyUnavailable"]  # fmt: skip

#: Codes of the failures, as clients get them (``retry`` only for the first).
PROXY_UNAVAILABLE = "proxy_unavailable"
PROXY_ERROR = "proxy_error"


class HookDenied(AccessDenied):
    """The backend denied: ``{"error": {"code": ..., "message": ...}}``, its
    ``code`` and ``message`` as given (checked). An :class:`AccessDenied`,
    so a refusal reaches the client as any other."""

    retry = False


class ProxyFailure(TorChannelsError):
    """The backend did not answer as the contract says; ``code`` is what the
    client gets, ``retry`` whether trying again later may help."""

    code = PROXY_ERROR
    retry = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProxyUnavailable(ProxyFailure):
    """No answer: a timeout, a refused or cut connection, an HTTP 5xx, or
    too many calls in flight already (``retry``: try again after a pause)."""

    code = PROXY_UNAVAILABLE
    retry = True


class ProxyError(ProxyFailure):
    """An answer that breaks the contract: another status than 200 (or
    5xx), not JSON, not the shape, fields of the wrong type.

    >>> ProxyError("the answer is not JSON").code
    'proxy_error'
    """

    code = PROXY_ERROR

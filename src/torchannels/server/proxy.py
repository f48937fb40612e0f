"""Calling an app's backend hooks (proxies): one signed JSON POST, one checked answer.

The standalone server asks your backend about a connection that carries no
token (the connect hook), a channel nothing else grants (subscribe) and a
client publish on a ``publish = "proxy"`` channel (publish). Each call is
``POST URL`` with a compact JSON body and ``X-Torchannels-Signature:
sha256=HEX`` (:mod:`torchannels.proxy_signature`); the answer is HTTP 200
with ``{"result": {...}}`` (allow) or ``{"error": {"code", "message"}}``
(deny). Anything else is a failure of the backend, never a deny:

- no answer in time, connection refused, HTTP 5xx, or more calls already
  in flight than ``max_in_flight``: :class:`ProxyUnavailable` (retryable);
- any other status, or a body that is not such an object:
  :class:`ProxyError`, logged at most once a minute per hook.

What each hook sends and what its result holds: :mod:`.proxy_hooks`. Used
like this (``parse`` checks the result, and a malformed one is counted and
logged like any malformed answer)::

    connect = ProxyClient("http://127.0.0.1:8000/torchannels/connect", SECRET)
    try:
        who = await connect.call(connect_body(client, "sse", cookies, {}), parse_connect)
    except HookDenied as exc:  # the backend said no: exc.code, exc.message
        ...
    except ProxyFailure as exc:  # proxy_unavailable (exc.retry) or proxy_error
        ...
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from ..proxy_signature import SIGNATURE_HEADER, sign
from ..redaction import redact
from .proxy_errors import (
    PROXY_ERROR,
    PROXY_UNAVAILABLE,
    HookDenied,
    ProxyError,
    ProxyFailure,
    ProxyUnavailable,
)
from .proxy_hooks import parse_answer

__all__ = [
    "FAILURE_KINDS",
    "PROXY_ERROR",
    "PROXY_UNAVAILABLE",
    "CallLimit",
    "HookDenied",
    "ProxyClient",
    "ProxyError",
    "ProxyFailure",
    "ProxyUnavailable",
    "proxy_clients",
]

log = logging.getLogger("torchannels.proxy")

#: Largest answer read; past it the connection is cut (so: unavailable).
MAX_ANSWER_BYTES = 1 << 20
#: Seconds between two warnings of one kind about one hook.
WARN_INTERVAL = 60.0
#: Characters of an answer a warning quotes.
LOGGED_ANSWER_CHARS = 200

#: Keys of :attr:`ProxyClient.failures`: no answer (timeout, refused, 5xx);
#: refused at once past ``max_in_flight``; an answer breaking the contract;
#: the backend's own deny.
FAILURE_KINDS = ("unavailable", "overloaded", "malformed", "denied")

T = TypeVar("T")


def _shown_url(url: str) -> str:
    """``url`` without credentials or query, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class _Throttle:
    """At most one warning per interval; counts the ones held back."""

    __slots__ = ("clock", "held", "next_at")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.next_at = -math.inf
        self.held = 0

    def allow(self) -> int | None:
        """None to stay quiet, else how many were held back since the last."""
        now = self.clock()
        if now < self.next_at:
            self.held += 1
            return None
        held, self.held, self.next_at = self.held, 0, now + WARN_INTERVAL
        return held


class CallLimit:
    """At most ``limit`` calls in flight at once, shared by the hooks of one
    process (``--proxy-max-in-flight``); :attr:`in_flight` counts them."""

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.limit = limit
        self.in_flight = 0


class ProxyClient:
    """Calls one hook of a backend, at ``url``, signing with ``secret``.

    ``timeout`` bounds connecting and the whole call, in seconds; at most
    ``max_in_flight`` calls run at once, and one more fails at once with
    :class:`ProxyUnavailable` without a request. Hooks given one ``limit``
    (:func:`proxy_clients` does) share it instead: its limit is then theirs.
    ``name`` (``connect``, ``subscribe``, ``publish``) names the hook in
    logs and errors; ``clock`` times the warnings' interval.

    For metrics: :attr:`calls`, :attr:`failures` (by kind, see
    :data:`FAILURE_KINDS`), :attr:`in_flight`, :attr:`last_latency`.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 3.0,
        max_in_flight: int = 64,
        name: str = "connect",
        limit: CallLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a hook URL must be http:// or https:// with a host, not {url!r}")
        if not secret:
            raise ValueError("a hook needs a non-empty secret to sign its calls")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.url, self.name, self.timeout = url, name, float(timeout)
        self.limit = CallLimit(max_in_flight) if limit is None else limit
        self._secret = secret.encode()
        #: Calls made, those refused past ``max_in_flight`` included.
        self.calls = 0
        #: Calls that did not return a result, by kind (:data:`FAILURE_KINDS`).
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_KINDS, 0)
        #: Requests of this hook open now (a cancelled caller's until it ends).
        self.in_flight = 0
        #: Seconds the last finished request took (None before the first).
        self.last_latency: float | None = None
        self._http: AsyncHTTPClient | None = None  # made on the first call, in its loop
        self._warn_malformed = _Throttle(clock)
        self._warn_unavailable = _Throttle(clock)

    @property
    def max_in_flight(self) -> int:
        """Calls allowed in flight at once (shared with the hooks of ``limit``)."""
        return self.limit.limit

    def __repr__(self) -> str:
        return f"ProxyClient({self.name}: {_shown_url(self.url)})"

    def close(self) -> None:
        """Close the HTTP client (calls in flight fail)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    @overload
    async def call(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    @overload
    async def call(self, body: Mapping[str, Any], parse: Callable[[dict[str, Any]], T]) -> T: ...

    async def call(
        self, body: Mapping[str, Any], parse: Callable[[dict[str, Any]], Any] | None = None
    ) -> Any:
        """POST ``body`` (JSON-able, valid Unicode: ValueError otherwise)
        and return the answer's ``result``, or ``parse(result)``; raises
        :class:`HookDenied`, :class:`ProxyUnavailable` or :class:`ProxyError`
        (``parse`` raises :class:`ProxyError` for a malformed result)."""
        self.calls += 1
        if self.limit.in_flight >= self.limit.limit:
            self.failures["overloaded"] += 1
            reason = f"{self.limit.in_flight} calls are in flight, the most allowed"
            self._warn(self._warn_unavailable, "is unavailable", reason)
            raise ProxyUnavailable(f"the {self.name} hook is busy: {reason}")
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        request = HTTPRequest(
            self.url, method="POST", body=raw, follow_redirects=False,
            connect_timeout=self.timeout, request_timeout=self.timeout,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(raw, self._secret)},
        )  # fmt: skip
        # A cancelled caller (its client went away) does not stop the request:
        # it keeps its slot until it ends, within ``timeout``, so that
        # ``in_flight`` counts the connections really open and Tornado never
        # queues a call behind them.
        self.in_flight += 1
        self.limit.in_flight += 1
        fetch = self._client().fetch(request, raise_error=False)
        fetch.add_done_callback(functools.partial(self._ended, time.perf_counter()))
        try:
            response = await asyncio.shield(fetch)
        except (OSError, HTTPClientError) as exc:  # refused, reset, timed out, cut
            self.failures["unavailable"] += 1
            self._warn(self._warn_unavailable, "is unavailable", f"{type(exc).__name__}: {exc}")
            raise ProxyUnavailable(f"the {self.name} hook did not answer: {exc}") from None
        try:
            result = parse_answer(response.code, response.body)
            return result if parse is None else parse(result)
        except HookDenied:
            self.failures["denied"] += 1
            raise
        except ProxyUnavailable as exc:
            self.failures["unavailable"] += 1
            self._warn(self._warn_unavailable, "is unavailable", exc.message)
            raise ProxyUnavailable(f"the {self.name} hook failed: {exc.message}") from None
        except ProxyError as exc:
            self.failures["malformed"] += 1
            text = redact(response.body[:LOGGED_ANSWER_CHARS].decode("utf-8", "replace"))
            reason = f"{exc.message}; answer {text[:LOGGED_ANSWER_CHARS]!r}"
            self._warn(self._warn_malformed, "answered malformed", reason)
            raise ProxyError(f"the {self.name} hook answered malformed: {exc.message}") from None

    def _ended(self, started: float, fetch: asyncio.Future[HTTPResponse]) -> None:
        self.in_flight -= 1
        self.limit.in_flight -= 1
        self.last_latency = time.perf_counter() - started
        if not fetch.cancelled():
            fetch.exception()  # seen here, when no caller waits for it any more

    def _client(self) -> AsyncHTTPClient:
        if self._http is None:
            self._http = AsyncHTTPClient(
                force_instance=True, max_clients=self.limit.limit, max_body_size=MAX_ANSWER_BYTES
            )
        return self._http

    def _warn(self, throttle: _Throttle, what: str, reason: str) -> None:
        # Never the request body: a connect call carries the user's cookies.
        held = throttle.allow()
        if held is not None:
            more = f" ({held} more since the last warning)" if held else ""
            log.warning(
                "the %s hook (%s) %s: %s%s", self.name, _shown_url(self.url), what, reason, more
            )


def proxy_clients(
    urls: Mapping[str, str | None], secret: str, *, timeout: float = 3.0, max_in_flight: int = 64
) -> dict[str, ProxyClient]:
    """A client for each hook with a URL (``{"connect": URL, "subscribe":
    None, ...}``), named after it, all sharing one limit of
    ``max_in_flight`` calls at once: the process's."""
    limit = CallLimit(max_in_flight)
    return {
        name: ProxyClient(url, secret, timeout=timeout, name=name, limit=limit)
        for name, url in urls.items()
        if url
    }

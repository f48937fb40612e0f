"""One webhook attempt: a signed POST of a batch of events, what its answer
means, how long to wait before the next after a failure (:func:`backoff`),
and the warnings about it (:class:`Warnings`, once a minute per kind).

The body is a JSON array of the events (each :meth:`QueuedEvent.body`,
compact JSON), signed at the attempt's time with :func:`torchannels.webhooks.sign`.
The answer is one of three :class:`Outcome` kinds:

- ``delivered``: any 2xx;
- ``retry``: 408, 429, any 5xx, no answer within the timeout, a refused
  or cut connection, a name that does not resolve (anything but an answer);
- ``rejected``: any other status (3xx and 4xx: redirects are not followed):
  the receiver refuses these events for good.

>>> classify(204), classify(429), classify(503), classify(400), classify(301)
('delivered', 'retry', 'retry', 'rejected', 'rejected')
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.simple_httpclient import HTTPTimeoutError

from .brokers.lifecycle import QueuedEvent
from .webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

Kind = Literal["delivered", "retry", "rejected"]


def _version() -> str:
    # Not ``torchannels.__version__``: the package imports the hub, which
    # imports this module (the same number, from the installed metadata).
    try:
        return importlib.metadata.version("torchannels")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


#: The ``User-Agent`` of every webhook call.
USER_AGENT = f"torchannels/{_version()}"
#: Largest answer read (its body is ignored); past it the connection is
#: cut, so the attempt failed.
MAX_ANSWER_BYTES = 1 << 20
#: Seconds between two warnings of one kind.
WARN_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, and in words for logs and the admin page."""

    kind: Kind
    detail: str


def classify(code: int) -> Kind:
    """What an answer with HTTP status ``code`` means for its events."""
    if 200 <= code < 300:
        return "delivered"
    if code in (408, 429) or code >= 500:
        return "retry"
    return "rejected"


def batch_body(events: Sequence[QueuedEvent]) -> bytes:
    """The POST body: the events as a compact JSON array, in queue order."""
    return b"[" + b",".join(event.body() for event in events) + b"]"


def shown_url(url: str) -> str:
    """``url`` without credentials or query, for logs.

    >>> shown_url("https://u:pw@example.com/hook?key=1")
    'https://example.com/hook'
    """
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def new_client() -> AsyncHTTPClient:
    """The sender's own HTTP client (one call at a time)."""
    return AsyncHTTPClient(force_instance=True, max_clients=1, max_body_size=MAX_ANSWER_BYTES)


async def post(http: AsyncHTTPClient, url: str, key: bytes, body: bytes, timeout: float) -> Outcome:
    """POST ``body`` to ``url``, signed with ``key`` now; never raises but
    a cancellation."""
    stamp = int(time.time())
    request = HTTPRequest(
        url, method="POST", body=body, follow_redirects=False,
        connect_timeout=timeout, request_timeout=timeout,
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(body, key, stamp),
        },
    )  # fmt: skip
    try:
        response = await http.fetch(request, raise_error=False)
    except HTTPTimeoutError:
        return Outcome("retry", f"no answer within {timeout:g} s")
    except Exception as exc:  # refused, reset, cut, no such name: no answer
        return Outcome("retry", f"{type(exc).__name__}: {exc}")
    return Outcome(classify(response.code), f"HTTP {response.code}")


def backoff(
    failures: int,
    base: float,
    cap: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait after the ``failures``-th failed attempt of the head
    batch: d = min(cap, base * 2**(failures - 1)), then d/2 + uniform(0, d/2).

    >>> [backoff(n, 0.5, 10.0, lambda a, b: b) for n in (1, 2, 3, 6, 7, 500)]
    [0.5, 1.0, 2.0, 10.0, 10.0, 10.0]
    """
    delay = min(cap, base * 2.0 ** min(failures - 1, 64))
    return delay / 2 + uniform(0.0, delay / 2)


class Warnings:
    """At most one warning per kind per :data:`WARN_INTERVAL`, each saying
    how many of its kind were held back since the last."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.clock = log, clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        now = self.clock()
        if now < self._next.get(kind, -math.inf):
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._next[kind] = now + WARN_INTERVAL
        more = f" ({held} more like it since the last warning)" if held else ""
        self.log.warning("%s%s", message, more)

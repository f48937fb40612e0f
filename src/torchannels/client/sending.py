"""A publish by a subscriber (:meth:`Client.publish`), with the client's own
token: a ``publish`` command on one of its open WebSockets, else an HTTP
``POST`` of ``{"channel", "data"}`` to its subscribe URL (docs/protocol.md).

Not :mod:`torchannels.client.publisher`, which publishes through the API
with the API key. Answers become :class:`Published` (without ``ts``);
failures :class:`PublishError`, with ``retry`` True when the same publish
may succeed after a pause. Failures of the connection itself are the
client's codes: ``connection_lost`` (the WebSocket ended, or did not
answer, after the command was sent) and ``network_error`` (no HTTP answer):
the message may or may not have been published. ``bad_answer``: what came
back is not what the protocol says.

>>> published_of("room", {"type": "published", "id": 7, "channel": "room",
...                       "epoch": "3f9a0c12", "offset": 19})
Published(channel='room', epoch='3f9a0c12', offset=19, ts=None, duplicate=False)
>>> e = frame_error({"type": "publish_error", "id": 7, "channel": "room",
...                  "code": "rate_limited", "message": "slow down", "retry": True,
...                  "retry_after": 1.5})
>>> e.code, e.retry, e.retry_after, e.status
('rate_limited', True, 1.5, 0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tornado.httputil import HTTPHeaders

from ..protocol import check_channel, check_message, dumps, encode_message
from .calls import Published
from .connections import Dropped, NotSent, Refused, WebSocketConnection
from .errors import RENEWABLE, ConnectError, PublishError
from .httpget import fetch

if TYPE_CHECKING:
    from .client import Client

#: The server's codes after which the same publish may succeed after a pause.
RETRYABLE = frozenset({"rate_limited", "proxy_unavailable", "broker_unavailable"})
#: The client's own codes.
CONNECTION_LOST = "connection_lost"
NETWORK_ERROR = "network_error"
BAD_ANSWER = "bad_answer"
#: HTTP statuses of a proxy in front that could not get an answer (it may have
#: passed the publish on): retryable when the body is not the server's JSON.
GATEWAY = frozenset({502, 503, 504})
MAYBE = "the message may or may not have been published"


def check(channel: str, data: Mapping[str, Any]) -> None:
    """Refuse before anything is sent (``ValueError``s): a channel name
    outside the protocol's rules, ``data`` that is not a dict, uses a
    reserved key or is not JSON (``NaN``, a lone surrogate, an object)."""
    check_channel(channel)
    encode_message(check_message(data))


async def publish(
    client: Client, channel: str, data: Mapping[str, Any], sockets: Sequence[WebSocketConnection]
) -> Published:  # fmt: skip
    """:meth:`Client.publish`: on the first usable socket of ``sockets``
    (the next one, or HTTP, when it turns out to have ended before the
    command went out), else over HTTP."""
    check(channel, data)
    command = {"type": "publish", "channel": channel, "data": data}
    for socket in sockets:
        if not socket.usable:
            continue
        try:
            frame = await socket.ask(command, channel, client.connect_timeout, by_id=True)
        except NotSent:
            continue  # nothing went out on it
        except (Dropped, Refused) as exc:
            why = f"the WebSocket ended before the answer ({exc})"
            raise PublishError(CONNECTION_LOST, f"{why}; {MAYBE}", retry=True) from None
        except TimeoutError:
            why = f"no answer on the WebSocket within {client.connect_timeout:.1f} s"
            raise PublishError(CONNECTION_LOST, f"{why}; {MAYBE}", retry=True) from None
        if frame.get("type") == "published":
            return published_of(channel, frame)
        raise frame_error(frame)
    return await _post(client, channel, data)


def published_of(channel: str, doc: Mapping[str, Any], status: int = 0) -> Published:
    """A ``published`` frame, or the HTTP answer ``{"channel", "epoch", "offset"}``."""
    name, epoch, offset = doc.get("channel", channel), doc.get("epoch"), doc.get("offset")
    if (
        not isinstance(name, str) or not isinstance(epoch, str) or not epoch
        or isinstance(offset, bool) or not isinstance(offset, int) or offset < 0
    ):  # fmt: skip
        raise PublishError(BAD_ANSWER, f"a success answer without its position (it was "
                           f"probably published): {dict(doc)!r:.200}", status=status)  # fmt: skip
    return Published(name, epoch, offset)


def frame_error(frame: Mapping[str, Any]) -> PublishError:
    """A ``publish_error`` frame (or the ``error`` ``bad_message`` of a
    server that knows no ``publish`` command) as the exception."""
    code, message = frame.get("code"), frame.get("message", "")
    if not isinstance(code, str) or not code:
        return PublishError(BAD_ANSWER, f"an answer without a code: {dict(frame)!r:.200}")
    retry = frame.get("retry")
    retry = retry if isinstance(retry, bool) else code in RETRYABLE
    return PublishError(code, str(message), retry, _seconds(frame.get("retry_after")))


async def _post(client: Client, channel: str, data: Mapping[str, Any]) -> Published:
    """``POST`` to the subscribe URL with the client's token and headers;
    on ``token_expired``/``token_revoked`` a client with ``get_token``
    renews it and sends once more (the server stored nothing)."""
    body = dumps({"channel": channel, "data": data})
    if client.token is None and client.get_token is not None:
        await client.renew_token()
    for attempt in (1, 2):
        headers = {**client.headers, "Content-Type": "application/json"}
        if client.token:
            headers["Authorization"] = f"Bearer {client.token}"
        try:
            status, head, answer = await fetch(client.url, headers, client.connect_timeout,
                                               method="POST", body=body)  # fmt: skip
        except ConnectError as exc:
            raise PublishError(NETWORK_ERROR, f"{exc}; {MAYBE}", retry=True) from exc
        if status == 200:
            return published_of(channel, _json(answer) or {}, status)
        error = http_error(status, head, answer)
        if error.code not in RENEWABLE or client.get_token is None or attempt == 2:
            raise error
        await client.renew_token()  # it lapsed or was revoked: once more with a fresh one
    raise AssertionError("unreachable")


def http_error(status: int, head: HTTPHeaders | Mapping[str, str], body: bytes) -> PublishError:
    """A refused POST: ``{"error": CODE, "message": TEXT}`` (and
    ``Retry-After``), or ``bad_answer`` for a body that is not that (a
    proxy's page: retryable for 502, 503, 504).

    >>> e = http_error(429, {"Retry-After": "2"}, b'{"error": "rate_limited", "message": "m"}')
    >>> e.code, e.retry, e.retry_after, e.status
    ('rate_limited', True, 2.0, 429)
    >>> e = http_error(502, {}, b"<html>Bad Gateway</html>")
    >>> e.code, e.retry, e.status
    ('bad_answer', True, 502)
    """
    doc = _json(body)
    code = doc.get("error") if doc is not None else None
    if doc is None or not isinstance(code, str) or not code:
        text = body[:200].decode(errors="replace")
        return PublishError(BAD_ANSWER, f"HTTP {status}: {text}", status in GATEWAY, None, status)
    after = _seconds(head.get("Retry-After"))
    if after is None:
        after = _seconds(doc.get("retry_after"))
    return PublishError(code, str(doc.get("message", "")), code in RETRYABLE, after, status)


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _seconds(value: object) -> float | None:
    """A ``retry_after`` or ``Retry-After`` in seconds (an HTTP date, or
    anything else, is None)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None

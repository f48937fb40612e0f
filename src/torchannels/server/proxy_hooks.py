"""What the server sends each backend hook, and what it accepts back
(docs/api.md, "Backend hooks (proxies)").

Bodies carry every field, ``null`` when unknown. An answer is HTTP 200 with
``{"result": {...}}`` or ``{"error": {"code", "message"}}``
(:func:`parse_answer`); each hook's result is checked and turned into Python
values by its parser, and anything breaking the contract raises
:class:`~.proxy_errors.ProxyError` (pass the parser to
:meth:`ProxyClient.call <.proxy.ProxyClient.call>` so that it is counted and
logged as malformed).

>>> parse_connect({"user": "42", "info": None, "channels": ["room:*"]})
ConnectResult(user='42', info=None, channels=('room:*',), publish=(), expires=None)
>>> parse_publish({}), parse_publish({"data": {"text": "hi"}})
(None, {'text': 'hi'})
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ChannelNameError
from ..identity import check_info
from ..patterns import ChannelPatterns
from ..protocol import RESERVED_KEYS
from ..strict_json import strict_loads
from .proxy_errors import HookDenied, ProxyError, ProxyUnavailable

__all__ = [
    "ConnectResult",
    "connect_body",
    "parse_answer",
    "parse_connect",
    "parse_publish",
    "parse_subscribe",
    "pick_headers",
    "publish_body",
    "subscribe_body",
]

#: What a backend's own deny code must match.
DENY_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Longest deny message accepted, in characters.
MAX_DENY_MESSAGE = 500
#: Most characters of a user id.
MAX_USER_LENGTH = 256
#: Largest ``expires`` taken for seconds; past it, it is milliseconds (refused).
MAX_UNIX_SECONDS = 1e11
#: Keys a publish hook's replacement ``data`` may not use (the server sets them).
RESERVED_DATA_KEYS = RESERVED_KEYS | {"sender"}


def _decode(body: bytes) -> Any:
    try:
        return strict_loads(body)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ProxyError(f"the answer is not JSON: {exc}") from None
    except RecursionError:
        raise ProxyError("the answer nests too deeply") from None


def parse_answer(status: int, body: bytes) -> dict[str, Any]:
    """The ``result`` object of an answer, or the exception it stands for.

    >>> parse_answer(200, b'{"result": {"user": "42"}}')
    {'user': '42'}
    >>> parse_answer(200, b'{"error": {"code": "banned", "message": "no"}}')
    Traceback (most recent call last):
    ...
    torchannels.server.proxy_errors.HookDenied: no
    >>> parse_answer(404, b"")
    Traceback (most recent call last):
    ...
    torchannels.server.proxy_errors.ProxyError: the answer has HTTP status 404, not 200
    """
    if 500 <= status <= 599:
        raise ProxyUnavailable(f"the answer has HTTP status {status}")
    if status != 200:
        raise ProxyError(f"the answer has HTTP status {status}, not 200")
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise ProxyError(f"the answer is {_json_kind(doc)}, not a JSON object")
    if ("result" in doc) == ("error" in doc):
        which = "both" if "result" in doc else "neither"
        raise ProxyError(f"the answer has {which} of 'result' and 'error'")
    if "result" in doc:
        result = doc["result"]
        if not isinstance(result, dict):
            raise ProxyError("'result' must be a JSON object")
        return result
    error = doc["error"]
    if not isinstance(error, dict):
        raise ProxyError("'error' must be a JSON object")
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or DENY_CODE_RE.fullmatch(code) is None:
        raise ProxyError(
            f"'error.code' must be a string matching [a-z][a-z0-9_]{{0,63}}, not {_short(code)}"
        )
    if not isinstance(message, str) or len(message) > MAX_DENY_MESSAGE:
        raise ProxyError(
            f"'error.message' must be a string of {MAX_DENY_MESSAGE} characters at most"
        )
    raise HookDenied(code, message)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    kinds = {bool: "true or false", str: "a string", list: "an array"}
    return kinds.get(type(value), "a number")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """What the connect hook said about a connection: as a token whose
    ``sub``, ``info``, ``channels``, ``publish`` and ``exp`` these are
    (``user`` None: anonymous; ``expires`` None: no end)."""

    user: str | None
    info: Mapping[str, Any] | None
    channels: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    expires: float | None = None


def connect_body(
    client: str, transport: str, cookies: Mapping[str, str], headers: Mapping[str, str]
) -> dict[str, Any]:
    """The connect hook's request: the bare client id, the transport, the
    request's cookies and its headers in the allow-list (:func:`pick_headers`).

    >>> connect_body("5c1e0a9f-2s", "sse", {"session": "abc"}, {})
    {'client': '5c1e0a9f-2s', 'transport': 'sse', 'cookies': {'session': 'abc'}, 'headers': {}}
    """
    return {
        "client": client,
        "transport": transport,
        "cookies": dict(cookies),
        "headers": dict(headers),
    }


def subscribe_body(
    client: str, user: str | None, channel: str, info: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The subscribe hook's request: who asks (``user`` and ``info`` None
    for an anonymous connection) for which channel.

    >>> subscribe_body("5c1e0a9f-2s", "42", "room:1", None)
    {'client': '5c1e0a9f-2s', 'user': '42', 'channel': 'room:1', 'info': None}
    """
    return {"client": client, "user": user, "channel": channel, "info": info}


def publish_body(
    client: str, user: str | None, channel: str, data: Mapping[str, Any]
) -> dict[str, Any]:
    """The publish hook's request: who publishes ``data`` to which channel.

    >>> publish_body("5c1e0a9f-2s", None, "room:1", {"text": "hi"})
    {'client': '5c1e0a9f-2s', 'user': None, 'channel': 'room:1', 'data': {'text': 'hi'}}
    """
    return {"client": client, "user": user, "channel": channel, "data": data}


def pick_headers(headers: Mapping[str, str], allowed: Iterable[str]) -> dict[str, str]:
    """The request headers named in ``allowed`` (``--proxy-headers``), found
    whatever their case and keyed by their lowercase name; repeated headers
    as Tornado joins them (``a,b``).

    >>> pick_headers({"User-Agent": "curl", "Cookie": "s=1"}, ["user-agent", "X-Real-Ip"])
    {'user-agent': 'curl'}
    """
    present = {name.lower(): value for name, value in headers.items()}
    wanted = dict.fromkeys(name.lower() for name in allowed)
    return {name: present[name] for name in wanted if name in present}


def _patterns(result: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = result.get(key, [])
    if not isinstance(value, list):
        raise ProxyError(f"connect result '{key}' must be a list of channel patterns")
    try:
        return ChannelPatterns(value).patterns
    except (ChannelNameError, TypeError) as exc:
        raise ProxyError(f"connect result '{key}': {exc}") from None


def _expires(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            number = math.inf
        if 0 <= number <= MAX_UNIX_SECONDS:
            return number
        if MAX_UNIX_SECONDS < number < math.inf:
            raise ProxyError(
                f"connect result 'expires' is {value}: a Unix time in milliseconds? "
                f"send seconds ({number / 1000:.0f})"
            )
    raise ProxyError("connect result 'expires' must be null or a Unix time in seconds")


def parse_connect(result: Mapping[str, Any]) -> ConnectResult:
    """Check a connect result: ``user`` (null or a string of 1 to 256
    characters) and ``info`` (null or a JSON object of at most 1 KiB)
    present; ``channels`` and ``publish`` lists of channel patterns,
    ``expires`` null or Unix seconds, when present.

    >>> parse_connect({"user": "", "info": None})
    Traceback (most recent call last):
    ...
    torchannels.server.proxy_errors.ProxyError: connect result 'user' must be null or a string of 1 to 256 characters
    """  # noqa: E501
    for key in ("user", "info"):
        if key not in result:
            raise ProxyError(f"connect result has no '{key}' (null when there is none)")
    user = result["user"]
    if user is not None and (not isinstance(user, str) or not 0 < len(user) <= MAX_USER_LENGTH):
        raise ProxyError(
            f"connect result 'user' must be null or a string of 1 to {MAX_USER_LENGTH} characters"
        )
    try:
        info = check_info(result["info"])
    except ValueError as exc:
        raise ProxyError(f"connect result 'info': {exc}") from None
    return ConnectResult(
        user=user,
        info=info,
        channels=_patterns(result, "channels"),
        publish=_patterns(result, "publish"),
        expires=_expires(result.get("expires")),
    )


def parse_subscribe(result: Mapping[str, Any]) -> None:
    """Check a subscribe result: ``{}`` allows (keys it does not know are
    ignored, for hooks of later versions)."""
    return None


def parse_publish(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """Check a publish result: ``{}`` publishes the client's data (None),
    ``{"data": OBJECT}`` publishes that object instead (returned); the
    object may not use a reserved key (:data:`RESERVED_DATA_KEYS`).

    >>> parse_publish({"data": {"sender": "me"}})
    Traceback (most recent call last):
    ...
    torchannels.server.proxy_errors.ProxyError: publish result 'data' uses reserved key(s) ['sender']
    """  # noqa: E501
    if "data" not in result:
        return None
    data = result["data"]
    if not isinstance(data, dict):
        raise ProxyError("publish result 'data' must be a JSON object")
    clash = RESERVED_DATA_KEYS.intersection(data)
    if clash:
        raise ProxyError(f"publish result 'data' uses reserved key(s) {sorted(clash)}")
    return data

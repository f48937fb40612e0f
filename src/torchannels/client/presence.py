"""Presence on the wire into typed values, and the one-off read of a
channel's presence (:meth:`Client.presence`).

>>> snapshot_of("room", {"clients": 3, "users": 2, "next": None, "members": [
...     {"user": "ann", "info": {"name": "Ann"}, "clients": 2}, {"user": "bob", "info": None}]})
... # doctest: +NORMALIZE_WHITESPACE
PresenceSnapshot(channel='room', members=(Member(user='ann', info={'name': 'Ann'}, clients=2),
    Member(user='bob', info=None, clients=1)), clients=3, users=2, next=None)
>>> diff_of({"type": "presence", "channel": "room", "joins": [{"user": "cy", "info": None}],
...          "leaves": [{"user": "ann"}]})
PresenceDiff(channel='room', joins=(Member(user='cy', info=None, clients=1),), leaves=('ann',))

Malformed values raise ``TypeError``/``KeyError``/``ValueError`` (the
tracker turns them into ``MalformedFrame``); unknown fields are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from .connections import Dropped, Refused, WebSocketConnection, error_of
from .errors import RENEWABLE, APIError, ConnectError, error_class
from .events import Member, PresenceDiff, PresencePage, PresenceSnapshot
from .httpget import fetch

if TYPE_CHECKING:
    from .client import Client

Page = TypeVar("Page", bound=PresencePage)
#: The codes of a refused read that are about credentials, not the request
#: (a WebSocket ``error`` frame has no HTTP status to class it by).
DENIED = frozenset({"forbidden", "invalid_info"})


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{name} is not a count: {value!r:.50}")
    return value


def member_of(value: Any) -> Member:
    """``{"user": ID, "info": {...}|null, "clients": K}`` (``clients`` 1 when absent)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"a member that is not an object: {value!r:.100}")
    user, info = value["user"], value.get("info")
    if not isinstance(user, str):
        raise TypeError(f"a user id that is not a string: {user!r:.50}")
    if info is not None and not isinstance(info, Mapping):
        raise TypeError(f"an info that is not an object: {info!r:.100}")
    return Member(user, info, _count(value.get("clients", 1), "clients"))


def page_of(kind: type[Page], channel: str, doc: Mapping[str, Any]) -> Page:
    """A page from the fields ``members``, ``clients``, ``users``, ``next``
    (of a ``subscribed`` frame's ``presence``, a ``presence_page`` frame or
    the HTTP answer)."""
    members = doc["members"]
    if not isinstance(members, list):
        raise TypeError(f"members is not a list: {members!r:.100}")
    after = doc.get("next")
    if after is not None and not isinstance(after, str):
        raise TypeError(f"next is not a string: {after!r:.50}")
    return kind(channel, tuple(member_of(m) for m in members),
                _count(doc["clients"], "clients"), _count(doc["users"], "users"),
                after)  # fmt: skip


def snapshot_of(channel: str, presence: Mapping[str, Any]) -> PresenceSnapshot:
    """The ``presence`` object of a ``subscribed`` frame."""
    if not isinstance(presence, Mapping):
        raise TypeError(f"presence is not an object: {presence!r:.100}")
    return page_of(PresenceSnapshot, channel, presence)


def diff_of(frame: Mapping[str, Any]) -> PresenceDiff:
    """A ``presence`` frame: ``joins`` as members, ``leaves`` as user ids."""
    joins, leaves = frame.get("joins") or [], frame.get("leaves") or []
    if not isinstance(joins, list) or not isinstance(leaves, list):
        raise TypeError(f"joins and leaves must be lists: {frame!r:.200}")
    gone = tuple(member_of(m).user for m in leaves)
    return PresenceDiff(str(frame["channel"]), tuple(member_of(m) for m in joins), gone)


def refusal(code: str, message: str, status: int = 0) -> APIError:
    """The exception for a refused read: by code, as the publish API's
    (``presence_disabled``, ``invalid_cursor``, ``invalid_limit`` are
    :class:`RequestError`; ``forbidden`` and token codes :class:`AuthError`)."""
    if not status:
        status = 403 if code in DENIED or code.startswith("token_") else 400
    return error_class(status, code)(status, code, message)


async def read_presence(
    client: Client, channel: str, after: str | None, limit: int | None,
    sockets: Sequence[WebSocketConnection],
) -> PresencePage:  # fmt: skip
    """:meth:`Client.presence`: on the first usable socket of ``sockets``,
    else (or if that socket ends before the answer) over HTTP."""
    command: dict[str, Any] = {"type": "presence", "channel": channel}
    if after is not None:
        command["after"] = after
    if limit is not None:
        command["limit"] = limit
    for socket in sockets:
        if not socket.usable:
            continue
        try:
            frame = await socket.ask(command, channel, client.connect_timeout)
        except (Dropped, Refused):
            break  # the socket ended: ask over HTTP instead
        except TimeoutError:
            raise ConnectError(f"no answer within {client.connect_timeout:.1f} s") from None
        if frame.get("type") == "error":
            raise refusal(str(frame.get("code")), str(frame.get("message", "")))
        return _page(channel, frame)
    return await _read_http(client, channel, command)


async def _read_http(client: Client, channel: str, command: dict[str, Any]) -> PresencePage:
    query = {"presence": channel} | {k: command[k] for k in ("after", "limit") if k in command}
    url = client.url + ("&" if "?" in client.url else "?") + urlencode(query)
    if client.token is None and client.get_token is not None:
        await client.renew_token()
    for attempt in (1, 2):
        headers = dict(client.headers)
        if client.token:
            headers["Authorization"] = f"Bearer {client.token}"
        status, _, body = await fetch(url, headers, client.connect_timeout)
        if status == 200:
            return _page(channel, body)
        code, message = error_of(status, body)
        if code not in RENEWABLE or client.get_token is None or attempt == 2:
            raise refusal(code, message, status)
        await client.renew_token()  # it lapsed or was revoked: once more with a fresh one
    raise AssertionError("unreachable")


def _page(channel: str, answer: bytes | Mapping[str, Any]) -> PresencePage:
    """An answer (HTTP body, or ``presence_page`` frame) as a page; a
    malformed one is a :class:`ServerError` (a broken server or proxy)."""
    try:
        doc = json.loads(answer) if isinstance(answer, bytes) else answer
        if not isinstance(doc, Mapping):
            raise TypeError("not an object")
        return page_of(PresencePage, str(doc.get("channel", channel)), doc)
    except (ValueError, TypeError, KeyError) as exc:
        message = f"a malformed presence answer ({exc}): {answer!r:.200}"
        raise error_class(502, "")(502, "", message) from exc

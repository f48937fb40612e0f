"""The publish API's requests and answers, shared by :class:`Publisher` (sync)
and :class:`AsyncPublisher`: each method builds a :class:`Call`, the two
publishers only move its bytes, and :func:`answer` turns what came back into
a result or a typed :class:`APIError`, in one place.

Every publish carries an idempotency key (docs/api.md, "Idempotency keys"):
one per call (the ``Idempotency-Key`` header), one per message of a batch
(its ``idempotency_key``), made here unless the caller gave one. The server
stores a publish whose key it has seen in that channel once, and answers the
first's position with ``"duplicate": true``; so a publish can be sent again
after any failure that may have come after it was stored.

When retrying is safe (docs/python-client.md, "Retries"): a request the
server surely did not act on (the connection was refused; a 503
``too_many_connections`` or ``shutting_down``, answered before the request
is read) is retried whatever it is; any other 503, a timeout or a connection
that broke before the answer only for an idempotent call: a publish (its
keys), a read, ``set_state``, ``revoke``. Never a 4xx or another 5xx.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from ..control import check_id, check_time
from ..errors import BadRequest
from ..protocol import check_channel, check_idempotency_key
from .errors import APIError, error_class
from .events import Member

#: 503 codes answered before the server acted on the request.
NOT_ACTED = frozenset({"too_many_connections", "shutting_down"})


@dataclass(frozen=True)
class Call:
    """One API request: ``method``, ``path`` (with its query), ``body``,
    whether sending it twice does no harm (``idempotent``), and the
    ``idempotency_key`` sent as its ``Idempotency-Key`` header (None: none)."""

    method: str
    path: str
    body: bytes | None
    idempotent: bool
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Published:
    """Where a message went: its channel, the channel's ``epoch``, the
    message's ``offset`` and ``ts``, the server time of publication (the
    API's answer has it; a subscriber's publish, :meth:`Client.publish`, is
    answered without it: None). ``duplicate``: the server had already
    stored a publish with this idempotency key in this channel (an earlier
    attempt whose answer was lost, or the same key sent again), stored
    nothing now, and the position and ``ts`` are the first one's."""

    channel: str
    epoch: str
    offset: int
    ts: float | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class StateSet:
    """The position a channel's new state stands for."""

    channel: str
    epoch: str
    offset: int


@dataclass(frozen=True)
class ControlResult:
    """The answer of ``disconnect``, ``unsubscribe`` and ``revoke``:
    ``connections`` ended (or unsubscribed), summed over the server
    processes that ``answered`` within 1 s of the ``processes`` the command
    reached (when fewer answered, ``connections`` is a lower bound);
    ``expires``, for ``revoke``, when the revocation is forgotten (Unix
    seconds), else None."""

    connections: int
    processes: int
    answered: int
    expires: float | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ControlResult:
        expires = doc.get("expires")
        return cls(doc["connections"], doc["processes"], doc["answered"],
                   None if expires is None else float(expires))  # fmt: skip


@dataclass(frozen=True)
class PresenceCounts:
    """A presence channel's ``clients`` (connections, anonymous ones too)
    and ``users`` (distinct users), over every process."""

    clients: int
    users: int


@dataclass(frozen=True)
class ChannelInfo:
    """A channel's position (``epoch``, ``offset``: its last message, 0 for
    none), ``history_length``, ``has_state``, ``local_subscribers`` (in the
    answering process), ``subscribers`` (every process, when the server
    says; else None) and ``presence`` (its counts when the channel has
    presence, else None)."""

    channel: str
    epoch: str
    offset: int
    history_length: int
    has_state: bool
    local_subscribers: int
    subscribers: int | None = None
    presence: PresenceCounts | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ChannelInfo:
        counts = doc.get("presence")
        return cls(
            channel=doc["channel"], epoch=doc["epoch"], offset=doc["offset"],
            history_length=doc["history_length"], has_state=doc["has_state"],
            local_subscribers=doc.get("local_subscribers", 0),
            subscribers=doc.get("subscribers"),
            presence=PresenceCounts(counts["clients"], counts["users"]) if counts else None,
        )  # fmt: skip


@dataclass(frozen=True)
class UserPage:
    """One page of ``GET /api/channels/NAME/presence``: its ``users``
    (:class:`Member`), sorted by user id, and ``next``, the ``after`` of the
    next page (an opaque cursor; None on the last)."""

    channel: str
    users: list[Member]
    next: str | None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UserPage:
        users = [Member(u["user"], u.get("info"), u["clients"]) for u in doc["users"]]
        return cls(doc["channel"], users, doc.get("next"))


@dataclass(frozen=True)
class ChannelPage:
    """One page of ``GET /api/channels``: its channels, sorted by name, and
    ``next``, the ``after`` of the next page (None on the last)."""

    channels: list[ChannelInfo]
    next: str | None


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def checked_key(key: object = None) -> str:
    """``key`` when it is a valid idempotency key, checked by the server's
    rule (:func:`torchannels.protocol.check_idempotency_key`) before anything
    is sent, else ``ValueError``; a new one (``uuid.uuid4().hex``) when it is None."""
    if key is None:
        return uuid.uuid4().hex
    try:
        return check_idempotency_key(key)
    except BadRequest as exc:
        raise ValueError(exc.message) from None


def publish(channel: str, data: Mapping[str, Any], idempotency_key: str | None = None) -> Call:
    """One message to ``channel``, with ``idempotency_key`` (a new one when None)."""
    key = checked_key(idempotency_key)
    return Call("POST", "/api/publish", _json({"channel": channel, "data": data}), True, key)


def publish_many(channels: Iterable[str], data: Mapping[str, Any],
                 idempotency_key: str | None = None) -> Call:  # fmt: skip
    """``data`` to each channel, with one key (each channel keeps it apart)."""
    key = checked_key(idempotency_key)
    body = {"channels": list(channels), "data": data}
    return Call("POST", "/api/publish", _json(body), True, key)


Batch = Iterable[tuple[str, Mapping[str, Any]] | Mapping[str, Any]]


def publish_batch(messages: Batch) -> Call:
    """``messages``: ``(channel, data)`` pairs or ``{"channel": ...,
    "data": ..., "idempotency_key": ...}`` objects (the key optional); each
    message gets its own key, a new one where none was given."""
    items = [dict(m) if isinstance(m, Mapping) else {"channel": m[0], "data": m[1]}
             for m in messages]  # fmt: skip
    for item in items:
        item["idempotency_key"] = checked_key(item.get("idempotency_key"))
    return Call("POST", "/api/publish", _json({"messages": items}), True)


def set_state(channel: str, messages: Iterable[Mapping[str, Any]]) -> Call:
    body = {"channel": channel, "messages": list(messages)}
    return Call("POST", "/api/state", _json(body), True)


def channel_info(channel: str) -> Call:
    check_channel(channel)  # a bad name would only become another path
    return Call("GET", "/api/channels/" + quote(channel, safe=""), None, True)


def list_channels(prefix: str | None = None, limit: int | None = None,
                  after: str | None = None) -> Call:  # fmt: skip
    query = {k: v for k, v in (("prefix", prefix), ("limit", limit), ("after", after))
             if v is not None}  # fmt: skip
    return Call("GET", "/api/channels" + (f"?{urlencode(query)}" if query else ""), None, True)


def presence(channel: str, after: str | None = None, limit: int | None = None) -> Call:
    check_channel(channel)
    query = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
    path = f"/api/channels/{quote(channel, safe='')}/presence"
    return Call("GET", path + (f"?{urlencode(query)}" if query else ""), None, True)


def _one_of(**ids: str | None) -> dict[str, str]:
    """The one id given of ``ids`` (``{"user": "42"}``), checked by the
    server's own rule (:func:`torchannels.control.check_id`); a
    ``ValueError`` for none, both, or a bad one. A ``client`` may be given
    as a subscriber got it (``CLIENT~SINCE.SIG``, the ``client_id`` of a
    :class:`ChannelFeed`): the API takes the id, the part before ``~``."""
    given = {name: value for name, value in ids.items() if value is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one of {' or '.join(ids)}, not {len(given)}")
    [(name, value)] = given.items()
    if name == "client" and isinstance(value, str):
        value = value.partition("~")[0]  # server-made ids have no "~"
    return {name: check_id(name, value)}


def _seconds(name: str, value: float) -> float:
    """``value``, a Unix time in seconds by the server's rule (sent as given:
    an integer stays one)."""
    check_time(name, value)
    return value


def disconnect(user: str | None = None, client: str | None = None,
               reconnect: bool = False) -> Call:  # fmt: skip
    """End the connections of ``user`` (every one) or of one ``client`` id;
    ``reconnect``: tell them to come back at once (for a fresh token)."""
    body: dict[str, Any] = _one_of(user=user, client=client)
    if not isinstance(reconnect, bool):
        raise ValueError(f"reconnect must be True or False, not {reconnect!r:.80}")
    if reconnect:
        body["reconnect"] = True
    # Not idempotent: sent twice, it may end the connections made after the first.
    return Call("POST", "/api/disconnect", _json(body), False)


def unsubscribe(channel: str, user: str | None = None, client: str | None = None) -> Call:
    """Stop delivering ``channel`` to the connections of ``user`` or ``client``."""
    body: dict[str, Any] = {**_one_of(user=user, client=client), "channel": check_channel(channel)}
    return Call("POST", "/api/unsubscribe", _json(body), False)


def revoke(user: str | None = None, before: float | None = None, jti: str | None = None,
           expires: float | None = None) -> Call:  # fmt: skip
    """Refuse the tokens of ``user`` issued ``before`` (Unix seconds), or the
    one token whose ``jti`` claim is given, until ``expires`` (for ``jti``
    required: the token's own ``exp``). The same revocation twice is one."""
    body: dict[str, Any] = _one_of(user=user, jti=jti)
    if user is not None:
        if before is None:
            raise ValueError("revoking a user's tokens needs before (Unix seconds)")
        body["before"] = _seconds("before", before)
    elif before is not None:
        raise ValueError("before goes with user; a jti is revoked until expires")
    elif expires is None:
        raise ValueError("revoking a jti needs expires (Unix seconds: the token's exp)")
    if expires is not None:
        body["expires"] = _seconds("expires", expires)
    return Call("POST", "/api/revoke", _json(body), True)


def headers(api_key: str, call: Call) -> dict[str, str]:
    out = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    if call.body is not None:
        out["Content-Type"] = "application/json"
    if call.idempotency_key is not None:
        out["Idempotency-Key"] = call.idempotency_key
    return out


def answer(status: int, head: Mapping[str, str], body: bytes) -> Any:
    """The JSON of a 200 answer; else the :class:`APIError` subclass for its code."""
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if status == 200 and doc is not None:
        return doc
    code, message, index = "", body[:200].decode(errors="replace"), None
    if isinstance(doc, dict):
        code = str(doc.get("error") or doc.get("status") or "")
        message = str(doc.get("message", message))
        index = doc.get("index") if isinstance(doc.get("index"), int) else None
    retry_after: float | None = None
    with_retry = head.get("Retry-After")
    if with_retry is not None and with_retry.strip().isdigit():
        retry_after = float(with_retry)
    raise error_class(status, code)(status, code, message, index, retry_after)


def retry_delay(call: Call, error: Exception, attempt: int, refused: bool,
                rng: random.Random) -> float | None:  # fmt: skip
    """Seconds to wait before sending ``call`` again after ``error`` (its
    ``attempt``-th failure, from 1), or None when it must not be retried.
    ``refused``: the connection was refused, so nothing was sent. The pause
    is the answer's ``Retry-After`` (at most 30 s), else full jitter:
    uniform in [0, min(5, 0.2 * 2**attempt)]."""
    if isinstance(error, APIError):
        if error.status != 503 or not (call.idempotent or error.code in NOT_ACTED):
            return None
        if error.retry_after is not None:
            return min(error.retry_after, 30.0)
    elif not (refused or call.idempotent):
        return None
    return rng.uniform(0, min(5.0, 0.2 * 2**attempt))


def published(doc: Mapping[str, Any]) -> Published:
    return Published(doc["channel"], doc["epoch"], doc["offset"], doc["ts"],
                     doc.get("duplicate") is True)  # fmt: skip


def page(doc: Mapping[str, Any]) -> ChannelPage:
    return ChannelPage([ChannelInfo.from_json(c) for c in doc["channels"]], doc.get("next"))

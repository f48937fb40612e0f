"""The HTTP publish API of the standalone server (docs/api.md, openapi.json).

Backends in any language publish with a POST and an API key::

    curl -H "Authorization: Bearer $KEY" -d '{"channel": "news", "data": {"text": "hi"}}' \\
         http://127.0.0.1:8090/api/publish

and many messages in one request with ``{"messages": [{"channel", "data"}, ...]}``.
A publish may carry an idempotency key (the ``Idempotency-Key`` header, or
``"idempotency_key"`` per message of a batch), so a retry stores nothing twice.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from tornado.web import RequestHandler, stream_request_body

from ..brokers.base import ChannelInfo
from ..cors import CorsPolicy
from ..errors import (
    INVALID_IDEMPOTENCY_KEY,
    BadRequest,
    BrokerError,
    ChannelLimitError,
    ChannelNameError,
    MessageError,
    TorChannelsError,
)
from ..frames import Duplicate, Publication
from ..hub import Hub
from ..protocol import (
    check_channel,
    check_idempotency_key,
    check_message,
    dumps,
    encode_message,
)
from ..tornado_compat import status_reason

#: Messages one batch publish (``{"messages": [...]}``) may carry at most.
MAX_BATCH = 1000

#: Error codes of the API (``{"error": code, "message": text}``).
UNAUTHORIZED = "unauthorized"  # 401: no key given
FORBIDDEN = "forbidden"  # 403: wrong key
API_DISABLED = "api_disabled"  # 403: the server has no API key configured
PAYLOAD_TOO_LARGE = "payload_too_large"  # 413
BAD_JSON = "bad_json"  # 400: body is not a JSON object of the right shape
INVALID_CHANNEL = "invalid_channel"  # 400
INVALID_MESSAGE = "invalid_message"  # 400: reserved key, not JSON-able, ...
BROKER_UNAVAILABLE = "broker_unavailable"  # 503: the broker (Redis) cannot be reached
CHANNEL_LIMIT = "channel_limit"  # 503: the in-memory broker holds its most channels
TOO_MANY_MESSAGES = "too_many_messages"  # 400: a batch of more than MAX_BATCH messages
# And INVALID_IDEMPOTENCY_KEY (errors.py), 400: a key that is not 1-128 printable ASCII.

#: The request header of a one-channel or several-channels publish's key.
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The fields of a publish's answer (and ``duplicate``: true for a duplicate).
PUBLISHED_FIELDS = ("channel", "epoch", "offset", "ts")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: The position of the refused message in a batch.
        self.index = index


@stream_request_body
class ApiHandler(RequestHandler):
    """Base of the API handlers: key check, body limit, JSON in and out.

    The body is streamed so that one over ``max_body`` bytes is refused with
    a clean 413 whatever its size, without ever being held in memory.
    """

    def initialize(
        self, hub: Hub, api_key: str | None, max_body: int, cors: CorsPolicy | None = None
    ) -> None:
        self.hub = hub
        self.api_key = api_key
        self.max_body = max_body
        self.cors = cors or CorsPolicy(())
        self.cors.apply(self)
        self._chunks: list[bytes] = []
        self._size = 0
        self._refusal: ApiError | None = None
        #: The body held NaN or an infinity (which JSON cannot carry out again).
        self._nonfinite = False

    def check_xsrf_cookie(self) -> None:
        """The API authenticates with a key, not cookies."""

    def set_default_headers(self) -> None:
        # Again after an error clears the headers (not before initialize).
        cors = vars(self).get("cors")
        if cors is not None:
            cors.apply(self)

    def options(self, *args: str) -> None:
        """A CORS preflight (it carries no key); the browser then sends the request."""
        self.cors.preflight(self)

    def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return  # a preflight: nothing to authenticate, no body
        try:
            self._authenticate()
            if self._declared_length() > self.max_body:
                self._too_large()  # answered before the body is read
        except ApiError as exc:
            # Tornado closes a connection whose request body was not read. A
            # small body is read and dropped first, so a pooled client's next
            # request on this connection is served; else the answer says
            # ``Connection: close`` (RFC 9112 9.6) and the body is never read.
            method = self.request.method.lower() if self.request.method else ""
            own = getattr(type(self), method, None) is not getattr(RequestHandler, method, None)
            if own and exc.status != 413 and self._declared_length() <= self.max_body:
                self._refusal = exc
            else:
                self.set_header("Connection", "close")
                self.fail(exc)

    def _declared_length(self) -> int:
        """The body's Content-Length, 0 without a body, and more than any
        limit when its size is unknown (chunked) or the header is bad."""
        headers = self.request.headers
        length = headers.get("Content-Length")
        if "Transfer-Encoding" in headers or (length is not None and not length.isdigit()):
            return 1 << 62
        return int(length or 0)

    def refused(self) -> bool:
        """Answer the refusal :meth:`prepare` deferred until the body was
        read; True if there was one (the verb then does nothing more)."""
        if self._refusal is None:
            return False
        self.fail(self._refusal)
        return True

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self.max_body and self._refusal is None:
            self._chunks.append(chunk)
        else:
            self._chunks.clear()  # keep nothing of an oversized or refused body

    def _too_large(self) -> None:
        message = (
            f"body is larger than {self.max_body} bytes, the server's --max-publish-bytes "
            "(TORCHANNELS_MAX_PUBLISH_BYTES): send less, or batch fewer messages"
        )
        raise ApiError(413, PAYLOAD_TOO_LARGE, message)

    def _authenticate(self) -> None:
        if self.api_key is None:
            message = (
                "the publish API is disabled: this server runs without an API key; start it "
                "with --api-key (or TORCHANNELS_API_KEY), or with --dev to have one made"
            )
            raise ApiError(403, API_DISABLED, message)
        given = self.request.headers.get("X-API-Key")
        auth = self.request.headers.get("Authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not given:
            self.set_header("WWW-Authenticate", 'Bearer realm="torchannels"')
            raise ApiError(401, UNAUTHORIZED, "send the API key as 'Authorization: Bearer KEY'")
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(403, FORBIDDEN, "wrong API key")

    def fail(self, exc: ApiError | TorChannelsError) -> None:
        """Answer ``exc``: a refused message is a 400 ``invalid_message``, an
        unreachable broker a 503 ``broker_unavailable``."""
        exc = api_error(exc)
        self.set_status(exc.status)
        body: dict[str, Any] = {"error": exc.code, "message": exc.message}
        if exc.index is not None:
            body["index"] = exc.index
        self.reply(body)

    def reply(self, body: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(dumps(body))

    def body(self) -> dict[str, Any]:
        if self._size > self.max_body:
            self._too_large()
        return json_body(b"".join(self._chunks), self._constant)

    def _constant(self, name: str) -> float:
        self._nonfinite = True  # NaN, Infinity, -Infinity: refused when published
        return float(name)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.reply(
            {
                "error": "internal" if status_code >= 500 else "http_error",
                "message": status_reason(self),
            }
        )


def api_error(exc: ApiError | TorChannelsError) -> ApiError:
    """The API's answer to ``exc``; other exceptions are raised again."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, MessageError):
        return ApiError(400, INVALID_MESSAGE, str(exc))
    if isinstance(exc, ChannelNameError):
        return ApiError(400, INVALID_CHANNEL, str(exc))
    if isinstance(exc, BrokerError):
        return ApiError(503, BROKER_UNAVAILABLE, f"the broker failed, retry shortly: {exc}")
    if isinstance(exc, ChannelLimitError):
        return ApiError(503, CHANNEL_LIMIT, str(exc))
    if isinstance(exc, BadRequest):
        return ApiError(400, exc.code, exc.message)
    raise exc


def json_body(raw: bytes, parse_constant: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """A request body that must be one JSON object (ApiError ``bad_json`` if not)."""
    try:
        value = json.loads(raw, parse_constant=parse_constant)
    except ValueError:
        raise ApiError(400, BAD_JSON, "the body is not valid JSON") from None
    except RecursionError:
        raise ApiError(400, BAD_JSON, "the body nests too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(400, BAD_JSON, "the body must be a JSON object")
    return value


async def publish_one(
    hub: Hub, channel: str, data: object, idempotency_key: str | None = None
) -> dict[str, Any]:
    """Publish ``data`` (a JSON object) to ``channel``: the API's answer for it."""
    if not isinstance(data, dict):
        raise ApiError(400, INVALID_MESSAGE, '"data" must be a JSON object')
    # As Channel.asend, with the broker's answer at hand (data may hold a
    # "duplicate" key of its own).
    pub = await hub.broker.publish(
        check_channel(channel), check_message(data), idempotency_key=idempotency_key
    )
    if isinstance(pub, Duplicate):
        hub.stats.publish_duplicates += 1
    else:
        hub.stats.published += 1
    return published(pub)


def published(pub: Publication | Duplicate) -> dict[str, Any]:
    """The API's answer for one message of a batch."""
    if isinstance(pub, Duplicate):
        return {"channel": pub.channel, "epoch": pub.epoch, "offset": pub.offset, "ts": pub.ts,
                "duplicate": True}  # fmt: skip
    data = pub.data
    return {k: data[k] for k in PUBLISHED_FIELDS}


def info_body(info: ChannelInfo, subscribers: Mapping[str, int]) -> dict[str, Any]:
    """A channel's info as the API answers it (``GET /api/channels/NAME``,
    and each row of ``GET /api/channels``); ``subscribers``: counts over
    every process, by channel."""
    return {
        "channel": info.channel,
        "epoch": info.position.epoch,
        "offset": info.position.offset,
        "history_length": info.history_length,
        "has_state": info.has_state,
        "local_subscribers": info.extra.get("local_subscribers", 0),
        "subscribers": subscribers.get(info.channel, 0),
    }


def channel_name(value: object) -> str:
    if value is None:
        raise ApiError(400, INVALID_CHANNEL, 'the "channel" field is missing: name the channel')
    try:
        return check_channel(value)
    except ChannelNameError as exc:
        raise ApiError(400, INVALID_CHANNEL, str(exc)) from None


class PublishHandler(ApiHandler):
    """``POST /api/publish``: one channel (``channel``), several (``channels``),
    or a batch of messages (``messages``)."""

    async def post(self) -> None:
        if self.refused():
            return
        try:
            body = self.body()
            data = body.get("data")
            key = self._header_key(body)
            if "messages" in body:
                self.reply({"results": await self._publish_batch(body)})
            elif "channels" in body:
                names = body["channels"]
                if not isinstance(names, list) or not names:
                    raise ApiError(400, BAD_JSON, '"channels" must be a non-empty list')
                channels = [channel_name(n) for n in names]
                # Queued in this order, stored in one round trip where the broker can.
                results = await asyncio.gather(
                    *(self._publish(c, data, key) for c in dict.fromkeys(channels))
                )
                self.reply({"results": list(results)})
            else:
                self.reply(await self._publish(channel_name(body.get("channel")), data, key))
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)

    def _header_key(self, body: dict[str, Any]) -> str | None:
        """The ``Idempotency-Key`` header's key, checked; a batch refuses
        it (each message has its own), and a key in the body of the other
        forms is refused rather than ignored (a retry would not be safe)."""
        header = self.request.headers.get(IDEMPOTENCY_HEADER)
        if "messages" in body:
            if header is not None:
                raise ApiError(
                    400,
                    INVALID_IDEMPOTENCY_KEY,
                    f"a batch takes no {IDEMPOTENCY_HEADER} header: give each message "
                    'its own idempotency_key ({"channel", "data", "idempotency_key"})',
                )
            return None
        if "idempotency_key" in body:
            raise ApiError(
                400,
                INVALID_IDEMPOTENCY_KEY,
                f"send the key of this publish as the {IDEMPOTENCY_HEADER} header "
                '(only the messages of a batch carry "idempotency_key")',
            )
        return None if header is None else check_idempotency_key(header)

    async def _publish_batch(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Check every message, then queue them all in order (one broker round
        trip where it can) and return one result per message."""
        items = body["messages"]
        mixed = sorted({"channel", "channels", "data"}.intersection(body))
        if mixed:
            raise ApiError(400, BAD_JSON, f'"messages" cannot be combined with {mixed}')
        if not isinstance(items, list) or not items:
            raise ApiError(400, BAD_JSON, '"messages" must be a non-empty list')
        if len(items) > MAX_BATCH:
            raise ApiError(
                400,
                TOO_MANY_MESSAGES,
                f"{len(items)} messages in one request; at most {MAX_BATCH}",
            )
        batch = [self._check_item(i, item) for i, item in enumerate(items)]
        keys: list[str | None] | None = None
        if any("idempotency_key" in item for item in items):
            keys = [item.get("idempotency_key") for item in items]
        # Queued in this order and stored together (one Redis script call per
        # 256 messages); if some fail, the first failure is raised once all ended.
        pubs = await self.hub.broker.publish_many(batch, keys=keys)
        results = [published(pub) for pub in pubs]
        duplicates = sum(1 for r in results if "duplicate" in r) if keys is not None else 0
        self.hub.stats.published += len(pubs) - duplicates
        self.hub.stats.publish_duplicates += duplicates
        return results

    def _check_item(self, index: int, item: object) -> tuple[str, dict[str, Any]]:
        """Everything a publish of ``item`` could refuse, before any is queued."""
        try:
            if not isinstance(item, dict):
                raise ApiError(400, BAD_JSON, 'a message must be {"channel": ..., "data": {...}}')
            channel = channel_name(item.get("channel"))
            self.hub.broker.check_channel(channel)
            data = item.get("data")
            if not isinstance(data, dict):
                raise ApiError(400, INVALID_MESSAGE, '"data" must be a JSON object')
            check_message(data)
            if self._nonfinite:
                encode_message(data)
            if "idempotency_key" in item:
                check_idempotency_key(item["idempotency_key"])
            return channel, data
        except (ApiError, TorChannelsError) as exc:
            error = api_error(exc)
            raise ApiError(
                error.status, error.code, f"messages[{index}]: {error.message}", index
            ) from None

    async def _publish(self, channel: str, data: object, key: str | None) -> dict[str, Any]:
        return await publish_one(self.hub, channel, data, key)


class StateHandler(ApiHandler):
    """``POST /api/state``: set a channel's state for late joiners."""

    async def post(self) -> None:
        if self.refused():
            return
        try:
            body = self.body()
            channel = channel_name(body.get("channel"))
            messages = body.get("messages")
            if not isinstance(messages, list):
                raise ApiError(400, BAD_JSON, '"messages" must be a list of objects')
            position = await self.hub.channel(channel).aset_state(messages)
            self.reply({"channel": channel, "epoch": position.epoch, "offset": position.offset})
        except (ApiError, TorChannelsError) as exc:
            self.fail(exc)

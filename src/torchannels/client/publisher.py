"""Publish through a hub's HTTP API (docs/api.md), from scripts or from asyncio.

::

    from torchannels.client import Publisher
    hub = Publisher("http://127.0.0.1:8090", "s3cret")
    hub.publish("news", {"text": "hi"})     # Published(channel='news', epoch=..., offset=1, ...)
    hub.set_state("scores", [{"a": 3}])
    hub.channel("news").history_length
    [u.user for u in hub.presence_all("room:1")]   # every user present, page after page
    hub.disconnect(user="42")                       # ControlResult(connections=2, ...)

:class:`Publisher` uses only the standard library (``urllib``);
:class:`AsyncPublisher` has the same methods as coroutines, on Tornado's
``AsyncHTTPClient``. Requests, answers and errors are built once, in
:mod:`torchannels.client.calls`. Refusals raise the :class:`APIError`
subclass of their code.

Publishes are retried safely: each carries an idempotency key (one per call,
one per message of a batch; made unless given), and a timeout, a connection
refused, reset or closed before the answer, or a 503 sends it again with the
same keys, so the server stores it once (``Published.duplicate`` says the
server had it already). See :mod:`torchannels.client.calls` for the rule.
"""

from __future__ import annotations

import asyncio
import http.client
import random
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import tornado.httpclient

from . import calls
from .calls import (
    Batch,
    Call,
    ChannelInfo,
    ChannelPage,
    ControlResult,
    Published,
    StateSet,
    UserPage,
)
from .errors import APIError, ConnectError
from .events import Member

Item = TypeVar("Item")


def _follow(read: Callable[[str | None], tuple[list[Item], str | None]]) -> Iterator[Item]:
    """The items of every page: ``read(after)`` gives a page's items and its
    ``next`` (None on the last), from ``after`` None on."""
    after: str | None = None
    while True:
        items, after = read(after)
        yield from items
        if after is None:
            return


async def _afollow(
    read: Callable[[str | None], Awaitable[tuple[list[Item], str | None]]],
) -> AsyncIterator[Item]:
    """:func:`_follow` for coroutines."""
    after: str | None = None
    while True:
        items, after = await read(after)
        for item in items:
            yield item
        if after is None:
            return


class _Publisher:
    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 30.0, retries: int = 4,
        seed: int | None = None,
    ) -> None:  # fmt: skip
        """``base_url``: the hub (``http://127.0.0.1:8090``); ``timeout``:
        seconds a request may take; ``retries``: how many more times a failure
        that is safe to retry is tried (0: never); ``seed``: of the backoff's
        jitter (tests)."""
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, not {retries!r:.80}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self._rng = random.Random(seed)

    def _delay(self, call: Call, error: Exception, attempt: int, refused: bool) -> float:
        """The pause before the next attempt; raises ``error`` when none is due."""
        delay = None
        if attempt <= self.retries:
            delay = calls.retry_delay(call, error, attempt, refused, self._rng)
        if delay is None:
            raise error
        return delay


class Publisher(_Publisher):
    """The synchronous publisher (standard library only)."""

    def publish(self, channel: str, data: Mapping[str, Any], *,
                idempotency_key: str | None = None) -> Published:  # fmt: skip
        """``data`` to ``channel``, with ``idempotency_key`` (a new one when
        None; give your own to make a publish retried later, by another
        process too, a duplicate of this one)."""
        return calls.published(self.request(calls.publish(channel, data, idempotency_key)))

    def publish_many(self, channels: Iterable[str], data: Mapping[str, Any], *,
                     idempotency_key: str | None = None) -> list[Published]:  # fmt: skip
        """``data`` to each channel, with one key for all (each channel keeps
        its own record of it); one result per distinct channel."""
        doc = self.request(calls.publish_many(channels, data, idempotency_key))
        return [calls.published(r) for r in doc["results"]]

    def publish_batch(self, messages: Batch) -> list[Published]:
        """Up to 1000 messages, published in order, each with its own key (an
        object's ``idempotency_key``, else a new one); one result per message."""
        doc = self.request(calls.publish_batch(messages))
        return [calls.published(r) for r in doc["results"]]

    def set_state(self, channel: str, messages: Iterable[Mapping[str, Any]]) -> StateSet:
        doc = self.request(calls.set_state(channel, messages))
        return StateSet(doc["channel"], doc["epoch"], doc["offset"])

    def channel(self, channel: str) -> ChannelInfo:
        return ChannelInfo.from_json(self.request(calls.channel_info(channel)))

    def channels(self, prefix: str | None = None, limit: int | None = None,
                 after: str | None = None) -> ChannelPage:  # fmt: skip
        """One page of the channels, sorted by name."""
        return calls.page(self.request(calls.list_channels(prefix, limit, after)))

    def iter_channels(self, prefix: str | None = None) -> Iterator[ChannelInfo]:
        """Every channel (whose name starts with ``prefix``), page after page."""

        def read(after: str | None) -> tuple[list[ChannelInfo], str | None]:
            page = self.channels(prefix, None, after)
            return page.channels, page.next

        return _follow(read)

    def presence(self, channel: str, after: str | None = None,
                 limit: int | None = None) -> UserPage:  # fmt: skip
        """One page of the users present in ``channel``, sorted by user id
        (``limit``: 1-1000, the server's default 100; ``after``: the
        ``next`` of the page before). A channel without presence raises
        :class:`RequestError` ``presence_disabled``."""
        return UserPage.from_json(self.request(calls.presence(channel, after, limit)))

    def presence_all(self, channel: str, limit: int | None = None) -> Iterator[Member]:
        """Every user present in ``channel``, page after page (``limit`` a page)."""

        def read(after: str | None) -> tuple[list[Member], str | None]:
            page = self.presence(channel, after, limit)
            return page.users, page.next

        return _follow(read)

    def disconnect(self, user: str | None = None, client: str | None = None,
                   reconnect: bool = False) -> ControlResult:  # fmt: skip
        """End the connections of ``user`` (all of them) or of one ``client``
        id; with ``reconnect`` they come back at once (with a fresh token).
        Exactly one of ``user`` and ``client``, else ``ValueError``."""
        return ControlResult.from_json(self.request(calls.disconnect(user, client, reconnect)))

    def unsubscribe(self, channel: str, user: str | None = None,
                    client: str | None = None) -> ControlResult:  # fmt: skip
        """Stop delivering ``channel`` to the connections of ``user`` or
        ``client`` (they get a ``ChannelError`` ``unsubscribed``)."""
        return ControlResult.from_json(self.request(calls.unsubscribe(channel, user, client)))

    def revoke(self, user: str | None = None, before: float | None = None,
               jti: str | None = None, expires: float | None = None) -> ControlResult:  # fmt: skip
        """Refuse ``user``'s tokens issued ``before`` (Unix seconds), or the
        token whose claim ``jti`` is given until ``expires``; the connections
        they authorised end (``disconnect`` ``token_revoked``)."""
        return ControlResult.from_json(self.request(calls.revoke(user, before, jti, expires)))

    def request(self, call: Call) -> Any:
        """Send ``call``, sent again (the same bytes and keys) while the
        failure is safe to retry and ``retries`` allow; its JSON answer or
        the last error."""
        attempt = 0
        while True:
            attempt += 1
            refused = False
            try:
                return self._send(call)
            except ConnectError as exc:
                refused = isinstance(exc.__cause__, ConnectionRefusedError)
                error: Exception = exc
            except APIError as exc:
                error = exc
            time.sleep(self._delay(call, error, attempt, refused))

    def _send(self, call: Call) -> Any:
        request = urllib.request.Request(
            self.base_url + call.path, data=call.body, method=call.method,
            headers=calls.headers(self.api_key, call),
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return calls.answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return calls.answer(exc.code, dict(exc.headers), exc.read())
        except urllib.error.URLError as exc:
            reason = exc.reason
            raise ConnectError(f"cannot reach {self.base_url}: {reason}") from (
                reason if isinstance(reason, BaseException) else exc
            )
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, a cut answer
            raise ConnectError(f"connection to {self.base_url} failed: {exc!r}") from exc


class AsyncPublisher(_Publisher):
    """The asyncio publisher on Tornado's HTTP client; close it (or use
    ``async with``) when done."""

    def __init__(self, base_url: str, api_key: str, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._http = tornado.httpclient.AsyncHTTPClient(force_instance=True)

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    async def publish(self, channel: str, data: Mapping[str, Any], *,
                      idempotency_key: str | None = None) -> Published:  # fmt: skip
        call = calls.publish(channel, data, idempotency_key)
        return calls.published(await self.request(call))

    async def publish_many(self, channels: Iterable[str], data: Mapping[str, Any], *,
                           idempotency_key: str | None = None) -> list[Published]:  # fmt: skip
        doc = await self.request(calls.publish_many(channels, data, idempotency_key))
        return [calls.published(r) for r in doc["results"]]

    async def publish_batch(self, messages: Batch) -> list[Published]:
        doc = await self.request(calls.publish_batch(messages))
        return [calls.published(r) for r in doc["results"]]

    async def set_state(self, channel: str, messages: Iterable[Mapping[str, Any]]) -> StateSet:
        doc = await self.request(calls.set_state(channel, messages))
        return StateSet(doc["channel"], doc["epoch"], doc["offset"])

    async def channel(self, channel: str) -> ChannelInfo:
        return ChannelInfo.from_json(await self.request(calls.channel_info(channel)))

    async def channels(self, prefix: str | None = None, limit: int | None = None,
                       after: str | None = None) -> ChannelPage:  # fmt: skip
        return calls.page(await self.request(calls.list_channels(prefix, limit, after)))

    def iter_channels(self, prefix: str | None = None) -> AsyncIterator[ChannelInfo]:
        async def read(after: str | None) -> tuple[list[ChannelInfo], str | None]:
            page = await self.channels(prefix, None, after)
            return page.channels, page.next

        return _afollow(read)

    async def presence(self, channel: str, after: str | None = None,
                       limit: int | None = None) -> UserPage:  # fmt: skip
        return UserPage.from_json(await self.request(calls.presence(channel, after, limit)))

    def presence_all(self, channel: str, limit: int | None = None) -> AsyncIterator[Member]:
        async def read(after: str | None) -> tuple[list[Member], str | None]:
            page = await self.presence(channel, after, limit)
            return page.users, page.next

        return _afollow(read)

    async def disconnect(self, user: str | None = None, client: str | None = None,
                         reconnect: bool = False) -> ControlResult:  # fmt: skip
        call = calls.disconnect(user, client, reconnect)
        return ControlResult.from_json(await self.request(call))

    async def unsubscribe(self, channel: str, user: str | None = None,
                          client: str | None = None) -> ControlResult:  # fmt: skip
        return ControlResult.from_json(await self.request(calls.unsubscribe(channel, user, client)))

    async def revoke(self, user: str | None = None, before: float | None = None,
                     jti: str | None = None, expires: float | None = None
                     ) -> ControlResult:  # fmt: skip
        return ControlResult.from_json(await self.request(calls.revoke(user, before, jti, expires)))

    async def request(self, call: Call) -> Any:
        attempt = 0
        while True:
            attempt += 1
            refused = False
            try:
                return await self._send(call)
            except ConnectError as exc:
                refused = isinstance(exc.__cause__, ConnectionRefusedError)
                error: Exception = exc
            except APIError as exc:
                error = exc
            await asyncio.sleep(self._delay(call, error, attempt, refused))

    async def _send(self, call: Call) -> Any:
        try:
            response = await self._http.fetch(
                self.base_url + call.path, method=call.method, body=call.body,
                headers=calls.headers(self.api_key, call), raise_error=False,
                request_timeout=self.timeout,
            )  # fmt: skip
        except (OSError, tornado.httpclient.HTTPClientError) as exc:  # no answer at all
            raise ConnectError(f"cannot reach {self.base_url}: {exc!r}") from exc
        if response.code == 599:
            raise ConnectError(f"cannot reach {self.base_url}: {response.error}") from (
                response.error
            )
        return calls.answer(response.code, response.headers, response.body)

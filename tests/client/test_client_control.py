"""The control API end to end, against a real hub: ``Publisher.disconnect``,
``unsubscribe`` and ``revoke`` (both forms) and what the Python client's
subscriptions do with them on every transport; the answers, and the
refusals by code (docs/python-client.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from client.client_helpers import Reader, Statuses, channels_url, publisher
from server.processes import KEY, SECRET, ServerProcess
from torchannels.client import (
    TRANSPORTS,
    APIError,
    AsyncPublisher,
    AuthError,
    ChannelError,
    Client,
    ControlResult,
    Disconnected,
    PayloadTooLarge,
    Publisher,
    RequestError,
    Status,
)
from torchannels.client.calls import Call
from torchannels.tokens import encode_token

FORMS = ("sync", "async")


def fast(url: str, **options: Any) -> Client:
    return Client(url, min_delay=0.05, max_delay=0.3, poll_interval=0.05, longpoll_timeout=2,
                  **options)  # fmt: skip


def token(user: str, **claims: Any) -> str:
    return encode_token({"sub": user, "exp": time.time() + 300, "channels": ["ctl:*"],
                         **claims}, SECRET)  # fmt: skip


async def control(form: str, base: str, method: str, key: str = KEY, **args: Any) -> Any:
    """``Publisher(base, key).method(**args)``, sync (in a thread) or async."""
    if form == "sync":
        sync = Publisher(base, key, retries=0)
        return await asyncio.to_thread(lambda: getattr(sync, method)(**args))
    async with AsyncPublisher(base, key, retries=0) as pub:
        return await getattr(pub, method)(**args)


def got(reader: Reader, channel: str, n: int) -> bool:
    return any(m.data.get("n") == n for m in reader.messages(channel))


async def delivering(reader: Reader, hub: ServerProcess, channel: str, n: int) -> None:
    """Publish ``{"n": n}`` to ``channel`` until ``reader`` got it (a
    subscription that joined fresh gets only what is published after it
    joined, and joining takes a moment)."""
    async with publisher(hub) as pub:
        deadline = time.monotonic() + 10
        while not got(reader, channel, n):
            assert time.monotonic() < deadline, f"{channel}: no message {n}: {reader.events}"
            assert not reader.task.done(), f"ended ({reader.error!r}): {reader.events}"
            await pub.publish(channel, {"n": n})
            for _ in range(50):
                if got(reader, channel, n):
                    break
                await asyncio.sleep(0.01)


async def ended(reader: Reader) -> BaseException | None:
    """How ``reader``'s iteration ended (it must within 10 s)."""
    async with asyncio.timeout(10):
        await asyncio.shield(reader.task)
    return reader.error


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_disconnect_ends_the_users_subscriptions(hub: ServerProcess,
                                                         transport: str) -> None:  # fmt: skip
    user, channel = f"ann-{transport}", f"ctl:gone-{transport}"
    statuses = Statuses()
    async with fast(channels_url(hub), transport=transport, token=token(user),
                    on_status=statuses) as client:  # fmt: skip
        reader = Reader(client.subscribe(channel))
        await delivering(reader, hub, channel, 1)
        result = await control("async", hub.base, "disconnect", user=user)
        error = await ended(reader)
    assert isinstance(error, Disconnected), (error, reader.events)
    assert (error.reason, error.reconnect) == ("disconnected_by_server", False)
    assert statuses[-1] == Status("disconnected", transport, "disconnected_by_server")
    # A polling client between two requests is not counted (told on its next one).
    expected = {0, 1} if transport in ("poll", "longpoll") else {1}
    assert result.connections in expected and (result.processes, result.answered) == (1, 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_disconnect_with_reconnect_comes_back_with_a_fresh_token(
    hub: ServerProcess, transport: str
) -> None:
    user, channel = f"bo-{transport}", f"ctl:back-{transport}"
    asked: list[str] = []

    def fresh() -> str:
        asked.append(user)
        return token(user)

    statuses = Statuses()
    async with fast(channels_url(hub), transport=transport, get_token=fresh,
                    on_status=statuses) as client:  # fmt: skip
        feed = client.subscribe(channel)
        reader = Reader(feed)
        await delivering(reader, hub, channel, 1)
        first = feed.client_id
        await control("async", hub.base, "disconnect", user=user, reconnect=True)
        await reader.wait(lambda: len(asked) == 2, "a fresh token")
        await delivering(reader, hub, channel, 2)  # and it delivers again
        assert reader.error is None and feed.client_id not in (None, first)
        await reader.stop()
    assert Status("reconnecting", transport, "disconnected_by_server", 0.0) in statuses


async def test_a_disconnect_of_one_client_leaves_the_users_other_subscriptions(
    hub: ServerProcess,
) -> None:
    user, channel = "cy", "ctl:one-client"
    async with fast(channels_url(hub), transport="websocket", token=token(user)) as client:
        gone, kept = Reader(client.subscribe(channel)), Reader(client.subscribe(channel))
        await delivering(gone, hub, channel, 1)
        await kept.wait(lambda: bool(kept.messages(channel)), "the other one delivers")
        assert gone.sub.client_id is not None  # CLIENT~SINCE.SIG: the call sends CLIENT
        result = await control("sync", hub.base, "disconnect", client=gone.sub.client_id)
        assert result == ControlResult(1, 1, 1, None)
        assert isinstance(await ended(gone), Disconnected)
        await delivering(kept, hub, channel, 2)
        assert not kept.task.done()
        await kept.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unsubscribe_stops_one_channel(hub: ServerProcess, transport: str) -> None:
    user, stop, keep = f"di-{transport}", f"ctl:stop-{transport}", f"ctl:keep-{transport}"
    async with fast(channels_url(hub), transport=transport, token=token(user)) as client:
        feed = client.subscribe(stop, keep)
        reader = Reader(feed)
        await delivering(reader, hub, stop, 1)
        await delivering(reader, hub, keep, 1)
        await control("async", hub.base, "unsubscribe", channel=stop, user=user)
        await reader.wait(lambda: any(isinstance(e, ChannelError) for e in reader.events),
                          "the unsubscribed error")  # fmt: skip
        [error] = [e for e in reader.events if isinstance(e, ChannelError)]
        assert (error.channel, error.code) == (stop, "unsubscribed")
        assert feed.channels == [keep]
        await delivering(reader, hub, keep, 2)  # the other channel goes on
        await reader.stop()


async def test_revoke_a_users_tokens_then_a_fresh_one_is_accepted(hub: ServerProcess) -> None:
    user, channel = "ed", "ctl:revoked"
    old = token(user, iat=int(time.time()) - 60)
    statuses = Statuses()
    async with fast(channels_url(hub), transport="websocket", token=old,
                    on_status=statuses) as client:  # fmt: skip
        reader = Reader(client.subscribe(channel))
        await delivering(reader, hub, channel, 1)
        before = int(time.time()) - 30
        result = await control("sync", hub.base, "revoke", user=user, before=before)
        error = await ended(reader)
        assert isinstance(error, Disconnected) and error.reason == "token_revoked"
        assert result == ControlResult(1, 1, 1, before + 86400.0)
        assert statuses[-1] == Status("disconnected", "websocket", "token_revoked")
        # The old token is refused on a new subscription; a fresh one is not.
        events = [e async for e in client.subscribe(channel)]
        assert [(e.channel, e.code) for e in events if isinstance(e, ChannelError)] == [
            (channel, "token_revoked")
        ]
    # (A token without iat counts as issued before any time: revoked too.)
    issued_now = token(user, iat=int(time.time()))
    async with fast(channels_url(hub), transport="websocket", token=issued_now) as client:
        fresh = Reader(client.subscribe(channel))
        await delivering(fresh, hub, channel, 2)
        await fresh.stop()


async def test_revoke_one_token_by_its_jti(hub: ServerProcess) -> None:
    user, channel, exp = "fay", "ctl:jti", int(time.time()) + 300
    async with fast(channels_url(hub), transport="sse", token=token(user, jti="j-fay", exp=exp)
                    ) as client:  # fmt: skip
        reader = Reader(client.subscribe(channel))
        await delivering(reader, hub, channel, 1)
        result = await control("async", hub.base, "revoke", jti="j-fay", expires=exp)
        assert result.expires == exp and result.connections == 1
        error = await ended(reader)
    assert isinstance(error, Disconnected) and error.reason == "token_revoked"


@pytest.mark.parametrize("form", FORMS)
async def test_the_answers_in_both_forms(hub: ServerProcess, form: str) -> None:
    nobody = await control(form, hub.base, "disconnect", user="nobody-here")
    assert nobody == ControlResult(0, 1, 1, None)
    gone = await control(form, hub.base, "unsubscribe", channel="ctl:x", client="no-such")
    assert gone == ControlResult(0, 1, 1, None)
    until = int(time.time()) + 600
    revoked = await control(form, hub.base, "revoke", jti=f"j-{form}", expires=until)
    assert revoked == ControlResult(0, 1, 1, float(until))


def raw(path: str, body: bytes) -> Call:
    return Call("POST", path, body, False)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("call", "error", "status", "code", "words"), [
    (raw("/api/disconnect", b'{"user": "1", "why": 1}'), RequestError, 400, "unknown_field",
     "'why'"),
    (raw("/api/disconnect", b'{"user": 1}'), RequestError, 400, "invalid_field", "user"),
    (raw("/api/revoke", b'{"user": "1", "before": 1796000000000}'), RequestError, 400,
     "invalid_field", "give seconds"),
    (raw("/api/revoke", b'{"jti": "j", "expires": 1000}'), RequestError, 400, "invalid_field",
     "not in the future"),
    (raw("/api/unsubscribe", b'{"user": "1", "channel": "bad channel"}'), RequestError, 400,
     "invalid_channel", ""),
    (raw("/api/disconnect", b"[1]"), RequestError, 400, "bad_json", ""),
    (raw("/api/disconnect", b'{"user": "' + b"x" * 5000 + b'"}'), PayloadTooLarge, 413,
     "payload_too_large", ""),
])  # fmt: skip
async def test_refusals_by_code(hub: ServerProcess, form: str, call: Call, error: type[APIError],
                                status: int, code: str, words: str) -> None:  # fmt: skip
    with pytest.raises(error) as info:
        await control(form, hub.base, "request", call=call)
    assert (info.value.status, info.value.code) == (status, code)
    assert words in info.value.message


@pytest.mark.parametrize("form", FORMS)
async def test_a_wrong_key_is_refused(hub: ServerProcess, form: str) -> None:
    with pytest.raises(AuthError) as info:
        await control(form, hub.base, "disconnect", key="wrong", user="1")
    assert (info.value.status, info.value.code) == (403, "forbidden")  # as publish

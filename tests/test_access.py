"""can_access: sync and async, allowed and denied, on every transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
import tornado.web

from support import STREAMING, TRANSPORTS, Server, messages, outline, receive
from torchannels import ChannelMixin, Hub, Subscription

each_transport = pytest.mark.parametrize("transport", TRANSPORTS)
each_mode = pytest.mark.parametrize("mode", ["sync", "async"])


class Recording(ChannelMixin):
    """Denies channels starting with ``secret``; records every question."""

    calls: list[str]

    def decide(self, sub: Subscription) -> bool:
        self.calls.append(sub.channel)
        return not sub.channel.startswith("secret")


class SyncAccess(Recording):
    def can_access(self, sub: Subscription) -> bool:
        return self.decide(sub)


class AsyncAccess(Recording):
    async def can_access(self, sub: Subscription) -> bool:
        await asyncio.sleep(0)  # really suspend, as a database lookup would
        return self.decide(sub)


@pytest.fixture
def access_server(
    make_server: Callable[..., Server], hub: Hub, request: pytest.FixtureRequest
) -> tuple[Server, type[Recording]]:
    mode = request.node.callspec.params["mode"]
    base = SyncAccess if mode == "sync" else AsyncAccess
    cls: type[Recording] = type(f"{base.__name__}Handler", (base,), {"hub": hub, "calls": []})
    return make_server(cls), cls


def n_messages(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda frames: len(messages(frames)) >= count


@each_mode
@each_transport
async def test_denied_channel_gets_an_error_and_the_others_are_served(
    access_server: tuple[Server, type[Recording]], mode: str, transport: str
) -> None:
    server, cls = access_server
    hub = server.hub
    hub.channel("public").send({"n": 1})
    hub.channel("secret").send({"n": 1})
    hub.channel("news").send({"n": 1})
    got = await receive(
        server, transport, ["public", "secret", "news"], until=n_messages(2), sentinel="news"
    )
    assert outline(got.frames) == [
        ("subscribed", "public", 0, None),
        ("message", "public", {"n": 1}),
        ("error", "secret", "forbidden"),
        ("subscribed", "news", 0, None),
        ("message", "news", {"n": 1}),
    ]
    error = got.frames[2]
    assert isinstance(error["message"], str) and error["message"]
    assert "secret=" not in got.cursor
    assert got.cursor.startswith("public=")
    assert sorted(cls.calls) == ["news", "public", "secret"]


@each_mode
@pytest.mark.parametrize("transport", STREAMING)
async def test_denied_channel_gets_no_live_messages(
    access_server: tuple[Server, type[Recording]], mode: str, transport: str
) -> None:
    server, _ = access_server
    stream = server.stream(transport, channel=["secret", "news"])
    await stream.wait_frames(lambda fs: any(f["type"] == "subscribed" for f in fs))
    server.hub.channel("secret").send({"n": 1})
    server.hub.channel("news").send({"n": 2})
    frames = await stream.wait_frames(n_messages(1))
    assert outline(frames) == [
        ("error", "secret", "forbidden"),
        ("subscribed", "news", 0, None),
        ("message", "news", {"n": 2}),
    ]
    assert server.hub.local_subscribers("secret") == 0


@each_mode
@each_transport
async def test_can_access_is_asked_again_on_resume(
    access_server: tuple[Server, type[Recording]], mode: str, transport: str
) -> None:
    server, cls = access_server
    server.hub.channel("a").send({"n": 1})
    server.hub.channel("b").send({"n": 1})
    first = await receive(server, transport, ["a", "b"], until=n_messages(2))
    assert sorted(cls.calls) == ["a", "b"]
    server.hub.channel("a").send({"n": 2})
    second = await receive(
        server, transport, ["a", "b"], cursor=first.cursor, until=n_messages(1), sentinel="b"
    )
    assert outline(second.frames) == [("message", "a", {"n": 2})]
    assert sorted(cls.calls) == ["a", "a", "b", "b"]


@each_transport
async def test_resume_of_a_channel_now_denied_gets_an_error(
    make_server: Callable[..., Server], hub: Hub, transport: str
) -> None:
    allowed = {"a", "b"}

    class Revocable(ChannelMixin):
        def can_access(self, sub: Subscription) -> bool:
            return sub.channel in allowed

    Revocable.hub = hub
    server = make_server(Revocable)
    hub.channel("a").send({"n": 1})
    hub.channel("b").send({"n": 1})
    first = await receive(server, transport, ["a", "b"], until=n_messages(2))
    allowed.discard("a")
    hub.channel("a").send({"n": 2})
    hub.channel("b").send({"n": 2})
    second = await receive(
        server, transport, ["a", "b"], cursor=first.cursor, until=n_messages(1), sentinel="b"
    )
    assert outline(second.frames) == [("error", "a", "forbidden"), ("message", "b", {"n": 2})]
    positions = dict(entry.split("=", 1) for entry in second.cursor.split(",") if entry)
    assert "a" not in positions
    assert "b" in positions


class Inspecting(ChannelMixin):
    """Decides from the request: ``?user=`` argument or ``user`` cookie."""

    seen: list[tuple[str, str, str, bool]]

    def get_current_user(self) -> str | None:
        return self.get_cookie("user") or self.get_argument("user", None)

    def can_access(self, sub: Subscription) -> bool:
        handler = sub.handler
        assert isinstance(handler, tornado.web.RequestHandler)
        self.seen.append((sub.channel, str(sub), repr(sub), handler is self))
        return handler.current_user == "alice" or sub.channel.startswith("open")


@each_transport
async def test_subscription_gives_channel_and_handler(
    make_server: Callable[..., Server], hub: Hub, transport: str
) -> None:
    cls: type[Inspecting] = type("InspectingHandler", (Inspecting,), {"hub": hub, "seen": []})
    server = make_server(cls)
    hub.channel("private:1").send({"n": 1})
    hub.channel("open").send({"n": 1})

    as_alice = await receive(server, transport, ["private:1"], until=n_messages(1), user="alice")
    assert outline(as_alice.frames)[-1] == ("message", "private:1", {"n": 1})

    as_bob = await receive(
        server, transport, ["private:1", "open"], until=n_messages(1), user="bob"
    )
    assert outline(as_bob.frames) == [
        ("error", "private:1", "forbidden"),
        ("subscribed", "open", 0, None),
        ("message", "open", {"n": 1}),
    ]

    by_cookie = await receive(
        server,
        transport,
        ["private:1"],
        until=n_messages(1),
        headers={"Cookie": "user=alice"},
        user="bob",
    )
    assert outline(by_cookie.frames)[-1] == ("message", "private:1", {"n": 1})

    assert cls.seen[0] == ("private:1", "private:1", "<Subscription private:1>", True)
    assert all(s[0] == s[1] and s[3] for s in cls.seen)
    assert [s[0] for s in cls.seen] == ["private:1", "private:1", "open", "private:1"]


@pytest.mark.parametrize("transport", ["poll", "stream"])
async def test_http_error_in_can_access_denies_quietly(
    make_server: Callable[..., Server],
    hub: Hub,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Raising(ChannelMixin):
        async def can_access(self, sub: Subscription) -> bool:
            if sub.channel == "secret":
                raise tornado.web.HTTPError(403)
            return True

    Raising.hub = hub
    server = make_server(Raising)
    hub.channel("news").send({"n": 1})
    got = await receive(server, transport, ["secret", "news"], until=n_messages(1))
    assert outline(got.frames) == [
        ("error", "secret", "forbidden"),
        ("subscribed", "news", 0, None),
        ("message", "news", {"n": 1}),
    ]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("transport", ["poll", "sse"])
async def test_crashing_can_access_denies_and_is_logged(
    make_server: Callable[..., Server],
    hub: Hub,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Buggy(ChannelMixin):
        def can_access(self, sub: Subscription) -> bool:
            if sub.channel == "buggy":
                raise KeyError("oops")
            return True

    Buggy.hub = hub
    server = make_server(Buggy)
    hub.channel("news").send({"n": 1})
    got = await receive(server, transport, ["buggy", "news"], until=n_messages(1))
    assert outline(got.frames) == [
        ("error", "buggy", "forbidden"),
        ("subscribed", "news", 0, None),
        ("message", "news", {"n": 1}),
    ]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "buggy" in errors[0].getMessage()

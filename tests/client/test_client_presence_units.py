"""Presence in the client, by tables: frames into typed events, refusals
into exception classes, and ``torchannels subscribe``'s presence lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from torchannels.client import (
    AuthError,
    Member,
    Message,
    PresenceDiff,
    PresencePage,
    PresenceSnapshot,
    RequestError,
    ServerError,
)
from torchannels.client.presence import refusal
from torchannels.client.tracker import MalformedFrame, Tracker
from torchannels.server import watch

ANN = {"user": "ann", "info": {"name": "Ann"}, "clients": 2}
BOB = {"user": "bob", "info": None, "clients": 1}


def subscribed(channel: str = "room", **extra: Any) -> dict[str, Any]:
    return {"type": "subscribed", "channel": channel, "epoch": "e1", "offset": 4, **extra}


@pytest.mark.parametrize(("frame", "events"), [
    (subscribed(presence={"clients": 3, "users": 2, "members": [ANN, BOB], "next": None}),
     [PresenceSnapshot("room", (Member("ann", {"name": "Ann"}, 2), Member("bob", None, 1)),
                       3, 2, None)]),
    (subscribed(presence={"clients": 0, "users": 0, "members": [], "next": None}),
     [PresenceSnapshot("room", (), 0, 0, None)]),
    (subscribed(presence={"clients": 9, "users": 5, "members": [BOB], "next": "Ym9i.sig"}),
     [PresenceSnapshot("room", (Member("bob", None, 1),), 9, 5, "Ym9i.sig")]),
    # unknown fields of a member, of the snapshot and of the frame are ignored
    (subscribed(presence={"clients": 1, "users": 1, "members": [{**BOB, "since": 1.5}],
                          "next": None, "extra": 1}, extra=2),
     [PresenceSnapshot("room", (Member("bob", None, 1),), 1, 1, None)]),
    # no `presence`: a channel without presence, no snapshot
    (subscribed(), []),
    ({"type": "presence", "channel": "room", "joins": [{"user": "cy", "info": {"a": 1}}],
      "leaves": [{"user": "ann"}, {"user": "dee"}]},
     [PresenceDiff("room", (Member("cy", {"a": 1}, 1),), ("ann", "dee"))]),
    ({"type": "presence", "channel": "room", "joins": [], "leaves": [{"user": "ann"}]},
     [PresenceDiff("room", (), ("ann",))]),
    ({"type": "presence", "channel": "room", "leaves": [{"user": "ann"}]},  # joins left out
     [PresenceDiff("room", (), ("ann",))]),
    # not a channel of this subscription: dropped, as its messages are
    ({"type": "presence", "channel": "other", "joins": [BOB], "leaves": []}, []),
    (subscribed("other", presence={"clients": 1, "users": 1, "members": [BOB]}), []),
    # frames this client does not take as events
    ({"type": "presence_page", "channel": "room", "members": [], "clients": 0, "users": 0}, []),
    ({"type": "who-knows", "channel": "room"}, []),
])  # fmt: skip
def test_frames_into_presence_events(frame: dict[str, Any], events: list[Any]) -> None:
    assert Tracker(["room"], {}, can_renew=False).apply(frame) == events


def test_the_snapshot_follows_the_state_and_the_position_comes_with_the_state() -> None:
    t = Tracker(["room"], {}, can_renew=False)
    state = [{"channel": "room", "epoch": "e1", "offset": 4, "k": k} for k in (1, 2)]
    presence = {"clients": 1, "users": 1, "members": [BOB], "next": None}
    first, last, snapshot = t.apply(subscribed(state=state, presence=presence))
    assert isinstance(first, Message) and isinstance(last, Message) and last.state
    assert snapshot == PresenceSnapshot("room", (Member("bob", None, 1),), 1, 1, None)
    assert isinstance(snapshot, PresencePage) and snapshot.complete
    for event in (first, last, snapshot):
        t.handed_out(event)
    assert str(t.positions["room"]) == "e1:4"


@pytest.mark.parametrize("frame", [
    subscribed(presence=[]),
    subscribed(presence={"clients": 1, "users": 1}),  # no members
    subscribed(presence={"clients": "1", "users": 1, "members": []}),
    subscribed(presence={"clients": True, "users": 1, "members": []}),
    subscribed(presence={"clients": -1, "users": 1, "members": []}),
    subscribed(presence={"clients": 1, "users": 1, "members": [], "next": 5}),
    subscribed(presence={"clients": 1, "users": 1, "members": [{"info": None}]}),
    subscribed(presence={"clients": 1, "users": 1, "members": [{"user": 7}]}),
    subscribed(presence={"clients": 1, "users": 1, "members": [{"user": "a", "info": [1]}]}),
    subscribed(presence={"clients": 1, "users": 1, "members": ["ann"]}),
    {"type": "presence", "channel": "room", "joins": {"user": "a"}, "leaves": []},
    {"type": "presence", "channel": "room", "joins": [], "leaves": ["ann"]},
    {"type": "presence", "joins": [], "leaves": []},
])  # fmt: skip
def test_malformed_presence_is_a_malformed_frame(frame: dict[str, Any]) -> None:
    with pytest.raises(MalformedFrame):
        Tracker(["room"], {}, can_renew=False).apply(frame)


@pytest.mark.parametrize(("frames", "client"), [
    ([{"type": "connected", "transport": "sse", "ping": 15, "client": "a1b2-1.sig"}], "a1b2-1.sig"),
    ([{"type": "connected", "transport": "sse", "ping": 15}], None),  # an older server
    ([{"type": "connected", "client": "x.s"}, {"type": "connected", "client": "y.s"}], "y.s"),
    ([{"type": "connected", "client": "x.s"}, {"type": "connected"}], "x.s"),
    ([{"type": "connected", "client": 5}], None),
    ([{"type": "connected", "client": ""}], None),
])  # fmt: skip
def test_the_client_id_of_connected_frames(frames: list[dict[str, Any]], client: str | None
                                           ) -> None:  # fmt: skip
    t = Tracker(["room"], {}, can_renew=False)
    for frame in frames:
        t.apply(frame)
        t.start()  # a new connection keeps the id until it gets one
    assert t.client == client


@pytest.mark.parametrize(("code", "status", "cls"), [
    ("presence_disabled", 0, RequestError),
    ("invalid_cursor", 0, RequestError),
    ("invalid_limit", 0, RequestError),
    ("invalid_channel", 0, RequestError),
    ("bad_message", 0, RequestError),
    ("forbidden", 0, AuthError),
    ("token_required", 0, AuthError),
    ("token_expired", 0, AuthError),
    ("invalid_info", 0, AuthError),
    ("presence_disabled", 400, RequestError),
    ("token_bad_signature", 403, AuthError),
    ("shutting_down", 503, Exception),  # an UnavailableError: see below
    ("", 502, ServerError),
])  # fmt: skip
def test_refusals_by_code(code: str, status: int, cls: type[Exception]) -> None:
    error = refusal(code, "why", status)
    assert isinstance(error, cls) and error.code == code and error.message == "why"
    assert error.status == (status or (403 if cls is AuthError else 400))
    if code == "shutting_down":
        assert type(error).__name__ == "UnavailableError"


SNAP = PresenceSnapshot("room", (Member("ann", {"n": 1}, 2), Member("bob")), 3, 2, None)


@pytest.mark.parametrize(("event", "readable", "doc"), [
    (SNAP, "room present 2 users, 3 clients: ann (2), bob",
     {"type": "presence_snapshot", "channel": "room",
      "members": [{"user": "ann", "info": {"n": 1}, "clients": 2},
                  {"user": "bob", "info": None, "clients": 1}],
      "clients": 3, "users": 2, "next": None}),
    (PresenceSnapshot("room", (Member("bob"),), 5, 4, "Ym9i.x"),
     "room present 4 users, 5 clients: bob, ...",
     {"type": "presence_snapshot", "channel": "room",
      "members": [{"user": "bob", "info": None, "clients": 1}], "clients": 5, "users": 4,
      "next": "Ym9i.x"}),
    (PresenceSnapshot("room", (), 2, 0, None), "room present 0 users, 2 clients", None),
    (PresenceSnapshot("room", (Member("bob"),), 1, 1, None), "room present 1 user, 1 client: bob",
     None),
    (PresenceDiff("room", (Member("cy", {"a": 1}),), ("ann", "bob")),
     "room joined cy; left ann, bob",
     {"type": "presence", "channel": "room", "joins": [{"user": "cy", "info": {"a": 1}}],
      "leaves": [{"user": "ann"}, {"user": "bob"}]}),
    (PresenceDiff("room", (), ("ann",)), "room left ann", None),
])  # fmt: skip
def test_subscribe_prints_presence(event: PresenceSnapshot | PresenceDiff, readable: str,
                                   doc: dict[str, Any] | None) -> None:  # fmt: skip
    clock, _, line = watch._readable_presence(event).partition(" ")
    assert len(clock) == 8 and clock.count(":") == 2 and line == readable
    if doc is not None:
        text = watch._json_line(watch._presence_doc(event))
        assert json.loads(text) == doc and "offset" not in text and "\n" not in text

"""Channel options by pattern: the most specific match, and history options
reaching the broker (issue 18)."""

from __future__ import annotations

import pytest

from torchannels import Hub
from torchannels.channel_options import ChannelOptions, ChannelOptionsTable


@pytest.mark.parametrize(
    ("channel", "winner"),
    [
        ("room:lobby", "room:lobby"),  # exact beats every prefix
        ("room:vip:1", "room:vip:*"),  # the longest prefix wins
        ("room:1", "room:*"),
        ("roomy", "*"),  # 'room:*' does not match 'roomy'
        ("news", "*"),
    ],
)
def test_most_specific_pattern_wins(channel: str, winner: str) -> None:
    table = ChannelOptionsTable()
    # Set in an order that a first-match or last-set rule would get wrong.
    patterns = {
        "*": {"history_size": 1},
        "room:vip:*": {"history_size": 3},
        "room:*": {"presence": True, "join_leave": True, "history_size": 2},
        "room:lobby": {"history_size": 4},
    }
    for pattern, options in patterns.items():
        table.set(pattern, **options)
    assert table.get(channel) == ChannelOptions.of(patterns[winner])


def test_options_are_not_merged_across_patterns() -> None:
    table = ChannelOptionsTable()
    table.set("room:*", presence=True, join_leave=True)
    table.set("room:quiet:*", history_size=5)
    got = table.get("room:quiet:1")
    assert (got.presence, got.join_leave, got.history_size) == (False, False, 5)


def test_unconfigured_channel_gets_defaults() -> None:
    assert ChannelOptionsTable().get("anything") == ChannelOptions()


@pytest.mark.parametrize(
    ("pattern", "options", "message"),
    [
        ("room:*", {"presense": True}, "presense: unknown option"),
        ("room:*", {"presence": "yes"}, "presence must be a boolean"),
        ("room:*", {"join_leave": True}, "join_leave needs presence"),
        ("room:*", {"history_size": -1}, "history_size must be an integer >= 0"),
        ("room:*", {"history_size": 1.5}, "history_size must be an integer"),
        ("room:*", {"history_ttl": 0}, "history_ttl must be > 0"),
        ("room:*", {"history_ttl": "1"}, "history_ttl must be a number"),
        ("ro*om", {"presence": True}, "is not a channel name or a prefix"),
        ("", {"presence": True}, "is not a channel name or a prefix"),
    ],
)
def test_bad_options_raise_naming_the_key(
    pattern: str, options: dict[str, object], message: str
) -> None:
    hub = Hub()
    with pytest.raises(ValueError, match=message):
        hub.configure_channels(pattern, **options)
    assert hub.channel_options.patterns() == {}


async def test_history_options_take_effect() -> None:
    hub = Hub()
    hub.configure_channels("short:*", history_size=2)
    for n in range(5):
        hub.channel("short:a").send({"n": n})
        hub.channel("long").send({"n": n})
    short = await hub.read("short:a", None)
    long = await hub.read("long", None)
    assert [p.data["n"] for p in short.publications] == [3, 4]
    assert [p.data["n"] for p in long.publications] == [0, 1, 2, 3, 4]
    assert hub.broker.policy_for("short:zz").size == 2
    await hub.close()

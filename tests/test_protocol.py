"""Channel names, positions and cursors: tables plus hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchannels import BadRequest, ChannelNameError, Position, format_cursor, parse_cursor
from torchannels.errors import MALFORMED_CURSOR
from torchannels.protocol import check_channel

CHANNEL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:/@#$"


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "news",
        "chat:room-1",
        "user/42@example.org",
        "tag#1$x",
        "A_b-C.d",
        "0",
        CHANNEL_ALPHABET,
        "x" * 128,
    ],
)
def test_check_channel_accepts(name: str) -> None:
    assert check_channel(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 129,
        "a b",
        "a,b",
        "a=b",
        "a\nb",
        "news\n",
        "caf\u00e9",
        "a\x00",
        "a%20",
        "a+b",
        "a?b",
        "a\tb",
        "\uff41",  # fullwidth a
        None,
        42,
        b"news",
    ],
)
def test_check_channel_refuses(name: object) -> None:
    with pytest.raises(ChannelNameError):
        check_channel(name)


def test_channel_name_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid channel name"):
        check_channel("no spaces")


@pytest.mark.parametrize(
    ("text", "epoch", "offset"),
    [
        ("abc:0", "abc", 0),
        ("abc:17", "abc", 17),
        ("0:1", "0", 1),
        ("k3j2x9:4", "k3j2x9", 4),
        ("a" * 32 + ":5", "a" * 32, 5),
        ("e:" + "9" * 18, "e", 10**18 - 1),
    ],
)
def test_position_parse_valid(text: str, epoch: str, offset: int) -> None:
    pos = Position.parse(text)
    assert pos == Position(epoch, offset)
    assert str(pos) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "abc",
        "abc:",
        ":1",
        "ABC:1",
        "ab-c:1",
        "ab_c:1",
        "a" * 33 + ":1",
        "abc:01",
        "abc:00",
        "abc:-1",
        "abc:+1",
        "abc:1.0",
        "abc:1e3",
        "abc: 1",
        "abc:1 ",
        " abc:1",
        "abc:1:2",
        "abc:0x1",
        "abc:\u0661",  # ARABIC-INDIC DIGIT ONE
        "abc:\u00b2",  # SUPERSCRIPT TWO
        "abc:" + "1" * 19,
        "\u00e9:1",
    ],
)
def test_position_parse_invalid(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        Position.parse(text)
    assert info.value.code == MALFORMED_CURSOR
    assert info.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("a=e:0", {"a": Position("e", 0)}),
        (
            "chat=k3j2x9:17,news=k3j2x9:4",
            {"chat": Position("k3j2x9", 17), "news": Position("k3j2x9", 4)},
        ),
        ("x:y=ab:1", {"x:y": Position("ab", 1)}),
        (
            "a=e1:1,b=e2:2,c=e3:3",
            {"a": Position("e1", 1), "b": Position("e2", 2), "c": Position("e3", 3)},
        ),
    ],
)
def test_parse_cursor_valid(text: str, expected: dict[str, Position]) -> None:
    cursor = parse_cursor(text, 8)
    assert cursor == expected
    assert list(cursor) == list(expected)  # the order of the string is kept


@pytest.mark.parametrize(
    "text",
    [
        ",",
        "a",
        "a=",
        "=e:1",
        "a=e",
        "a=e:",
        "a=e:x",
        "a=E:1",
        "a=e:01",
        "a=e:-1",
        "a=e:1,",
        ",a=e:1",
        "a=e:1,,b=e:2",
        "a=e:1,a=e:2",
        "a b=e:1",
        "a=b=e:1",
        "a=e:1;b=e:2",
        "a=e:1 ,b=e:2",
        "x" * 129 + "=e:1",
        "caf\u00e9=e:1",
        "a=e:1,b=e:2,c=e:3,d=e:4,e=e:5,f=e:6,g=e:7,h=e:8,i=e:9",  # 9 > max 8
    ],
)
def test_parse_cursor_invalid(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_cursor(text, 8)
    assert info.value.code == MALFORMED_CURSOR


def test_parse_cursor_entry_limit_is_inclusive() -> None:
    text = ",".join(f"c{i}=e:{i}" for i in range(5))
    assert len(parse_cursor(text, 5)) == 5
    with pytest.raises(BadRequest):
        parse_cursor(text, 4)


@pytest.mark.parametrize(
    ("positions", "text"),
    [
        ({}, ""),
        ({"a": Position("e", 0)}, "a=e:0"),
        ({"b": Position("x1", 9), "a": Position("y2", 10)}, "b=x1:9,a=y2:10"),
    ],
)
def test_format_cursor(positions: dict[str, Position], text: str) -> None:
    assert format_cursor(positions) == text


# -- properties ---------------------------------------------------------------

channel_names = st.text(alphabet=CHANNEL_ALPHABET, min_size=1, max_size=128)
epochs = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=32)
offsets = st.integers(min_value=0, max_value=10**18 - 1)
positions = st.builds(Position, epochs, offsets)
cursors = st.dictionaries(channel_names, positions, max_size=20)


@given(cursors)
def test_cursor_round_trip(cursor: dict[str, Position]) -> None:
    text = format_cursor(cursor)
    parsed = parse_cursor(text, max(len(cursor), 1))
    assert parsed == cursor
    assert list(parsed) == list(cursor)
    assert format_cursor(parsed) == text


@given(positions)
def test_position_round_trip(pos: Position) -> None:
    assert Position.parse(str(pos)) == pos


cursorish = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(["=", ",", ":", "0", "00", "e", "a=e:1", "-1", "\x00", "\u0661"]),
    ),
    max_size=12,
).map("".join)


@given(st.one_of(st.text(max_size=300), cursorish), st.integers(min_value=1, max_value=30))
def test_parse_cursor_only_raises_bad_request(text: str, max_entries: int) -> None:
    try:
        cursor = parse_cursor(text, max_entries)
    except BadRequest as exc:
        assert exc.code == MALFORMED_CURSOR
    else:
        # Whatever is accepted is canonical: it formats back to the same text.
        assert len(cursor) <= max_entries
        assert format_cursor(cursor) == text


@given(st.one_of(st.text(max_size=60), cursorish))
def test_position_parse_only_raises_bad_request(text: str) -> None:
    try:
        pos = Position.parse(text)
    except BadRequest as exc:
        assert exc.code == MALFORMED_CURSOR
    else:
        assert str(pos) == text

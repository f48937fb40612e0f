"""The WebSocket frame reader (transports/ws_frames.py) against RFC 6455:
its examples, fragmentation, control frames inside fragments, bad opcodes,
unmasked frames, oversize, invalid UTF-8 and close codes; and a fuzzer
(hypothesis): any client frames, however split, read back as sent, and
any bytes at all either read or fail with a close code, never otherwise."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchannels.transports.ws_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameReader,
    Received,
    close_frame,
    frame,
    unmask,
    valid_close_code,
)

MAX = 1024


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    final: bool = True,
    mask: bytes | None = None,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """A frame as a client sends it: masked (``mask=b""``: unmasked)."""
    n = len(payload) if length is None else length
    first = (0x80 if final else 0) | rsv | opcode
    masked = 0x80 if mask != b"" else 0
    if n < 126:
        head = bytes((first, masked | n))
    elif n <= 0xFFFF:
        head = bytes((first, masked | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, masked | 127)) + n.to_bytes(8, "big")
    if mask == b"":
        return head + payload
    key = os.urandom(4) if mask is None else mask
    return head + key + unmask(payload, key)


def read_all(data: bytes, max_size: int = MAX, step: int | None = None) -> list[Received]:
    """Every message ``data`` holds, fed at once or ``step`` bytes at a time."""
    reader = FrameReader(max_size)
    out: list[Received] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        reader.feed(chunk)
        while (received := reader.next()) is not None:
            out.append(received)
    return out


def failure(data: bytes, max_size: int = MAX) -> tuple[int, str]:
    with pytest.raises(FrameError) as caught:
        read_all(data, max_size)
    return caught.value.code, caught.value.reason


# -- RFC 6455 section 5.7's examples --------------------------------------------------


def test_a_masked_single_frame_text_message() -> None:
    data = bytes.fromhex("818537fa213d7f9f4d5158")
    assert read_all(data) == [Received(TEXT, "Hello")]


def test_a_fragmented_text_message() -> None:
    key = bytes.fromhex("37fa213d")
    data = client_frame(TEXT, b"Hel", final=False, mask=key)
    data += client_frame(CONTINUATION, b"lo", mask=key)
    assert read_all(data) == [Received(TEXT, "Hello")]
    assert read_all(data, step=1) == [Received(TEXT, "Hello")]


def test_unmasked_server_frames_as_the_rfc_shows_them() -> None:
    assert frame(TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert frame(PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert frame(BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert frame(BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_every_length_encoding_reads_back(size: int) -> None:
    payload = os.urandom(size)
    assert read_all(client_frame(BINARY, payload), max_size=1 << 20) == [Received(BINARY, payload)]


# -- fragmentation and control frames -----------------------------------------------


def test_control_frames_inside_a_fragmented_message_come_at_once() -> None:
    data = client_frame(TEXT, "é".encode()[:1], final=False)  # split inside a character
    data += client_frame(PING, b"p1")
    data += client_frame(CONTINUATION, "é".encode()[1:] + b"-", final=False)
    data += client_frame(PONG, b"p2")
    data += client_frame(CONTINUATION, b"!")
    expected = [Received(PING, b"p1"), Received(PONG, b"p2"), Received(TEXT, "é-!")]
    assert read_all(data) == expected
    assert read_all(data, step=3) == expected


def test_a_binary_message_in_fragments() -> None:
    data = client_frame(BINARY, b"\x00\xff", final=False)
    data += client_frame(CONTINUATION, b"", final=False)  # an empty fragment
    data += client_frame(CONTINUATION, b"\x80")
    assert read_all(data) == [Received(BINARY, b"\x00\xff\x80")]


def test_a_continuation_with_nothing_to_continue_fails() -> None:
    assert failure(client_frame(CONTINUATION, b"x"))[0] == 1002


def test_a_new_message_before_the_last_ended_fails() -> None:
    data = client_frame(TEXT, b"a", final=False) + client_frame(TEXT, b"b")
    assert failure(data)[0] == 1002


def test_a_fragmented_control_frame_fails() -> None:
    assert failure(client_frame(PING, b"x", final=False))[0] == 1002


def test_a_control_frame_over_125_bytes_fails() -> None:
    assert failure(client_frame(PING, bytes(126)))[0] == 1002


# -- what a client may not send -------------------------------------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_a_reserved_opcode_fails(opcode: int) -> None:
    assert failure(client_frame(opcode, b""))[0] == 1002


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_reserved_bits_fail_as_no_extension_is_negotiated(rsv: int) -> None:
    assert failure(client_frame(TEXT, b"x", rsv=rsv))[0] == 1002  # 0x40: permessage-deflate


def test_an_unmasked_client_frame_fails() -> None:
    code, reason = failure(client_frame(TEXT, b"hi", mask=b""))
    assert code == 1002 and "masked" in reason


def test_a_64_bit_length_with_its_top_bit_set_fails() -> None:
    head = bytes((0x82, 0x80 | 127)) + (1 << 63).to_bytes(8, "big")
    assert failure(head, max_size=1 << 62)[0] == 1002


def test_the_header_alone_fails_a_message_over_the_limit() -> None:
    reader = FrameReader(MAX)
    # Only the header (and mask) of a frame announcing MAX + 1 bytes: refused
    # before any of the payload is read.
    reader.feed(client_frame(TEXT, b"", length=MAX + 1))
    with pytest.raises(FrameError) as caught:
        reader.next()
    assert caught.value.code == 1009
    assert read_all(client_frame(TEXT, b"x" * MAX)) == [Received(TEXT, "x" * MAX)]


def test_fragments_over_the_limit_together_fail() -> None:
    data = client_frame(TEXT, b"x" * 600, final=False)
    data += client_frame(CONTINUATION, b"y" * 600)
    assert failure(data)[0] == 1009


@pytest.mark.parametrize("raw", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok\xc0\xaf"])
def test_a_text_message_that_is_not_utf8_fails(raw: bytes) -> None:
    assert failure(client_frame(TEXT, raw))[0] == 1007
    # The same bytes as a binary message are fine.
    assert read_all(client_frame(BINARY, raw)) == [Received(BINARY, raw)]


# -- close frames ---------------------------------------------------------------------


def test_close_frames_carry_a_code_and_a_reason() -> None:
    assert read_all(client_frame(CLOSE, b"")) == [Received(CLOSE, "", None)]
    payload = (1000).to_bytes(2, "big") + "bye ☺".encode()
    assert read_all(client_frame(CLOSE, payload)) == [Received(CLOSE, "bye ☺", 1000)]
    assert read_all(client_frame(CLOSE, (4999).to_bytes(2, "big"))) == [Received(CLOSE, "", 4999)]


def test_a_close_frame_of_one_byte_fails() -> None:
    assert failure(client_frame(CLOSE, b"\x03"))[0] == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_a_close_code_no_endpoint_may_send_fails(code: int) -> None:
    assert not valid_close_code(code)
    assert failure(client_frame(CLOSE, code.to_bytes(2, "big")))[0] == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])  # fmt: skip
def test_every_close_code_a_peer_may_send_is_taken(code: int) -> None:
    assert read_all(client_frame(CLOSE, code.to_bytes(2, "big"))) == [Received(CLOSE, "", code)]


def test_a_close_reason_that_is_not_utf8_fails() -> None:
    assert failure(client_frame(CLOSE, b"\x03\xe8\xff"))[0] == 1007


def test_our_close_frames_fit_a_control_frame_and_stay_utf8() -> None:
    long = close_frame(1000, "é" * 100)  # 200 bytes of reason: cut to 123, whole characters
    assert len(long) <= 2 + 125
    [received] = read_all(client_frame(CLOSE, long[2:]))
    assert received.code == 1000 and received.data == "é" * 61
    assert close_frame(None) == b"\x88\x00"


# -- the fuzzer -----------------------------------------------------------------------

payloads = st.binary(max_size=300)
texts = st.text(max_size=100)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[bytes, list[Received]]:
    """Client frames (messages in random fragments, with control frames
    between them) and what they must read back as."""
    data = b""
    expected: list[Received] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            body = draw(payloads)[:125]
            opcode = draw(st.sampled_from([PING, PONG]))
            data += client_frame(opcode, body)
            expected.append(Received(opcode, body))
            continue
        if draw(st.booleans()):
            text = draw(texts)
            opcode, raw, message = TEXT, text.encode(), Received(TEXT, text)
        else:
            raw = draw(payloads)
            opcode, message = BINARY, Received(BINARY, raw)
        cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=4)))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        for n, piece in enumerate(pieces):
            data += client_frame(opcode if n == 0 else CONTINUATION, piece,
                                 final=n == len(pieces) - 1)  # fmt: skip
            if n < len(pieces) - 1 and draw(st.booleans()):
                data += client_frame(PING, b"between")
                expected.append(Received(PING, b"between"))
        expected.append(message)
    return data, expected


@settings(max_examples=300, deadline=None)
@given(conversations(), st.integers(1, 64))
def test_any_frames_however_split_read_back_as_sent(
    conversation: tuple[bytes, list[Received]], step: int
) -> None:
    data, expected = conversation
    assert read_all(data) == expected
    assert read_all(data, step=step) == expected


def outcome(
    data: bytes, step: int | None, max_size: int = 256
) -> tuple[list[Received], int | None]:
    """What ``data`` reads as, fed at once or ``step`` bytes at a time: the
    messages, and the close code it failed with (None: it did not)."""
    reader = FrameReader(max_size)
    out: list[Received] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while (received := reader.next()) is not None:
                out.append(received)
    except FrameError as exc:
        assert exc.code in (1002, 1007, 1009)
        return out, exc.code
    return out, None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 16))
def test_any_bytes_read_or_fail_with_a_close_code_however_split(data: bytes, step: int) -> None:
    whole = outcome(data, None)
    split = outcome(data, step)
    assert whole == split  # the same messages, and the same verdict
    for received in whole[0]:
        if received.opcode in (PING, PONG):
            assert len(received.data) <= 125


@settings(max_examples=200, deadline=None)
@given(conversations(), st.binary(min_size=1, max_size=40))
def test_good_frames_then_garbage_give_every_good_message_first(
    conversation: tuple[bytes, list[Received]], garbage: bytes
) -> None:
    data, expected = conversation
    got, _ = outcome(data + garbage, 7, max_size=MAX)
    assert got[: len(expected)] == expected

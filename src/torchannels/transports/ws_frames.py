"""WebSocket frames (RFC 6455): a small reader of a client's frames, and the
server's own frames.

:class:`FrameReader` takes the bytes a client sends, as they arrive, and
gives back whole messages and control frames (:class:`Received`), or
raises a :class:`FrameError` whose close code says why the connection
fails (section 7.1.7), as soon as the bytes show it:

- 1002, protocol error: a frame not masked (5.1), reserved bits set (no
  extension is negotiated on this path, 5.2), an unknown opcode, a control
  frame fragmented or over 125 bytes (5.5), a continuation with no message
  to continue or a new message before the last one ended (5.4), a 64-bit
  length with its top bit set, a close frame of one byte or with a code no
  endpoint may send (7.4);
- 1007, invalid data: a text message or a close reason that is not UTF-8
  (8.1);
- 1009, too big: a message longer than ``max_size``, refused from its
  length alone, before its payload is read.

Control frames may come between the fragments of a message; they are given
back at once. The server's frames (:func:`frame`, :func:`close_frame`) are
never masked or fragmented.

>>> reader = FrameReader(max_size=1024)
>>> reader.feed(bytes([0x81, 0x82, 1, 2, 3, 4]) + bytes([ord("h") ^ 1, ord("i") ^ 2]))
>>> reader.next()
Received(opcode=1, data='hi', code=None)
>>> reader.next() is None
True
"""

from __future__ import annotations

from typing import NamedTuple

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

#: Close codes (7.4.1).
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
TOO_BIG = 1009

_OPCODES = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})


class FrameError(Exception):
    """The client broke the protocol: fail the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Received(NamedTuple):
    """A whole message or a control frame from the client: ``data`` is a
    ``str`` for TEXT and for CLOSE (the reason), ``bytes`` otherwise;
    ``code`` is a CLOSE frame's code (None when it has none)."""

    opcode: int
    data: str | bytes
    code: int | None = None


def valid_close_code(code: int) -> bool:
    """A code a peer may send in a close frame (7.4.1, 7.4.2).

    >>> [valid_close_code(c) for c in (1000, 1005, 1013, 2999, 3000, 4999, 5000)]
    [True, False, True, False, True, True, False]
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def unmask(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR the 4-byte ``mask`` repeated (5.3), as one big integer.

    >>> unmask(unmask(b"hello", b"abcd"), b"abcd")
    b'hello'
    """
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class FrameReader:
    """Parses the frames of one client, fed bytes as they arrive.

    Slots, and no buffer object while idle (an empty ``bytes``): one per
    connection.
    """

    __slots__ = ("_buffer", "_fragments", "_opcode", "_size", "max_size")

    def __init__(self, max_size: int) -> None:
        #: The longest message taken, in bytes (longer: :data:`TOO_BIG`).
        self.max_size = max_size
        self._buffer = b""
        #: The fragments of a message under way (None: none is).
        self._fragments: list[bytes] | None = None
        self._opcode = 0
        self._size = 0

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet parsed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Take more bytes from the client."""
        self._buffer = self._buffer + data if self._buffer else data

    def next(self) -> Received | None:
        """The next whole message or control frame; None until more bytes
        are fed. Raises :class:`FrameError` (and the reader is then spent)."""
        while True:
            parsed = self._frame()
            if parsed is None:
                return None
            final, opcode, payload = parsed
            if opcode >= CLOSE:
                return _control(opcode, payload)
            if opcode == CONTINUATION:
                fragments = self._fragments
                if fragments is None:
                    raise FrameError(PROTOCOL_ERROR, "a continuation with nothing to continue")
                fragments.append(payload)
                self._size += len(payload)
                if not final:
                    continue
                opcode, payload = self._opcode, b"".join(fragments)
                self._fragments = None
                self._size = 0
            elif self._fragments is not None:
                raise FrameError(PROTOCOL_ERROR, "a new message before the last one ended")
            elif not final:
                self._fragments = [payload]
                self._opcode = opcode
                self._size = len(payload)
                continue
            if opcode == TEXT:
                try:
                    return Received(TEXT, payload.decode("utf-8"))
                except UnicodeDecodeError:
                    raise FrameError(INVALID_DATA, "a text message that is not UTF-8") from None
            return Received(BINARY, payload)

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """One frame off the buffer: (final, opcode, unmasked payload)."""
        buffer = self._buffer
        available = len(buffer)
        if available < 2:
            return None
        first, second = buffer[0], buffer[1]
        opcode = first & 0x0F
        final = bool(first & 0x80)
        if first & 0x70:
            raise FrameError(PROTOCOL_ERROR, "reserved bits set")
        if opcode not in _OPCODES:
            raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if not second & 0x80:
            raise FrameError(PROTOCOL_ERROR, "a client frame must be masked")
        length = second & 0x7F
        start = 2
        if opcode >= CLOSE:
            if not final:
                raise FrameError(PROTOCOL_ERROR, "a fragmented control frame")
            if length > 125:
                raise FrameError(PROTOCOL_ERROR, "a control frame over 125 bytes")
        elif length == 126:
            if available < 4:
                return None
            length = int.from_bytes(buffer[2:4], "big")
            start = 4
        elif length == 127:
            if available < 10:
                return None
            length = int.from_bytes(buffer[2:10], "big")
            if length >> 63:
                raise FrameError(PROTOCOL_ERROR, "a length with its top bit set")
            start = 10
        if opcode < CLOSE:
            so_far = self._size if opcode == CONTINUATION else 0
            if so_far + length > self.max_size:
                raise FrameError(TOO_BIG, "message too big")
        end = start + 4 + length
        if available < end:
            return None
        payload = unmask(buffer[start + 4 : end], buffer[start : start + 4])
        self._buffer = buffer[end:]
        return final, opcode, payload


def _control(opcode: int, payload: bytes) -> Received:
    if opcode != CLOSE:
        return Received(opcode, payload)
    if not payload:
        return Received(CLOSE, "")
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "a close frame of one byte")
    code = int.from_bytes(payload[:2], "big")
    if not valid_close_code(code):
        raise FrameError(PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(INVALID_DATA, "a close reason that is not UTF-8") from None
    return Received(CLOSE, reason, code)


def frame(opcode: int, payload: bytes) -> bytes:
    """A complete, final, unmasked frame (5.2), as the server sends them.

    >>> frame(TEXT, b"hi")
    b'\\x81\\x02hi'
    """
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n <= 0xFFFF:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to fit 125 bytes);
    an empty one without a code.

    >>> close_frame(1000, "bye")
    b'\\x88\\x05\\x03\\xe8bye'
    """
    if code is None:
        return frame(CLOSE, b"")
    text = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return frame(CLOSE, code.to_bytes(2, "big") + text)

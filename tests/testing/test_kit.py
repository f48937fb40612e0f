"""The kit's own tests: the checker's rules as a table, the proxy's faults on
an echo server, and the subscriber catching a server that loses a message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.testing
import tornado.web

from torchannels.testing import CheckingSubscriber, DeliveryChecker, FaultProxy


def sub(offset: int, epoch: str = "e") -> dict[str, Any]:
    return {"type": "subscribed", "channel": "c", "epoch": epoch, "offset": offset}


def msg(offset: int, epoch: str = "e") -> dict[str, Any]:
    return {"type": "message", "data": {"channel": "c", "epoch": epoch, "offset": offset}}


RESET = {"type": "reset", "channel": "c", "reason": "epoch_changed"}

CASES = [
    ("in order", [sub(0), msg(1), msg(2)], []),
    ("resume after a reset", [sub(0), msg(1), RESET, sub(0, "f"), msg(1, "f")], []),
    ("gap", [sub(0), msg(1), msg(3)], ["gap"]),
    ("duplicate", [sub(0), msg(1), msg(1)], ["duplicate"]),
    ("out of order", [sub(0), msg(2), msg(1)], ["gap", "out_of_order"]),
    ("epoch changed without reset", [sub(0), msg(1), msg(1, "f")], ["epoch_changed_silently"]),
    ("0:0 (nothing yet) is followed by any epoch", [sub(0, "0"), msg(1), msg(2)], []),
    ("0:0 still sees a gap", [sub(0, "0"), msg(2)], ["gap"]),
    ("message before subscribed", [msg(1)], ["no_position"]),
    ("message after reset, before subscribed", [sub(0), RESET, msg(1)], ["no_position"]),
    ("subscribed moves a position", [sub(0), msg(1), sub(5)], ["subscribed_moved"]),
    ("malformed frame", [sub(0), {"type": "message", "data": {"channel": "c"}}],
     ["malformed_frame"]),
    ("error drops the position", [sub(0), {"type": "error", "channel": "c", "code": "x"},
                                  sub(3)], []),
]  # fmt: skip


@pytest.mark.parametrize(("frames", "kinds"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_checker_rules(frames: list[dict[str, Any]], kinds: list[str]) -> None:
    checker = DeliveryChecker()
    for frame in frames:
        checker.feed(frame)
    assert [v.kind for v in checker.violations] == kinds


def test_losses_are_excused_only_by_a_reset_that_covers_them() -> None:
    checker = DeliveryChecker()
    for frame in [sub(2), msg(3), {**RESET, "reason": "history_trimmed"}, sub(6), msg(8)]:
        checker.feed(frame)
    published = [("e", o) for o in range(1, 10)]
    # 1-2 before the join; 4-6 told by the reset; 7 silently lost (and a gap); 9 pending
    assert checker.unaccounted("c", published) == [("e", 7)]
    checker.check_cursor("c=e:8")
    checker.check_cursor("c=e:9")
    assert [v.kind for v in checker.violations] == ["gap", "cursor_mismatch"]


# -- the proxy -----------------------------------------------------------------------


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float = 2
) -> bytes:
    writer.write(b"ping")
    return await asyncio.wait_for(reader.readexactly(4), timeout)


async def test_proxy_forwards_delays_stalls_and_cuts(echo: int) -> None:
    async with FaultProxy("127.0.0.1", echo, seed=1) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader, writer) == b"ping"
        proxy.delay = 0.1
        started = time.monotonic()
        await roundtrip(reader, writer)
        assert time.monotonic() - started >= 0.2  # delayed both ways
        proxy.delay = 0
        proxy.stall()
        with pytest.raises(TimeoutError):
            await roundtrip(reader, writer, timeout=0.3)
        proxy.resume()
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"ping"  # held, not lost
        assert proxy.cut_all() == 1 and proxy.active == 0
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(reader, writer)
        assert proxy.counters.cuts == 1 and proxy.counters.accepted == 1
        assert proxy.counters.bytes_up == proxy.counters.bytes_down == 12
        writer.close()


async def test_random_cuts_follow_the_seed(echo: int) -> None:
    cut = []
    for _ in range(2):
        async with FaultProxy("127.0.0.1", echo, seed=42) as proxy:
            conns = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(8)]
            for reader, writer in conns:  # every link established
                await roundtrip(reader, writer)
            cut.append([proxy.cut_random(0.5) for _ in range(3)])
            for _, writer in conns:
                writer.close()
    assert cut[0] == cut[1] and sum(cut[0]) > 0


async def test_retarget_and_refused(echo: int) -> None:
    async with FaultProxy("127.0.0.1", 1, seed=0) as proxy:  # nothing listens on port 1
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        with contextlib.suppress(ConnectionResetError):  # dropped: RST or FIN
            assert await asyncio.wait_for(reader.read(), 2) == b""
        assert proxy.counters.refused == 1
        proxy.retarget("127.0.0.1", echo)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader, writer) == b"ping"
        writer.close()


# -- the subscriber against a server that loses a message ------------------------------


class LossyPoll(tornado.web.RequestHandler):
    """Answers polls of channel ``c``: offsets 1, 2 and 4 (3 is lost)."""

    def get(self) -> None:
        if self.get_argument("transport") == "stream":
            self.write(b'{"type": "connected"}\nnot json\n')
            return
        cursor = self.get_argument("cursor", "")
        if not cursor:
            frames = [sub(0), msg(1), msg(2), msg(4)]
            self.write({"cursor": "c=e:4", "frames": frames})
        else:
            self.write({"cursor": cursor, "frames": []})


async def test_the_subscriber_reports_a_lost_message() -> None:
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(tornado.web.Application([("/channels", LossyPoll)]))
    server.add_sockets([sock])
    try:
        checking = CheckingSubscriber(f"http://127.0.0.1:{port}/channels", ["c"], "poll")
        async with checking:
            await checking.reached({"c": ("e", 4)}, timeout=5)
        assert [str(v) for v in checking.violations] == [
            "gap in 'c' at e:4: expected offset 3, 1 missing"
        ]
        assert checking.unaccounted("c", [("e", n) for n in range(1, 5)]) == [("e", 3)]
        assert json.loads(json.dumps(checking.received("c")))[-1]["offset"] == 4
    finally:
        server.stop()


async def test_the_subscriber_reports_undecodable_frames_and_goes_on() -> None:
    sock, port = tornado.testing.bind_unused_port()
    server = tornado.httpserver.HTTPServer(tornado.web.Application([("/channels", LossyPoll)]))
    server.add_sockets([sock])
    try:
        checking = CheckingSubscriber(
            f"http://127.0.0.1:{port}/channels", ["c"], "stream", backoff=(0.01, 0.05)
        )
        async with checking:
            await checking.wait(lambda: checking.stats.connects >= 3, timeout=5)
        assert {v.kind for v in checking.violations} == {"malformed_frame"}
        assert checking.fatal is None and checking.stats.drops >= 2
    finally:
        server.stop()


async def test_stop_ends_a_subscriber_whose_loop_swallowed_a_cancellation() -> None:
    """Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that lands
    with its result; ``stop`` must still end the subscriber (the chaos test
    once hung in it)."""
    sub = CheckingSubscriber("http://127.0.0.1:9/channels", ["a"], "poll")
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    task = sub._task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(sub.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)  # no cancel on time-out
    stopping.cancel()  # clean up after a failure: this cancels the task again
    with contextlib.suppress(asyncio.CancelledError):
        await stopping
    assert done and swallowed == 2 and task.cancelled()

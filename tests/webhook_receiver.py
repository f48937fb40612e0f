"""A webhook receiver for the tests: a real Tornado app on a loopback port.

:class:`Receiver` runs on the test's event loop and records every POST it
gets (raw body, headers, the time it arrived, what it answered, whether the
connection closed first), checks each with
:func:`torchannels.webhooks.verify` as an app would (a refused one is
answered 400 and its reason kept in :attr:`Receiver.refusals`), and dedupes
events by id, as the docs tell receivers to. A test can slow it
(:attr:`Receiver.delay` before answering), script its answers
(:attr:`Receiver.answers` for the next POSTs, then :attr:`Receiver.status`,
e.g. 500), and stop it (its port refuses connections) and start it again
on the same port.

Waits are bounded and wake on each POST, answer and hang-up, never on a
bare sleep. :func:`receiving` serves one for a test;
:class:`ThreadedReceiver` runs one on a loop of its own, for the browser
tests whose Playwright API is synchronous.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.iostream import StreamClosedError

import torchannels
from torchannels.webhooks import WebhookVerificationError, verify

Event = dict[str, Any]
#: An event as tests name it: its type and its fields (compact JSON, sorted keys).
Spec = tuple[str, str]
T = TypeVar("T")
WAIT = 10.0
#: Each event type's fields besides ``id``, ``type`` and ``time`` (docs/api.md).
FIELDS = {
    "channel_occupied": {"channel"},
    "channel_vacated": {"channel"},
    "user_online": {"user"},
    "user_offline": {"user"},
    "member_joined": {"channel", "user", "info"},
    "member_left": {"channel", "user"},
}
ID = re.compile(r"[0-9]{13}-[0-9]+")
SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


def spec(kind: str, **fields: Any) -> Spec:
    """How a test names an event: ``spec("user_online", user="ann")``."""
    return kind, json.dumps(fields, sort_keys=True, separators=(",", ":"))


def spec_of(event: Event) -> Spec:
    """The :func:`spec` of a received event (its id and time left out)."""
    fields = {k: v for k, v in event.items() if k not in ("id", "type", "time")}
    return spec(event["type"], **fields)


def id_order(event_id: str) -> tuple[int, int]:
    """An id ``MS-SEQ`` as numbers, so that ids compare in queue order."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def check_event(event: Event) -> None:
    """``event`` has exactly its type's fields, an id ``MS-SEQ`` and the
    time of that id (unix seconds, millisecond precision)."""
    assert set(event) == {"id", "type", "time"} | FIELDS[event["type"]], event
    assert isinstance(event["id"], str) and ID.fullmatch(event["id"]), event
    assert isinstance(event["time"], float | int), event
    assert abs(event["time"] - id_order(event["id"])[0] / 1000) < 1e-6, event
    for name in FIELDS[event["type"]] - {"info"}:
        assert isinstance(event[name], str) and event[name], event
    assert event.get("info") is None or isinstance(event["info"], dict), event


@dataclass
class Post:
    """One POST the receiver got."""

    body: bytes
    #: Header names as sent, each with its (last) value.
    headers: dict[str, str]
    #: ``time.time()`` when it arrived.
    received: float
    #: The events, when :func:`verify` accepted the request at its arrival, else None.
    events: list[Event] | None
    #: Why :func:`verify` refused it, else None.
    refusal: str | None
    #: The status answered (None until then): when the sender hung up
    #: first, the one it would have answered, as an app that handled the
    #: events before answering.
    status: int | None = None
    #: ``time.time()`` when answered (or would have been), else None.
    answered: float | None = None
    #: The connection closed before the answer, as it did: the sender hung
    #: up (its timeout: it will send again), or :meth:`Receiver.stop`.
    gone: bool = False

    @property
    def delivered(self) -> bool:
        """Answered 2xx (or would have been): the receiver handled its events."""
        return self.status is not None and 200 <= self.status < 300

    def check(self, secret: str) -> None:
        """The request is as docs/api.md says, checked without :func:`verify`:
        the headers, an HMAC-SHA256 of ``TIMESTAMP.BODY`` signed when sent,
        and a body of 1 to 50 events in compact JSON."""
        head = {name.lower(): value for name, value in self.headers.items()}
        assert head["content-type"] == "application/json", head
        assert head["user-agent"] == f"torchannels/{torchannels.__version__}", head
        stamp = head["x-torchannels-timestamp"]
        assert stamp.isdigit() and abs(int(stamp) - self.received) < 5, (stamp, self.received)
        signature = head["x-torchannels-signature"]
        assert SIGNATURE.fullmatch(signature), signature
        mac = hmac.new(secret.encode(), stamp.encode() + b"." + self.body, hashlib.sha256)
        assert signature == "sha256=" + mac.hexdigest(), (signature, self.body)
        events = json.loads(self.body)
        assert isinstance(events, list) and 1 <= len(events) <= 50, self.body
        assert self.body == json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode()
        assert events == self.events, (events, self.events)
        for event in events:
            assert list(event)[:3] == ["id", "type", "time"], event
            check_event(event)


@dataclass
class Receiver:
    """The receiver app (see the module doc). ``start()`` it on the test's loop."""

    secret: str
    #: Seconds to wait before answering each POST (:meth:`stop` cuts it short).
    delay: float = 0.0
    #: The statuses for the next POSTs that verify, in order, taken as each arrives.
    answers: deque[int] = field(default_factory=deque)
    #: The status answered to a POST that verifies, once :attr:`answers` ran out.
    status: int = 200
    posts: list[Post] = field(default_factory=list)
    port: int = 0
    _server: tornado.httpserver.HTTPServer | None = None
    #: Set (then replaced) at each POST, answer and hang-up.
    _changed: asyncio.Event | None = None
    #: Set by :meth:`stop`: wakes the POSTs waiting out :attr:`delay`.
    _stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        """Listen, on a free port the first time, on the same port after :meth:`stop`."""
        assert self._server is None, "already listening"
        self._changed = self._changed or asyncio.Event()
        self._stopping = asyncio.Event()
        sockets = tornado.netutil.bind_sockets(self.port, "127.0.0.1")
        self.port = int(sockets[0].getsockname()[1])
        app = tornado.web.Application([(r"/hook", _Hook, {"receiver": self})])
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        """Stop listening and drop every open connection: connections are
        refused. The POSTs it cut off are recorded :attr:`Post.gone`."""
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
        if self._stopping is not None:
            self._stopping.set()

    # -- what arrived ----------------------------------------------------------------

    @property
    def refusals(self) -> list[str]:
        return [p.refusal for p in self.posts if p.refusal is not None]

    @property
    def answered(self) -> int:
        """How many POSTs were answered (or would have been, the sender gone)."""
        return sum(p.answered is not None for p in self.posts)

    def batches(self) -> list[list[Event]]:
        """Each POST's events, in arrival order (the test fails on a refused one)."""
        assert self.refusals == [], self.refusals
        return [p.events or [] for p in self.posts]

    def delivered(self) -> list[Event]:
        """Events of the POSTs handled (answered 2xx, or would have been),
        in arrival order, repeats kept."""
        return [e for p in self.posts if p.delivered for e in p.events or ()]

    def unique(self) -> list[Event]:
        """:meth:`delivered` deduped by id (first arrival kept), as a receiver does."""
        seen: set[str] = set()
        kept = []
        for event in self.delivered():
            if event["id"] not in seen:
                seen.add(event["id"])
                kept.append(event)
        return kept

    def check(self) -> None:
        """Every POST verified and is as documented (:meth:`Post.check`); the
        events were delivered in queue order (ids increasing, after dedupe)."""
        assert self.refusals == [], self.refusals
        for post in self.posts:
            post.check(self.secret)
        ids = [id_order(e["id"]) for e in self.unique()]
        assert ids == sorted(ids), [e["id"] for e in self.unique()]

    def specs(self) -> list[Spec]:
        """:meth:`unique` as specs."""
        return [spec_of(e) for e in self.unique()]

    def arrival(self, wanted: Spec) -> float:
        """When the first 2xx POST carrying an event ``wanted`` arrived."""
        for post in self.posts:
            if post.delivered and any(spec_of(e) == wanted for e in post.events or ()):
                return post.received
        raise AssertionError(f"{wanted} not delivered")

    # -- waiting -------------------------------------------------------------------------

    async def until(self, check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Wait until ``check()`` holds, rechecked at each POST, answer and hang-up."""
        assert self._changed is not None, "not started"
        deadline = time.monotonic() + timeout
        while not check():
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                got = [(p.status, p.refusal, p.events) for p in self.posts]
                raise AssertionError(f"{what}: not within {timeout}s; posts {got}") from None

    async def arrived(self, *wanted: Spec, timeout: float = WAIT) -> list[Event]:
        """Wait until every ``wanted`` event was delivered; the :meth:`unique` events."""

        def check() -> bool:
            return set(wanted) <= set(self.specs())

        await self.until(check, f"events {sorted(set(wanted) - set(self.specs()))}", timeout)
        return self.unique()

    def _notify(self) -> None:
        """Wake every :meth:`until` to check again."""
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()


class _Hook(tornado.web.RequestHandler):
    """``POST /hook``: record, verify, wait :attr:`Receiver.delay`, answer."""

    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.record: Post | None = None

    async def post(self) -> None:
        receiver = self.receiver
        body = self.request.body
        try:
            events: list[Event] | None = verify(body, self.request.headers, receiver.secret)
            refusal = None
        except WebhookVerificationError as exc:
            events, refusal = None, str(exc)
        scripted = receiver.answers.popleft() if refusal is None and receiver.answers else None
        headers = {name: value for name, value in self.request.headers.get_all()}
        post = self.record = Post(body, headers, time.time(), events, refusal)
        receiver.posts.append(post)
        receiver._notify()
        if receiver.delay:
            assert receiver._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receiver._stopping.wait(), receiver.delay)
        if refusal is not None:
            status = 400
        else:
            status = scripted if scripted is not None else receiver.status
        post.status, post.answered = status, time.time()
        receiver._notify()
        if not post.gone:
            self.set_status(status)
            with contextlib.suppress(StreamClosedError):  # it went meanwhile
                await self.finish()

    def on_connection_close(self) -> None:
        """Tornado calls this only before the answer: the sender hung up, or ``stop()``."""
        if self.record is not None:
            self.record.gone = True
            self.receiver._notify()


class ThreadedReceiver:
    """A :class:`Receiver` on an event loop of its own thread, driven
    synchronously (the browser tests)."""

    def __init__(self, secret: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.receiver = Receiver(secret)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self.receiver.start())

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = WAIT + 5) -> T:
        """Run ``coroutine`` on the receiver's loop; its result."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self.loop
        )
        return future.result(timeout)

    @property
    def url(self) -> str:
        return self.receiver.url

    def arrived(self, *wanted: Spec, timeout: float = WAIT) -> list[Event]:
        return self.run(self.receiver.arrived(*wanted, timeout=timeout), timeout + 5)

    def specs(self) -> list[Spec]:
        return self.run(_call(self.receiver.specs))

    def check(self) -> None:
        """:meth:`Receiver.check`."""
        self.run(_call(self.receiver.check))

    def posts(self) -> list[Post]:
        return self.run(_call(lambda: list(self.receiver.posts)))

    def close(self) -> None:
        self.run(self.receiver.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _call(fn: Callable[[], T]) -> T:
    return fn()


@asynccontextmanager
async def receiving(secret: str) -> AsyncIterator[Receiver]:
    """A started :class:`Receiver` on the test's loop, stopped on the way out."""
    receiver = Receiver(secret)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@contextmanager
def threaded_receiver(secret: str) -> Iterator[ThreadedReceiver]:
    """A :class:`ThreadedReceiver`, closed on the way out."""
    receiver = ThreadedReceiver(secret)
    try:
        yield receiver
    finally:
        receiver.close()

"""The publisher, sync (urllib) and async (Tornado), against real hubs: every
method, every error code of docs/api.md that a request can cause, and the
retry rule (observed as connections through a proxy)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.client_helpers import FLAGS
from server.processes import KEY, ServerProcess
from torchannels.client import (
    APIError,
    AsyncPublisher,
    AuthError,
    ConnectError,
    PayloadTooLarge,
    Publisher,
    RequestError,
    UnavailableError,
)
from torchannels.client.calls import Call
from torchannels.testing import FaultProxy

FORMS = ("sync", "async")


async def call(form: str, base: str, method: str, *args: Any, key: str = KEY,
               retries: int = 0) -> Any:  # fmt: skip
    """``Publisher(base, key).method(*args)`` in the sync or the async form
    (the sync one in a thread, so that a proxy in this loop keeps working)."""
    if form == "sync":
        sync = Publisher(base, key, retries=retries, seed=1)
        return await asyncio.to_thread(getattr(sync, method), *args)
    async with AsyncPublisher(base, key, retries=retries, seed=1) as pub:
        return await getattr(pub, method)(*args)


@pytest.fixture(scope="module")
def special_hubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """``bare`` (no API key), ``limited`` (one channel at most, 64 KiB bodies),
    ``down`` (a Redis broker that is never there)."""
    logs: Path = tmp_path_factory.mktemp("publisher-hubs")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    common = ["--port", "0", "--no-demo"]
    keyed = [*common, "--api-key", KEY]
    hubs = {
        "bare": ServerProcess(logs, common, None),
        "limited": ServerProcess(logs, [*keyed, "--channel-limit", "1"], None),
        "down": ServerProcess(logs, [*keyed, "--broker", f"redis://127.0.0.1:{dead}/0"], None),
    }
    yield hubs
    for hub in hubs.values():
        hub.close()


@pytest.mark.parametrize("form", FORMS)
async def test_every_method(hub: ServerProcess, form: str) -> None:
    ch = f"pub:{form}"
    one = await call(form, hub.base, "publish", ch, {"n": 1})
    assert (one.channel, one.offset) == (ch, 1) and one.epoch and one.ts > 0
    many = await call(form, hub.base, "publish_many", [ch, f"{ch}:b", ch], {"n": 2})
    assert [(r.channel, r.offset) for r in many] == [(ch, 2), (f"{ch}:b", 1)]
    mixed = [(ch, {"n": 3}), {"channel": f"{ch}:b", "data": {"n": 4}}, (ch, {"n": 5})]
    batch = await call(form, hub.base, "publish_batch", mixed)
    assert [(r.channel, r.offset) for r in batch] == [(ch, 3), (f"{ch}:b", 2), (ch, 4)]
    state = await call(form, hub.base, "set_state", ch, [{"s": 1}])
    assert (state.channel, state.epoch, state.offset) == (ch, one.epoch, 4)
    info = await call(form, hub.base, "channel", ch)
    assert (info.channel, info.epoch, info.offset) == (ch, one.epoch, 4)
    assert info.history_length == 4 and info.has_state and info.local_subscribers == 0
    fresh = await call(form, hub.base, "channel", f"{ch}/never#used")
    assert (fresh.offset, fresh.history_length, fresh.has_state) == (0, 0, False)


@pytest.mark.parametrize("form", FORMS)
async def test_listing_channels(hub: ServerProcess, form: str) -> None:
    """``GET /api/channels`` (issue 12's contract): pages sorted by name."""
    prefix = f"list-{form}:"
    for name in ("c", "a", "b"):
        await call(form, hub.base, "publish", prefix + name, {"n": 1})
    page = await call(form, hub.base, "channels", prefix, 2)
    assert [i.channel for i in page.channels] == [prefix + "a", prefix + "b"]
    assert page.next == prefix + "b"
    rest = await call(form, hub.base, "channels", prefix, 2, page.next)
    assert [i.channel for i in rest.channels] == [prefix + "c"] and rest.next is None
    assert rest.channels[0].offset == 1 and rest.channels[0].history_length == 1
    if form == "sync":
        every = [i.channel for i in Publisher(hub.base, KEY).iter_channels(prefix)]
    else:
        async with AsyncPublisher(hub.base, KEY) as pub:
            every = [i.channel async for i in pub.iter_channels(prefix)]
    assert every == [prefix + n for n in "abc"]


def _errors(hub: ServerProcess, hubs: dict[str, ServerProcess]) -> list[tuple[Any, ...]]:
    """(hub, key, method, args, class, status, code)."""
    limited = hubs["limited"]
    return [
        (hub, KEY, "request", [Call("POST", "/api/publish", b"{nope", False)],
         RequestError, 400, "bad_json"),
        (hub, KEY, "publish", ["a b", {"n": 1}], RequestError, 400, "invalid_channel"),
        (hub, KEY, "publish", ["x", {"offset": 1}], RequestError, 400, "invalid_message"),
        (limited, KEY, "publish_batch", [[{"channel": "x", "data": {}, "idempotency_key": str(n)}
                                          for n in range(1001)]], RequestError, 400,
         "too_many_messages"),  # (short keys: the body stays under the 64 KiB limit)
        (hub, "", "publish", ["x", {"n": 1}], AuthError, 401, "unauthorized"),
        (hub, "wrong", "publish", ["x", {"n": 1}], AuthError, 403, "forbidden"),
        (hubs["bare"], KEY, "publish", ["x", {"n": 1}], AuthError, 403, "api_disabled"),
        (hub, KEY, "request", [Call("GET", "/api/publish", None, True)], RequestError, 405,
         "http_error"),
        (hub, KEY, "publish", ["x", {"pad": "x" * 3000}], PayloadTooLarge, 413,
         "payload_too_large"),
        (hubs["down"], KEY, "publish", ["x", {"n": 1}], UnavailableError, 503,
         "broker_unavailable"),
        (limited, KEY, "publish", ["limit:second", {"n": 1}], UnavailableError, 503,
         "channel_limit"),
    ]  # fmt: skip


@pytest.mark.parametrize("form", FORMS)
async def test_every_error_code(hub: ServerProcess, special_hubs: dict[str, ServerProcess],
                                form: str) -> None:  # fmt: skip
    """(``internal``, a bug by definition, is mapped in test_client_units.py.)"""
    await call(form, special_hubs["limited"].base, "publish", "limit:first", {"n": 1})
    for target, key, method, args, cls, status, code in _errors(hub, special_hubs):
        with pytest.raises(APIError) as info:
            await call(form, target.base, method, *args, key=key)
        error = info.value
        assert (type(error), error.status, error.code) == (cls, status, code), error
        assert error.message and error.index is None
    with pytest.raises(RequestError) as info:
        await call(form, hub.base, "publish_batch", [("ok", {"n": 1}), ("a b", {"n": 2})])
    assert (info.value.code, info.value.index) == ("invalid_channel", 1)


@pytest.mark.parametrize("form", FORMS)
async def test_retries_only_what_is_safe(special_hubs: dict[str, ServerProcess], form: str
                                         ) -> None:  # fmt: skip
    """Against a broker that is down (503 ``broker_unavailable``): what is
    safe to send twice is sent again ``retries`` times (a publish, with its
    idempotency key; a read; ``set_state``), a ``disconnect`` once (sent
    twice, it could end the connections made after the first). Counted as
    the connections a proxy in front of the hub accepts."""
    down = special_hubs["down"]
    async with FaultProxy("127.0.0.1", down.port) as proxy:
        base = f"http://127.0.0.1:{proxy.port}"
        with pytest.raises(UnavailableError):
            await call(form, base, "publish", "x", {"n": 1}, retries=2)
        assert proxy.counters.accepted == 3
        with pytest.raises(UnavailableError):
            await call(form, base, "channel", "x", retries=2)
        assert proxy.counters.accepted == 3 + 3
        with pytest.raises(UnavailableError):
            await call(form, base, "set_state", "x", [], retries=1)
        assert proxy.counters.accepted == 3 + 3 + 2
        with pytest.raises(UnavailableError) as info:
            await call(form, base, "disconnect", "42", retries=2)
        assert info.value.code == "broker_unavailable"
        assert proxy.counters.accepted == 3 + 3 + 2 + 1


@pytest.mark.parametrize("form", FORMS)
async def test_an_unreachable_hub(form: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError):
        await call(form, f"http://127.0.0.1:{port}", "publish", "x", {"n": 1}, retries=1)


def test_flags_are_the_shared_hub_flags() -> None:
    assert "--max-publish-bytes" in FLAGS  # the 413 case above depends on it

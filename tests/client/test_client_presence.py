"""``Publisher.presence``, ``presence_all`` and ``ChannelInfo.presence``, sync
and async, against a served app over loopback (issue 18): typed pages,
every page followed, and the typed errors of a refused read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.presence_hub import PresenceHub
from server.processes import KEY
from torchannels.client import (
    AsyncPublisher,
    AuthError,
    Member,
    PresenceCounts,
    Publisher,
    RequestError,
    UserPage,
)

FORMS = ("sync", "async")


@pytest.fixture
async def hub() -> AsyncIterator[PresenceHub]:
    served = PresenceHub()
    yield served
    await served.close()


async def call(form: str, base: str, method: str, *args: Any, key: str = KEY) -> Any:
    """``Publisher(base, key).method(*args)``, sync (in a thread, so this loop
    keeps serving) or async; an iterator is read to its end."""
    if form == "sync":
        sync = Publisher(base, key, retries=0)

        def run() -> Any:
            result = getattr(sync, method)(*args)
            return list(result) if method == "presence_all" else result

        return await asyncio.to_thread(run)
    async with AsyncPublisher(base, key, retries=0) as pub:
        if method == "presence_all":
            return [user async for user in pub.presence_all(*args)]
        return await getattr(pub, method)(*args)


@pytest.mark.parametrize("form", FORMS)
async def test_typed_pages_and_every_user(hub: PresenceHub, form: str) -> None:
    ids = [f"user{i:04d}" for i in range(1200)]
    for start in range(0, len(ids), 400):
        await asyncio.gather(*(hub.add("room:py", u) for u in ids[start : start + 400]))
    await hub.add("room:py", "user0007", {"name": "Seven"})  # a second client, with info
    await hub.add("room:py", None)

    info = await call(form, hub.base, "channel", "room:py")
    assert info.presence == PresenceCounts(clients=1202, users=1200)
    assert (await call(form, hub.base, "channel", "news")).presence is None

    page = await call(form, hub.base, "presence", "room:py", None, 5)
    assert isinstance(page, UserPage) and page.channel == "room:py"
    assert [u.user for u in page.users] == ids[:5] and page.next is not None
    then = await call(form, hub.base, "presence", "room:py", page.next, 5)
    assert [u.user for u in then.users] == ids[5:10]
    assert then.users[2] == Member("user0007", {"name": "Seven"}, 2)
    default = await call(form, hub.base, "presence", "room:py")
    assert len(default.users) == 100  # the server's default page

    everyone = await call(form, hub.base, "presence_all", "room:py", 500)
    assert [u.user for u in everyone] == ids
    assert all(isinstance(u, Member) for u in everyone)
    assert sum(u.clients for u in everyone) == 1201  # the anonymous client is no user


@pytest.mark.parametrize("form", FORMS)
async def test_refusals_raise_typed_errors(hub: PresenceHub, form: str) -> None:
    await hub.add("room:e", "a")
    await hub.add("room:e", "b")
    with pytest.raises(RequestError) as disabled:
        await call(form, hub.base, "presence", "news")
    assert (disabled.value.status, disabled.value.code) == (400, "presence_disabled")
    with pytest.raises(RequestError) as disabled_all:
        await call(form, hub.base, "presence_all", "news")
    assert disabled_all.value.code == "presence_disabled"

    cursor = (await call(form, hub.base, "presence", "room:e", None, 1)).next
    assert cursor is not None
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    with pytest.raises(RequestError) as bad_cursor:
        await call(form, hub.base, "presence", "room:e", tampered)
    assert (bad_cursor.value.status, bad_cursor.value.code) == (400, "invalid_cursor")
    with pytest.raises(RequestError) as bad_limit:
        await call(form, hub.base, "presence", "room:e", None, 1001)
    assert bad_limit.value.code == "invalid_limit"
    with pytest.raises(AuthError) as wrong_key:
        await call(form, hub.base, "presence", "room:e", key="wrong")
    assert wrong_key.value.code == "forbidden"
    with pytest.raises(ValueError, match="invalid channel name"):
        await call(form, hub.base, "presence", "a b")  # refused before anything is sent

"""The publisher's idempotency keys and safe retries, both forms, against a
publish API on loopback that records what each attempt sent
(recording_api.py): keys made and sent, given keys passed through, a 503, a
timeout and a connection cut after the request was stored retried with the
same keys (one result, the duplicate flag surfaced), and what is never
retried; then ``torchannels publish``, which does the same."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

from client.recording_api import RecordingAPI
from server.processes import KEY, cli
from torchannels.client import (
    AsyncPublisher,
    ConnectError,
    Published,
    Publisher,
    RequestError,
    ServerError,
    UnavailableError,
)
from torchannels.testing import FaultProxy

FORMS = ("sync", "async")
HEX_KEY = re.compile("[0-9a-f]{32}")


async def call(form: str, base: str, method: str, *args: Any, retries: int = 4,
               timeout: float = 10.0, **kwargs: Any) -> Any:  # fmt: skip
    """``Publisher(base, KEY).method(*args, **kwargs)`` in the sync form (in
    a thread, so that the API in this loop keeps answering) or the async one."""
    options: dict[str, Any] = {"retries": retries, "timeout": timeout, "seed": 1}
    if form == "sync":
        sync = Publisher(base, KEY, **options)
        return await asyncio.to_thread(getattr(sync, method), *args, **kwargs)
    async with AsyncPublisher(base, KEY, **options) as pub:
        return await getattr(pub, method)(*args, **kwargs)


def batch_keys(api: RecordingAPI, n: int) -> list[str]:
    return [m["idempotency_key"] for m in api.seen[n].body["messages"]]


@pytest.mark.parametrize("form", FORMS)
async def test_every_publish_sends_a_key_of_its_own(form: str) -> None:
    async with RecordingAPI() as api:
        await call(form, api.base, "publish", "a", {"n": 1})
        await call(form, api.base, "publish", "a", {"n": 1})
        await call(form, api.base, "publish_many", ["a", "b"], {"n": 2})
        await call(form, api.base, "publish_batch", [("a", {"n": 3}), ("a", {"n": 4})])
        made = api.keys()[:3]
        assert all(k is not None and HEX_KEY.fullmatch(k) for k in made), made
        assert len(set(made)) == 3  # a new key per call
        assert api.keys()[3] is None  # a batch: one key per message, in the body
        in_batch = batch_keys(api, 3)
        assert all(HEX_KEY.fullmatch(k) for k in in_batch) and len(set(in_batch + made)) == 5
        assert api.seen[0].body == {"channel": "a", "data": {"n": 1}}  # the key is no data


@pytest.mark.parametrize("form", FORMS)
async def test_given_keys_are_sent_as_given(form: str) -> None:
    async with RecordingAPI() as api:
        first = await call(form, api.base, "publish", "a", {"n": 1}, idempotency_key="order-1")
        again = await call(form, api.base, "publish", "a", {"n": 1}, idempotency_key="order-1")
        many = await call(form, api.base, "publish_many", ["a", "b"], {},
                          idempotency_key="order 2 ~!")  # fmt: skip
        batch = [{"channel": "a", "data": {}, "idempotency_key": "line-7"}, ("b", {"n": 1})]
        await call(form, api.base, "publish_batch", batch)
        assert api.keys()[:3] == ["order-1", "order-1", "order 2 ~!"]
        given, made = batch_keys(api, 3)
        assert given == "line-7" and HEX_KEY.fullmatch(made)
    assert first == Published("a", "e", 1, 1.0, False)
    assert again == Published("a", "e", 1, 1.0, True)  # the flag as the server said
    assert [(r.channel, r.offset, r.duplicate) for r in many] == [("a", 2, False), ("b", 1, False)]


@pytest.mark.parametrize("form", FORMS)
async def test_a_bad_key_is_refused_before_anything_is_sent(form: str) -> None:
    async with RecordingAPI() as api:
        for key in ("", "x" * 129, "caf\u00e9", "a\r\nX-Admin: 1"):
            with pytest.raises(ValueError, match="idempotency key must be 1-128 printable"):
                await call(form, api.base, "publish", "a", {}, idempotency_key=key)
        assert api.seen == []


@pytest.mark.parametrize("form", FORMS)
async def test_a_503_is_retried_with_the_same_keys(form: str) -> None:
    async with RecordingAPI("503", "ok", "503", "503", "ok") as api:
        result = await call(form, api.base, "publish", "a", {"n": 1})
        assert result == Published("a", "e", 1, 1.0, False)  # one call, one result
        results = await call(form, api.base, "publish_batch", [("a", {"n": 2}), ("b", {})])
        assert [(r.channel, r.offset) for r in results] == [("a", 2), ("b", 1)]
        assert len(api.seen) == 5
        assert api.seen[0] == api.seen[1] and HEX_KEY.fullmatch(api.seen[0].key or "")
        assert api.seen[2] == api.seen[3] == api.seen[4]  # the same keys, every attempt
        assert len(set(batch_keys(api, 2))) == 2


@pytest.mark.parametrize("form", FORMS)
async def test_a_timeout_is_retried_and_the_duplicate_surfaced(form: str) -> None:
    """The first attempt was stored, its answer never came: the retry is
    answered with the first one's position, as a duplicate."""
    async with RecordingAPI("hold") as api:
        started = time.monotonic()
        result = await call(form, api.base, "publish", "a", {"n": 1}, timeout=0.5)
        assert time.monotonic() - started >= 0.5
        assert result == Published("a", "e", 1, 1.0, True)
        assert len(api.seen) == 2 and api.seen[0] == api.seen[1]


@pytest.mark.parametrize("form", FORMS)
async def test_a_connection_closed_before_the_answer_is_retried(form: str) -> None:
    async with RecordingAPI("close") as api:
        result = await call(form, api.base, "publish", "a", {"n": 1})
        assert result == Published("a", "e", 1, 1.0, True)
        assert len(api.seen) == 2 and api.seen[0] == api.seen[1]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("method", ["publish", "publish_many", "publish_batch"])
async def test_a_cut_after_the_request_arrived_is_retried(form: str, method: str) -> None:
    """The request reached the API and was stored; then the connection was
    reset (RST) before the answer."""
    args: dict[str, tuple[Any, ...]] = {
        "publish": ("a", {"n": 1}), "publish_many": (["a", "b"], {"n": 1}),
        "publish_batch": ([("a", {"n": 1}), ("b", {"n": 2})],),
    }  # fmt: skip
    async with RecordingAPI("hold") as api, FaultProxy("127.0.0.1", api.port) as proxy:
        task = asyncio.ensure_future(
            call(form, f"http://127.0.0.1:{proxy.port}", method, *args[method])
        )
        await asyncio.wait_for(api.held.wait(), 10)
        assert proxy.cut_all() == 1
        result = await asyncio.wait_for(task, 10)
    assert len(api.seen) == 2 and api.seen[0] == api.seen[1]
    results = result if isinstance(result, list) else [result]
    assert [(r.channel, r.offset, r.duplicate) for r in results] == [
        ("a", 1, True),
        ("b", 1, True),
    ][: len(results)]
    assert proxy.counters.accepted == 2


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("answer", "error"), [
    ("400", RequestError), ("500", ServerError), ("502", ServerError),
])  # fmt: skip
async def test_never_a_4xx_or_another_5xx(form: str, answer: str, error: type[Exception]) -> None:
    for method, args in (("publish", ("a", {})), ("publish_batch", ([("a", {})],))):
        async with RecordingAPI(answer) as api:
            with pytest.raises(error):
                await call(form, api.base, method, *args)
            assert len(api.seen) == 1  # what follows the script is "ok": it was never sent again


@pytest.mark.parametrize("form", FORMS)
async def test_retries_zero_disables_them(form: str) -> None:
    async with RecordingAPI("503", "hold") as api:
        with pytest.raises(UnavailableError):
            await call(form, api.base, "publish", "a", {}, retries=0)
        with pytest.raises(ConnectError):
            await call(form, api.base, "publish", "a", {}, retries=0, timeout=0.3)
        assert len(api.seen) == 2 and api.keys()[0] != api.keys()[1]


@pytest.mark.parametrize("form", FORMS)
async def test_retries_stop_when_used_up_within_the_backoff_bound(form: str) -> None:
    """``retries`` 3: four attempts, then the last error; the pauses are at
    most 0.4 + 0.8 + 1.6 s."""
    async with RecordingAPI(*["503"] * 10) as api:
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            await call(form, api.base, "publish", "a", {}, retries=3)
        assert time.monotonic() - started < 0.4 + 0.8 + 1.6 + 1.0
        assert len(api.seen) == 4 and len(set(api.keys())) == 1


def test_retries_must_be_a_count() -> None:
    for bad in (-1, 1.5, None):
        with pytest.raises(ValueError, match="retries must be an integer >= 0"):
            Publisher("http://127.0.0.1:1", KEY, retries=bad)  # type: ignore[arg-type]
    assert Publisher("http://127.0.0.1:1", KEY).retries == 4


# -- torchannels publish ---------------------------------------------------------------


async def run_cli(api: RecordingAPI, *args: str, stdin: str | None = None) -> Any:
    """``torchannels publish ARGS`` against ``api`` (in a thread: the API runs here)."""
    return await asyncio.to_thread(cli, "publish", *args, "--url", api.base, "--api-key", KEY,
                                   stdin=stdin)  # fmt: skip


async def test_cli_sends_the_given_key_or_makes_one_and_retries_with_it() -> None:
    async with RecordingAPI("503") as api:
        given = await run_cli(api, "a", '{"n": 1}', "--idempotency-key", "deploy-42")
        assert given.returncode == 0, given.stderr
        assert json.loads(given.stdout) == {"channel": "a", "epoch": "e", "offset": 1, "ts": 1.0}
        again = await run_cli(api, "a", '{"n": 1}', "--idempotency-key", "deploy-42")
        assert json.loads(again.stdout)["duplicate"] is True
        made = await run_cli(api, "a", '{"n": 2}')
        assert made.returncode == 0, made.stderr
        keys = api.keys()
        assert keys[:3] == ["deploy-42"] * 3  # a 503, its retry, the second run
        assert HEX_KEY.fullmatch(keys[3] or "")


async def test_cli_ndjson_gives_each_line_a_key() -> None:
    lines = [{"channel": "a", "data": {"n": 1}, "idempotency_key": "row-1"},
             {"channel": "a", "data": {"n": 2}}]  # fmt: skip
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    async with RecordingAPI("503") as api:
        result = await run_cli(api, "--ndjson", stdin=stdin)
        assert result.returncode == 0, result.stderr
        assert len(api.seen) == 2 and api.seen[0] == api.seen[1]  # retried, the same keys
        given, made = batch_keys(api, 0)
        assert given == "row-1" and HEX_KEY.fullmatch(made)
        again = await run_cli(api, "b", "--ndjson", stdin='{"n": 1}\n')
        assert again.returncode == 0, again.stderr
        (item,) = api.seen[2].body["messages"]
        assert item["channel"] == "b" and HEX_KEY.fullmatch(item["idempotency_key"])


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["a", "{}", "--idempotency-key", ""], None, "--idempotency-key: idempotency key must be"),
    (["a", "{}", "--idempotency-key", "x" * 129], None, "idempotency key must be 1-128"),
    (["--ndjson", "--idempotency-key", "k"], '{"channel": "a", "data": {}}\n',
     "--idempotency-key is for one message"),
])  # fmt: skip
async def test_cli_refuses_a_bad_key_before_sending(args: list[str], stdin: str | None,
                                                    message: str) -> None:  # fmt: skip
    async with RecordingAPI() as api:
        result = await run_cli(api, *args, stdin=stdin)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith("torchannels: ") and message in result.stderr
        assert api.seen == []


async def test_cli_does_not_retry_a_refusal() -> None:
    async with RecordingAPI("400") as api:
        result = await run_cli(api, "a", "{}")
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == "torchannels: 400 invalid_message: bad data\n"
        assert len(api.seen) == 1

"""docs/api.md#webhooks is exact: its event JSON is what the server sends,
its signatures check, and its Python receiver and three lines of Node work
against a real sender."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from redis_servers import free_port
from support import eventually
from torchannels.brokers.lifecycle import (
    EVENT_TYPES,
    QueuedEvent,
    channel_hold,
    member_hold,
    off_event,
    user_hold,
)
from torchannels.brokers.lifecycle_memory import MemoryLifecycle
from torchannels.webhook_sender import WebhookSender
from torchannels.webhook_stats import WebhookStats
from torchannels.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify

API_DOC = Path(__file__).parents[1] / "docs" / "api.md"


def section() -> str:
    text = API_DOC.read_text()
    start = text.index("\n## Webhooks\n")
    return text[start : text.index("\n## ", start + 1)]


def blocks(language: str) -> list[str]:
    """The section's fenced code blocks in ``language`` ("" for none), in order."""
    found: list[str] = []
    lines: list[str] = []
    fence: str | None = None
    for line in section().splitlines(keepends=True):
        if fence is None and line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif fence is not None and line.startswith("```"):
            if fence == language:
                found.append("".join(lines))
            fence = None
        elif fence is not None:
            lines.append(line)
    return found


def test_the_catalogue_is_what_the_server_sends() -> None:
    lines = blocks("json")[0].splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert sorted(kinds) == sorted(EVENT_TYPES)  # each once
    room, ann = channel_hold("room:7"), user_hold("42")
    member = member_hold("room:7", "42", {"name": "Ann"})
    fields = {
        "channel_occupied": room.on_fields,
        "user_online": ann.on_fields,
        "member_joined": member.on_fields,
        "member_left": off_event(member.key)[1],
        "channel_vacated": off_event(room.key)[1],
        "user_offline": off_event(ann.key)[1],
    }
    for line in lines:
        doc = json.loads(line)
        ms = int(doc["id"].split("-")[0])
        event = QueuedEvent(doc["id"], doc["type"], ms / 1000, fields[doc["type"]])
        assert event.body().decode() == line


def test_the_example_call_and_the_openssl_line_verify() -> None:
    call = blocks("")[0]
    head, _, body = call.partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    raw = body.strip().encode()
    events = verify(raw, headers, "s3cret", now=int(headers[TIMESTAMP_HEADER]))
    assert [e["type"] for e in events] == ["channel_occupied", "user_online"]
    shell = blocks("sh")[0]
    message = re.search(r"printf %s '([^']*)'", shell)
    digest = re.search(r"= ([0-9a-f]{64})", shell)
    assert message and digest
    stamp, _, signed_body = message.group(1).partition(".")
    assert sign(signed_body.encode(), "s3cret", int(stamp)) == f"sha256={digest.group(1)}"


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_three_lines_of_node_check_like_verify() -> None:
    lines = blocks("js")[0].strip().splitlines()
    assert len(lines) == 3
    body = b'[{"id":"1-0","type":"user_online","time":0.001,"user":"ann"}]'
    now = int(time.time())

    def check(raw: bytes, ts: str | None, sig: str | None) -> str:
        script = "\n".join(
            [
                f"const SECRET = {json.dumps('s3cret')};",
                f"const rawBody = Buffer.from({json.dumps(raw.decode())});",
                f"const ts = {json.dumps(ts) if ts is not None else 'undefined'};",
                f"const sig = {json.dumps(sig) if sig is not None else 'undefined'};",
                *lines,
                "console.log(ok);",
            ]
        )
        assert NODE is not None
        out = subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    good = sign(body, "s3cret", now)
    assert check(body, str(now), good) == "true"
    assert check(body.replace(b"ann", b"eve"), str(now), good) == "false"
    assert check(body, str(now), sign(body, "other", now)) == "false"
    stale = now - 301
    assert check(body, str(stale), sign(body, "s3cret", stale)) == "false"
    assert check(body, None, good) == "false"
    assert check(body, str(now), None) == "false"


@pytest.fixture
async def doc_receiver(tmp_path: Path) -> AsyncIterator[tuple[str, subprocess.Popen[str]]]:
    """The docs' receiver, run as written (its port swapped for a free one)."""
    port = free_port()
    code = blocks("python")[0].replace("listen(8001,", f"listen({port},")
    script = tmp_path / "receiver.py"
    script.write_text(code)
    env = {**os.environ, "TORCHANNELS_WEBHOOK_SECRET": "s3cret", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}/torchannels/webhook"
    http = AsyncHTTPClient(force_instance=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # until it listens
            try:
                probe = await http.fetch(
                    HTTPRequest(url, method="POST", body=b"[]"), raise_error=False
                )
                break
            except OSError:
                assert time.monotonic() < deadline, "the receiver did not start"
                await asyncio.sleep(0.05)
        assert probe.code == 403  # unsigned: refused
        yield url, process
    finally:
        http.close()
        process.kill()
        process.wait()


async def test_the_python_receiver_handles_each_event_once(
    doc_receiver: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = doc_receiver
    store = MemoryLifecycle()
    store.configure(EVENT_TYPES)
    sender = WebhookSender(store, url, "s3cret", stats=WebhookStats(), owner="doc")
    sender.start()
    try:
        room = channel_hold("room:7")
        await store.hold("p1", [room, user_hold("42")], time.time() + 60)
        await store.release("p1", [room.key])
        await eventually(lambda: sender.stats.sent == 3, timeout=5)
        # The same batch again (a redelivery): handled once.
        http = AsyncHTTPClient(force_instance=True)
        events = [
            b'{"id":"1-0","type":"user_offline","time":0.001,"user":"42"}',
            b'{"id":"1-0","type":"user_offline","time":0.001,"user":"42"}',
        ]
        body = b"[" + b",".join(events) + b"]"
        stamp = int(time.time())
        headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(body, "s3cret", stamp)}
        answer = await http.fetch(HTTPRequest(url, method="POST", body=body, headers=headers))
        http.close()
        assert answer.code == 204
    finally:
        await sender.close()
    process.kill()
    out, _ = process.communicate()
    assert out.splitlines() == [
        "channel_occupied {'channel': 'room:7'}",
        "user_online {'user': '42'}",
        "channel_vacated {'channel': 'room:7'}",
        "user_offline {'user': '42'}",
    ]

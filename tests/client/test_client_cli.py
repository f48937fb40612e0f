"""``torchannels subscribe``, ``channels`` and ``info`` as subprocesses
against a real hub: the output formats, Ctrl-C (SIGINT) printing the cursor,
and a second run resuming from it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from typing import Any

from server.processes import KEY, SECRET, ServerProcess, clean_env, cli
from torchannels.client import Publisher
from torchannels.tokens import encode_token

WAIT = 10.0


class Subscriber:
    """``python -m torchannels subscribe ARGS`` with its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.errors: list[str] = []

    @classmethod
    async def start(cls, hub: ServerProcess, *args: str) -> Subscriber:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "torchannels", "subscribe", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=clean_env({"TORCHANNELS_URL": hub.base}),
        )  # fmt: skip
        sub = cls(proc)
        await sub.stderr_until("torchannels: connected")
        return sub

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
        assert raw, f"stdout ended; stderr: {self.errors}"
        return raw.decode().rstrip("\n")

    async def stderr_until(self, start: str) -> str:
        assert self.proc.stderr is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stderr.readline(), WAIT)
            assert raw, f"stderr ended before {start!r}: {self.errors}"
            self.errors.append(raw.decode().rstrip("\n"))
            if self.errors[-1].startswith(start):
                return self.errors[-1]

    async def interrupt(self) -> tuple[int, str]:
        """SIGINT; the exit code and the cursor it printed."""
        self.proc.send_signal(signal.SIGINT)
        last = await self.stderr_until("torchannels: cursor ")
        code = await asyncio.wait_for(self.proc.wait(), WAIT)
        return code, last.removeprefix("torchannels: cursor ")

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def test_subscribe_output_interrupt_and_resume(hub: ServerProcess) -> None:
    pub = Publisher(hub.base, KEY)
    state = pub.set_state("open:cli-state", [{"k": "v"}])
    sub = await Subscriber.start(hub, "open:cli", "open:cli-state")
    try:
        line = await sub.line()  # the state, on join
        assert re.fullmatch(rf'\d\d:\d\d:\d\d open:cli-state {state.epoch}:0 state \{{"k": "v"\}}',
                            line), line  # fmt: skip
        sent = [pub.publish("open:cli", {"n": n, "text": "é"}) for n in (1, 2)]
        for n, result in zip((1, 2), sent, strict=True):
            line = await sub.line()
            assert re.fullmatch(rf"\d\d:\d\d:\d\d open:cli {result.epoch}:{n} "
                                rf'\{{"n": {n}, "text": "é"\}}', line), line  # fmt: skip
        code, cursor = await sub.interrupt()
    finally:
        sub.kill()
    assert code == 130
    assert cursor == f"open:cli={sent[1].epoch}:2,open:cli-state={state.epoch}:0"

    later = pub.publish("open:cli", {"n": 3})
    again = await Subscriber.start(hub, "--cursor", cursor, "--json")
    try:
        line = await again.line()  # only what came after the cursor
        assert json.loads(line) == {"n": 3, "channel": "open:cli", "ts": later.ts,
                                    "epoch": later.epoch, "offset": 3}  # fmt: skip
        assert line == json.dumps(json.loads(line), separators=(",", ":"))
        code, cursor = await again.interrupt()
    finally:
        again.kill()
    assert code == 130
    assert cursor == f"open:cli={later.epoch}:3,open:cli-state={state.epoch}:0"


async def test_resets_and_refusals_go_to_stderr(hub: ServerProcess) -> None:
    epoch = Publisher(hub.base, KEY).publish("open:cli-reset", {"n": 1}).epoch
    sub = await Subscriber.start(hub, "open:cli-reset", "priv:cli", "--cursor",
                                 "open:cli-reset=zzz:9")  # fmt: skip
    try:
        assert await sub.stderr_until("torchannels: reset") == (
            "torchannels: reset open:cli-reset: epoch_changed"
        )
        refused = await sub.stderr_until("torchannels: priv:cli refused")
        assert refused.startswith("torchannels: priv:cli refused: token_required: ")
        assert (await sub.line()).split()[1:3] == ["open:cli-reset", f"{epoch}:1"]
        code, cursor = await sub.interrupt()
    finally:
        sub.kill()
    assert (code, cursor) == (130, f"open:cli-reset={epoch}:1")


async def test_a_disconnect_for_good_ends_it_with_exit_1(hub: ServerProcess) -> None:
    pub = Publisher(hub.base, KEY)
    sent = pub.publish("priv:cli-gone", {"n": 1})
    tok = encode_token({"sub": "cli-gone", "exp": time.time() + 300, "channels": ["priv:*"]},
                       SECRET)  # fmt: skip
    sub = await Subscriber.start(hub, "priv:cli-gone", "--cursor", f"priv:cli-gone={sent.epoch}:0",
                                 "--token", tok)  # fmt: skip
    try:
        await sub.line()  # the message: subscribed
        assert pub.disconnect(user="cli-gone").connections == 1
        said = await sub.stderr_until("torchannels: disconnected")
        cursor = await sub.stderr_until("torchannels: cursor ")
        code = await asyncio.wait_for(sub.proc.wait(), WAIT)
    finally:
        sub.kill()
    assert said == ("torchannels: disconnected by the server (websocket: disconnected_by_server); "
                    "not reconnecting")  # fmt: skip
    assert (code, cursor) == (1, f"torchannels: cursor priv:cli-gone={sent.epoch}:1")
    assert not [line for line in sub.errors if "Traceback" in line or "reconnecting in" in line]


def test_bad_arguments_exit_2(hub: ServerProcess) -> None:
    env = {"TORCHANNELS_URL": hub.base}
    for args, message in (
        (["a b"], "invalid channel name"),
        (["--cursor", "nope"], "malformed"),
        ([], "name a channel"),
        (["x", "--url", "not-a-url"], "must be http(s)://"),
    ):
        done = cli("subscribe", *args, env=env)
        assert done.returncode == 2 and message in done.stderr, (args, done)
    assert cli("channels", env=env).returncode == 2  # no API key


def _run(hub: ServerProcess, *args: str) -> Any:
    return cli(*args, env={"TORCHANNELS_URL": hub.base, "TORCHANNELS_API_KEY": KEY})


def test_info_and_channels(hub: ServerProcess) -> None:
    pub = Publisher(hub.base, KEY)
    results = [pub.publish("open:cli-info/1", {"n": n}) for n in range(2)]
    pub.set_state("open:cli-info/1", [])
    done = _run(hub, "info", "open:cli-info/1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "CHANNEL         POSITION   HISTORY STATE SUBSCRIBERS",
        f"open:cli-info/1 {results[0].epoch}:2 2       yes   0",
    ]
    as_json = json.loads(_run(hub, "info", "open:cli-info/1", "--json").stdout)
    assert as_json["history_length"] == 2 and as_json["has_state"] is True
    wrong = cli("info", "x", env={"TORCHANNELS_URL": hub.base, "TORCHANNELS_API_KEY": "no"})
    assert wrong.returncode == 1 and "403 forbidden" in wrong.stderr

    listed = _run(hub, "channels", "--prefix", "open:cli-info/")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "CHANNEL", "open:cli-info/1",
    ]  # fmt: skip
    assert _run(hub, "channels", "--prefix", "nothing-here:").stdout == (
        "no channels starting with 'nothing-here:'\n"
    )

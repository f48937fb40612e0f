"""The Python examples of docs/python-client.md and of the README's "From
Python" section run as written against ``torchannels serve --dev`` (what
``make run`` starts), with the API key it printed, so the docs cannot drift
from what works."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from server.processes import START_TIMEOUT, ServerProcess, clean_env

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "python-client.md"
README = ROOT / "README.md"
#: The URL the examples use: ``make run``'s.
MAKE_RUN = "http://127.0.0.1:8090"
WAIT = 15.0
KEY_LINE = re.compile(rb"API key \(generated for this run\): (\S+)\n")


def blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def from_python(readme: str) -> str:
    """The README's "From Python" section."""
    start = readme.index("\n## From Python\n")
    return readme[start : readme.index("\n## ", start + 1)]


@pytest.fixture(scope="module")
def dev_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """``serve --dev`` and the API key it printed after its banner."""
    with started_dev_hub(tmp_path_factory.mktemp("doc-hub")) as started:
        yield started


@pytest.fixture(scope="module")
def publishing_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """``serve --dev`` where clients may publish to ``demo:chat``: what the
    example of "Publishing from a client" needs (docs/api.md#client-publish)."""
    path = tmp_path_factory.mktemp("doc-publish-hub")
    (path / "chat.toml").write_text('[channels."demo:chat"]\npublish = "subscribers"\n')
    with started_dev_hub(path, "--config", str(path / "chat.toml")) as started:
        yield started


@contextlib.contextmanager
def started_dev_hub(path: Path, *flags: str) -> Iterator[tuple[ServerProcess, str]]:
    hub = ServerProcess(path, ["--dev", "--port", "0", *flags], None)
    try:
        while (match := KEY_LINE.fullmatch(hub._read_line(START_TIMEOUT))) is None:
            pass
        yield hub, match.group(1).decode()
    finally:
        hub.close()


class Example:
    """One example, run as a script against the dev hub."""

    def __init__(self, code: str, dev_hub: tuple[ServerProcess, str], cwd: Path) -> None:
        hub, key = dev_hub
        assert MAKE_RUN in code, code  # the examples talk to `make run`'s hub
        script = cwd / "example.py"
        script.write_text(code.replace(MAKE_RUN, hub.base))
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], cwd=cwd, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=clean_env({"TORCHANNELS_API_KEY": key}),
        )  # fmt: skip
        self.lines: list[str] = []

    def until(self, pattern: str) -> str:
        """Read stdout until a line matches ``pattern`` (bounded)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line like {pattern!r}: {self.lines}; {self.finish()[1]}")

    def finish(self, interrupt: bool = False) -> tuple[int, str]:
        """Ctrl-C (when asked), then the exit code and stderr."""
        if interrupt:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.lines += out.splitlines()
        return self.proc.returncode, err


def test_the_readme_example(dev_hub: tuple[ServerProcess, str], tmp_path: Path) -> None:
    [code] = blocks(from_python(README.read_text()))
    run = Example(code, dev_hub, tmp_path)
    run.until(r"^demo:chat \d+ \{'name': 'py', 'text': 'hi', 'channel': 'demo:chat'")
    assert run.finish(interrupt=True) == (0, ""), run.lines  # Ctrl-C: no traceback

    # A channel that needs a token: the refusal is printed, and the loop ends.
    assert code.count('subscribe("demo:chat")') == 1, code
    refused = Example(code.replace('subscribe("demo:chat")', 'subscribe("news")'), dev_hub,
                      tmp_path)  # fmt: skip
    assert refused.finish() == (0, ""), refused.lines
    assert [line.split()[:3] for line in refused.lines] == [["refused", "news", "token_required"]]


def test_the_python_client_doc_examples(dev_hub: tuple[ServerProcess, str], tmp_path: Path) -> None:
    # presence: test_client_presence_live; disconnected: test_client_disconnect;
    # a client's publish: below
    watch, _presence, _disconnected, sync, publish, _client_publish = blocks(DOC.read_text())

    first = Example(watch, dev_hub, tmp_path)
    first.until(r"^demo:chat \d+ \{'name': 'py', 'text': 'hi'")
    first.until(r"^demo:ticker \d+ ")
    assert first.finish(interrupt=True) == (0, ""), first.lines
    saved = re.search(r"demo:chat=\w+:(\d+)", (tmp_path / "cursor.txt").read_text())
    assert saved is not None
    again = Example(watch, dev_hub, tmp_path)  # resumes from cursor.txt
    again.until(r"^demo:chat \d+ \{'name': 'py', 'text': 'hi'")
    chat = [int(line.split()[1]) for line in again.lines if line.startswith("demo:chat ")]
    assert chat == [int(saved.group(1)) + 1], again.lines  # only what it published since
    assert again.finish(interrupt=True) == (0, ""), again.lines

    script = Example(sync, dev_hub, tmp_path)  # stops 5 s after the last event
    assert script.finish() == (0, ""), script.lines
    # demo:chat has presence under --dev: its snapshot comes right after the join.
    events = script.lines[:-1]
    assert events[0].startswith("PresenceSnapshot(channel='demo:chat'"), script.lines
    assert any(line.startswith("Message(channel='demo:chat'") for line in events), script.lines
    assert re.fullmatch(r"resume from demo:chat=\w+:\d+", script.lines[-1]), script.lines

    api = Example(publish, dev_hub, tmp_path)
    assert api.finish() == (0, ""), api.lines
    info, state, published = api.lines
    assert re.fullmatch(r"ChannelInfo\(channel='news', epoch='\w+', offset=3, history_length=3, .*",
                        info), api.lines  # fmt: skip
    assert state == "scores True"
    assert re.fullmatch(r"Published\(channel='news', epoch='\w+', offset=4, ts=[\d.]+, "
                        r"duplicate=False\)", published)  # fmt: skip


def test_the_client_publish_example(
    publishing_hub: tuple[ServerProcess, str], dev_hub: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    code = blocks(DOC.read_text())[5]
    assert "client.publish(" in code, code
    run = Example(code, publishing_hub, tmp_path)
    assert run.finish() == (0, ""), run.lines
    [line] = run.lines
    done = re.fullmatch(r"Published\(channel='demo:chat', epoch='(\w+)', offset=(\d+), ts=None, "
                        r"duplicate=False\)", line)  # fmt: skip
    assert done is not None, run.lines
    # What subscribers get: the message as sent, with its id, and the sender
    # the server stamped (no token: no user).
    hub = publishing_hub[0]
    epoch, offset = done.group(1), int(done.group(2))
    query = urlencode({"transport": "poll", "cursor": f"demo:chat={epoch}:{offset - 1}"})
    with urllib.request.urlopen(f"{hub.base}/channels?{query}", timeout=WAIT) as answer:
        frames = json.loads(answer.read())["frames"]
    [message] = [f["data"] for f in frames if f["type"] == "message"]
    assert (message["offset"], message["name"], message["text"]) == (offset, "py", "hi"), message
    assert re.fullmatch(r"[0-9a-f]{32}", message["id"]), message
    assert message["sender"]["user"] is None and message["sender"]["client"], message

    # Against `make run` as it is: dev mode lets the demo chat's readers publish too.
    again = Example(code, dev_hub, tmp_path)
    assert again.finish() == (0, ""), again.lines
    [line] = again.lines
    assert line.startswith("Published(channel='demo:chat'"), again.lines

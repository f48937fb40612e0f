"""The demo page of ``serve --dev`` (what ``make run`` starts) in Chromium:
its commands publish as pasted with the banner's key (the page holds none),
its chat box publishes, it fits a phone, it has a favicon, and it says when
the hub's history was reset."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, Response

from e2e.e2e_helpers import OUTPUT, PYTHON, ROOT, Process, clean_env, free_port, unique

KEY = "e2e-dev-key"


def start_dev_hub(*flags: str) -> tuple[Process, str, list[str]]:
    """A ``serve --dev`` process, its base URL, and the banner's lines."""
    proc = Process([PYTHON, "-m", "torchannels", "serve", "--dev", *flags])
    line = proc.wait_for_line(lambda line: "torchannels server listening on" in line)
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert match, line
    proc.wait_for_line(lambda line: " publish demo:chat " in line)
    proc.wait_for_line(lambda line: line.startswith("its password is"))  # the banner's end
    return proc, f"http://127.0.0.1:{match.group(1)}", list(proc.output)


@pytest.fixture(scope="module")
def dev_hub() -> Iterator[tuple[str, str]]:
    """A dev hub with a generated key: its base URL and its banner."""
    proc, base, banner = start_dev_hub("--port", "0")
    yield base, "".join(banner)
    proc.stop()


def banner_key(banner: str) -> str:
    """The API key the dev banner prints."""
    key = re.search(r"^API key \((?:generated for this run|from [^)]*)\): (\S+)$", banner, re.M)
    assert key, banner
    return key.group(1)


def shell(command: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command as pasted into a terminal in the hub's directory, with
    ``key`` in ``TORCHANNELS_API_KEY`` (the page's commands say the variable)."""
    env = clean_env()
    if key is not None:
        env["TORCHANNELS_API_KEY"] = key
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=30, check=False)  # fmt: skip


def join_as(page: Page, name: str) -> None:
    """Take ``name`` in the chat (the name field's change event) and wait
    until the member list shows this page under it."""
    page.fill("#name", name)
    page.press("#name", "Tab")
    page.wait_for_function(
        "(me) => [...document.querySelectorAll('#members li.me')]"
        ".some((li) => li.textContent === me)",
        arg=f"{name} (you)",
        timeout=15_000,
    )


def say(page: Page, text: str) -> None:
    """Send ``text`` with the page's chat box."""
    page.fill("#text", text)
    page.click("#say button")


def chat_lines(page: Page) -> list[str]:
    lines: list[str] = page.eval_on_selector_all(
        "#messages li.chat-message", "(lis) => lis.map((li) => li.textContent)"
    )
    return lines


def wait_chat_line(page: Page, line: str, timeout: float = 10) -> None:
    page.wait_for_function(
        "(line) => [...document.querySelectorAll('#messages li.chat-message')]"
        ".some((li) => li.textContent === line)",
        arg=line,
        timeout=timeout * 1000,
    )


def wait_live(page: Page) -> None:
    """The ticker's price shows: the page's subscriptions are served."""
    page.wait_for_function(
        "() => /^\\d+\\.\\d\\d$/.test(document.getElementById('price').textContent)",
        timeout=10_000,
    )


def test_the_page_commands_publish_as_pasted_with_the_banners_key(
    page: Page, dev_hub: tuple[str, str]
) -> None:
    base, banner = dev_hub
    key = banner_key(banner)
    page.goto(base + "/")
    wait_live(page)
    curl = page.text_content("#curl-command") or ""
    cli = page.text_content("#cli-command") or ""
    # The terminal's commands, the key left to the shell (the page is on
    # the same origin): the page holds no key, and no box asks for one.
    assert key not in page.content()
    assert curl.replace('"Authorization: Bearer $TORCHANNELS_API_KEY"',
                        f"'Authorization: Bearer {key}'") in banner, (curl, banner)  # fmt: skip
    assert f"TORCHANNELS_API_KEY={key} {cli}" in banner, (cli, banner)
    assert page.locator("#publish, #publish-key, input[type=password]").count() == 0
    for command, line in ((curl, "curl: hello"), (cli, "cli: hello")):
        done = shell(command, key)
        assert done.returncode == 0, (command, done.stderr)
        wait_chat_line(page, line)
    # The key is what made them work.
    assert '"offset"' not in shell(curl).stdout


def test_the_chat_box_publishes_as_the_pages_member(page: Page, dev_hub: tuple[str, str]) -> None:
    base, _ = dev_hub
    page.goto(base + "/")
    wait_live(page)
    assert page.is_visible("#name") and page.is_enabled("#text")
    join_as(page, "box")
    text = unique("from the box")
    say(page, text)
    wait_chat_line(page, f"box: {text}")
    assert page.input_value("#text") == ""  # sent: the box is cleared
    assert page.is_hidden("#chat-error") and page.is_hidden("#chat-off")


def test_the_page_fits_a_phone_and_has_a_favicon(page: Page, dev_hub: tuple[str, str]) -> None:
    base, _ = dev_hub
    failed: list[str] = []

    def check(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("response", check)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + "/")
    wait_live(page)
    shell(page.text_content("#curl-command") or "", banner_key(dev_hub[1]))  # a chat line too
    wait_chat_line(page, "curl: hello")
    width = page.evaluate(
        "() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]"
    )
    assert width[0] <= width[1], f"the page scrolls sideways at 390 px: {width}"
    os.makedirs(OUTPUT, exist_ok=True)
    shot = os.path.join(OUTPUT, "hub-demo-phone.png")
    page.screenshot(path=shot, full_page=True)
    assert os.path.getsize(shot) > 10_000

    icon = page.request.get(base + "/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"] == "image/x-icon"
    assert page.evaluate("() => document.querySelector('link[rel=icon]').href") == (
        base + "/favicon.ico"
    )
    assert failed == []


def test_the_page_says_when_history_was_reset(page: Page) -> None:
    port = free_port()
    flags = ("--port", str(port), "--api-key", KEY)
    proc, base, _ = start_dev_hub(*flags)
    try:
        page.goto(base + "/")
        wait_live(page)
        assert page.is_hidden("#reset-notice")
        done = shell(page.text_content("#curl-command") or "", KEY)
        assert done.returncode == 0, done.stderr
        wait_chat_line(page, "curl: hello")

        proc.stop()  # the in-memory hub forgets its history
        proc, _, _ = start_dev_hub(*flags)
        page.wait_for_selector("#reset-notice", state="visible", timeout=45_000)
        notice = page.text_content("#reset-notice") or ""
        assert notice.startswith("History was reset (the hub restarted"), notice
        assert chat_lines(page) == []  # the old chat is gone, and the page said why

        assert shell(page.text_content("#curl-command") or "", KEY).returncode == 0
        wait_chat_line(page, "curl: hello")
    finally:
        proc.stop()


def test_the_chat_publishes_after_a_restart_with_a_new_key(page: Page) -> None:
    """Issue 17 was a page that kept a restarted hub's old key (403 until a
    reload). The page holds no key now: its commands stay as they were, and
    once it has joined the chat again (a new token secret) its box publishes
    under its name."""
    port = free_port()
    proc, base, banner = start_dev_hub("--port", str(port))
    try:
        page.goto(base + "/")
        wait_live(page)
        join_as(page, "dora")
        old_curl = page.text_content("#curl-command") or ""
        old_token = page.evaluate("demoClient._auth")
        proc.stop()
        proc, _, banner = start_dev_hub("--port", str(port))
        new_key = banner_key("".join(banner))
        page.wait_for_selector("#reset-notice", state="visible", timeout=45_000)
        # Joined again: a new token (the old one names no one now), listed.
        page.wait_for_function(
            "(old) => demoClient._auth !== old"
            " && document.querySelectorAll('#members li.me').length === 1",
            arg=old_token,
            timeout=30_000,
        )
        text = unique("after the restart")
        say(page, text)
        wait_chat_line(page, f"dora: {text}")
        # The commands never carried the key: the same ones work with the new one.
        assert page.text_content("#curl-command") == old_curl and new_key not in page.content()
        done = shell(old_curl, new_key)
        assert done.returncode == 0 and '"offset"' in done.stdout, done
    finally:
        proc.stop()


def test_the_page_points_to_the_admin_page(page: Page, dev_hub: tuple[str, str]) -> None:
    base, banner = dev_hub
    assert f"admin page (live connections, channels, a tail of any channel): {base}/admin" in (
        banner
    )
    page.goto(base + "/")
    hint = page.text_content("#admin-link") or ""
    assert "its password is the API key" in hint, hint
    page.click("#admin-link a")
    page.wait_for_selector("#password")
    assert page.url == base + "/admin"

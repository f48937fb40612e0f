"""The demo page of ``serve --dev`` (what ``make run`` starts) in Chromium:
its command publishes as pasted, its publish box works, it fits a phone,
it has a favicon, and it says when the hub's history was reset."""

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


def shell(command: str) -> subprocess.CompletedProcess[str]:
    """Run a command as pasted into a terminal in the hub's directory."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT,
                          env=clean_env(), timeout=30, check=False)  # fmt: skip


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


def test_the_page_command_publishes_as_pasted(page: Page, dev_hub: tuple[str, str]) -> None:
    base, banner = dev_hub
    page.goto(base + "/")
    wait_live(page)
    curl = page.text_content("#curl-command") or ""
    cli = page.text_content("#cli-command") or ""
    # The very commands the terminal shows (the page is on the same origin).
    assert curl in banner and cli in banner, (curl, cli, banner)
    assert curl.startswith("curl -H 'Authorization: Bearer ") and "$" not in curl
    for command, line in ((curl, "curl: hello"), (cli, "cli: hello")):
        done = shell(command)
        assert done.returncode == 0, (command, done.stderr)
        wait_chat_line(page, line)


def test_the_publish_box(page: Page, dev_hub: tuple[str, str]) -> None:
    base, _ = dev_hub
    page.goto(base + "/")
    wait_live(page)
    text = unique("from the box")
    page.fill("#publish-data", f'{{"name": "box", "text": "{text}"}}')
    page.click("#publish button")
    wait_chat_line(page, f"box: {text}")
    page.wait_for_function(
        "() => /^200 \\{.*\"offset\"/.test(document.getElementById('publish-result').textContent)"
    )
    # Mistakes are shown, with the API's own message.
    page.fill("#publish-data", "{oops")
    page.click("#publish button")
    page.wait_for_function(
        "() => document.getElementById('publish-result').textContent"
        ".startsWith('The message is not JSON')"
    )
    page.fill("#publish-data", '{"text": "x"}')
    page.fill("#publish-channel", "bad channel")
    page.click("#publish button")
    page.wait_for_function(
        "() => document.getElementById('publish-result').textContent"
        '.startsWith(\'400 {"error":"invalid_channel"\')'
    )
    assert page.get_attribute("#publish-result", "class") == "error"


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
    shell(page.text_content("#curl-command") or "")  # a chat line too
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
        done = shell(page.text_content("#curl-command") or "")
        assert done.returncode == 0, done.stderr
        wait_chat_line(page, "curl: hello")

        proc.stop()  # the in-memory hub forgets its history
        proc, _, _ = start_dev_hub(*flags)
        page.wait_for_selector("#reset-notice", state="visible", timeout=45_000)
        notice = page.text_content("#reset-notice") or ""
        assert notice.startswith("History was reset (the hub restarted"), notice
        assert chat_lines(page) == []  # the old chat is gone, and the page said why

        assert shell(page.text_content("#curl-command") or "").returncode == 0
        wait_chat_line(page, "curl: hello")
    finally:
        proc.stop()


def test_the_page_takes_the_new_key_of_a_restarted_hub(page: Page) -> None:
    """Issue 17: after a restart (a new generated key) the page kept the old
    key, and its publish box and commands answered 403 until a reload."""
    port = free_port()
    proc, base, banner = start_dev_hub("--port", str(port))
    try:
        page.goto(base + "/")
        wait_live(page)
        old_curl = page.text_content("#curl-command") or ""
        assert old_curl in "".join(banner)
        proc.stop()
        proc, _, banner = start_dev_hub("--port", str(port))
        new_key = re.search(r"^API key \(generated for this run\): (\S+)$", "".join(banner), re.M)
        assert new_key and new_key.group(1) not in old_curl
        # At once, before the page noticed the restart: a 403, then the new key.
        text = unique("after the restart")
        page.fill("#publish-data", f'{{"name": "box", "text": "{text}"}}')
        page.click("#publish button")
        wait_chat_line(page, f"box: {text}", timeout=45)
        page.wait_for_function(
            "() => document.getElementById('publish-result').textContent.startsWith('200 ')"
        )
        # The commands carry the new key too, and work as pasted.
        page.wait_for_function(
            "(key) => document.getElementById('curl-command').textContent.includes(key)",
            arg=new_key.group(1),
        )
        curl = page.text_content("#curl-command") or ""
        assert curl in "".join(banner)
        done = shell(curl)
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

"""The demo chat of ``serve --dev`` publishes from the page (issue 20): no
API key on the page or in its scripts' globals, a line typed in one page
appears in another under the sender's name (from the server's ``sender``
stamp and presence, never from the message), over the WebSocket command and
over the HTTP POST, and a refusal shows in the page."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, WebSocket

from e2e.e2e_helpers import Process, unique
from e2e.test_demo_first_run import (
    banner_key,
    join_as,
    say,
    start_dev_hub,
    wait_chat_line,
    wait_live,
)
from e2e.test_demo_presence import open_page

RATE = "3"  # --client-publish-rate: a burst of 3, then rate_limited

#: Every string reachable from the globals the page added (those a blank
#: frame lacks), and from the DOM and storage: the paths where a needle is.
FIND = """(needles) => {
  const frame = document.createElement('iframe');
  document.body.appendChild(frame);
  const builtin = new Set(Object.getOwnPropertyNames(frame.contentWindow));
  frame.remove();
  const found = needles.map(() => []);
  const seen = new Set();
  function look(text, path) {
    needles.forEach((needle, i) => { if (text.includes(needle)) found[i].push(path); });
  }
  function walk(value, path, depth) {
    if (typeof value === 'string') return look(value, path);
    if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return;
    if (seen.has(value) || depth > 12 || value === window || value instanceof Node) return;
    seen.add(value);
    if (value instanceof Map || value instanceof Set) {
      let i = 0;
      for (const entry of value) walk(entry, path + '[' + i++ + ']', depth + 1);
    }
    for (const name of Object.getOwnPropertyNames(value)) {
      if (name === 'caller' || name === 'arguments') continue;
      let inner;
      try { inner = value[name]; } catch (e) { continue; }
      walk(inner, path + '.' + name, depth + 1);
    }
  }
  const added = Object.getOwnPropertyNames(window).filter((name) => !builtin.has(name));
  added.forEach((name) => walk(window[name], name, 0));
  look(document.documentElement.outerHTML, 'document');
  for (const store of [localStorage, sessionStorage]) {
    for (let i = 0; i < store.length; i++) {
      look(store.key(i) + '=' + store.getItem(store.key(i)), 'storage');
    }
  }
  look(document.cookie, 'cookie');
  return {added, found};
}"""


#: Records the text of every chat line as it is added (before any relabel).
WATCH_LINES = """() => {
  window.drawn = [];
  new MutationObserver((changes) => changes.forEach((change) => change.addedNodes.forEach(
    (node) => window.drawn.push(node.textContent)))
  ).observe(document.getElementById('messages'), {childList: true});
}"""


@pytest.fixture(scope="module")
def dev_hub() -> Iterator[tuple[str, str]]:
    """A dev hub with a generated key: its base URL and the key its banner printed."""
    proc: Process
    proc, base, banner = start_dev_hub(
        "--port", "0", "--presence-grace", "1", "--client-publish-rate", RATE
    )
    yield base, banner_key("".join(banner))
    proc.stop()


def own_user(page: Page) -> str:
    """This page's user id, from its own entry in the member list."""
    user = page.get_attribute("#members li.me", "data-user")
    assert user and user.startswith("demo-"), user
    return user


def test_the_page_holds_no_api_key(page: Page, dev_hub: tuple[str, str]) -> None:
    base, key = dev_hub
    served = {}
    for path in ("/", "/torchannels/torchannel.js"):
        with urllib.request.urlopen(base + path, timeout=10) as answer:
            served[path] = answer.read().decode()
        assert key not in served[path], path
    assert '"Authorization: Bearer $TORCHANNELS_API_KEY"' in served["/"].replace("\\", "")

    tokens: list[str] = []
    page.on(
        "response",
        lambda r: tokens.append(r.json()["token"]) if r.url.endswith("/demo/token") else None,
    )
    page.goto(base + "/")
    wait_live(page)
    join_as(page, "keyless")
    assert key not in page.request.get(base + "/").text()
    # The walk reaches the client's insides: it finds the chat token there
    # (the page's own credential), and never the API key.
    got: dict[str, Any] = page.evaluate(FIND, [key, tokens[-1]])
    assert {"demoClient", "TorChannels"} <= set(got["added"]), got["added"]
    key_paths, token_paths = got["found"]
    assert key_paths == [], key_paths
    assert any(path.startswith("demoClient.") for path in token_paths), token_paths


def published_frames(frames: list[str]) -> list[dict[str, Any]]:
    return [f for f in map(json.loads, frames) if f.get("type") in ("publish", "published")]


@pytest.mark.parametrize("transport", ["websocket", "sse", "longpoll"])
def test_a_line_reaches_another_page_under_its_senders_name(
    browser: Any, dev_hub: tuple[str, str], transport: str
) -> None:
    base, _ = dev_hub
    errors: list[str] = []
    ann_context, ann = open_page(browser, errors)
    bob_context, bob = open_page(browser, errors)
    posts: list[Request] = []
    sent: list[str] = []
    received: list[str] = []

    def watch(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: sent.append(str(payload)))
        ws.on("framereceived", lambda payload: received.append(str(payload)))

    ann.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
    ann.on("websocket", watch)
    try:
        for page, name in ((ann, f"ann-{transport}"), (bob, f"bob-{transport}")):
            page.goto(f"{base}/?transport={transport}")
            wait_live(page)
            join_as(page, name)
        user = own_user(ann)
        before = len(posts)
        text = unique("hello bob")
        say(ann, text)
        for page in (bob, ann):
            wait_chat_line(page, f"ann-{transport}: {text}")
        line = bob.locator("#messages li.chat-message", has_text=text)
        assert line.get_attribute("class") == "chat-message from-user"
        assert line.locator("b").get_attribute("data-user") == user
        # A name inside a message is not the sender's, not even for a moment:
        # the stamp is (bob records every line as it is drawn).
        bob.evaluate(WATCH_LINES)
        forged = unique("forged")
        ann.evaluate("(t) => demoClient.publish('demo:chat', {name: 'mallory', text: t})", forged)
        wait_chat_line(bob, f"ann-{transport}: {forged}")
        assert bob.evaluate("window.drawn") == [f"ann-{transport}: {forged}"]

        chat_posts = [r for r in posts[before:] if r.url.split("?")[0] == base + "/channels"]
        if transport == "websocket":
            assert chat_posts == [], [r.url for r in chat_posts]
            commands = [f for f in published_frames(sent) if f["channel"] == "demo:chat"]
            assert [f["data"]["text"] for f in commands] == [text, forged], commands
            answers = published_frames(received)
            assert {f["id"] for f in answers} == {f["id"] for f in commands}, answers
        else:
            assert len(chat_posts) == 2, [r.url for r in chat_posts]
            for request in chat_posts:
                assert "token=" in request.url
                assert json.loads(request.post_data or "")["channel"] == "demo:chat"
                response = request.response()
                assert response is not None and response.status == 200, response
    finally:
        bob_context.close()
        ann_context.close()
    assert not errors, f"uncaught errors in the pages: {errors}"


def test_a_refused_line_is_shown_and_kept(page: Page, dev_hub: tuple[str, str]) -> None:
    base, _ = dev_hub
    page.goto(base + "/")
    wait_live(page)
    join_as(page, "hasty")
    text = unique("again and again")
    page.fill("#text", text)
    page.evaluate(
        "() => { for (let i = 0; i < 6; i++) document.getElementById('say').requestSubmit(); }"
    )
    page.wait_for_selector("#chat-error", state="visible", timeout=10_000)
    shown = page.text_content("#chat-error") or ""
    assert shown.startswith(f"Not sent (rate_limited): more than {RATE} publishes a second"), shown
    wait_chat_line(page, f"hasty: {text}")
    # A pause is all it takes: the box stays on.
    assert page.is_enabled("#text") and page.is_hidden("#chat-off")


def test_a_forbidden_chat_turns_the_box_off(page: Page, tmp_path: Path) -> None:
    """demo:chat asks the token's publish claim, which the demo's tokens do
    not have: the first line is refused with publish_forbidden, and the box
    goes off with the server's reason."""
    config = tmp_path / "hub.toml"
    config.write_text('[channels."demo:chat"]\npublish = "token"\n')
    proc, base, _ = start_dev_hub("--port", "0", "--config", str(config))
    try:
        page.goto(base + "/")
        wait_live(page)
        assert page.is_enabled("#text") and page.is_hidden("#chat-off")
        say(page, "let me in")
        page.wait_for_selector("#chat-off", state="visible", timeout=10_000)
        off = page.text_content("#chat-off") or ""
        assert "the token does not allow publishing to 'demo:chat'" in off, off
        assert page.is_disabled("#text") and page.is_disabled("#say button")
        assert page.input_value("#text") == "let me in"  # not sent: kept
        assert page.eval_on_selector_all("#messages li", "(lis) => lis.length") == 0
    finally:
        proc.stop()

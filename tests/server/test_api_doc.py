"""docs/api.md agrees with the code: options table, codes, metrics, example TOML."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
import tornado.web
import tornado.websocket

from server.processes import (
    API_DOC,
    WAIT,
    ServerProcess,
    Socket,
    api,
    fetch,
    openapi,
    outline,
    poll,
)
from torchannels.server import api as api_module
from torchannels.server import control_api
from torchannels.server.config import CONFIG_ENV, ServerConfig, env_name


def test_api_doc_options_table_matches_the_config() -> None:
    rows: dict[str, list[str]] = {}
    for line in API_DOC.read_text().splitlines():
        if line.startswith("| `--"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[re.findall(r"`--([a-z-]+)", cells[0])[0]] = cells
    assert rows.pop("config")[1] == f"`{CONFIG_ENV}`"
    for f in dataclasses.fields(ServerConfig):
        if f.metadata["kind"] == "channels":
            continue  # TOML tables: test_api_doc_lists_every_channel_option
        flag = f.name.replace("_", "-")
        assert flag in rows, f"--{flag} missing from the options table"
        _, env, key, default, _ = rows.pop(flag)
        assert (env, key) == (f"`{env_name(f.name)}`", f"`{f.name}`"), flag
        shown: Any
        if isinstance(f.default, bool):  # not a dict lookup: 1 == True
            shown = "on" if f.default else "off"
        else:
            named: dict[Any, Any] = {None: "unset", (): "none"}
            shown = named.get(f.default, f.default)
        if isinstance(shown, tuple):
            shown = ",".join(shown)
        doc_default = default.strip("`")
        if isinstance(shown, int | float):
            assert float(doc_default) == shown, flag
        else:
            assert doc_default == shown, flag
    assert rows == {}, f"the table documents options that do not exist: {list(rows)}"


def test_api_doc_names_every_code_and_metric() -> None:
    from torchannels import tokens

    text = API_DOC.read_text()
    codes = {v for k, v in vars(api_module).items() if k.isupper() and isinstance(v, str)}
    codes |= {v for k, v in vars(tokens).items() if k.startswith("TOKEN_") and isinstance(v, str)}
    codes |= {v for k, v in vars(control_api).items() if k.isupper() and isinstance(v, str)}
    codes |= {"token_revoked", "unsubscribed", "disconnected_by_server"}
    codes |= {"token_required", "token_unsupported", "http_error", "internal", "shutting_down",
              "slow_consumer", "channel_error"}  # fmt: skip
    for code in codes:
        assert f"`{code}`" in text, code
    for name in ("torchannels_connections", "torchannels_subscriptions",
                 "torchannels_published_total", "torchannels_delivered_total",
                 "torchannels_resets_total", "torchannels_slow_clients_dropped_total",
                 "torchannels_failed_publishes_total"):  # fmt: skip
        assert f"`{name}" in text, name
    for template in openapi()["paths"]:
        assert template.replace("{channel}", "NAME") in text, template
    assert "**4002**" in text and "1001" in text


async def test_api_doc_example_toml_starts_a_hub(
    spawn: Callable[..., ServerProcess], http: Any, tmp_path: Path
) -> None:
    [example] = re.findall(r"```toml\n(.*?)```", API_DOC.read_text(), re.S)
    path = tmp_path / "hub.toml"
    path.write_text(example)
    hub = spawn("--config", str(path))  # --port 0 wins over the file's port
    assert (await fetch(http, hub.base + "/")).code == 404  # demo = false
    assert (await fetch(http, hub.base + "/metrics")).code == 200  # metrics = true
    response = await api(http, hub, "/api/channels/news", key="change-me")
    assert response.code == 200
    doc = await poll(http, hub, ["public:x", "news", "private"])
    assert outline(doc["frames"]) == [("subscribed", "public:x"), ("subscribed", "news"),
                                      ("error", "private", "token_required")]  # fmt: skip
    # allowed_origins: that origin may open sockets, another may not.
    url = hub.ws_url(channel="news")
    allowed = tornado.httpclient.HTTPRequest(url, headers={"Origin": "https://app.example.com"})
    conn = await asyncio.wait_for(tornado.websocket.websocket_connect(allowed), WAIT)
    greeting = await asyncio.wait_for(conn.read_message(), WAIT)
    assert greeting is not None and json.loads(greeting)["type"] == "connected"
    await Socket(conn).aclose()
    other = tornado.httpclient.HTTPRequest(url, headers={"Origin": "https://evil.example"})
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused_origin:
        await asyncio.wait_for(tornado.websocket.websocket_connect(other), WAIT)
    assert refused_origin.value.code == 403

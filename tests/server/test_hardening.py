"""Hostile input against a running hub (issue 9): never a 500, never a traceback.

Each test reads the part of the hub's log written while it ran, so a
traceback logged for its requests fails it even when the answer looked fine.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from server.processes import (
    ServerProcess,
    api,
    assert_error,
    fetch,
    outline,
    poll,
)

#: A token whose header segment is ``[`` x 4000: json.loads recurses too deep.
NESTED_TOKEN = base64.urlsafe_b64encode(b"[" * 4000).rstrip(b"=").decode() + ".e30.sig"


@contextmanager
def no_traceback(hub: ServerProcess) -> Iterator[None]:
    start = len(hub.log())
    yield
    written = hub.log()[start:]
    assert "Traceback" not in written and "Uncaught exception" not in written, written


async def test_deeply_nested_token_is_malformed_and_anonymous_channels_still_served(
    main_server: ServerProcess, http: Any
) -> None:
    with no_traceback(main_server):
        doc = await poll(http, main_server, ["demo:nest", "private:nest"], token=NESTED_TOKEN)
        assert outline(doc["frames"]) == [
            ("subscribed", "demo:nest"),
            ("error", "private:nest", "token_malformed"),
        ]
        header = {"Authorization": f"Bearer {NESTED_TOKEN}"}
        doc = await poll(http, main_server, ["demo:nest"], headers=header)
        assert outline(doc["frames"]) == [("subscribed", "demo:nest")]


async def test_deeply_nested_publish_body_is_bad_json(
    main_server: ServerProcess, http: Any
) -> None:
    with no_traceback(main_server):
        response = await api(http, main_server, "/api/publish", raw=b"[" * 2000)
        assert_error(response, 400, "bad_json")
        response = await api(http, main_server, "/api/state", raw=b"[" * 2000)
        assert_error(response, 400, "bad_json")


async def test_nul_byte_in_a_static_path_is_404(main_server: ServerProcess, http: Any) -> None:
    with no_traceback(main_server):
        for path in ("/torchannels/torchannel.js%00.txt", "/torchannels/%00", "/favicon.ico%00"):
            response = await fetch(http, main_server.base + path)
            assert response.code == 404, (path, response.code)
        response = await fetch(http, main_server.base + "/torchannels/torchannel.js")
        assert response.code == 200

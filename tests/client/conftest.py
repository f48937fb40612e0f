"""Fixtures of the Python client's tests: real ``torchannels serve`` processes.

``hub`` is shared by the whole session (tests use channels of their own);
``start_hub`` starts one for a single test (restarts, limits) and stops it at
teardown. ``open:*`` channels are anonymous; others need a token signed with
``SECRET``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.client_helpers import FLAGS
from server.processes import ServerProcess


@pytest.fixture(scope="session")
def client_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-hub-logs")


@pytest.fixture(scope="session")
def hub(client_logs: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(client_logs, ["--port", "0", *FLAGS], None)
    yield server
    server.close()


@pytest.fixture
def start_hub(client_logs: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_hub(*extra_flags)``: a hub on a free port with :data:`FLAGS`."""
    started: list[ServerProcess] = []

    def start(*extra: str, base: list[str] | None = None) -> ServerProcess:
        server = ServerProcess(client_logs, ["--port", "0", *(FLAGS if base is None else base),
                                             *extra], None)  # fmt: skip
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()

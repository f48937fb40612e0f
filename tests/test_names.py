"""One name, one meaning: ``TRANSPORTS`` is always a tuple of transport
names, and the package has one ``Connection`` (the Python client's)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import torchannels
import torchannels.transports
from torchannels import TRANSPORT_CLASSES, ChannelMixin
from torchannels.client import TRANSPORTS as CLIENT_TRANSPORTS
from torchannels.testing import TRANSPORTS as TESTING_TRANSPORTS

PACKAGE = Path(torchannels.__file__).parent


def defined(name: str) -> list[str]:
    """Where the package defines ``name`` at module level (class or assignment)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.ClassDef) and node.name == name:
                found.append(str(path.relative_to(PACKAGE)))
                continue
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(str(path.relative_to(PACKAGE)))
    return found


def test_transports_is_always_a_tuple_of_names() -> None:
    assert defined("TRANSPORTS") == ["client/client.py", "testing/subscriber.py"]
    for names in (CLIENT_TRANSPORTS, TESTING_TRANSPORTS):
        assert isinstance(names, tuple) and all(isinstance(n, str) for n in names)
        assert set(names) == {*TRANSPORT_CLASSES, "websocket"}
    assert ChannelMixin.transports is TRANSPORT_CLASSES
    assert all(cls.name == name for name, cls in TRANSPORT_CLASSES.items())


def test_the_old_name_of_the_transport_classes_still_imports() -> None:
    for module in (torchannels, torchannels.transports):
        with pytest.warns(DeprecationWarning, match="renamed TRANSPORT_CLASSES"):
            assert module.TRANSPORTS is TRANSPORT_CLASSES
        assert "TRANSPORTS" not in module.__all__
    with pytest.raises(AttributeError):
        torchannels.NO_SUCH_NAME  # noqa: B018


def test_one_connection() -> None:
    assert defined("Connection") == ["client/connections.py"]

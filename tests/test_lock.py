"""The locks in requirements/ pin everything `make` installs.

A clean clone must install the same versions every time: every line of a
lock is an exact, hashed pin, every requirement of the extras it was made
from is in it at a version pyproject.toml allows, and the Makefile installs
from the locks only.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {
    "run.txt": ("metrics", "redis"),
    "dev.txt": ("metrics", "redis", "dev"),
    "bench.txt": ("metrics", "redis", "dev", "bench"),
}


def read_lock(name: str) -> dict[str, tuple[Version, int]]:
    """Package name -> (pinned version, number of hashes)."""
    text = (ROOT / "requirements" / name).read_text()
    pins: dict[str, tuple[Version, int]] = {}
    for entry in re.split(r"\n(?=\S)", text):
        if not entry.strip() or entry.startswith("#"):
            continue
        head = entry.split("\\", 1)[0].split(";", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s]+)", head)
        assert match, f"{name}: not an exact pin: {head!r}"
        hashes = entry.count("--hash=sha256:")
        pins[canonicalize_name(match[1])] = (Version(match[2]), hashes)
    return pins


def wanted(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    build = (ROOT / "requirements" / "build.in").read_text().split("\n")
    names += [line for line in build if line and not line.startswith("#")]
    return [Requirement(name) for name in names]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_requirement_is_pinned_with_hashes_in_range(lock: str) -> None:
    pins = read_lock(lock)
    assert all(hashes > 0 for _, hashes in pins.values()), lock
    for requirement in wanted(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} lacks {name}: run make lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, pyproject asks {requirement}: run make lock"
        )


def test_the_makefile_installs_from_the_locks_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "pip install" in line]
    assert installs, "no pip install in the Makefile?"
    for line in installs:
        pinned = "--require-hashes" in line or "--no-deps" in line or "uv==" in line
        assert pinned, f"an unpinned install: {line.strip()}"
    for lock in LOCKS:
        assert f"-r requirements/{lock}" in makefile, lock

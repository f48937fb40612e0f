"""The runnable example of docs/testing.md runs, against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from server.processes import KEY, ServerProcess, clean_env

DOC = Path(__file__).parents[2] / "docs" / "testing.md"


def test_the_documented_check_passes_against_a_server(tmp_path: Path) -> None:
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    script = tmp_path / "check.py"
    script.write_text(block.group(1))
    hub = ServerProcess(tmp_path, ["--port", "0", "--no-demo", "--api-key", KEY], None)
    try:
        env = clean_env({"TORCHANNELS_URL": hub.base, "TORCHANNELS_API_KEY": KEY})
        run = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        hub.close()
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("0 violations") == 5, run.stdout
    assert "ProxyCounters(" in run.stdout, run.stdout

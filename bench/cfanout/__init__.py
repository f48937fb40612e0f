"""The compiled fan-out loop of the issue 23 experiment, and its pure-Python twin.

:func:`build` compiles ``cfanout.c`` with gcc and this Python's headers
into a temporary directory and imports it (nothing is installed, nothing
is shipped); :func:`send_all_python` is the same loop over socket objects,
one ``socket.send`` per subscriber, as the hub's direct write does it.
Both return the short writes: ``(index, bytes taken or -errno)``.
"""

from __future__ import annotations

import errno
import importlib.util
import socket
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent

SendAll = Callable[[list[int], bytes], list[tuple[int, int]]]


def build(directory: Path | None = None) -> SendAll:
    """Compile ``cfanout.c`` (``gcc -O2 -shared``) and return its ``send_all``."""
    out = Path(directory or tempfile.mkdtemp(prefix="cfanout-"))
    target = out / ("_cfanout" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    include = sysconfig.get_paths()["include"]
    cmd = ["gcc", "-O2", "-shared", "-fPIC", f"-I{include}", str(HERE / "cfanout.c")]
    subprocess.run([*cmd, "-o", str(target)], check=True)
    spec = importlib.util.spec_from_file_location("_cfanout", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    send_all: SendAll = module.send_all
    return send_all


def send_all_python(socks: list[socket.socket], frame: bytes) -> list[tuple[int, int]]:
    """The pure-Python loop: ``socket.send`` per subscriber (non-blocking
    sockets), the short writes returned like the C loop's."""
    short: list[tuple[int, int]] = []
    size = len(frame)
    for i, sock in enumerate(socks):
        try:
            sent = sock.send(frame)
        except (BlockingIOError, InterruptedError):
            short.append((i, -errno.EAGAIN))
            continue
        except OSError as exc:
            short.append((i, -(exc.errno or errno.EIO)))
            continue
        if sent != size:
            short.append((i, sent))
    return short

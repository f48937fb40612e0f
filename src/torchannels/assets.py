"""The browser client shipped inside the package, and a route that serves it.

>>> import os
>>> os.path.isfile(os.path.join(static_path(), "torchannel.js"))
True
>>> static_route()[0]
'/torchannels/(.*)'
"""

from __future__ import annotations

import os
from typing import Any

from tornado.web import StaticFileHandler

_HERE = os.path.dirname(os.path.abspath(__file__))


def static_path() -> str:
    """The folder holding ``torchannel.js``, ``torchannel.mjs`` and
    ``torchannel.d.ts``; usable as a Tornado ``static_path``."""
    return os.path.join(_HERE, "static")


def static_route(
    prefix: str = "/torchannels/",
) -> tuple[str, type[StaticFileHandler], dict[str, Any]]:
    """A route serving the client files under ``prefix``:

    ``(r"/torchannels/(.*)", StaticFileHandler, {"path": static_path()})``,
    so a page loads ``<script src="/torchannels/torchannel.js">``.
    """
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise ValueError("prefix must start and end with '/'")
    return (prefix + "(.*)", StaticFileHandler, {"path": static_path()})

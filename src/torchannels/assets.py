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

from tornado.web import HTTPError, StaticFileHandler

_HERE = os.path.dirname(os.path.abspath(__file__))


class ClientFileHandler(StaticFileHandler):
    """Tornado's static file handler, answering 404 to a path no file can
    have (a NUL byte makes ``os.stat`` raise, which would be a 500)."""

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if "\x00" in absolute_path:
            raise HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)


def static_path() -> str:
    """The folder holding ``torchannel.js``, ``torchannel.mjs`` and
    ``torchannel.d.ts``; usable as a Tornado ``static_path``."""
    return os.path.join(_HERE, "static")


def static_route(
    prefix: str = "/torchannels/",
) -> tuple[str, type[StaticFileHandler], dict[str, Any]]:
    """A route serving the client files under ``prefix``:

    ``(r"/torchannels/(.*)", ClientFileHandler, {"path": static_path()})``,
    so a page loads ``<script src="/torchannels/torchannel.js">``.
    """
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise ValueError("prefix must start and end with '/'")
    return (prefix + "(.*)", ClientFileHandler, {"path": static_path()})
